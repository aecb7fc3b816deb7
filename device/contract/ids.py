"""The opaque-id rule shared by device ids, patient ids and session ids, on the device and the hub.

One alphabet (`[A-Za-z0-9._-]{1,64}`) keeps an id from ever adding an MQTT topic level, a
wildcard, a path separator or markup; ids made only of dots (`.`, `..`) are refused too, because
URLs and paths give them a meaning (a browser turns `/history/patient/..` into `/history/`).
The patient-id check with its one-line reasons (`patient_id_problem`) lives here too, so the
config and the store refuse a patient id with the same words. Every module that checks an id
imports it from here (this module imports nothing of the project, the hub imports it too); the
JSON Schemas and docs/openapi.json carry the same pattern (tests/test_hardening.py checks that they do).
"""

from __future__ import annotations

import re

OPAQUE_ID_PATTERN = r"(?!\.+$)[A-Za-z0-9._-]{1,64}"
OPAQUE_ID_RE = re.compile(OPAQUE_ID_PATTERN)


def is_opaque_id(value: object) -> bool:
    """True when `value` is a string of 1-64 characters of A-Z a-z 0-9 . _ -, not only dots."""
    return isinstance(value, str) and OPAQUE_ID_RE.fullmatch(value) is not None


def _shown(value: str, limit: int = 40) -> str:
    """A value for an error message: repr escapes control characters, so the message stays one line."""
    if len(value) > limit:
        return repr(value[:limit]) + f"... ({len(value)} characters)"
    return repr(value)


def patient_id_problem(patient_id: object) -> str | None:
    """Why `patient_id` is not an opaque patient id (one line), or None when it is one.

    The narrow alphabet keeps names, dates of birth with slashes, e-mail addresses and the like
    out of the device, and makes the id safe in file names, CSV cells and MQTT topics.
    """
    if not isinstance(patient_id, str):
        return f"patient id must be a string (got {type(patient_id).__name__})"
    if not patient_id:
        return "patient id is empty; give the opaque id of 1-64 characters of A-Z a-z 0-9 . _ -"
    if len(patient_id) > 64:
        return f"patient id {_shown(patient_id)} is longer than 64 characters"
    if not OPAQUE_ID_RE.fullmatch(patient_id):
        # a lone "." fails the pattern too (only dots), so an all-dots id names "." here
        bad = next(c for c in patient_id if not OPAQUE_ID_RE.fullmatch(c))
        return (f"patient id {_shown(patient_id)} contains {bad!r}; "
                "only letters A-Z a-z, digits, '.', '_' and '-' are allowed (an opaque id, not a name)")
    return None
