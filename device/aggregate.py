"""From observations of both modalities to per-window aggregates and a session summary.

A window covers `[start, start + window_seconds)` of item time. For each modality it holds:
- coverage: the face's share of analysed frames with a face; speech's share of the window's time
  covered by utterances;
- the quality-weighted mean of the calibrated probabilities, and their spread (expressivity);
then `device.fusion.fuse` turns the modalities into the window's mood (probabilities, dominant
label, valence, arousal). Speech windows also carry prosody (device/audio/prosody.py), from
every utterance overlapping the window.
Speech attributed to an enrolled voice (`"speaker": "other"`, device/voice) is kept apart: it
counts only in the window's `speakers` (patient and other seconds), never in the speech modality,
its coverage, fusion or prosody.

Speech observations arrive late: an utterance is classified when it ends, up to
`max_utterance_ms` + `hangover_ms` after it began, while frames keep coming. So windows close
only when item time has moved `lateness` seconds past their end (a watermark); an observation
later still, for a window already closed, is counted in `late_dropped` and otherwise ignored.
`add` returns the windows that closed, so the same object serves offline analysis (media time)
and the live daemon (monotonic time). Memory is bounded by the open windows and the utterances
that can still overlap them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from device.audio.prosody import window_prosody
from device.config import AggregationConfig, FusionConfig
from device.fusion import ModalityEstimate, fuse
from device.labels import LABELS, NUM_LABELS, valence_arousal
from device.notice import NOT_A_DIAGNOSIS
from device.observation import Observation

# speech attributed to someone else (device/voice): counted per window, never analysed
OTHER_SPEECH = "other_speech"
# per-window prosody measures averaged into the session summary, weighted by speech time
PROSODY_SUMMARY_KEYS = ("f0_mean_hz", "f0_sd_hz", "f0_mean_st", "f0_sd_st", "energy_sd_db", "speaking_rate",
                        "articulation_rate", "pause_ratio", "mean_pause_s")


def _round(x: float | None, digits: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), digits)


def probs_dict(probs: np.ndarray | None) -> dict[str, float] | None:
    if probs is None:
        return None
    return {lab: round(float(p), 4) for lab, p in zip(LABELS, probs, strict=True)}


@dataclass
class ModalityStats:
    """Per-modality accumulation inside one window."""

    items: int = 0
    present: int = 0
    seconds: float = 0.0  # time covered, for modalities whose observations span time (speech)
    weight: float = 0.0
    weighted_sum: np.ndarray = field(default_factory=lambda: np.zeros(NUM_LABELS))
    probs_list: list[np.ndarray] = field(default_factory=list)
    attributed: bool = False  # an observation carried a speaker attribution (device/voice)

    def add(self, obs: Observation) -> None:
        self.items += 1
        self.attributed = self.attributed or "speaker" in obs.features
        duration = obs.features.get("duration")
        if duration is not None:
            self.seconds += float(duration)
        if obs.probs is None:
            return
        self.present += 1
        w = max(obs.quality, 1e-3)
        self.weight += w
        self.weighted_sum += w * obs.probs
        self.probs_list.append(obs.probs)

    def coverage(self, window_seconds: float) -> float:
        if self.seconds > 0:
            return min(1.0, self.seconds / window_seconds)
        return self.present / self.items if self.items else 0.0

    @property
    def mean_quality(self) -> float:
        return self.weight / self.present if self.present else 0.0

    @property
    def mean_probs(self) -> np.ndarray | None:
        return self.weighted_sum / self.weight if self.weight > 0 else None

    @property
    def expressivity(self) -> float | None:
        """Mean over labels of the standard deviation of probabilities across items."""
        if len(self.probs_list) < 2:
            return None
        return float(np.std(np.stack(self.probs_list), axis=0).mean())

    def to_json(self, window_seconds: float) -> dict[str, Any]:
        row = {
            "items": self.items,
            "present": self.present,
            "share": round(self.coverage(window_seconds), 4),
            "mean_quality": _round(self.mean_quality if self.present else None),
            "probs": probs_dict(self.mean_probs),
            "dominant": None if self.mean_probs is None else LABELS[int(np.argmax(self.mean_probs))],
            "expressivity": _round(self.expressivity),
        }
        if self.seconds > 0:
            row["seconds"] = round(self.seconds, 3)
        return row


@dataclass(frozen=True)
class Window:
    index: int
    start: float
    end: float
    modalities: dict[str, dict[str, Any]]
    probs: np.ndarray | None
    weights: dict[str, float] = field(default_factory=dict)
    prosody: dict[str, Any] | None = None
    speakers: dict[str, Any] | None = None  # patient and other speech seconds (device/voice)

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
            "fusion_weights": {m: round(w, 4) for m, w in self.weights.items()},
            "modalities": self.modalities,
            "prosody": None if self.prosody is None else {k: _round(v) if isinstance(v, float) else v
                                                          for k, v in self.prosody.items()},
            "speakers": self.speakers or speaker_seconds(None, None),
        }


def speaker_seconds(patient: ModalityStats | None, other: ModalityStats | None,
                    attributed: bool | None = None) -> dict[str, Any]:
    """A window's speech by speaker: the patient's seconds, other voices' seconds, their share."""
    patient_s = patient.seconds if patient is not None else 0.0
    other_s = other.seconds if other is not None else 0.0
    if attributed is None:
        attributed = other is not None or bool(patient is not None and patient.attributed)
    total = patient_s + other_s
    return {"attributed": attributed, "patient_s": round(patient_s, 3), "other_s": round(other_s, 3),
            "other_share": round(other_s / total, 4) if total > 0 else None}


class WindowAggregator:
    """Groups observations of any modality into fixed windows of item time."""

    def __init__(self, config: AggregationConfig, fusion: FusionConfig | None = None, start: float = 0.0,
                 lateness: float = 0.0, min_pause_s: float = 0.15) -> None:
        self.config = config
        self.fusion = fusion or FusionConfig()
        self.start = start
        self.lateness = lateness
        self.min_pause_s = min_pause_s
        self._open: dict[int, dict[str, ModalityStats]] = {}
        self._next_index = 0  # every window before this one is closed
        self._max_t = start
        self._utterances: deque[dict[str, Any]] = deque()  # prosody of utterances that may overlap open windows
        self.late_dropped = 0

    def _bounds(self, index: int) -> tuple[float, float]:
        w = self.config.window_seconds
        return self.start + index * w, self.start + (index + 1) * w

    def _index_of(self, t: float) -> int:
        return max(0, int(math.floor((t - self.start) / self.config.window_seconds)))

    def _close(self, index: int, end: float | None = None) -> Window:
        begin, stop = self._bounds(index)
        stop = stop if end is None else end
        stats = self._open.pop(index, {})
        other = stats.pop(OTHER_SPEECH, None)
        speakers = speaker_seconds(stats.get("speech"), other)
        # coverage against the time the window really spans: a window cut short by flush(end=...)
        # (a session's last, a clip shorter than a window) is not diluted by time that never came
        length = max(stop - begin, 1e-3)
        estimates = {
            m: ModalityEstimate(s.mean_probs, s.coverage(length), s.mean_quality)
            for m, s in stats.items() if s.mean_probs is not None
        }
        probs, weights = fuse(estimates, self.fusion, self.config.min_face_share)
        prosody = None
        overlapping = [u for u in self._utterances
                       if (u.get("speech_start") or 0.0) < stop and (u.get("speech_end") or 0.0) > begin]
        if overlapping or "speech" in stats:
            prosody = window_prosody(overlapping, begin, stop, self.min_pause_s)
        # utterances ending before the next window can no longer matter
        while self._utterances and (self._utterances[0].get("speech_end") or 0.0) <= stop:
            self._utterances.popleft()
        return Window(index, begin, stop, {m: s.to_json(length) for m, s in stats.items()}, probs, weights, prosody,
                      speakers)

    def _close_until(self, limit_index: int) -> list[Window]:
        closed = []
        while self._next_index < limit_index:
            if self._next_index in self._open:
                closed.append(self._close(self._next_index))
            self._next_index += 1
        return closed

    def add(self, obs: Observation) -> list[Window]:
        """Account one observation; returns the windows that closed (in order)."""
        index = self._index_of(obs.t)
        if index < self._next_index:
            self.late_dropped += 1
        else:
            key = OTHER_SPEECH if obs.features.get("speaker") == "other" else obs.modality
            self._open.setdefault(index, {}).setdefault(key, ModalityStats()).add(obs)
            prosody = obs.features.get("prosody")
            if prosody:
                self._utterances.append(prosody)
        self._max_t = max(self._max_t, obs.t)
        watermark = self._max_t - self.lateness
        return self._close_until(self._index_of(watermark) if watermark > self.start else 0)

    def close_before(self, t: float) -> list[Window]:
        """Close the windows that end at or before item time `t`, when the caller knows that no
        observation still to come is earlier than `t` (the live daemon's watermarks)."""
        return self._close_until(self._index_of(t) if t > self.start else 0)

    def flush(self, end: float | None = None) -> list[Window]:
        """Close every open window at the end of the session (the last may be shorter than the others)."""
        closed = []
        for index in sorted(self._open):
            _, stop = self._bounds(index)
            if end is not None and index == max(self._open):
                stop = min(max(end, self._bounds(index)[0]), stop)
            closed.append(self._close(index, stop))
        self._next_index = max(self._next_index, (max(w.index for w in closed) + 1) if closed else 0)
        return closed


def _weighted_prosody(windows: list[Window]) -> dict[str, Any] | None:
    rows = [w.prosody for w in windows if w.prosody and w.prosody.get("speech_s")]
    if not rows:
        return None
    out: dict[str, Any] = {"speech_s": round(sum(r["speech_s"] for r in rows), 3)}
    for key in PROSODY_SUMMARY_KEYS:
        pairs = [(r[key], r["speech_s"]) for r in rows if r.get(key) is not None]
        weight = sum(s for _, s in pairs)
        out[key] = _round(sum(v * s for v, s in pairs) / weight) if weight > 0 else None
    return out


def _session_speakers(windows: list[Window]) -> dict[str, Any]:
    rows = [w.speakers for w in windows if w.speakers]
    patient_s = sum(r["patient_s"] for r in rows)
    other_s = sum(r["other_s"] for r in rows)
    total = patient_s + other_s
    return {"attributed": any(r["attributed"] for r in rows), "patient_s": round(patient_s, 3),
            "other_s": round(other_s, 3), "other_share": round(other_s / total, 4) if total > 0 else None}


def summarize(windows: list[Window], duration: float, counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Session summary: overall mood, its variability across windows, coverage and prosody."""
    with_mood = [w for w in windows if w.probs is not None]
    coverage = {}
    for m, c in counts.items():
        entry = dict(c)
        if "seconds" in c:
            entry["share"] = round(min(1.0, c["seconds"] / duration), 4) if duration > 0 else 0.0
        else:
            entry["share"] = round(c["present"] / c["items"], 4) if c["items"] else 0.0
        coverage[m] = entry
    summary: dict[str, Any] = {
        "duration_s": round(duration, 3),
        "speakers": _session_speakers(windows),
        "windows": len(windows),
        "windows_with_mood": len(with_mood),
        "coverage": coverage,
        "prosody": _weighted_prosody(windows),
        "notice": NOT_A_DIAGNOSIS,
    }
    if not with_mood:
        summary.update({"probs": None, "dominant": None, "valence": None, "arousal": None,
                        "valence_sd": None, "arousal_sd": None, "dominant_windows": {},
                        "face_expressivity": None, "modality_probs": {}})
        return summary
    probs = np.mean([w.probs for w in with_mood], axis=0)
    va = np.array([w.valence_arousal for w in with_mood], dtype=np.float64)
    dominant_counts = dict.fromkeys(LABELS, 0)
    for w in with_mood:
        dominant_counts[w.dominant] += 1  # type: ignore[index]
    expressivity = [w.modalities.get("face", {}).get("expressivity") for w in with_mood]
    expressivity = [e for e in expressivity if e is not None]
    modality_probs = {}
    for m in counts:
        rows = [w.modalities[m]["probs"] for w in windows if m in w.modalities and w.modalities[m]["probs"]]
        if rows:
            mean = np.mean([[r[lab] for lab in LABELS] for r in rows], axis=0)
            modality_probs[m] = probs_dict(mean / mean.sum())
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
        "modality_probs": modality_probs,
    })
    return summary
