"""`affectbox-hub migrate --to postgresql://...`: move a hub's record to another database, verified.

The source tables that are not derived (events_raw, rejected, devices, resend_requests) are
copied in pages into an empty target at the same schema revision; the derived tables are then
rebuilt in the target from its copy of events_raw (derive.py), and the migration is accepted only
if every table has the same row count and the same content digest on both sides: the counts
check the copy, the digests of the rebuilt tables check that the raw events alone reproduce the
record. Run it with the collector stopped (the source must not change meanwhile).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import Engine, Table, func, inspect, select, tuple_

from device.errors import AffectboxError
from hub import schema
from hub.db import safe_url, upgrade
from hub.derive import rebuild

COPIED = (schema.devices, schema.events_raw, schema.rejected, schema.resend_requests, *schema.DASHBOARD_TABLES)
PAGE = 2000


class MigrationError(AffectboxError):
    """The migration cannot start or did not verify; the message says which table differs."""


def _key(table: Table) -> list[Any]:
    return list(table.primary_key.columns)


def digest(engine: Engine, table: Table) -> tuple[int, str]:
    """(rows, sha256 of the rows in primary-key order, values as JSON)."""
    h = hashlib.sha256()
    count = 0
    with engine.connect() as conn:
        for row in conn.execute(select(table).order_by(*_key(table))):
            values = [bytes(v).hex() if isinstance(v, bytes | memoryview) else v for v in row]
            h.update(json.dumps(values, default=str).encode())
            count += 1
    return count, h.hexdigest()


def migrate(source: Engine, target: Engine) -> dict[str, int]:
    """Copy, rebuild and verify; returns rows per table. The target must hold no events."""
    upgrade(source)
    if "events_raw" in inspect(target).get_table_names():
        with target.connect() as conn:
            if conn.execute(select(func.count()).select_from(schema.events_raw)).scalar():
                raise MigrationError(f"{safe_url(target)}: already holds events; migrate into an empty database")
    upgrade(target)
    with source.connect() as src, target.begin() as dst:
        for table in COPIED:
            offset_key = _key(table)
            last: tuple[Any, ...] | None = None
            while True:
                query = select(table).order_by(*offset_key).limit(PAGE)
                if last is not None:
                    query = query.where(tuple_(*offset_key) > tuple_(*last))
                rows = [dict(r) for r in src.execute(query).mappings()]
                if not rows:
                    break
                dst.execute(table.insert(), rows)
                last = tuple(rows[-1][c.name] for c in offset_key)
        if dst.dialect.name == "postgresql":  # copied ids: move the sequence past them
            for name in ("rejected", "audit_log", "review_acks", "questionnaires"):
                dst.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                                    f"coalesce((SELECT max(id) FROM {name}), 0) + 1, false)")
        rebuild(dst)
        # the completeness checker's verdicts are not derived from events: carry them over
        s = schema.sessions.c
        for device_id, session_id, complete, reason in src.execute(select(
                s.device_id, s.session_id, s.complete, s.incomplete_reason).where(
                s.complete.is_(True) | s.incomplete_reason.is_not(None))):
            dst.execute(schema.sessions.update().where(s.device_id == device_id, s.session_id == session_id)
                        .values(complete=complete, incomplete_reason=reason))
    counts = {}
    for table in schema.metadata.sorted_tables:
        left, right = digest(source, table), digest(target, table)
        if left != right:
            raise MigrationError(f"verification failed for table {table.name}: {left[0]} rows in the source, "
                                 f"{right[0]} in the target" + ("" if left[0] != right[0] else " (contents differ)"))
        counts[table.name] = left[0]
    return counts
