"""The dashboard's Flask app: login per person, pages for devices, patients, a patient's course,
sessions, exports and the audit log; CSRF, rate limits and security headers from device/web/security.py.

`create_app(config, engine)` builds it. Access: `/login`, `/healthz` and `/static/` are open; every
other page needs a login (a redirect to /login). POSTs need the login's CSRF token (`csrf_token`
form field or the `X-CSRF-Token` header; 403 without). Administrator-only pages answer 403 to
clinicians. Every view or export of a patient's data writes an audit row first.
"""

from __future__ import annotations

import io
import json
import logging
import math
import secrets
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from datetime import UTC, date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

from flask import Flask, Response, abort, g, redirect, render_template, request, send_file
from sqlalchemy import Engine, select
from werkzeug.exceptions import HTTPException

from device.contract.ids import is_opaque_id
from device.contract.timestamps import utc_timestamp
from device.errors import AffectboxError
from device.notice import NOT_A_DIAGNOSIS, NOTICE_SHORT
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
from hub import __version__, schema
from hub.config import HubConfig
from hub.dashboard import accounts, audit, charts, commands, fhir, flags, records, report, research
from hub.dashboard.course import PERIODS, course

log = logging.getLogger("affectbox.hub.dashboard")

PACKAGE_DIR = Path(__file__).resolve().parent
DEVICE_STATIC = Path(str(resources.files("device.web").joinpath("static")))  # the device page's styles
MAX_BODY_BYTES = 16 * 1024
MAX_NOTE_CHARS = 2000
OPEN_ENDPOINTS = frozenset({"login_page", "login_submit", "static", "healthz", "base_css"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
QUESTIONNAIRE_MAX = {"PHQ-9": 27, "GAD-7": 21}
PRELOGIN_COOKIE = "affectbox_hub_prelogin"
DEVICES_REFRESH_S = 30  # the Devices list reloads itself (devices report every 30 s)
COMMAND_REFRESH_S = 2  # while a command's result is awaited


class PageError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def rule_params(config: HubConfig) -> flags.RuleParams:
    d = config.dashboard
    return flags.RuleParams(baseline_sessions=d.baseline_sessions, lam=d.ewma_lambda, limit_sds=d.ewma_limit_sds,
                            run_length=d.run_length, min_coverage=d.min_coverage)


def acknowledged(conn: Any, patient_id: str | None = None) -> dict[str, dict[str, dict[str, Any]]]:
    """patient -> flag key -> acknowledgement row."""
    a = schema.review_acks.c
    query = select(schema.review_acks)
    if patient_id:
        query = query.where(a.patient_id == patient_id)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for row in conn.execute(query).mappings():
        out.setdefault(row["patient_id"], {})[row["flag_key"]] = dict(row)
    return out


def questionnaires(conn: Any, patient_id: str) -> list[dict[str, Any]]:
    q = schema.questionnaires.c
    return [dict(r) for r in conn.execute(select(schema.questionnaires).where(q.patient_id == patient_id)
                                          .order_by(q.taken_on, q.id)).mappings()]


def create_app(config: HubConfig, engine: Engine, *, secret_key: bytes | None = None,
               clock: Callable[[], float] = time.monotonic,
               now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> Flask:
    d = config.dashboard
    app = Flask(__name__, template_folder=str(PACKAGE_DIR / "templates"), static_folder=str(PACKAGE_DIR / "static"))
    key = secret_key if secret_key is not None else secrets.token_bytes(32)
    app.secret_key = key
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, MAX_FORM_MEMORY_SIZE=MAX_BODY_BYTES,
                      SEND_FILE_MAX_AGE_DEFAULT=0)
    lifetime_s = d.session_minutes * 60.0
    logins = LoginSessions(key, lifetime_s, clock, max_logins=256)
    limiter = LoginRateLimiter(per_client=d.login_attempts_per_minute, overall=d.login_failures_overall_per_minute,
                               window_s=60.0, clock=clock)
    who_by_login: dict[str, str] = {}  # a login's CSRF token (unique per login) -> user name
    verifier = PasswordVerifier()  # one scrypt at a time on one thread: bounded CPU and memory (device/web)
    params = rule_params(config)
    app.extensions["affectbox-hub"] = {"logins": logins, "limiter": limiter}

    # ---- helpers ---------------------------------------------------------------------------

    def fail(status: int, message: str, headers: dict[str, str] | None = None) -> NoReturn:
        raise PageError(status, message, headers)

    def user() -> accounts.User:
        return g.user

    def need_admin() -> None:
        if not user().is_admin:
            fail(403, "only an administrator may do this")

    def patient_arg(value: str) -> str:
        if not is_opaque_id(value):
            fail(400, f"patient id must be 1-64 characters of A-Z a-z 0-9 . _ - (got {value[:40]!r})")
        return value

    def period_arg() -> str:
        period = request.args.get("period", "month")
        if period not in PERIODS:
            fail(400, f"period must be one of {', '.join(PERIODS)} (got {period[:20]!r})")
        return period

    def note(action: str, patient_id: str | None = None, target: str | None = None) -> None:
        audit.record(engine, user().username, action, patient_id=patient_id, target=target or request.full_path,
                     client=request.remote_addr)

    def page(template: str, name: str, **extra: Any) -> str:
        return render_template(template, page=name, **context(), **extra)

    def context() -> dict[str, Any]:
        current = g.get("login")
        return {"version": __version__, "notice": NOT_A_DIAGNOSIS, "notice_short": NOTICE_SHORT,
                "csrf_token": current.csrf_token if current else "", "user": g.get("user"),
                "legend": charts.legend()}

    # ---- request pipeline ------------------------------------------------------------------

    @app.before_request
    def guard() -> Response | None:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            abort(413)
        if request.endpoint is None or request.endpoint in OPEN_ENDPOINTS:
            return None
        token = request.cookies.get(COOKIE_NAME)
        current = logins.get(token)
        name = who_by_login.get(current.csrf_token) if current else None
        person = accounts.get_user(engine, name) if name else None
        if current is None or person is None or not person.active:
            if current is not None:
                logins.end(token)
            target = request.full_path.rstrip("?") if request.query_string else request.path
            return redirect("/login?next=" + urllib.parse.quote(target, safe="/"), code=303)
        g.login, g.user = current, person
        if request.method in STATE_CHANGING:
            presented = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD)
            if not logins.check_csrf(token or "", presented):
                fail(403, "missing or wrong CSRF token: reload the page and try again")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        set_security_headers(response.headers, static=request.endpoint in ("static", "base_css"))  # type: ignore[arg-type]
        return response

    def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
        response = Response(render_template("error.html", page="error", status=status,
                                            message=" ".join(str(message).split()), **context()),
                            mimetype="text/html", status=status)
        for k, v in (headers or {}).items():
            response.headers[k] = v
        return response

    @app.errorhandler(PageError)
    def on_page_error(exc: PageError) -> Response:
        return error_response(exc.status, str(exc), exc.headers)

    @app.errorhandler(HTTPException)
    def on_http(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {404: "not found", 405: f"method {request.method} not allowed here",
                    413: f"request body too large (limit {MAX_BODY_BYTES} bytes)"}
        return error_response(status, messages.get(status) or exc.description or exc.name)

    @app.errorhandler(AffectboxError)
    def on_refusal(exc: AffectboxError) -> Response:
        return error_response(400 if isinstance(exc, accounts.AccountError) else 409, str(exc))

    @app.errorhandler(Exception)
    def on_bug(exc: Exception) -> Response:
        log.exception("dashboard: unexpected error on %s %s", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the hub log")

    # ---- open ------------------------------------------------------------------------------

    @app.get("/healthz")
    def healthz() -> Response:
        return Response(json.dumps({"ok": True, "version": __version__}), mimetype="application/json")

    @app.get("/static/base.css")
    def base_css() -> Response:
        return send_file(DEVICE_STATIC / "style.css", mimetype="text/css")  # the device page's styles, reused

    def safe_next(target: str | None) -> str:
        if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
            return "/"
        parts = urllib.parse.urlsplit(target)
        return "/" if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target) else target

    def login_form(target: str, error: str | None, status: int = 200,
                   headers: dict[str, str] | None = None) -> Response:
        """The login page; its form carries a token tied to a pre-login cookie (login CSRF)."""
        pre = request.cookies.get(PRELOGIN_COOKIE) or ""
        if not 20 <= len(pre) <= 128:
            pre = secrets.token_urlsafe(32)
        response = Response(page("login.html", "login", next=target, error=error, login_token=logins.csrf_for(pre)),
                            status=status, mimetype="text/html", headers=headers)
        response.set_cookie(PRELOGIN_COOKIE, pre, max_age=3600, path="/login", httponly=True, samesite="Strict",
                            secure=request.is_secure)
        return response

    @app.get("/login")
    def login_page() -> Response:
        return login_form(safe_next(request.args.get("next")), None)

    @app.post("/login")
    def login_submit() -> Response:
        who = client_key(request.remote_addr)
        target = safe_next(request.form.get("next"))
        pre = request.cookies.get(PRELOGIN_COOKIE) or ""
        if not 20 <= len(pre) <= 128 or not logins.check_csrf(pre, request.form.get(CSRF_FIELD)):
            return login_form(target, "The login form had expired; please log in again.", 403)
        wait = limiter.reserve(who)  # counted as failed unless the password is right (holds under concurrency)
        if wait is not None:
            return login_form(target, f"Too many failed logins; try again in {wait} s.", 429,
                              {"Retry-After": str(wait)})
        name = (request.form.get("username") or "").strip().lower()
        password = request.form.get("password") or ""
        try:
            person = accounts.authenticate(engine, name, password, verify=verifier.verify)
        except VerifierBusy as exc:
            limiter.forgive(who)  # not a guess: nothing was checked
            return login_form(target, str(exc), 503, {"Retry-After": "2"})
        if person is None:
            audit.record(engine, name[:64] if accounts.USERNAME_RE.fullmatch(name) else None, "login_failed",
                         client=request.remote_addr)
            return login_form(target, "Wrong user name or password.", 401)
        limiter.forgive(who)
        logins.end(request.cookies.get(COOKIE_NAME))
        token, current = logins.create()
        if len(who_by_login) > 4 * 256:  # forget logins LoginSessions has dropped
            for k in list(who_by_login)[: len(who_by_login) // 2]:
                who_by_login.pop(k, None)
        who_by_login[current.csrf_token] = person.username
        audit.record(engine, person.username, "login", client=request.remote_addr)
        response = redirect(target, code=303)
        response.delete_cookie(PRELOGIN_COOKIE, path="/login")
        response.set_cookie(COOKIE_NAME, token, max_age=int(lifetime_s), path="/", httponly=True, samesite="Strict",
                            secure=request.is_secure)
        return response

    @app.post("/logout")
    def logout() -> Response:
        token = request.cookies.get(COOKIE_NAME)
        who_by_login.pop(g.login.csrf_token, None)
        logins.end(token)
        audit.record(engine, user().username, "logout", client=request.remote_addr)
        response = redirect("/login", code=303)
        response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
        return response

    # ---- devices ---------------------------------------------------------------------------

    @app.get("/")
    def home() -> Response:
        return redirect("/patients", code=303)

    @app.get("/devices")
    def devices_page() -> str:
        with engine.connect() as conn:
            rows = records.devices(conn, now(), d.silent_after_s)
        return page("devices.html", "devices", devices=rows, refresh=DEVICES_REFRESH_S)  # silence shows by itself

    @app.get("/devices/<device_id>")
    def device_page(device_id: str) -> str:
        with engine.connect() as conn:
            rows = [v for v in records.devices(conn, now(), d.silent_after_s) if v.device_id == device_id]
        if not rows:
            fail(404, f"no device {device_id[:64]!r}")
        recent = commands.recent(engine, device_id, _ago_iso(now(), d.command_wait_s))
        waiting = any(r["waiting"] for r in recent)
        # reloads only while a result is awaited (not while someone types a patient id into the form)
        return page("device.html", "devices", device=rows[0], recent=recent,
                    refresh=COMMAND_REFRESH_S if waiting else None)

    def _command(device_id: str, command: str) -> Response:
        with engine.connect() as conn:
            known = conn.execute(select(schema.devices.c.admission).where(
                schema.devices.c.device_id == device_id)).scalar()
        if known != "approved":
            fail(404, f"no approved device {device_id[:64]!r}")
        patient_id, max_s = None, None
        if command == "start_session":
            patient_id = patient_arg((request.form.get("patient_id") or "").strip())
            raw = (request.form.get("max_duration_minutes") or "").strip()
            if raw:
                try:
                    minutes = float(raw)
                except ValueError:
                    minutes = math.nan
                if not math.isfinite(minutes) or not 1 <= minutes <= 1440:
                    fail(400, f"maximum duration must be 1 to 1440 minutes (got {raw[:20]!r})")
                max_s = minutes * 60
        commands.send(engine, config, device_id, command, user().username, patient_id=patient_id,
                      max_duration_s=max_s)
        note("command", patient_id, f"{command} at {device_id}")
        return redirect(f"/devices/{urllib.parse.quote(device_id)}", code=303)

    @app.post("/devices/<device_id>/start")
    def device_start(device_id: str) -> Response:
        return _command(device_id, "start_session")

    @app.post("/devices/<device_id>/stop")
    def device_stop(device_id: str) -> Response:
        return _command(device_id, "stop_session")

    # ---- patients --------------------------------------------------------------------------

    @app.get("/patients")
    def patients_page() -> str:
        with engine.connect() as conn:
            rows = records.patients(conn)
            means = records.session_means(conn)
            acks = acknowledged(conn)
        for row in rows:
            chart = flags.evaluate(means.get(row["patient_id"], []), params)
            row["open_flags"] = flags.open_flags(chart, set(acks.get(row["patient_id"], {})))
            row["baseline_pending"] = chart.baseline_pending
        note("view", None, "/patients (list)")
        return page("patients.html", "patients", patients=rows)

    def load_course(patient_id: str, period: str) -> dict[str, Any]:
        with engine.connect() as conn:
            points = records.patient_sessions(conn, patient_id)
            ref = records.clinic_ref(conn, patient_id)
            acks = acknowledged(conn, patient_id).get(patient_id, {})
            scores = questionnaires(conn, patient_id)
        if not points and ref is None and not scores:
            fail(404, f"no sessions for patient {patient_id!r}")
        series = [(p.key, p.at, p.valence, p.coverage.get("mood")) for p in points if p.summary_event_id]
        chart = flags.evaluate(series, params)
        data = course(points, chart, period)
        data.update(patient_id=patient_id, clinic_ref=ref, chart=chart, acks=acks, questionnaires=scores,
                    open_flags=flags.open_flags(chart, set(acks)), params=params, points=points,
                    running=[p for p in points if p.end_event is None and p.summary_event_id is None])
        data["valence_svg"] = charts.course_chart(data["sessions"], chart, data["periods"], field="valence",
                                                  questionnaires=scores, changes=data["model_changes"])
        data["arousal_svg"] = charts.course_chart(data["sessions"], chart, data["periods"], field="arousal",
                                                  changes=data["model_changes"])
        data["mood_svg"] = charts.mood_bars(data["periods"])
        data["coverage_svg"] = charts.series([(r["period"], r["coverage"]) for r in data["periods"]],
                                             "mood coverage", 0, 1)
        data["prosody_svgs"] = [
            (label, charts.series([(r["period"], r["prosody"].get(k)) for r in data["periods"]], label))
            for k, label in (("f0_sd_st", "pitch variability (semitones SD)"),
                             ("speaking_rate", "speaking rate (syllables/s)"), ("pause_ratio", "pause ratio"))]
        return data

    @app.get("/patients/<patient_id>")
    def patient_page(patient_id: str) -> str:
        patient_arg(patient_id)
        period = period_arg()
        data = load_course(patient_id, period)
        note("view", patient_id)
        return page("patient.html", "patients", **data)

    @app.post("/patients/<patient_id>/acknowledge")
    def acknowledge(patient_id: str) -> Response:
        patient_arg(patient_id)
        key = request.form.get("flag_key") or ""
        text = " ".join((request.form.get("note") or "").split())
        if not text:
            fail(400, "an acknowledgement needs a note (what was reviewed, what was decided)")
        if len(text) > MAX_NOTE_CHARS:
            fail(400, f"the note is longer than {MAX_NOTE_CHARS} characters")
        data = load_course(patient_id, "month")
        if key not in {f.key for f in data["chart"].flags}:
            fail(404, "no such review flag for this patient")
        with engine.begin() as conn:
            if key in acknowledged(conn, patient_id).get(patient_id, {}):
                fail(409, "this flag was already acknowledged")
            conn.execute(schema.review_acks.insert().values(patient_id=patient_id, flag_key=key, at=utc_timestamp(),
                                                            username=user().username, note=text))
            audit.record(conn, user().username, "acknowledge", patient_id=patient_id, target=key,
                         client=request.remote_addr)
        return redirect(f"/patients/{patient_id}", code=303)

    @app.post("/patients/<patient_id>/questionnaire")
    def add_questionnaire(patient_id: str) -> Response:
        patient_arg(patient_id)
        instrument = request.form.get("instrument", "")
        if instrument not in QUESTIONNAIRE_MAX:
            fail(400, f"instrument must be PHQ-9 or GAD-7 (got {instrument[:20]!r})")
        raw = (request.form.get("total") or "").strip()
        if not raw.isdigit() or not 0 <= int(raw) <= QUESTIONNAIRE_MAX[instrument]:
            fail(400, f"the {instrument} total must be a whole number from 0 to {QUESTIONNAIRE_MAX[instrument]} "
                      f"(got {raw[:20]!r})")
        taken = (request.form.get("taken_on") or "").strip()
        try:
            day = date.fromisoformat(taken)
        except ValueError:
            fail(400, f"the date must be YYYY-MM-DD (got {taken[:20]!r})")
        if day > now().date():
            fail(400, f"the date {taken} is in the future")
        with engine.begin() as conn:
            conn.execute(schema.questionnaires.insert().values(patient_id=patient_id, instrument=instrument,
                                                               total=int(raw), taken_on=day.isoformat(),
                                                               entered_by=user().username, entered_at=utc_timestamp()))
            audit.record(conn, user().username, "enter", patient_id=patient_id, target=f"{instrument} {raw} {day}",
                         client=request.remote_addr)
        return redirect(f"/patients/{patient_id}", code=303)

    @app.post("/patients/<patient_id>/reference")
    def set_reference(patient_id: str) -> Response:
        need_admin()
        patient_arg(patient_id)
        ref = " ".join((request.form.get("clinic_ref") or "").split())
        if len(ref) > 128 or any(ord(c) < 32 for c in ref):
            fail(400, "the clinic reference must be at most 128 printable characters")
        t = schema.patient_refs
        with engine.begin() as conn:
            conn.execute(t.delete().where(t.c.patient_id == patient_id))
            if ref:
                conn.execute(t.insert().values(patient_id=patient_id, clinic_ref=ref, updated_at=utc_timestamp(),
                                               updated_by=user().username))
            audit.record(conn, user().username, "admin", patient_id=patient_id,
                         target="clinic reference " + ("set" if ref else "removed"), client=request.remote_addr)
        return redirect(f"/patients/{patient_id}", code=303)

    # ---- sessions --------------------------------------------------------------------------

    def session_view(conn: Any, key: str) -> dict[str, Any]:
        device_id, _, session_id = key.partition("/")
        if not (is_opaque_id(device_id) and is_opaque_id(session_id)):
            fail(400, f"a session is <device id>/<session id> (got {key[:80]!r})")
        row = records.session(conn, device_id, session_id)
        if row is None:
            fail(404, f"no session {key[:130]!r}")
        windows = records.session_windows(conn, device_id, session_id)
        point = records.session_point(conn, device_id, session_id)
        return {"key": key, "row": row, "windows": windows, "point": point, "svg": charts.timeline(windows)}

    @app.get("/sessions/<device_id>/<session_id>")
    def session_page(device_id: str, session_id: str) -> str:
        with engine.connect() as conn:
            view = session_view(conn, f"{device_id}/{session_id}")
        note("view", view["row"]["patient_id"])
        return page("session.html", "patients", views=[view])

    @app.get("/compare")
    def compare_page() -> str:
        keys = [request.args.get("a", ""), request.args.get("b", "")]
        with engine.connect() as conn:
            views = [session_view(conn, k) for k in keys]
        patients = {v["row"]["patient_id"] for v in views}
        for p in patients:
            note("view", p)
        return page("session.html", "patients", views=views)

    # ---- exports ---------------------------------------------------------------------------

    @app.get("/patients/<patient_id>/fhir")
    def fhir_export(patient_id: str) -> Response:
        patient_arg(patient_id)
        data = load_course(patient_id, "month")
        document = fhir.bundle(patient_id, data["clinic_ref"], data["sessions"], data["questionnaires"])
        fhir.validate(document)  # never hand out a Bundle the R4B models refuse
        note("export", patient_id, "FHIR R4 transaction Bundle")
        return Response(json.dumps(document, indent=1), mimetype="application/fhir+json",
                        headers={"Content-Disposition": f'attachment; filename="{patient_id}-fhir.json"'})

    @app.get("/patients/<patient_id>/report")
    def report_page(patient_id: str) -> str:
        patient_arg(patient_id)
        period = request.args.get("period", "month")
        if period not in ("month", "year"):
            fail(400, f"a report is by month or year (got {period[:20]!r})")
        data = load_course(patient_id, period)
        note("view", patient_id, f"printable report by {period}")
        return page("report.html", "report", pages=_report_pages(data, period), **data)

    @app.get("/patients/<patient_id>/report.pdf")
    def report_pdf(patient_id: str) -> Response:
        patient_arg(patient_id)
        period = request.args.get("period", "month")
        if period not in ("month", "year"):
            fail(400, f"a report is by month or year (got {period[:20]!r})")
        data = load_course(patient_id, period)
        note("export", patient_id, f"PDF report by {period}")
        html = page("report.html", "report", pages=_report_pages(data, period), static_base=".", **data)
        with tempfile.TemporaryDirectory(prefix="affectbox-pdf-") as folder:
            out = report.print_pdf(html, [DEVICE_STATIC / "style.css", PACKAGE_DIR / "static" / "dashboard.css"],
                                   Path(folder) / "report.pdf", d.chromium)
            body = out.read_bytes()
        return Response(body, mimetype="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="{patient_id}-{period}.pdf"'})

    @app.get("/exports")
    def exports_page() -> str:
        return page("exports.html", "exports", levels=research.LEVELS)

    @app.get("/exports/<level>.<fmt>")
    def export_file(level: str, fmt: str) -> Response:
        if level not in research.LEVELS or fmt not in ("csv", "parquet", "json"):
            fail(404, "no such export (levels: window, session, patient-month; formats: csv, parquet)")
        with_mapping = request.args.get("mapping") == "1"
        if with_mapping:
            need_admin()
        if fmt == "json":  # the codebook
            body = json.dumps(research.codebook(level), indent=1)
            return Response(body, mimetype="application/json")
        with engine.connect() as conn:
            table = research.table(conn, level, with_mapping=with_mapping)
        note("export", None, f"research {level}.{fmt}" + (" with clinic mapping" if with_mapping else ""))
        buffer = io.BytesIO()
        research.write(table, buffer, fmt, level, with_mapping)
        buffer.seek(0)
        return send_file(buffer, mimetype="text/csv" if fmt == "csv" else "application/vnd.apache.parquet",
                         as_attachment=True, download_name=f"affectbox-{level}.{fmt}")

    # ---- administration --------------------------------------------------------------------

    @app.get("/audit")
    def audit_page() -> str:
        need_admin()
        patient = request.args.get("patient") or None
        if patient:
            patient_arg(patient)
        rows = audit.read(engine, patient_id=patient, limit=500)
        return page("audit.html", "audit", rows=rows, patient=patient)

    return app


def _ago_iso(moment: datetime, seconds: float) -> str:
    from datetime import timedelta

    return utc_timestamp(moment - timedelta(seconds=seconds))


def _report_pages(data: dict[str, Any], period: str) -> list[dict[str, Any]]:
    """One printed page per month or year: that period's sessions, numbers and charts."""
    pages = []
    for row in data["periods"]:
        sessions = [p for p in data["sessions"] if p.at[:7 if period == "month" else 4] == row["period"]]
        pages.append({"row": row, "sessions": sessions,
                      "flags": [f for f in data["chart"].flags if f.at.startswith(row["period"])],
                      "svg": charts.course_chart(sessions, data["chart"], [row], field="valence",
                                                 changes=[c for c in data["model_changes"]
                                                          if c["at"].startswith(row["period"])])})
    return pages
