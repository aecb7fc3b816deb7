"""What every blueprint of the status page shares: the app's state, request bodies, refusals, the store, pages.

`create_app` (device/web/app.py) puts one `WebState` in `app.extensions["affectbox"]`; views reach it
through `state()` (the current app's), never through module globals, so that several apps (tests,
the daemon) live side by side. A view refuses with `fail(status, message)`: an `ApiError` that the
app's error handlers (device/web/errors.py) turn into `{"error": "<one line>"}` or the error page.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from flask import current_app, g, render_template, request

from device import __version__
from device.config import Config
from device.contract.timestamps import as_utc_timestamp
from device.notice import NOT_A_DIAGNOSIS, NOTICE_SHORT
from device.safe_json import JSONLimitError, loads_bounded
from device.store import NotFoundError, Store
from device.web.control import ApplianceControl
from device.web.security import COOKIE_NAME, LoginRateLimiter, LoginSessions, PasswordVerifier

log = logging.getLogger(__name__)

EXTENSION = "affectbox"
TRUE_WORDS = frozenset({"1", "true", "on", "yes"})
FALSE_WORDS = frozenset({"", "0", "false", "off", "no"})
NOT_PROVISIONED = ("this device is not provisioned: no status page password is set "
                   "(run `affectbox provision` to set one)")


@dataclass(frozen=True)
class WebState:
    """One app's shared objects: the appliance, its config, logins and their limits."""

    control: ApplianceControl
    config: Config
    password_hash: str | None  # None: not provisioned, nobody can log in
    logins: LoginSessions
    limiter: LoginRateLimiter
    verifier: PasswordVerifier  # one scrypt at a time on one thread: bounds CPU and memory under a flood
    lifetime_s: float  # how long a login lasts
    max_body_bytes: int


def state() -> WebState:
    """The current app's `WebState` (set by `create_app`)."""
    shared: WebState = current_app.extensions[EXTENSION]
    return shared


class ApiError(Exception):
    """A refusal with its HTTP status; the message is the one line shown to the user."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def fail(status: int, message: str, headers: dict[str, str] | None = None) -> NoReturn:
    raise ApiError(status, message, headers)


def is_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def login_token() -> str | None:
    return request.cookies.get(COOKIE_NAME)


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
        data = loads_bounded(raw, max_bytes=state().max_body_bytes)
    except JSONLimitError as exc:
        message = str(exc).replace("request is", "request body is", 1)
        log.warning("status page: refused a request body from %s on %s: %s", request.remote_addr,
                    request.path, message)
        fail(400, message)
    if not isinstance(data, dict):
        fail(400, f"request body must be a JSON object (got {type(data).__name__})")
    return data


def flag(value: Any, name: str) -> bool:
    """A yes/no field: a JSON boolean or a form word (true/false, on/off, 1/0, ...)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS | FALSE_WORDS:
        return value.strip().lower() in TRUE_WORDS
    fail(400, f"{name} must be true or false (got {json.dumps(value)[:40]})")


def store() -> Store:
    """This request's read-only view of the record (closed when the request ends: see app.py)."""
    if "store" not in g:
        shared = state()
        g.store = Store.open(shared.control.store_path, readonly=True,
                             baseline_min_sessions=shared.config.store.baseline_min_sessions)
    return g.store


def find_session(db: Store, session_id: str) -> Any:
    try:
        return db.session(session_id)
    except NotFoundError:  # the store's message names its file; the API need not
        raise NotFoundError(f"no session {session_id[:80]!r}") from None


def utc_fields(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    """`row` with its stored times (`+00:00`) rewritten in the one UTC format of every answer
    (`device.contract.timestamps`: `2025-01-31T09:15:02.123Z`)."""
    return {**row, **{k: as_utc_timestamp(row[k]) for k in keys if k in row}}


def page_context() -> dict[str, Any]:
    """What every template gets: version, the not-a-diagnosis notice, the login's CSRF token, the device."""
    current = g.get("login")
    return {
        "version": __version__, "notice_short": NOTICE_SHORT, "notice": NOT_A_DIAGNOSIS,
        "csrf_token": current.csrf_token if current else "", "logged_in": current is not None,
        "device": state().config.device,
    }


def page(template: str, name: str, **extra: Any) -> str:
    return render_template(template, page=name, **page_context(), **extra)
