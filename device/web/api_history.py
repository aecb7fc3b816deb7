"""What the record holds, read-only: `/api/sessions`, `/api/sessions/<id>` and `/api/patients/<id>/trend`.

Each request reads the local store through its own read-only `Store` (`common.store()`); a
session's detail carries its windows, summary and deviation from the patient's baseline, a
patient's trend the per-session points and per-period rows of device/web/trend.py.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from device.notice import NOT_A_DIAGNOSIS
from device.store import NotFoundError, validate_patient_id
from device.web import trend
from device.web.common import fail, find_session, store, utc_fields

SESSION_LIST_DEFAULT = 50
SESSION_LIST_MAX = 500
SUMMARY_KEYS = ("dominant", "valence", "arousal", "valence_sd", "duration_s", "windows_with_mood")

bp = Blueprint("api_history", __name__)


def _record_json(record: Any, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    row = utc_fields(record.to_json(), "started_utc", "ended_utc")
    row.pop("config", None)
    row["summary"] = {k: summary.get(k) for k in SUMMARY_KEYS} if summary is not None else None
    return row


@bp.get("/api/sessions")
def api_sessions() -> Response:
    patient = request.args.get("patient") or None
    if patient is not None:
        validate_patient_id(patient)
    raw_limit = request.args.get("limit", str(SESSION_LIST_DEFAULT))
    try:
        limit = int(raw_limit)
    except ValueError:
        fail(400, f"limit must be an integer from 1 to {SESSION_LIST_MAX} (got {raw_limit[:20]!r})")
    if not 1 <= limit <= SESSION_LIST_MAX:
        fail(400, f"limit must be an integer from 1 to {SESSION_LIST_MAX} (got {limit})")
    db = store()
    rows = []
    for record in db.sessions(patient, limit=limit):
        stored = db.summary(record.id) if record.state != "running" else None
        rows.append(_record_json(record, stored.summary if stored else None))
    return jsonify(sessions=rows, patient_id=patient)


@bp.get("/api/sessions/<session_id>")
def api_session(session_id: str) -> Response:
    db = store()
    record = find_session(db, session_id)
    stored = db.summary(record.id)
    row = _record_json(record)
    row.pop("summary")
    return jsonify(session=row, windows=db.windows(record.id),
                   summary=stored.summary if stored else None,
                   deviation=stored.deviation if stored else None, notice=NOT_A_DIAGNOSIS)


@bp.get("/api/patients/<patient_id>/trend")
def api_trend(patient_id: str) -> Response:
    validate_patient_id(patient_id)
    period = request.args.get("period", "month")
    if period not in trend.PERIODS:
        fail(400, f"period must be one of {', '.join(trend.PERIODS)} (got {period[:20]!r})")
    db = store()
    records = [r for r in reversed(db.sessions(patient_id, limit=None)) if r.state != "running"]
    if not records and not db.sessions(patient_id, limit=1):
        raise NotFoundError(f"no sessions for patient {patient_id!r}")
    points = []
    for record in records:
        stored = db.summary(record.id)
        points.append(trend.session_point(record, stored.summary if stored else None,
                                          stored.deviation if stored else None))
    return jsonify(patient_id=patient_id, period=period, sessions=points,
                   periods=trend.period_rows(points, period), baseline=db.baseline(patient_id),
                   notice=NOT_A_DIAGNOSIS)
