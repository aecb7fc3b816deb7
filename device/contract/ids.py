"""The opaque-id rule shared by device ids, patient ids and session ids, on the device and the hub.

One alphabet (`[A-Za-z0-9._-]{1,64}`) keeps an id from ever adding an MQTT topic level, a
wildcard, a path separator or markup; ids made only of dots (`.`, `..`) are refused too, because
URLs and paths give them a meaning (a browser turns `/history/patient/..` into `/history/`).
Every module that checks an id imports it from here; the JSON Schemas and docs/openapi.json
carry the same pattern (tests/test_hardening.py checks that they do).
"""

from __future__ import annotations

import re

OPAQUE_ID_PATTERN = r"(?!\.+$)[A-Za-z0-9._-]{1,64}"
OPAQUE_ID_RE = re.compile(OPAQUE_ID_PATTERN)


def is_opaque_id(value: object) -> bool:
    """True when `value` is a string of 1-64 characters of A-Z a-z 0-9 . _ -, not only dots."""
    return isinstance(value, str) and OPAQUE_ID_RE.fullmatch(value) is not None
