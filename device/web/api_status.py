"""How the appliance is doing: `/api/health` (open, no patient data), `/api/status` and `/api/live`.

Status and live view come from the running appliance (`ApplianceControl.status()` / `.live()`),
with their times in the one UTC format; `/api/live?compact=1` is what the Session page draws.
"""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from device import __version__
from device.web.common import state, utc_fields

COMPACT_WINDOW_KEYS = ("index", "start", "end", "has_mood", "dominant", "valence", "arousal")

bp = Blueprint("api_status", __name__)


@bp.get("/api/health")
def api_health() -> Response:
    return jsonify(ok=True, version=__version__)


@bp.get("/api/status")
def api_status() -> Response:
    status = state().control.status()
    if status.get("session"):
        status = {**status, "session": utc_fields(status["session"], "started_utc")}
    return jsonify(status)


@bp.get("/api/live")
def api_live() -> Response:
    live = state().control.live()
    if live.get("session"):
        live = {**live, "session": utc_fields(live["session"], "started_utc")}
    if request.args.get("compact") in ("1", "true"):  # what the Session page draws, a tenth of the bytes
        live = {**live, "windows": [{k: w.get(k) for k in COMPACT_WINDOW_KEYS} for w in live.get("windows") or []]}
    return jsonify(live)
