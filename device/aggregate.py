"""From observations to per-window aggregates and a session summary.

A window covers `[start, start + window_seconds)` of item time. For each modality it holds the
share of analysed items where the modality saw something, the quality-weighted mean of the
calibrated probabilities, and their spread (expressivity). The window's mood (probabilities,
dominant label, valence, arousal) comes from the modalities that met the coverage threshold;
with the face pathway alone, that is the face's distribution.

`WindowAggregator.add` returns the windows that closed because time moved past them, so the
same object serves offline analysis (media time) and the live daemon (monotonic time).
Memory is bounded: only the open window's observations are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.config import AggregationConfig
from device.labels import LABELS, NUM_LABELS, valence_arousal
from device.observation import Observation

NOT_A_DIAGNOSIS = (
    "affectbox supports clinical judgment; it does not diagnose. Mood estimates from facial expression "
    "are probabilistic and can be wrong, especially for faces unlike its training data."
)


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(float(x), digits)


def probs_dict(probs: np.ndarray | None) -> dict[str, float] | None:
    if probs is None:
        return None
    return {lab: round(float(p), 4) for lab, p in zip(LABELS, probs, strict=True)}


@dataclass
class ModalityStats:
    """Per-modality accumulation inside one window."""

    items: int = 0
    present: int = 0
    weight: float = 0.0
    weighted_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_LABELS))
    probs_list: list[np.ndarray] = field(default_factory=list)

    def add(self, obs: Observation) -> None:
        self.items += 1
        if obs.probs is None:
            return
        self.present += 1
        w = max(obs.quality, 1e-3)
        self.weight += w
        self.weighted_sum += w * obs.probs
        self.probs_list.append(obs.probs)

    @property
    def share(self) -> float:
        return self.present / self.items if self.items else 0.0

    @property
    def mean_probs(self) -> np.ndarray | None:
        return self.weighted_sum / self.weight if self.weight > 0 else None

    @property
    def expressivity(self) -> float | None:
        """Mean over labels of the standard deviation of probabilities across items."""
        if len(self.probs_list) < 2:
            return None
        return float(np.std(np.stack(self.probs_list), axis=0).mean())

    def to_json(self) -> dict[str, Any]:
        return {
            "items": self.items,
            "present": self.present,
            "share": round(self.share, 4),
            "mean_quality": _round(self.weight / self.present if self.present else None),
            "probs": probs_dict(self.mean_probs),
            "expressivity": _round(self.expressivity),
        }


@dataclass(frozen=True)
class Window:
    index: int
    start: float
    end: float
    modalities: dict[str, dict[str, Any]]
    probs: np.ndarray | None

    @property
    def dominant(self) -> str | None:
        return None if self.probs is None else LABELS[int(np.argmax(self.probs))]

    @property
    def valence_arousal(self) -> tuple[float | None, float | None]:
        return (None, None) if self.probs is None else valence_arousal(self.probs)

    def to_json(self) -> dict[str, Any]:
        valence, arousal = self.valence_arousal
        return {
            "index": self.index,
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "has_mood": self.probs is not None,
            "dominant": self.dominant,
            "valence": _round(valence),
            "arousal": _round(arousal),
            "probs": probs_dict(self.probs),
            "modalities": self.modalities,
        }


class WindowAggregator:
    """Groups observations into fixed windows of item time."""

    def __init__(self, config: AggregationConfig, start: float = 0.0) -> None:
        self.config = config
        self.start = start
        self._index = 0
        self._stats: dict[str, ModalityStats] = {}
        self._last_t = start

    def _window_end(self) -> float:
        return self.start + (self._index + 1) * self.config.window_seconds

    def _close(self, end: float) -> Window:
        begin = self.start + self._index * self.config.window_seconds
        moods = [s.mean_probs for s in self._stats.values()
                 if s.mean_probs is not None and s.share >= self.config.min_face_share]
        probs = np.mean(moods, axis=0) if moods else None
        window = Window(self._index, begin, end, {m: s.to_json() for m, s in self._stats.items()}, probs)
        self._index += 1
        self._stats = {}
        return window

    def add(self, obs: Observation) -> list[Window]:
        """Account one observation; returns windows that ended before it."""
        closed: list[Window] = []
        # an out-of-order or repeated timestamp stays in the current window
        t = max(obs.t, self._last_t)
        self._last_t = t
        while t >= self._window_end():
            if self._stats:
                closed.append(self._close(self._window_end()))
            else:  # nothing observed in this span: skip the window without emitting it
                self._index += 1
        self._stats.setdefault(obs.modality, ModalityStats()).add(obs)
        return closed

    def flush(self, end: float | None = None) -> list[Window]:
        """Close the open window at the end of the session (it may be shorter than the others)."""
        if not self._stats:
            return []
        stop = self._window_end() if end is None else min(max(end, self._last_t), self._window_end())
        return [self._close(stop)]


def summarize(windows: list[Window], duration: float, counts: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Session summary: overall mood, its variability across windows, coverage per modality."""
    with_mood = [w for w in windows if w.probs is not None]
    summary: dict[str, Any] = {
        "duration_s": round(duration, 3),
        "windows": len(windows),
        "windows_with_mood": len(with_mood),
        "coverage": {
            m: {**c, "share": round(c["present"] / c["items"], 4) if c["items"] else 0.0}
            for m, c in counts.items()
        },
        "notice": NOT_A_DIAGNOSIS,
    }
    if not with_mood:
        summary.update({"probs": None, "dominant": None, "valence": None, "arousal": None,
                        "valence_sd": None, "arousal_sd": None, "dominant_windows": {}})
        return summary
    probs = np.mean([w.probs for w in with_mood], axis=0)
    va = np.array([w.valence_arousal for w in with_mood], dtype=np.float64)
    dominant_counts = {lab: 0 for lab in LABELS}
    for w in with_mood:
        dominant_counts[w.dominant] += 1  # type: ignore[index]
    expressivity = [w.modalities.get("face", {}).get("expressivity") for w in with_mood]
    expressivity = [e for e in expressivity if e is not None]
    summary.update({
        "probs": probs_dict(probs),
        "dominant": LABELS[int(np.argmax(probs))],
        "valence": _round(va[:, 0].mean()),
        "arousal": _round(va[:, 1].mean()),
        # emotional range across the session: spread of the per-window estimates
        "valence_sd": _round(va[:, 0].std()),
        "arousal_sd": _round(va[:, 1].std()),
        "dominant_windows": dominant_counts,
        "face_expressivity": _round(float(np.mean(expressivity)) if expressivity else None),
    })
    return summary
