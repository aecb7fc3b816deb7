"""The status page's Flask app: a short factory that configures it and registers its blueprints.

`create_app(control, password_hash=...)` builds the app around a running appliance (the daemon,
an `ApplianceControl`): limits, JSON that refuses NaN, security headers (CSP and the rest, from
device/web/security.py), relative redirects, the error handlers (errors.py), and one `WebState`
(common.py) in `app.extensions["affectbox"]` that the blueprints share: the control, the config,
the logins and the login rate limiter. The routes live in one module per area:

- `auth.py`: the login guard before every request (login, CSRF), `/login`, `/api/login`, `/api/logout`
- `pages.py`: the HTML pages (Status, Session, History, a session, a patient, Voices)
- `api_status.py`: `/api/health` (open), `/api/status`, `/api/live`
- `api_session.py`: `/api/session/start`, `/api/session/stop`
- `api_history.py`: `/api/sessions`, `/api/sessions/<id>`, `/api/patients/<id>/trend`
- `api_voices.py`: `/api/voices` (list, enroll), `/api/voices/<name>/delete`

The app reads the record through its own read-only `Store` per request and changes the appliance
only through `control.start_session` / `control.stop_session`. Every API error is JSON
`{"error": "<one line>"}`; docs/openapi.json lists them.
"""

from __future__ import annotations

import json
import math
import secrets
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, g, request
from flask.json.provider import DefaultJSONProvider

from device.credentials import parse_password_hash
from device.web import api_history, api_session, api_status, api_voices, auth, pages
from device.web.common import EXTENSION, WebState
from device.web.control import ApplianceControl
from device.web.errors import register_error_handlers
from device.web.security import LoginRateLimiter, LoginSessions, PasswordVerifier, set_security_headers

MAX_BODY_BYTES = 16 * 1024
PACKAGE_DIR = Path(__file__).resolve().parent
BLUEPRINTS = (auth.bp, pages.bp, api_status.bp, api_session.bp, api_history.bp, api_voices.bp)


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


def local_location(location: str) -> str:
    """A redirect target made relative: scheme and host dropped (they come from the request's Host
    header, which anyone can set), and leading slashes collapsed so that `//host/x` cannot become
    a protocol-relative link to another site."""
    parts = urllib.parse.urlsplit(location)
    path = "/" + parts.path.lstrip("/\\") if (parts.scheme or parts.netloc or parts.path.startswith("/")) \
        else parts.path
    return urllib.parse.urlunsplit(("", "", path, parts.query, parts.fragment)) or "/"



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
    app.extensions[EXTENSION] = WebState(
        control=control, config=config, password_hash=password_hash,
        logins=LoginSessions(key, lifetime_s, clock),
        limiter=LoginRateLimiter(per_client=login_attempts_per_minute, overall=login_failures_overall_per_minute,
                                 window_s=60.0, clock=clock),
        verifier=PasswordVerifier(), lifetime_s=lifetime_s, max_body_bytes=max_body_bytes)

    @app.before_request
    def limit_body() -> None:  # before the login guard (auth.py): an oversized body is 413 even without a login
        length = request.content_length
        if length is not None and length > max_body_bytes:
            abort(413)

    @app.after_request
    def headers(response: Response) -> Response:
        set_security_headers(response.headers, static=request.endpoint == "static")  # type: ignore[arg-type]
        if "Location" in response.headers:  # redirects stay on this device, whatever Host header a request sent
            response.headers["Location"] = local_location(response.headers["Location"])
        return response

    @app.teardown_appcontext
    def close_store(_exc: BaseException | None) -> None:
        opened = g.pop("store", None)  # common.store() opened it for this request
        if opened is not None:
            opened.close()

    register_error_handlers(app)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    return app
