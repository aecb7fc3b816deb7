"""Read queries over the hub's record for the dashboard: devices, patients, sessions, windows.

Everything here reads; nothing writes the collector's tables. A session's time is the device's
`started_ts` (its clock, set by NTP on a working device), falling back to when the hub received
its first event. Per-session detail that the typed tables do not hold (label probabilities,
coverage, prosody, dominant windows) comes from the summary's raw payload; the model versions
that produced a session come from the newest `info` of its device received before it started.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, select

from device.contract.timestamps import parse_utc_timestamp
from hub import schema

PROSODY_KEYS = ("f0_sd_st", "speaking_rate", "pause_ratio", "mean_pause_s", "f0_mean_hz")


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return parse_utc_timestamp(text, assume_utc=True)
    except ValueError:
        return None


# ---- devices ----------------------------------------------------------------------------------------------

@dataclass
class DeviceView:
    device_id: str
    admission: str
    availability: str | None
    availability_at: str | None
    last_seen: str
    software_version: str | None
    state: str | None
    components: dict[str, dict[str, Any]]
    models: list[dict[str, Any]]
    outbox_depth: int | None
    outbox_dropped: dict[str, int]
    temperature_c: float | None
    throttled: bool | None
    commands: list[str]
    problems: list[str] = field(default_factory=list)

    @property
    def health(self) -> str:
        """ok | attention | offline | silent | pending (what the list shows first)."""
        if self.admission != "approved":
            return self.admission
        if self.availability != "online":
            return "offline"
        if any(p.startswith("silent") for p in self.problems):
            return "silent"
        return "attention" if self.problems else "ok"


def devices(conn: Connection, now: datetime, silent_after_s: float) -> list[DeviceView]:
    """Every known device with its last status and info, worst first."""
    d = schema.devices.c
    rows = conn.execute(select(schema.devices).order_by(d.device_id)).mappings().all()
    ids = [r["status_event_id"] for r in rows if r["status_event_id"]] + \
          [r["info_event_id"] for r in rows if r["info_event_id"]]
    payloads: dict[str, Any] = {}
    if ids:
        e = schema.events_raw.c
        payloads = {eid: json.loads(p) for eid, p in conn.execute(select(e.event_id, e.payload)
                                                                  .where(e.event_id.in_(ids)))}
    out = []
    for r in rows:
        status = payloads.get(r["status_event_id"]) or {}
        info = payloads.get(r["info_event_id"]) or {}
        outbox = status.get("outbox") or {}
        view = DeviceView(
            device_id=r["device_id"], admission=r["admission"], availability=r["availability"],
            availability_at=r["availability_at"], last_seen=r["last_seen"],
            software_version=r["software_version"] or info.get("software_version"), state=status.get("state"),
            components=status.get("components") or {}, models=info.get("models") or [],
            outbox_depth=outbox.get("depth"), outbox_dropped=outbox.get("dropped") or {},
            temperature_c=status.get("temperature_c"), throttled=status.get("throttled"),
            commands=info.get("commands") or [])
        seen = parse_time(r["last_seen"])
        if view.availability == "online" and seen is not None and (now - seen).total_seconds() > silent_after_s:
            view.problems.append(f"silent for {_ago(now - seen)} while marked online")
        for name, comp in sorted(view.components.items()):
            if not comp.get("ok"):
                view.problems.append(f"{name}: {comp.get('detail') or 'not ok'}")
        if view.throttled:
            view.problems.append("throttled (power or temperature)")
        if sum(view.outbox_dropped.values()):
            view.problems.append(f"outbox dropped {sum(view.outbox_dropped.values())} events")
        out.append(view)
    order = {"offline": 0, "silent": 1, "attention": 2, "pending": 3, "ok": 4, "revoked": 5}
    return sorted(out, key=lambda v: (order.get(v.health, 9), v.device_id))


def _ago(delta: timedelta) -> str:
    s = int(delta.total_seconds())
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h"
    return f"{s // 86400} days"


# ---- sessions of a patient --------------------------------------------------------------------------------

@dataclass
class SessionPoint:
    """One session as the course shows it (values None where the session had no mood estimate)."""

    device_id: str
    session_id: str
    at: str  # UTC ISO start
    end_event: str | None
    duration_s: float | None
    windows: int | None
    windows_with_mood: int | None
    summary_event_id: str | None
    valence: float | None
    arousal: float | None
    valence_sd: float | None
    arousal_sd: float | None
    dominant: str | None
    probs: dict[str, float] | None
    dominant_windows: dict[str, int]
    coverage: dict[str, float]  # face / speech share, and mood = windows_with_mood / windows
    prosody: dict[str, float | None]
    software_version: str | None
    models: dict[str, str | None]  # name -> version

    @property
    def key(self) -> str:
        return f"{self.device_id}/{self.session_id}"

    @property
    def model_signature(self) -> str:
        return ", ".join(f"{n} {v}" if v else n for n, v in sorted(self.models.items())) or "unknown"


def _info_history(conn: Connection, device_ids: set[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    e = schema.events_raw.c
    history: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    if not device_ids:
        return history
    for device_id, received_at, payload in conn.execute(
            select(e.device_id, e.received_at, e.payload).where(e.kind == "info", e.device_id.in_(device_ids))
            .order_by(e.device_id, e.received_at, e.seq)):
        history.setdefault(device_id, []).append((received_at, json.loads(payload)))
    return history


def _info_at(history: list[tuple[str, dict[str, Any]]], moment: str) -> dict[str, Any]:
    if not history:
        return {}
    i = bisect_right([h[0] for h in history], moment)
    return history[max(0, i - 1)][1]  # before any info: the first one (the device did not change since)


def patient_sessions(conn: Connection, patient_id: str) -> list[SessionPoint]:
    """Every session of a patient from every device, oldest first (running ones included, no summary yet)."""
    return _points(conn, schema.sessions.c.patient_id == patient_id)


def session_point(conn: Connection, device_id: str, session_id: str) -> SessionPoint | None:
    s = schema.sessions.c
    points = _points(conn, (s.device_id == device_id) & (s.session_id == session_id))
    return points[0] if points else None


def _points(conn: Connection, where: Any) -> list[SessionPoint]:
    s, m, e = schema.sessions.c, schema.summaries.c, schema.events_raw.c
    query = (select(s.device_id, s.session_id, s.started_ts, s.started_received_at, s.last_received_at,
                    s.end_event, s.duration_s, s.windows_reported, m.event_id, m.windows_with_mood, m.valence,
                    m.arousal, m.valence_sd, m.arousal_sd, m.dominant, m.windows, e.payload)
             .select_from(schema.sessions.outerjoin(schema.summaries, (m.device_id == s.device_id)
                                                    & (m.session_id == s.session_id))
                          .outerjoin(schema.events_raw, e.event_id == m.event_id))
             .where(where))
    rows = conn.execute(query).mappings().all()
    history = _info_history(conn, {r["device_id"] for r in rows})
    points = []
    for r in rows:
        payload = _loads(r["payload"]) or {}
        received = r["started_received_at"] or r["last_received_at"]
        info = _info_at(history.get(r["device_id"], []), received)
        windows = r["windows"] if r["windows"] is not None else r["windows_reported"]
        coverage = {name: c.get("share") for name, c in (payload.get("coverage") or {}).items()}
        if windows and r["windows_with_mood"] is not None:
            coverage["mood"] = round(r["windows_with_mood"] / windows, 4)
        prosody = payload.get("prosody") or {}
        points.append(SessionPoint(
            device_id=r["device_id"], session_id=r["session_id"], at=r["started_ts"] or received,
            end_event=r["end_event"], duration_s=r["duration_s"] if r["duration_s"] is not None
            else payload.get("duration_s"), windows=windows, windows_with_mood=r["windows_with_mood"],
            summary_event_id=r["event_id"], valence=r["valence"], arousal=r["arousal"],
            valence_sd=r["valence_sd"], arousal_sd=r["arousal_sd"], dominant=r["dominant"],
            probs=payload.get("probs"), dominant_windows=payload.get("dominant_windows") or {},
            coverage=coverage, prosody={k: prosody.get(k) for k in PROSODY_KEYS},
            software_version=info.get("software_version"),
            models={str(x.get("name")): x.get("version") for x in info.get("models") or []}))
    points.sort(key=lambda p: (p.at, p.key))
    return points


def session(conn: Connection, device_id: str, session_id: str) -> dict[str, Any] | None:
    s = schema.sessions.c
    row = conn.execute(select(schema.sessions).where(s.device_id == device_id, s.session_id == session_id)).first()
    return None if row is None else dict(row._mapping)


def session_windows(conn: Connection, device_id: str, session_id: str) -> list[dict[str, Any]]:
    """The session's windows in order, with the raw payload's coverage and prosody."""
    w, e = schema.windows.c, schema.events_raw.c
    rows = conn.execute(select(w.window_index, w.start_s, w.end_s, w.has_mood, w.dominant, w.valence, w.arousal,
                               w.probs, e.payload)
                        .select_from(schema.windows.join(schema.events_raw, e.event_id == w.event_id))
                        .where(w.device_id == device_id, w.session_id == session_id)
                        .order_by(w.window_index)).mappings()
    out = []
    for r in rows:
        payload = json.loads(r["payload"])
        out.append({"index": r["window_index"], "start_s": r["start_s"], "end_s": r["end_s"],
                    "has_mood": bool(r["has_mood"]), "dominant": r["dominant"], "valence": r["valence"],
                    "arousal": r["arousal"], "probs": _loads(r["probs"]),
                    "face_share": ((payload.get("modalities") or {}).get("face") or {}).get("share"),
                    "speech_share": ((payload.get("modalities") or {}).get("speech") or {}).get("share"),
                    "prosody": payload.get("prosody")})
    return out


# ---- patients ------------------------------------------------------------------------------------------------

def patients(conn: Connection) -> list[dict[str, Any]]:
    """Every patient id the hub has sessions for: sessions, last session, clinic reference."""
    s, ref = schema.sessions.c, schema.patient_refs.c
    last = func.max(func.coalesce(s.started_ts, s.started_received_at, s.last_received_at))
    rows = conn.execute(select(s.patient_id, func.count().label("sessions"), last.label("last_session"))
                        .where(s.patient_id.is_not(None)).group_by(s.patient_id).order_by(s.patient_id)).all()
    refs = dict(conn.execute(select(ref.patient_id, ref.clinic_ref)).all())
    return [{"patient_id": r.patient_id, "sessions": r.sessions, "last_session": r.last_session,
             "clinic_ref": refs.get(r.patient_id)} for r in rows]


def session_means(conn: Connection) -> dict[str, list[tuple[str, str, float | None, float | None]]]:
    """patient -> [(key, time, valence, mood coverage)] oldest first: what the review flag reads."""
    s, m = schema.sessions.c, schema.summaries.c
    rows = conn.execute(select(m.patient_id, m.device_id, m.session_id, s.started_ts, s.started_received_at,
                               s.last_received_at, m.valence, m.windows, m.windows_with_mood)
                        .select_from(schema.summaries.outerjoin(schema.sessions, (m.device_id == s.device_id)
                                                                & (m.session_id == s.session_id)))
                        .where(m.patient_id.is_not(None))).all()
    out: dict[str, list[tuple[str, str, float | None, float | None]]] = {}
    for r in rows:
        at = r.started_ts or r.started_received_at or r.last_received_at  # as in _points
        coverage = (r.windows_with_mood / r.windows) if r.windows and r.windows_with_mood is not None else None
        out.setdefault(r.patient_id, []).append((f"{r.device_id}/{r.session_id}", at, r.valence, coverage))
    for series in out.values():
        series.sort(key=lambda x: (x[1], x[0]))
    return out


def clinic_ref(conn: Connection, patient_id: str) -> str | None:
    ref = schema.patient_refs.c
    return conn.execute(select(ref.clinic_ref).where(ref.patient_id == patient_id)).scalar()
