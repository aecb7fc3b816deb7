"""The status page's Flask app: HTML pages, the JSON API under /api/, login, CSRF and security headers.

`create_app(control, password_hash=...)` builds the app around a running appliance (the daemon,
an `ApplianceControl`). The app reads the record through its own read-only `Store` per request
and changes the appliance only through `control.start_session` / `control.stop_session`.

Access: `/api/health`, `/login`, `/api/login` and `/static/` are open; every other page and API
call needs a login (pages redirect to /login, the API answers 401). Requests that change state
(POST) also need the login's CSRF token in the `X-CSRF-Token` header or a `csrf_token` form field
(403 without it). Bodies over `max_body_bytes` get 413, failed logins are rate-limited (429 with
Retry-After). Every API error is JSON `{"error": "<one line>"}`; docs/openapi.yaml lists them.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from flask import Flask, Response, abort, g, jsonify, redirect, render_template, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from device import __version__
from device.contract.timestamps import as_utc_timestamp
from device.credentials import parse_password_hash
from device.errors import AffectboxError
from device.labels import CHART_COLOURS, LABEL_COLOURS, LABELS, OTHER_COLOUR, VALENCE_AROUSAL
from device.notice import NOT_A_DIAGNOSIS, NOTICE_SHORT
from device.safe_json import JSONLimitError, loads_bounded
from device.store import (
    PATIENT_ID_PATTERN,
    NotFoundError,
    PatientIdError,
    SessionStateError,
    StorageError,
    Store,
    StoreError,
    validate_patient_id,
)
from device.voice.loading import enroll_and_save, voiceprints_dir
from device.voice.voiceprints import VoiceprintError, VoiceprintStore
from device.voice.voiceprints import check_name as _check_voice_name
from device.web import trend
from device.web.control import ApplianceControl
from device.web.security import (
    COOKIE_NAME,
    CSRF_FIELD,
    CSRF_HEADER,
    LoginRateLimiter,
    LoginSessions,
    PasswordVerifier,
    VerifierBusy,
    client_key,
    set_security_headers,
)

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024
MAX_PASSWORD_CHARS = 1024
SESSION_LIST_DEFAULT = 50
SESSION_LIST_MAX = 500
PACKAGE_DIR = Path(__file__).resolve().parent
VOICE_RECORD_SECONDS = 25  # what a clinician records once at the device (docs/PRIVACY.md)
OPEN_ENDPOINTS = frozenset({"api_health", "login_page", "api_login", "static"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
COMPACT_WINDOW_KEYS = ("index", "start", "end", "has_mood", "dominant", "valence", "arousal")
START_FIELDS = frozenset({"patient_id", "consent", "max_duration_minutes", CSRF_FIELD})
TRUE_WORDS = frozenset({"1", "true", "on", "yes"})
FALSE_WORDS = frozenset({"", "0", "false", "off", "no"})
# the patient id rule (device.store.PATIENT_ID_PATTERN) for an HTML pattern attribute, which browsers
# compile with the RegExp `v` flag: there a '-' inside a class must be escaped
HTML_PATIENT_PATTERN = PATIENT_ID_PATTERN.replace("_-]", "_\\-]")
NOT_PROVISIONED = ("this device is not provisioned: no status page password is set "
                   "(run `affectbox provision` to set one)")


class ApiError(Exception):
    """A refusal with its HTTP status; the message is the one line shown to the user."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _finite(value: Any) -> Any:
    """The value with NaN and infinities replaced by None, recursively (they are not JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


class _JSONProvider(DefaultJSONProvider):
    """Flask's JSON, refusing NaN (browsers cannot parse it) and accepting numpy scalars."""

    @staticmethod
    def default(o: Any) -> Any:
        item = getattr(o, "item", None)  # numpy scalars
        if callable(item) and getattr(o, "shape", None) == ():
            return item()
        return DefaultJSONProvider.default(o)

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("sort_keys", self.sort_keys)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        return json.dumps(_finite(obj), allow_nan=False, **kwargs)


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site: no scheme, host or '//')."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return "/"
    return target


def local_location(location: str) -> str:
    """A redirect target made relative: scheme and host dropped (they come from the request's Host
    header, which anyone can set), and leading slashes collapsed so that `//host/x` cannot become
    a protocol-relative link to another site."""
    parts = urllib.parse.urlsplit(location)
    path = "/" + parts.path.lstrip("/\\") if (parts.scheme or parts.netloc or parts.path.startswith("/")) \
        else parts.path
    return urllib.parse.urlunsplit(("", "", path, parts.query, parts.fragment)) or "/"


def _utc_fields(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`row` with its stored times (`+00:00`) rewritten in the one UTC format of every answer
    (`device.contract.timestamps`: `2025-01-31T09:15:02.123Z`)."""
    return {**row, **{k: as_utc_timestamp(row[k]) for k in keys if k in row}}


def _record_json(record: Any, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    row = _utc_fields(record.to_json(), "started_utc", "ended_utc")
    row.pop("config", None)
    if summary is not None:
        row["summary"] = {k: summary.get(k) for k in ("dominant", "valence", "arousal", "valence_sd", "duration_s",
                                                      "windows_with_mood")}
    else:
        row["summary"] = None
    return row


def create_app(control: ApplianceControl, *, password_hash: str | None, secret_key: bytes | None = None,
               clock: Callable[[], float] = time.monotonic, login_attempts_per_minute: int = 5,
               login_failures_overall_per_minute: int = 60, max_body_bytes: int = MAX_BODY_BYTES) -> Flask:
    """The status page app for `control`.

    `password_hash` is the scrypt line from the credential file (device.credentials); None means
    the device is not provisioned and nobody can log in. A malformed hash raises CredentialError.
    `secret_key` keys the CSRF tokens (random when None: logins then end with the process anyway).
    `clock` (monotonic seconds) drives login expiry and rate limiting, for tests.
    """
    if password_hash is not None:
        parse_password_hash(password_hash)  # fail at start, not at the first login
    config = control.config
    app = Flask(__name__, template_folder=str(PACKAGE_DIR / "templates"), static_folder=str(PACKAGE_DIR / "static"))
    app.json = _JSONProvider(app)
    key = secret_key if secret_key is not None else secrets.token_bytes(32)
    app.secret_key = key
    app.config.update(MAX_CONTENT_LENGTH=max_body_bytes, MAX_FORM_MEMORY_SIZE=max_body_bytes,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    lifetime_s = float(config.web.session_minutes) * 60.0
    logins = LoginSessions(key, lifetime_s, clock)
    limiter = LoginRateLimiter(per_client=login_attempts_per_minute, overall=login_failures_overall_per_minute,
                               window_s=60.0, clock=clock)
    verifier = PasswordVerifier()  # one scrypt at a time on one thread: bounds CPU and memory under a flood
    app.extensions["affectbox"] = {"control": control, "logins": logins, "limiter": limiter}

    # ---- helpers ---------------------------------------------------------------------------

    def is_api() -> bool:
        return request.path == "/api" or request.path.startswith("/api/")

    def store() -> Store:
        if "store" not in g:
            g.store = Store.open(control.store_path, readonly=True,
                                 baseline_min_sessions=config.store.baseline_min_sessions)
        return g.store

    def find_session(db: Store, session_id: str) -> Any:
        try:
            return db.session(session_id)
        except NotFoundError:  # the store's message names its file; the API need not
            raise NotFoundError(f"no session {session_id[:80]!r}") from None

    def fail(status: int, message: str, headers: dict[str, str] | None = None) -> NoReturn:
        raise ApiError(status, message, headers)

    def body() -> dict[str, Any]:
        """The request's fields: a JSON object or a urlencoded form; {} without a body."""
        if request.mimetype == "application/x-www-form-urlencoded":
            return request.form.to_dict()
        raw = request.get_data(cache=True)
        if not raw:
            return {}
        if request.mimetype != "application/json":
            fail(415, "send the request body as JSON (Content-Type: application/json)")
        try:  # size and nesting bounded before parsing (device/safe_json.py)
            data = loads_bounded(raw, max_bytes=max_body_bytes)
        except JSONLimitError as exc:
            message = str(exc).replace("request is", "request body is", 1)
            log.warning("status page: refused a request body from %s on %s: %s", request.remote_addr,
                        request.path, message)
            fail(400, message)
        if not isinstance(data, dict):
            fail(400, f"request body must be a JSON object (got {type(data).__name__})")
        return data

    def flag(value: Any, name: str) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
            return value.strip().lower() in TRUE_WORDS
        fail(400, f"{name} must be true or false (got {json.dumps(value)[:40]})")

    def login_token() -> str | None:
        return request.cookies.get(COOKIE_NAME)

    # ---- request pipeline ------------------------------------------------------------------

    @app.before_request
    def guard() -> Response | None:
        length = request.content_length
        if length is not None and length > max_body_bytes:
            abort(413)
        endpoint = request.endpoint
        if endpoint is None or endpoint in OPEN_ENDPOINTS:
            return None  # unknown paths end as 404/405; open ones need no login
        token = login_token()
        current = logins.get(token)
        if current is None:
            if is_api():
                expired = logins.expired(token) if token else False
                fail(401, "login expired; log in again" if expired else "login required")
            target = request.full_path.rstrip("?") if request.query_string else request.path
            return redirect("/login?next=" + urllib.parse.quote(target, safe="/"), code=303)
        g.login = current
        if request.method in STATE_CHANGING:
            presented = request.headers.get(CSRF_HEADER)
            if presented is None and request.mimetype == "application/x-www-form-urlencoded":
                presented = request.form.get(CSRF_FIELD)
            if not logins.check_csrf(token or "", presented):
                fail(403, f"missing or wrong CSRF token: send the {CSRF_HEADER} header with the token "
                          "given at login (the page's csrf-token meta tag)")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        set_security_headers(response.headers, static=request.endpoint == "static")  # type: ignore[arg-type]
        if "Location" in response.headers:  # redirects stay on this device, whatever Host header a request sent
            response.headers["Location"] = local_location(response.headers["Location"])
        return response

    @app.teardown_appcontext
    def close_store(_exc: BaseException | None) -> None:
        opened = g.pop("store", None)
        if opened is not None:
            opened.close()

    # ---- errors ------------------------------------------------------------------------------

    def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        message = " ".join(str(message).split())
        if is_api():
            response = jsonify(error=message)
        else:
            response = Response(render_template("error.html", status=status, message=message, **page_context()),
                                mimetype="text/html")
        response.status_code = status
        for name, value in (headers or {}).items():
            response.headers[name] = value
        return response

    @app.errorhandler(ApiError)
    def on_api_error(exc: ApiError) -> Response:
        return error_response(exc.status, str(exc), exc.headers)

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "not found", 405: f"method {request.method} not allowed here",
            413: f"request body too large (limit {max_body_bytes} bytes)",
        }
        message = messages.get(status) or (exc.description or exc.name)
        return error_response(status, message)

    @app.errorhandler(AffectboxError)
    def on_refusal(exc: AffectboxError) -> Response:
        if isinstance(exc, PatientIdError):
            status = 400
        elif isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, SessionStateError):
            status = 409
        elif isinstance(exc, StorageError):
            status = 503
        elif isinstance(exc, StoreError):
            status = 400
        else:
            status = 409  # the appliance refused in its current state (e.g. a camera that is not ready)
        return error_response(status, str(exc))

    @app.errorhandler(Exception)
    def on_bug(exc: Exception) -> Response:
        log.exception("status page: unexpected error on %s %s", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the device log")

    # ---- pages -------------------------------------------------------------------------------

    def page_context() -> dict[str, Any]:
        current = g.get("login")
        return {
            "version": __version__, "notice_short": NOTICE_SHORT, "notice": NOT_A_DIAGNOSIS,
            "csrf_token": current.csrf_token if current else "", "logged_in": current is not None,
            "device": config.device,
        }

    def page(template: str, name: str, **extra: Any) -> str:
        return render_template(template, page=name, **page_context(), **extra)

    @app.get("/login")
    def login_page() -> Response | str:
        if logins.get(login_token()) is not None:
            return redirect(safe_next(request.args.get("next")), code=303)
        return page("login.html", "login", provisioned=password_hash is not None,
                    next=safe_next(request.args.get("next")), not_provisioned=NOT_PROVISIONED)

    @app.get("/")
    def status_page() -> str:
        return page("status.html", "status")

    @app.get("/session")
    def session_page() -> str:
        return page("session.html", "session", consent_required=config.session.consent_required,
                    patient_pattern=HTML_PATIENT_PATTERN, max_minutes=config.session.max_duration_minutes)

    @app.get("/history")
    def history_page() -> str:
        return page("history.html", "history", patient_pattern=HTML_PATIENT_PATTERN)

    @app.get("/history/session/<session_id>")
    def session_detail_page(session_id: str) -> str:
        record = find_session(store(), session_id)  # NotFoundError -> 404 page
        return page("session_detail.html", "session-detail", session_id=record.id, patient_id=record.patient_id)

    @app.get("/history/patient/<patient_id>")
    def patient_page(patient_id: str) -> str:
        validate_patient_id(patient_id)
        return page("patient.html", "patient", patient_id=patient_id)

    # ---- API: open -------------------------------------------------------------------------

    @app.get("/api/health")
    def api_health() -> Response:
        return jsonify(ok=True, version=__version__)

    @app.post("/api/login")
    def api_login() -> Response:
        if password_hash is None:
            fail(503, NOT_PROVISIONED)
        who = client_key(request.remote_addr)
        wait = limiter.reserve(who)  # counted as failed (bad bodies too) unless the password is right
        if wait is not None:
            fail(429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)})
        fields = body()
        password = fields.get("password")
        if not isinstance(password, str) or not password:
            fail(400, "password is required (a JSON body {\"password\": \"...\"})")
        if len(password) > MAX_PASSWORD_CHARS:
            fail(400, f"password is longer than {MAX_PASSWORD_CHARS} characters")
        try:
            ok = verifier.verify(password, password_hash)
        except VerifierBusy as exc:
            limiter.forgive(who)  # not a guess: nothing was checked
            fail(503, str(exc), {"Retry-After": "2"})
        if not ok:
            log.warning("status page: failed login from %s", request.remote_addr)
            fail(401, "wrong password")
        limiter.forgive(who)
        logins.end(login_token())
        token, current = logins.create()
        response = jsonify(ok=True, csrf_token=current.csrf_token, expires_in_s=round(lifetime_s))
        response.set_cookie(COOKIE_NAME, token, max_age=int(lifetime_s), path="/", httponly=True,
                            samesite="Strict", secure=request.is_secure)
        log.info("status page: login from %s", request.remote_addr)
        return response

    # ---- API: behind the login ---------------------------------------------------------------

    @app.post("/api/logout")
    def api_logout() -> Response:
        logins.end(login_token())
        response = jsonify(ok=True)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
        return response

    @app.get("/api/status")
    def api_status() -> Response:
        status = control.status()
        if status.get("session"):
            status = {**status, "session": _utc_fields(status["session"], "started_utc")}
        return jsonify(status)

    @app.get("/api/live")
    def api_live() -> Response:
        live = control.live()
        if live.get("session"):
            live = {**live, "session": _utc_fields(live["session"], "started_utc")}
        if request.args.get("compact") in ("1", "true"):  # what the Session page draws, a tenth of the bytes
            live = {**live, "windows": [{k: w.get(k) for k in COMPACT_WINDOW_KEYS} for w in live.get("windows") or []]}
        return jsonify(live)

    @app.get("/api/sessions")
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

    @app.get("/api/sessions/<session_id>")
    def api_session(session_id: str) -> Response:
        db = store()
        record = find_session(db, session_id)
        stored = db.summary(record.id)
        row = _record_json(record)
        row.pop("summary")
        return jsonify(session=row, windows=db.windows(record.id),
                       summary=stored.summary if stored else None,
                       deviation=stored.deviation if stored else None, notice=NOT_A_DIAGNOSIS)

    @app.get("/api/patients/<patient_id>/trend")
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

    @app.post("/api/session/start")
    def api_session_start() -> tuple[Response, int, dict[str, str]]:
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
        started = control.start_session(patient_id, consent=consent, max_duration_s=max_duration_s, source="web")
        log.info("status page: session %s started from %s", started.get("session_id"), request.remote_addr)
        location = f"/api/sessions/{urllib.parse.quote(str(started.get('session_id', '')), safe='')}"
        return jsonify(_utc_fields(started, "started_utc")), 201, {"Location": location}

    @app.post("/api/session/stop")
    def api_session_stop() -> Response:
        fields = body()
        unknown = sorted(set(fields) - {CSRF_FIELD})
        if unknown:
            fail(400, f"unknown field {unknown[0]!r} (stop takes no fields)")
        stopped = control.stop_session(source="web")
        log.info("status page: session %s stopped from %s", stopped.get("session_id"), request.remote_addr)
        return jsonify(stopped)

    # ---- enrolled voices (device/voice, docs/PRIVACY.md): names and dates only, never a voiceprint ----

    def voice_store() -> VoiceprintStore:
        return VoiceprintStore(voiceprints_dir(config))

    def check_voice_name(name: str) -> str:
        try:
            return _check_voice_name(name)
        except VoiceprintError as exc:
            fail(400, str(exc))

    @app.get("/voices")
    def voices_page() -> str:
        return page("voices.html", "voices", record_seconds=VOICE_RECORD_SECONDS,
                    min_speech_s=config.voice.min_enroll_speech_s)

    @app.get("/api/voices")
    def api_voices() -> Response:
        voices = voice_store()
        listing = [v.listing() for v in voices.load()]
        return jsonify(voices=listing, unreadable=len(voices.problems), attribution=config.voice.enabled)

    @app.post("/api/voices")
    def api_voice_enroll() -> tuple[Response, int]:
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
        record = getattr(control, "record_voice", None)
        if record is None:
            fail(503, "this appliance cannot record for an enrollment; use 'affectbox voice enroll FILE'")
        try:
            entry = enroll_and_save(config, name, record(seconds), what=f"{seconds:g} s from the microphone")
        except VoiceprintError as exc:  # too little speech, several voices: the recording was unfit
            fail(422, str(exc))
        log.info("status page: a voice was enrolled from %s", request.remote_addr)
        return jsonify(entry), 201

    @app.post("/api/voices/<name>/delete")
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

    @app.context_processor
    def labels() -> dict[str, Any]:
        return {"chart_colours": CHART_COLOURS,
                "label_info": [{"label": label, "colour": LABEL_COLOURS.get(label, OTHER_COLOUR),
                                "valence": VALENCE_AROUSAL[label][0], "arousal": VALENCE_AROUSAL[label][1]}
                               for label in LABELS]}

    return app
