"""Who may use the status page: the login page, `/api/login` and `/api/logout`, and the guard before every request.

The guard (`require_login`, run for every request of the app) lets the open endpoints through
(`OPEN_ENDPOINTS`: health, the login page and call, static files) and unknown paths on to their
404/405; everything else needs a login (pages redirect to `/login?next=...`, the API answers 401),
and a POST also the login's CSRF token (403). Failed logins are rate-limited per client and overall
(429 with Retry-After); the password is checked by the app's one `PasswordVerifier`.
"""

from __future__ import annotations

import logging
import urllib.parse

from flask import Blueprint, Response, g, jsonify, redirect, request
from werkzeug.wrappers import Response as BaseResponse

from device.web.common import NOT_PROVISIONED, body, fail, is_api, login_token, page, state
from device.web.security import COOKIE_NAME, CSRF_FIELD, CSRF_HEADER, VerifierBusy, client_key

log = logging.getLogger(__name__)

MAX_PASSWORD_CHARS = 1024
OPEN_ENDPOINTS = frozenset({"api_status.api_health", "auth.login_page", "auth.api_login", "static"})
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

bp = Blueprint("auth", __name__)


def safe_next(target: str | None) -> str:
    """A local path to go to after logging in (never another site: no scheme, host or '//')."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in target):
        return "/"
    return target


@bp.before_app_request
def require_login() -> BaseResponse | None:
    endpoint = request.endpoint
    if endpoint is None or endpoint in OPEN_ENDPOINTS:
        return None  # unknown paths end as 404/405; open ones need no login
    logins = state().logins
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


@bp.get("/login")
def login_page() -> BaseResponse | str:
    if state().logins.get(login_token()) is not None:
        return redirect(safe_next(request.args.get("next")), code=303)
    return page("login.html", "login", provisioned=state().password_hash is not None,
                next=safe_next(request.args.get("next")), not_provisioned=NOT_PROVISIONED)


@bp.post("/api/login")
def api_login() -> Response:
    shared = state()
    if shared.password_hash is None:
        fail(503, NOT_PROVISIONED)
    who = client_key(request.remote_addr)
    wait = shared.limiter.reserve(who)  # counted as failed (bad bodies too) unless the password is right
    if wait is not None:
        fail(429, f"too many failed logins; try again in {wait} s", {"Retry-After": str(wait)})
    fields = body()
    password = fields.get("password")
    if not isinstance(password, str) or not password:
        fail(400, "password is required (a JSON body {\"password\": \"...\"})")
    if len(password) > MAX_PASSWORD_CHARS:
        fail(400, f"password is longer than {MAX_PASSWORD_CHARS} characters")
    try:
        ok = shared.verifier.verify(password, shared.password_hash)
    except VerifierBusy as exc:
        shared.limiter.forgive(who)  # not a guess: nothing was checked
        fail(503, str(exc), {"Retry-After": "2"})
    if not ok:
        log.warning("status page: failed login from %s", request.remote_addr)
        fail(401, "wrong password")
    shared.limiter.forgive(who)
    shared.logins.end(login_token())
    token, current = shared.logins.create()
    response = jsonify(ok=True, csrf_token=current.csrf_token, expires_in_s=round(shared.lifetime_s))
    response.set_cookie(COOKIE_NAME, token, max_age=int(shared.lifetime_s), path="/", httponly=True,
                        samesite="Strict", secure=request.is_secure)
    log.info("status page: login from %s", request.remote_addr)
    return response


@bp.post("/api/logout")
def api_logout() -> Response:
    state().logins.end(login_token())
    response = jsonify(ok=True)
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="Strict")
    return response
