"""How the status page refuses: every error as `{"error": "<one line>"}` under /api/, the error page elsewhere.

`register_error_handlers(app)` maps the refusals to their statuses: `ApiError` keeps its own,
HTTP errors (404, 405, 413, ...) get a short message, the appliance's and the store's refusals
(`AffectboxError`) 400/404/409/503, and anything unexpected 500 with the traceback in the log only.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

from device.errors import AffectboxError
from device.store import NotFoundError, PatientIdError, SessionStateError, StorageError, StoreError
from device.web.common import ApiError, is_api, page_context, state

log = logging.getLogger(__name__)


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


def refusal_status(exc: AffectboxError) -> int:
    """The HTTP status for a refusal by the appliance or the store."""
    if isinstance(exc, PatientIdError):
        return 400
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, SessionStateError):
        return 409
    if isinstance(exc, StorageError):
        return 503
    if isinstance(exc, StoreError):
        return 400
    return 409  # the appliance refused in its current state (e.g. a camera that is not ready)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def on_api_error(exc: ApiError) -> Response:
        return error_response(exc.status, str(exc), exc.headers)

    @app.errorhandler(HTTPException)
    def on_http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        messages = {
            404: "not found", 405: f"method {request.method} not allowed here",
            413: f"request body too large (limit {state().max_body_bytes} bytes)",
        }
        message = messages.get(status) or (exc.description or exc.name)
        return error_response(status, message)

    @app.errorhandler(AffectboxError)
    def on_refusal(exc: AffectboxError) -> Response:
        return error_response(refusal_status(exc), str(exc))

    @app.errorhandler(Exception)
    def on_bug(exc: Exception) -> Response:
        log.exception("status page: unexpected error on %s %s", request.method, request.path)
        return error_response(500, f"internal error ({type(exc).__name__}); see the device log")
