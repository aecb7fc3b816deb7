"""The status page and its JSON API: a Flask app (`create_app`) served by waitress (`WebServer`).

Pages: status, session control with a live mood indicator, history with per-session timelines
and per-patient trends. Everything except `/api/health` and the login page needs a login; see
device/web/README.md for the access rules and docs/openapi.yaml for the API.

The names below load on first use (PEP 562), so that `device.web.security` and
`device.web.trend`, which the clinic hub shares, import without Flask, the store or NumPy.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "create_app": "device.web.app",
    "ApplianceControl": "device.web.control",
    "WebServer": "device.web.server",
    "load_password_hash": "device.web.server",
    "start_status_page": "device.web.server",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'device.web' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
