"""The HTML pages behind the login: Status, Session, History (a session, a patient's trend) and Voices.

Each page is a template that the page's script (static/app.js, static/voices.js) fills from the
JSON API; the server only checks what the URL names (a session that exists, a valid patient id).
Every template, the error page included, also gets the mood labels' colours (`chart_labels`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from device.labels import CHART_COLOURS, LABEL_COLOURS, LABELS, OTHER_COLOUR, VALENCE_AROUSAL
from device.store import PATIENT_ID_PATTERN, validate_patient_id
from device.web.api_voices import VOICE_RECORD_SECONDS
from device.web.common import find_session, page, state, store

# the patient id rule (device.store.PATIENT_ID_PATTERN) for an HTML pattern attribute, which browsers
# compile with the RegExp `v` flag: there a '-' inside a class must be escaped
HTML_PATIENT_PATTERN = PATIENT_ID_PATTERN.replace("_-]", "_\\-]")

bp = Blueprint("pages", __name__)


@bp.app_context_processor
def chart_labels() -> dict[str, Any]:
    return {"chart_colours": CHART_COLOURS,
            "label_info": [{"label": label, "colour": LABEL_COLOURS.get(label, OTHER_COLOUR),
                            "valence": VALENCE_AROUSAL[label][0], "arousal": VALENCE_AROUSAL[label][1]}
                           for label in LABELS]}


@bp.get("/")
def status_page() -> str:
    return page("status.html", "status")


@bp.get("/session")
def session_page() -> str:
    config = state().config
    return page("session.html", "session", consent_required=config.session.consent_required,
                patient_pattern=HTML_PATIENT_PATTERN, max_minutes=config.session.max_duration_minutes)


@bp.get("/history")
def history_page() -> str:
    return page("history.html", "history", patient_pattern=HTML_PATIENT_PATTERN)


@bp.get("/history/session/<session_id>")
def session_detail_page(session_id: str) -> str:
    record = find_session(store(), session_id)  # NotFoundError -> 404 page
    return page("session_detail.html", "session-detail", session_id=record.id, patient_id=record.patient_id)


@bp.get("/history/patient/<patient_id>")
def patient_page(patient_id: str) -> str:
    validate_patient_id(patient_id)
    return page("patient.html", "patient", patient_id=patient_id)


@bp.get("/voices")
def voices_page() -> str:
    return page("voices.html", "voices", record_seconds=VOICE_RECORD_SECONDS,
                min_speech_s=state().config.voice.min_enroll_speech_s)
