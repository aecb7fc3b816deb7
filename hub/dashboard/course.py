"""A patient's course across devices, weeks, months and years: periods, baseline, deviation, variability.

Input: the patient's sessions (records.SessionPoint, oldest first). Periods are ISO weeks,
calendar months and calendar years of each session's UTC start (`device.web.trend.period_of`:
an ISO week that spans New Year belongs to its ISO year, e.g. 2026-12-31 is 2026-W53 and
2027-01-01 too, never a week 1 of the wrong year). The baseline is the review rule's (flags.py):
its first counting sessions; deviation = valence - baseline mean, and z = deviation / baseline SD.
Variability between sessions: the SD of session means and the mean squared successive difference
(MSSD, mean of (x_t - x_{t-1})^2 over consecutive sessions with a value; the instability index of
intensive longitudinal affect). Model changes: where a device's model versions or software
version differ from that device's previous session.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from device.labels import LABELS
from device.web.trend import PERIODS, period_of
from hub.dashboard.flags import Chart
from hub.dashboard.records import PROSODY_KEYS, SessionPoint

__all__ = ["PERIODS", "course", "mssd", "period_rows"]


def _values(xs: Sequence[float | None]) -> list[float]:
    return [x for x in xs if x is not None and math.isfinite(x)]


def _mean(xs: Sequence[float | None]) -> float | None:
    v = _values(xs)
    return statistics.fmean(v) if v else None


def _sd(xs: Sequence[float | None]) -> float | None:
    v = _values(xs)
    return statistics.stdev(v) if len(v) >= 2 else None


def mssd(xs: Sequence[float | None]) -> float | None:
    """Mean squared successive difference of the values, in order (missing values skipped)."""
    v = _values(xs)
    if len(v) < 2:
        return None
    return statistics.fmean((b - a) ** 2 for a, b in zip(v, v[1:], strict=False))


def period_rows(points: Sequence[SessionPoint], period: str) -> list[dict[str, Any]]:
    """One row per period, oldest first: sessions, means with their between-session SD, moods, prosody, coverage."""
    groups: dict[str, list[SessionPoint]] = {}
    starts: dict[str, str] = {}
    for p in points:
        key, first_day = period_of(p.at, period)
        groups.setdefault(key, []).append(p)
        starts[key] = first_day
    rows = []
    for key in sorted(groups, key=lambda k: starts[k]):
        group = groups[key]
        moods = Counter(p.dominant for p in group if p.dominant)
        windows = Counter()
        for p in group:
            windows.update(p.dominant_windows)
        total = sum(windows.values())
        rows.append({
            "period": key, "start": starts[key], "sessions": len(group),
            "sessions_with_mood": sum(1 for p in group if p.valence is not None),
            "valence": _mean([p.valence for p in group]), "valence_sd": _sd([p.valence for p in group]),
            "arousal": _mean([p.arousal for p in group]), "arousal_sd": _sd([p.arousal for p in group]),
            "within_sd": _mean([p.valence_sd for p in group]),
            "mood_share": {label: windows[label] / total for label in LABELS if windows.get(label)} if total else {},
            "dominant_sessions": {label: moods[label] for label in LABELS if moods.get(label)},
            "coverage": _mean([p.coverage.get("mood") for p in group]),
            "face": _mean([p.coverage.get("face") for p in group]),
            "speech": _mean([p.coverage.get("speech") for p in group]),
            "prosody": {k: _mean([p.prosody.get(k) for p in group]) for k in PROSODY_KEYS},
        })
    return rows


def model_changes(points: Sequence[SessionPoint]) -> list[dict[str, Any]]:
    last: dict[str, tuple[str | None, str]] = {}
    out = []
    for p in points:
        now = (p.software_version, p.model_signature)
        before = last.get(p.device_id)
        if before is not None and before != now:
            out.append({"at": p.at, "device_id": p.device_id, "key": p.key,
                        "from": f"{before[0]} ({before[1]})", "to": f"{now[0]} ({now[1]})"})
        last[p.device_id] = now
    return out


def course(points: Sequence[SessionPoint], chart: Chart, period: str) -> dict[str, Any]:
    """Everything the course page and the report show, from the same data."""
    done = [p for p in points if p.end_event is not None or p.summary_event_id is not None]
    mu, sd = chart.baseline_mean, chart.baseline_sd
    deviations = {p.key: {"diff": p.valence - mu, "z": (p.valence - mu) / sd if sd else None}
                  for p in done if mu is not None and p.valence is not None}
    valences = [p.valence for p in done]
    moods = Counter()
    for p in done:
        moods.update(p.dominant_windows)
    total = sum(moods.values())
    recent = [p.valence for p in done[-8:]]
    return {
        "period": period, "sessions": done, "periods": period_rows(done, period),
        "devices": sorted({p.device_id for p in done}),
        "baseline": {"mean": mu, "sd": sd, "n": len(chart.baseline_keys), "keys": chart.baseline_keys},
        "deviation": deviations,
        "recent_deviation": (_mean(recent) - mu) if mu is not None and _mean(recent) is not None else None,
        "between_sd": _sd(valences), "mssd": mssd(valences),
        "arousal_between_sd": _sd([p.arousal for p in done]), "arousal_mssd": mssd([p.arousal for p in done]),
        "mood_share": {label: moods[label] / total for label in LABELS if moods.get(label)} if total else {},
        "coverage": _mean([p.coverage.get("mood") for p in done]),
        "model_changes": model_changes(done),
    }
