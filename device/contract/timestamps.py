"""The one UTC timestamp format for everything affectbox sends or answers: MQTT payloads, the status
page's API, exports, summaries, the hub's FHIR documents.

`2025-01-31T09:15:02.123Z`: RFC 3339 (ISO 8601) in UTC, milliseconds, a `Z` suffix; the format
docs/MQTT.md documents for `ts` and the payload schemas' pattern (`UTC_TIMESTAMP_PATTERN`).

- `utc_timestamp(moment)` formats (now when None); every writer of an outward timestamp uses it;
- `parse_utc_timestamp(text)` parses it, and the other ISO 8601 forms with an offset that stored
  values and older answers have (`+00:00`, no fraction, microseconds), into an aware UTC datetime;
- `as_utc_timestamp(text)` rewrites such a stored value in the one format (None stays None).

What the device's SQLite record and the hub's database store is not changed by this module (the
store keeps its own fixed `+00:00` form, which compares correctly as text); it is rewritten on the
way out. Standard library only: the contract is imported by the hub unchanged.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

UTC_TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$"
UTC_TIMESTAMP_RE = re.compile(UTC_TIMESTAMP_PATTERN)
EXAMPLE = "2025-01-31T09:15:02.123Z"


def utc_timestamp(moment: datetime | None = None) -> str:
    """UTC ISO-8601 with milliseconds and a `Z`: `2025-01-31T09:15:02.123Z` (now when `moment` is None).

    Give an aware `moment`: a naive one is taken as local time (`datetime.astimezone`).
    """
    moment = datetime.now(UTC) if moment is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc_timestamp(text: str, *, assume_utc: bool = False) -> datetime:
    """An aware UTC datetime from an ISO 8601 time with `Z` or an offset; ValueError otherwise.

    Reads the one format and the forms stored values have (`+00:00`, seconds only, microseconds).
    A time without an offset is refused unless `assume_utc` (then it is read as UTC).
    """
    if not isinstance(text, str) or "T" not in text:
        raise ValueError(f"not an ISO 8601 date and time: {str(text)[:40]!r}")
    moment = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
    if moment.tzinfo is None or moment.utcoffset() is None:
        if not assume_utc:
            raise ValueError(f"time {text[:40]!r} has no time zone (no Z or offset)")
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def as_utc_timestamp(text: str | None) -> str | None:
    """A stored ISO 8601 time (with an offset) in the one format; None stays None, ValueError if unreadable."""
    return None if text is None else utc_timestamp(parse_utc_timestamp(text))
