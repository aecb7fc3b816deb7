"""Session control from the page: `POST /api/session/start` and `POST /api/session/stop`.

The fields are checked here (patient id, consent where `[session] consent_required`, a maximum
duration within the configured one); the appliance itself starts and stops the session
(`ApplianceControl.start_session` / `.stop_session`) and refuses in the wrong state (409).
"""

from __future__ import annotations

import json
import logging
import math
import urllib.parse

from flask import Blueprint, Response, jsonify, request

from device.store import validate_patient_id
from device.web.common import body, fail, flag, state, utc_fields
from device.web.security import CSRF_FIELD

log = logging.getLogger(__name__)

START_FIELDS = frozenset({"patient_id", "consent", "max_duration_minutes", CSRF_FIELD})

bp = Blueprint("api_session", __name__)


@bp.post("/api/session/start")
def api_session_start() -> tuple[Response, int, dict[str, str]]:
    shared = state()
    config = shared.config
    fields = body()
    unknown = sorted(set(fields) - START_FIELDS)
    if unknown:
        fail(400, f"unknown field {unknown[0]!r} (known: patient_id, consent, max_duration_minutes)")
    if "patient_id" not in fields:
        fail(400, "patient_id is required")
    patient_id = validate_patient_id(fields["patient_id"])
    consent = flag(fields.get("consent", False), "consent")
    if config.session.consent_required and not consent:
        fail(400, "consent is required on this device: confirm that the patient agreed to this session")
    max_duration_s = None
    raw = fields.get("max_duration_minutes")
    if raw not in (None, ""):
        limit = config.session.max_duration_minutes
        try:
            minutes = float(raw)
        except (TypeError, ValueError):
            minutes = math.nan
        if isinstance(raw, bool) or not math.isfinite(minutes) or not 1 <= minutes <= limit:
            fail(400, f"max_duration_minutes must be a number from 1 to {limit:g} (got {json.dumps(raw)[:20]})")
        max_duration_s = minutes * 60.0
    started = shared.control.start_session(patient_id, consent=consent, max_duration_s=max_duration_s, source="web")
    log.info("status page: session %s started from %s", started.get("session_id"), request.remote_addr)
    location = f"/api/sessions/{urllib.parse.quote(str(started.get('session_id', '')), safe='')}"
    return jsonify(utc_fields(started, "started_utc")), 201, {"Location": location}


@bp.post("/api/session/stop")
def api_session_stop() -> Response:
    fields = body()
    unknown = sorted(set(fields) - {CSRF_FIELD})
    if unknown:
        fail(400, f"unknown field {unknown[0]!r} (stop takes no fields)")
    stopped = state().control.stop_session(source="web")
    log.info("status page: session %s stopped from %s", stopped.get("session_id"), request.remote_addr)
    return jsonify(stopped)
