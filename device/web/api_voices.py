"""The enrolled voices (device/voice, docs/PRIVACY.md): `/api/voices` to list and enroll, `.../<name>/delete`.

Names, dates and speech seconds only, never a voiceprint. Enrollment records from the device's own
microphone (`control.record_voice`, where the appliance has one) after the clinician confirms.
"""

from __future__ import annotations

import json
import logging
import math

from flask import Blueprint, Response, jsonify, request

from device.voice.loading import enroll_and_save, voiceprints_dir
from device.voice.voiceprints import VoiceprintError, VoiceprintStore
from device.voice.voiceprints import check_name as _check_voice_name
from device.web.common import body, fail, flag, state
from device.web.security import CSRF_FIELD

log = logging.getLogger(__name__)

VOICE_RECORD_SECONDS = 25  # what a clinician records once at the device (docs/PRIVACY.md)

bp = Blueprint("api_voices", __name__)


def voice_store() -> VoiceprintStore:
    return VoiceprintStore(voiceprints_dir(state().config))


def check_voice_name(name: str) -> str:
    try:
        return _check_voice_name(name)
    except VoiceprintError as exc:
        fail(400, str(exc))


@bp.get("/api/voices")
def api_voices() -> Response:
    voices = voice_store()
    listing = [v.listing() for v in voices.load()]
    return jsonify(voices=listing, unreadable=len(voices.problems), attribution=state().config.voice.enabled)


@bp.post("/api/voices")
def api_voice_enroll() -> tuple[Response, int]:
    shared = state()
    fields = body()
    unknown = sorted(set(fields) - {"name", "seconds", "confirm", CSRF_FIELD})
    if unknown:
        fail(400, f"unknown field {unknown[0]!r} (known: name, seconds, confirm)")
    name = check_voice_name(str(fields.get("name", "")))
    if not flag(fields.get("confirm", False), "confirm"):
        fail(400, "enrolling a voice needs confirm: true (a voiceprint is kept on this device until deleted)")
    raw = fields.get("seconds", VOICE_RECORD_SECONDS)
    seconds = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else math.nan
    if not 10 <= seconds <= 60:
        fail(400, f"seconds must be a number from 10 to 60 (got {json.dumps(raw)[:20]})")
    if name in voice_store().names():
        fail(409, f"a voice named {name!r} is already enrolled: delete it first")
    record = getattr(shared.control, "record_voice", None)
    if record is None:
        fail(503, "this appliance cannot record for an enrollment; use 'affectbox voice enroll FILE'")
    try:
        entry = enroll_and_save(shared.config, name, record(seconds), what=f"{seconds:g} s from the microphone")
    except VoiceprintError as exc:  # too little speech, several voices: the recording was unfit
        fail(422, str(exc))
    log.info("status page: a voice was enrolled from %s", request.remote_addr)
    return jsonify(entry), 201


@bp.post("/api/voices/<name>/delete")
def api_voice_delete(name: str) -> Response:
    fields = body()
    if sorted(set(fields) - {CSRF_FIELD}):
        fail(400, "delete takes no fields")
    voices = voice_store()
    check_voice_name(name)
    if name not in voices.names():
        fail(404, f"no voice named {name[:64]!r} is enrolled")
    voices.delete(name)
    log.info("status page: a voice was deleted from %s", request.remote_addr)
    return jsonify(deleted=name)
