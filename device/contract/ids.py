"""The opaque-id rule shared by device ids, patient ids and session ids, on the device and the hub.

One alphabet (`[A-Za-z0-9._-]{1,64}`) keeps an id from ever adding an MQTT topic level, a
wildcard, a path separator or markup; every module that checks an id imports it from here.
"""

from __future__ import annotations

import re

OPAQUE_ID_PATTERN = r"[A-Za-z0-9._-]{1,64}"
OPAQUE_ID_RE = re.compile(OPAQUE_ID_PATTERN)


def is_opaque_id(value: object) -> bool:
    """True when `value` is a string of 1-64 characters of A-Z a-z 0-9 . _ -."""
    return isinstance(value, str) and OPAQUE_ID_RE.fullmatch(value) is not None
