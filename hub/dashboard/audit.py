"""The audit log: who viewed or exported which patient's data, who logged in, who changed what.

One row per action, written before the data is sent (a failure to write refuses the request).
Administrators read it on the Audit page and with `affectbox-hub audit`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select

from device.contract.timestamps import utc_timestamp
from hub import schema

ACTIONS = ("login", "login_failed", "logout", "view", "export", "command", "enter", "acknowledge", "admin")


def record(conn: Connection | Engine, username: str | None, action: str, *, patient_id: str | None = None,
           target: str | None = None, client: str | None = None) -> None:
    assert action in ACTIONS, action
    values = {"at": utc_timestamp(), "username": username, "action": action, "patient_id": patient_id,
              "target": None if target is None else target[:256], "client": None if client is None else client[:64]}
    if isinstance(conn, Engine):
        with conn.begin() as c:
            c.execute(schema.audit_log.insert().values(**values))
    else:
        conn.execute(schema.audit_log.insert().values(**values))


def read(engine: Engine, *, patient_id: str | None = None, username: str | None = None,
         limit: int = 200) -> list[dict[str, Any]]:
    a = schema.audit_log.c
    query = select(schema.audit_log).order_by(a.id.desc()).limit(limit)
    if patient_id:
        query = query.where(a.patient_id == patient_id)
    if username:
        query = query.where(a.username == username)
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]
