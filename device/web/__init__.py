"""The status page and its JSON API: a Flask app (`create_app`) served by waitress (`WebServer`).

Pages: status, session control with a live mood indicator, history with per-session timelines
and per-patient trends. Everything except `/api/health` and the login page needs a login; see
device/web/README.md for the access rules and docs/openapi.yaml for the API.
"""

from device.web.app import create_app
from device.web.control import ApplianceControl
from device.web.server import WebServer, load_password_hash, start_status_page

__all__ = ["ApplianceControl", "WebServer", "create_app", "load_password_hash", "start_status_page"]
