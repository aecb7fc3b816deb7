"""Typed rows from raw events: devices, sessions, windows, summaries, status and command results.

`derive(connection, row)` applies one `events_raw` row (a dict of its columns) to the typed
tables; it is what the writer calls inside the transaction that stored the row, and what a
rebuild replays over the whole raw table. It is idempotent and order-tolerant: a window that
arrives before its session's `started` creates the session row, an `ended` that arrives after
the summary does not erase what the summary said, and replaying an event changes nothing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, delete, select, update

from hub import schema
from hub.db import insert_ignoring_conflicts


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _touch_session(conn: Connection, device_id: str, session_id: str, received_at: str) -> None:
    conn.execute(insert_ignoring_conflicts(conn, schema.sessions).values(
        device_id=device_id, session_id=session_id, last_received_at=received_at, complete=False))
    conn.execute(update(schema.sessions).where(
        schema.sessions.c.device_id == device_id, schema.sessions.c.session_id == session_id,
        schema.sessions.c.last_received_at < received_at).values(last_received_at=received_at))


def _session_key(p: dict[str, Any]) -> Any:
    return (schema.sessions.c.device_id == p["device_id"]) & (schema.sessions.c.session_id == p["session_id"])


def derive(conn: Connection, row: dict[str, Any]) -> None:
    """Apply one raw event (columns of events_raw, `payload` as text) to the typed tables."""
    p = json.loads(row["payload"])
    kind, received_at = row["kind"], row["received_at"]
    if kind == "session":
        _touch_session(conn, p["device_id"], p["session_id"], received_at)
        if p["event"] == "started":
            values = {"patient_id": p.get("patient_id"), "started_ts": p["ts"], "started_received_at": received_at}
        else:
            values = {"end_event": p["event"], "end_reason": p.get("reason"), "ended_ts": p["ts"],
                      "ended_received_at": received_at, "duration_s": p.get("duration_s")}
            if p.get("windows") is not None:
                values["windows_reported"] = p["windows"]
        conn.execute(update(schema.sessions).where(_session_key(p)).values(**values))
    elif kind == "mood":
        _touch_session(conn, p["device_id"], p["session_id"], received_at)
        conn.execute(insert_ignoring_conflicts(conn, schema.windows).values(
            device_id=p["device_id"], session_id=p["session_id"], window_index=p["window_index"],
            event_id=p["event_id"], seq=p["seq"], start_s=p["start_s"], end_s=p["end_s"],
            has_mood=bool(p["has_mood"]), dominant=p.get("dominant"), valence=p.get("valence"),
            arousal=p.get("arousal"), probs=_json(p.get("probs")), received_at=received_at))
    elif kind == "summary":
        _touch_session(conn, p["device_id"], p["session_id"], received_at)
        conn.execute(insert_ignoring_conflicts(conn, schema.summaries).values(
            device_id=p["device_id"], session_id=p["session_id"], event_id=p["event_id"], seq=p["seq"],
            patient_id=p.get("patient_id"), duration_s=p.get("duration_s"), windows=p["windows"],
            windows_with_mood=p.get("windows_with_mood"), dominant=p.get("dominant"), valence=p.get("valence"),
            arousal=p.get("arousal"), valence_sd=p.get("valence_sd"), arousal_sd=p.get("arousal_sd"),
            received_at=received_at))
        values = {"windows_reported": p["windows"]}
        if p.get("patient_id"):
            values["patient_id"] = p["patient_id"]
        conn.execute(update(schema.sessions).where(_session_key(p)).values(**values))
    elif kind == "status":
        outbox = p.get("outbox") or {}
        conn.execute(insert_ignoring_conflicts(conn, schema.status_history).values(
            event_id=p["event_id"], device_id=p["device_id"], seq=p["seq"], ts=p["ts"], received_at=received_at,
            state=p["state"], active_session_id=p.get("active_session_id"), outbox_depth=outbox.get("depth"),
            outbox_dropped=_json(outbox.get("dropped"))))
        newest = conn.execute(select(schema.status_history.c.event_id).where(
            schema.status_history.c.device_id == p["device_id"]).order_by(
            schema.status_history.c.received_at.desc(), schema.status_history.c.seq.desc()).limit(1)).scalar()
        if newest == p["event_id"]:
            conn.execute(update(schema.devices).where(schema.devices.c.device_id == p["device_id"]).values(
                status_event_id=p["event_id"], status_state=p["state"], outbox_dropped=_json(outbox.get("dropped"))))
    elif kind == "info":
        # only the device's newest info counts, whatever order a rebuild replays them in
        raw = schema.events_raw.c
        newest = conn.execute(select(raw.event_id).where(raw.device_id == p["device_id"], raw.kind == "info")
                              .order_by(raw.received_at.desc(), raw.seq.desc()).limit(1)).scalar()
        if newest == p["event_id"]:
            conn.execute(update(schema.devices).where(schema.devices.c.device_id == p["device_id"]).values(
                info_event_id=p["event_id"], software_version=p.get("software_version")))
    elif kind == "command_result":
        body = p.get("result") if p.get("ok") else p.get("error")
        conn.execute(insert_ignoring_conflicts(conn, schema.command_results).values(
            event_id=p["event_id"], device_id=p["device_id"], command=p.get("command"),
            request_id=p.get("request_id"), ok=bool(p.get("ok")), result=_json(body), received_at=received_at))


def rebuild(conn: Connection, batch: int = 2000) -> int:
    """Empty the derived tables and replay every raw event into them; returns the count.

    Derivation is order-tolerant, so the replay pages through the raw table by `event_id`
    (keyset paging: bounded memory, no server-side cursor held across the writes).
    """
    for table in schema.DERIVED:
        conn.execute(delete(table))
    raw = schema.events_raw
    count, last = 0, ""
    while True:
        rows = conn.execute(select(raw).where(raw.c.event_id > last).order_by(raw.c.event_id).limit(batch)).mappings()
        page = [dict(r) for r in rows]
        if not page:
            return count
        for row in page:
            derive(conn, row)
        count += len(page)
        last = page[-1]["event_id"]
