"""Is every session complete? Per session: its seq gaps, its windows against the count the device
reported, its started/end events and summary; and `cmd/resend` requests for what is missing.

A device deletes an event from its outbox when the *broker* acknowledges it, so a broker that
crashes between autosaves loses events the device's local record still holds. The hub sees it
here: a summary that reports `windows: N` while fewer windows are held, a session without its
summary, or seq gaps. It asks the device (`cmd/resend` with the session id and a window range,
docs/MQTT.md), which queues the stored items again with the same event ids (the hub drops what it
already has), until the session is complete, the device answers that it no longer holds the
session (retention), or `completeness.max_attempts` requests went unanswered. The request is by
window index, not seq: the device numbers events when it queues them, so a re-queued event gets a
new seq, and its record knows windows, not seqs. Seq gaps are reported, not chased: they can be
legitimate (an outbox drop, a crash between numbering and queueing).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update

from device.contract.timestamps import utc_timestamp
from hub import schema
from hub.config import HubConfig

log = logging.getLogger("affectbox.hub.completeness")
MAX_RESEND_WINDOWS = 100_000  # device.uplink.client.RESEND_MAX_WINDOWS


@dataclass
class SessionState:
    device_id: str
    session_id: str
    windows_reported: int | None
    windows_held: int
    missing_windows: list[int] = field(default_factory=list)
    has_started: bool = False
    has_end: bool = False
    has_summary: bool = False
    seq_gaps: list[tuple[int, int]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (self.windows_reported is not None and not self.missing_windows and self.has_started
                and self.has_end and self.has_summary)

    def to_json(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "session_id": self.session_id, "complete": self.complete,
                "windows_reported": self.windows_reported, "windows_held": self.windows_held,
                "missing_windows": self.missing_windows[:1000], "has_started": self.has_started,
                "has_end": self.has_end, "has_summary": self.has_summary,
                "seq_gaps": [list(g) for g in self.seq_gaps[:1000]]}


def gaps(values: list[int]) -> list[tuple[int, int]]:
    """Missing integer ranges (inclusive) between the smallest and largest of sorted `values`."""
    return [(a + 1, b - 1) for a, b in zip(values, values[1:], strict=False) if b > a + 1]


def session_state(conn: Connection, device_id: str, session_id: str) -> SessionState:
    s = conn.execute(select(schema.sessions).where(schema.sessions.c.device_id == device_id,
                                                   schema.sessions.c.session_id == session_id)).mappings().first()
    w = schema.windows.c
    indexes = sorted(conn.execute(select(w.window_index).where(w.device_id == device_id,
                                                               w.session_id == session_id)).scalars())
    r = schema.events_raw.c
    seqs = sorted(conn.execute(select(r.seq).where(r.device_id == device_id, r.session_id == session_id)).scalars())
    summary = conn.execute(select(func.count()).select_from(schema.summaries).where(
        schema.summaries.c.device_id == device_id, schema.summaries.c.session_id == session_id)).scalar()
    reported = None if s is None else s["windows_reported"]
    held = set(indexes)
    if reported is not None:
        missing = [i for i in range(reported) if i not in held]
    else:  # no count yet: what lies below the highest window held
        missing = [i for i in range(indexes[-1] + 1) if i not in held] if indexes else []
    return SessionState(device_id, session_id, reported, len(indexes), missing,
                        has_started=bool(s and s["started_ts"]), has_end=bool(s and s["end_event"]),
                        has_summary=bool(summary), seq_gaps=gaps(seqs))


def report(engine: Engine, device_id: str | None = None, incomplete_only: bool = False) -> list[dict[str, Any]]:
    """Every session's completeness (for `affectbox-hub sessions`)."""
    out = []
    with engine.connect() as conn:
        query = select(schema.sessions.c.device_id, schema.sessions.c.session_id,
                       schema.sessions.c.incomplete_reason).order_by(schema.sessions.c.device_id,
                                                                     schema.sessions.c.last_received_at)
        if device_id:
            query = query.where(schema.sessions.c.device_id == device_id)
        for dev, sid, reason in conn.execute(query).all():
            state = session_state(conn, dev, sid)
            if incomplete_only and state.complete:
                continue
            out.append({**state.to_json(), "given_up": reason})
    return out


class Checker:
    """Finds incomplete, quiet sessions and asks their devices to resend (run from the main loop)."""

    def __init__(self, config: HubConfig, engine: Engine, publish: Callable[[str, bytes], bool]) -> None:
        self.config = config
        self.engine = engine
        self.publish = publish

    def run_once(self, now: datetime | None = None) -> int:
        """One pass; returns the number of requests sent."""
        now = now or datetime.now(UTC)
        c = self.config.completeness
        quiet_before = utc_timestamp(now - timedelta(seconds=c.quiet_s))
        retry_before = utc_timestamp(now - timedelta(seconds=c.retry_after_s))
        sent = 0
        with self.engine.begin() as conn:
            self._collect_outcomes(conn)
            s = schema.sessions.c
            d = schema.devices.c
            candidates = conn.execute(select(s.device_id, s.session_id).join(
                schema.devices, d.device_id == s.device_id).where(
                s.complete.is_(False), s.incomplete_reason.is_(None), s.last_received_at < quiet_before,
                d.admission == "approved")).all()
            for device_id, session_id in candidates:
                state = session_state(conn, device_id, session_id)
                key = and_(s.device_id == device_id, s.session_id == session_id)
                if state.complete:
                    conn.execute(update(schema.sessions).where(key).values(complete=True))
                    continue
                if self._still_running(conn, device_id, session_id) and state.windows_reported is None:
                    continue
                requests = conn.execute(select(schema.resend_requests).where(
                    schema.resend_requests.c.device_id == device_id,
                    schema.resend_requests.c.session_id == session_id).order_by(
                    schema.resend_requests.c.sent_at)).mappings().all()
                if any(r["outcome"] == "gone" for r in requests):
                    conn.execute(update(schema.sessions).where(key).values(
                        incomplete_reason="the device no longer holds the session (retention)"))
                    continue
                if requests and requests[-1]["sent_at"] >= retry_before:
                    continue  # the last request may still be taking effect
                if len(requests) >= c.max_attempts:
                    conn.execute(update(schema.sessions).where(key).values(
                        incomplete_reason=f"still incomplete after {len(requests)} resend requests"))
                    log.warning("session %s of %s: incomplete after %d resend requests", session_id, device_id,
                                len(requests))
                    continue
                if self._ask(conn, state, now):
                    sent += 1
        return sent

    def _still_running(self, conn: Connection, device_id: str, session_id: str) -> bool:
        active = conn.execute(select(schema.status_history.c.active_session_id).where(
            schema.status_history.c.device_id == device_id).order_by(
            schema.status_history.c.received_at.desc(), schema.status_history.c.seq.desc()).limit(1)).scalar()
        return active == session_id

    def _ask(self, conn: Connection, state: SessionState, now: datetime) -> bool:
        first = state.missing_windows[0] if state.missing_windows else 0
        last = state.missing_windows[-1] if state.missing_windows else 0
        last = min(last, first + MAX_RESEND_WINDOWS - 1)
        session_events = not (state.has_started and state.has_end and state.has_summary)
        request_id = f"hub-resend-{uuid.uuid4().hex[:16]}"
        body = {"request_id": request_id, "session_id": state.session_id, "from_window": first, "to_window": last,
                "session_events": session_events}
        topic = f"{self.config.mqtt.topic_root}/{state.device_id}/cmd/resend"
        if not self.publish(topic, json.dumps(body).encode()):
            return False
        conn.execute(schema.resend_requests.insert().values(
            request_id=request_id, device_id=state.device_id, session_id=state.session_id, from_window=first,
            to_window=last, session_events=session_events, sent_at=utc_timestamp(now)))
        log.info("asked %s to resend session %s windows %d-%d%s (%d missing)", state.device_id, state.session_id,
                 first, last, " and its events" if session_events else "", len(state.missing_windows))
        return True

    def _collect_outcomes(self, conn: Connection) -> None:
        """Copy the devices' answers (command_results) onto the open requests."""
        q = schema.resend_requests
        cr = schema.command_results
        open_requests = conn.execute(select(q.c.request_id, cr.c.ok, cr.c.result).join(
            cr, cr.c.request_id == q.c.request_id).where(q.c.outcome.is_(None))).all()
        for request_id, ok, result in open_requests:
            body = json.loads(result) if result else {}
            outcome = ("ok" if body.get("held", True) else "gone") if ok else "error"
            conn.execute(update(q).where(q.c.request_id == request_id).values(outcome=outcome, detail=result))
