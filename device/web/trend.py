"""A patient's mood over weeks, months and years, from the stored session summaries (the History page).

One point per ended or interrupted session (valence, arousal, their within-session spread, the
dominant mood, prosody) and one row per calendar period (ISO week, month or year of the session's
UTC start): the mean valence and arousal, the spread of session valences within the period, the
mean within-session variability, the most frequent dominant mood and the prosody means. These are
the "monthly and yearly graphical analyses" of the seed paper. Periods come from wall-clock start
times, which a Pi without a real-time clock can get wrong before its first NTP sync; order within
the list is the store's insertion order. Descriptive only: no thresholds, no clinical meaning.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, timedelta
from typing import Any

from device.contract.timestamps import as_utc_timestamp, parse_utc_timestamp
from device.labels import LABELS
from device.store import SessionRecord

PERIODS = ("week", "month", "year")
TREND_PROSODY_KEYS = ("f0_mean_hz", "f0_sd_st", "speaking_rate", "pause_ratio", "mean_pause_s")


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _mean(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return round(statistics.fmean(xs), 4) if xs else None


def _sd(values: Iterable[float | None]) -> float | None:
    xs = [v for v in values if v is not None]
    return round(statistics.stdev(xs), 4) if len(xs) >= 2 else None


def period_of(started_utc: str, period: str) -> tuple[str, str]:
    """(key, first day as ISO date) of the period holding this UTC start time."""
    day = parse_utc_timestamp(started_utc).date()
    if period == "week":
        year, week, weekday = day.isocalendar()
        return f"{year}-W{week:02d}", (day - timedelta(days=weekday - 1)).isoformat()
    if period == "month":
        return f"{day.year}-{day.month:02d}", date(day.year, day.month, 1).isoformat()
    if period == "year":
        return f"{day.year}", date(day.year, 1, 1).isoformat()
    raise ValueError(f"period must be one of {', '.join(PERIODS)} (got {period!r})")


def session_point(record: SessionRecord, summary: Mapping[str, Any] | None,
                  deviation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One session as a trend point (values None where the session had no mood estimate or no speech)."""
    summary = summary or {}
    prosody = summary.get("prosody") or {}
    z = {}
    for name, entry in ((deviation or {}).get("fields") or {}).items():
        if name in ("valence", "arousal", "valence_sd", *TREND_PROSODY_KEYS) and isinstance(entry, Mapping):
            z[name] = _num(entry.get("z"))
    return {
        "session_id": record.id,
        "started_utc": as_utc_timestamp(record.started_utc),
        "state": record.state,
        "duration_s": _num(record.duration_s if record.duration_s is not None else summary.get("duration_s")),
        "windows": record.windows,
        "windows_with_mood": summary.get("windows_with_mood"),
        "dominant": summary.get("dominant"),
        "dominant_windows": dict(summary.get("dominant_windows") or {}),
        "valence": _num(summary.get("valence")),
        "arousal": _num(summary.get("arousal")),
        "valence_sd": _num(summary.get("valence_sd")),
        "arousal_sd": _num(summary.get("arousal_sd")),
        "prosody": {key: _num(prosody.get(key)) for key in TREND_PROSODY_KEYS},
        "z": z or None,
    }


def period_rows(points: Sequence[Mapping[str, Any]], period: str) -> list[dict[str, Any]]:
    """Per-period aggregates of session points, oldest period first."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    starts: dict[str, str] = {}
    for point in points:
        key, first_day = period_of(point["started_utc"], period)
        groups.setdefault(key, []).append(point)
        starts[key] = first_day
    rows = []
    for key in sorted(groups, key=lambda k: starts[k]):
        group = groups[key]
        dominant = Counter(p["dominant"] for p in group if p.get("dominant"))
        top = max(dominant.values(), default=0)
        # ties: the label that came first in LABELS, so the answer does not depend on dict order
        most = next((label for label in LABELS if dominant.get(label) == top), None) if top else None
        rows.append({
            "period": key,
            "start": starts[key],
            "sessions": len(group),
            "sessions_with_mood": sum(1 for p in group if p.get("valence") is not None),
            "valence": _mean(p.get("valence") for p in group),
            "arousal": _mean(p.get("arousal") for p in group),
            "valence_between_sd": _sd(p.get("valence") for p in group),
            "valence_within_sd": _mean(p.get("valence_sd") for p in group),
            "dominant": most,
            "dominant_sessions": {label: dominant[label] for label in LABELS if dominant.get(label)},
            "prosody": {k: _mean((p.get("prosody") or {}).get(k) for p in group) for k in TREND_PROSODY_KEYS},
        })
    return rows
