"""What the report shows, prepared from the analysis outputs (summary, window rows, timeline rows).

Nothing here writes markup: arrays of the face timeline, the utterances, which modalities the
session has, its time span, the placeholder texts and the warnings.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.labels import LABELS
from device.report.text import MODALITY_NAMES, _finite, _mapping, _pct

MAX_POINTS = 600  # most points per probability line; longer timelines are averaged into time bins
DEFAULT_MIN_PAUSE_S = 0.15  # device.config.SpeechConfig.min_pause_ms, when the config is not given


def timeline_arrays(timeline: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Times [N] and probabilities [N, 7] (rows of NaN where no face) of the face rows of a timeline.

    Rows of other modalities (speech) are left out; a row without a modality counts as a face
    row (timelines from before the speech pathway). Rows without a finite `t` are dropped. Rows
    come back sorted by time.
    """
    rows = [r for r in timeline if isinstance(r, Mapping) and r.get("modality", "face") in ("face", None)]
    times: list[float] = []
    probs: list[list[Any]] = []
    missing = [None] * len(LABELS)
    for row in rows:
        t = _finite(row.get("t"))
        if t is None:
            continue
        p = row.get("probs")
        times.append(t)
        probs.append([p.get(lab) for lab in LABELS] if isinstance(p, Mapping) else missing)
    t_arr = np.asarray(times, dtype=np.float64)
    try:
        p_arr = np.array(probs, dtype=np.float64).reshape(-1, len(LABELS))
    except (TypeError, ValueError):  # a non-numeric probability somewhere: clean cell by cell
        p_arr = np.array([[np.nan if _finite(v) is None else float(v) for v in r] for r in probs],
                         dtype=np.float64).reshape(-1, len(LABELS))
    p_arr[~np.isfinite(p_arr)] = np.nan
    order = np.argsort(t_arr, kind="stable")
    return t_arr[order], np.clip(p_arr[order], 0.0, 1.0)


@dataclass(frozen=True)
class Utterance:
    """One utterance of the speech timeline, as drawn: span, most likely label and its probability."""

    start: float
    end: float
    label: str | None
    p: float | None


def utterances(timeline: Sequence[Mapping[str, Any]]) -> list[Utterance]:
    """The speech rows of a timeline as utterances, sorted by start.

    The span is the row's `start`/`end` (`t` -/+ half the `duration` when those are missing);
    the label is the argmax of `probs`, else the row's `label`, else None (not classified). Rows
    without a usable time are dropped.
    """
    out: list[Utterance] = []
    for row in timeline:
        if not isinstance(row, Mapping) or row.get("modality") != "speech":
            continue
        start, end = _finite(row.get("start")), _finite(row.get("end"))
        if start is None or end is None:
            t = _finite(row.get("t"))
            if t is None:
                continue
            half = max(0.0, _finite(row.get("duration")) or 0.0) / 2
            start, end = t - half, t + half
        if end < start:
            start, end = end, start
        label: str | None = None
        top: float | None = None
        probs = row.get("probs")
        if isinstance(probs, Mapping):
            for lab in LABELS:
                v = _finite(probs.get(lab))
                if v is not None and (top is None or v > top):
                    label, top = lab, v
        if label is None and row.get("present") is not False and isinstance(row.get("label"), str):
            label = row["label"]
        out.append(Utterance(start, end, label, top))
    out.sort(key=lambda u: u.start)
    return out


def bin_probabilities(times: np.ndarray, probs: np.ndarray,
                      max_points: int = MAX_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """Average sorted (times [N], probs [N, K]) into at most `max_points` equal time bins.

    A bin's time is the mean time of its frames with a face; a bin without any face gets NaN
    (time and probabilities), so a chart shows a gap there rather than a zero. Up to
    `max_points` rows pass through unchanged.
    """
    n = len(times)
    if n <= max_points:
        return times, probs
    t0, t1 = float(times[0]), float(times[-1])
    span = t1 - t0
    if span > 0:
        idx = np.minimum(((times - t0) / span * max_points).astype(np.int64), max_points - 1)
    else:
        idx = np.zeros(n, dtype=np.int64)
    valid = np.isfinite(probs)
    present = valid.any(axis=1)
    n_present = np.bincount(idx, weights=present.astype(np.float64), minlength=max_points)
    t_sum = np.bincount(idx, weights=np.where(present, times, 0.0), minlength=max_points)
    t_out = np.divide(t_sum, n_present, out=np.full(max_points, np.nan), where=n_present > 0)
    p_out = np.full((max_points, probs.shape[1]), np.nan)
    filled = np.where(valid, probs, 0.0)
    for k in range(probs.shape[1]):
        count = np.bincount(idx, weights=valid[:, k].astype(np.float64), minlength=max_points)
        total = np.bincount(idx, weights=filled[:, k], minlength=max_points)
        np.divide(total, count, out=p_out[:, k], where=count > 0)
    return t_out, p_out


def _breaks(times: np.ndarray) -> np.ndarray:
    """True before a point that follows a jump in time (missing rows): draw a gap there."""
    brk = np.zeros(len(times), dtype=bool)
    finite = times[np.isfinite(times)]
    steps = np.diff(finite)
    steps = steps[steps > 0]
    if len(steps) == 0:
        return brk
    limit = 3.0 * float(np.median(steps))
    prev = np.nan
    for i, t in enumerate(times):
        if math.isfinite(t):
            if math.isfinite(prev) and t - prev > limit:
                brk[i] = True
            prev = t
    return brk


def _window_face(window: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(window.get("modalities")).get("face"))


def _window_speech(window: Mapping[str, Any]) -> Mapping[str, Any]:
    return _mapping(_mapping(window.get("modalities")).get("speech"))


def _session_modalities(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], face_rows: bool,
                        speech_rows: bool) -> frozenset[str]:
    """Which modalities the session analysed: "face" (a video), "speech" (audio), or both.

    Read from the summary's coverage, the windows and the timeline; a session that names none
    (an old or empty one) counts as face only, the report's original kind.
    """
    found = {m for m in _mapping(summary.get("coverage")) if m in MODALITY_NAMES}
    for w in windows:
        found.update(m for m in _mapping(w.get("modalities")) if m in MODALITY_NAMES)
    if face_rows:
        found.add("face")
    if speech_rows:
        found.add("speech")
    return frozenset(found or {"face"})


def _only(kinds: frozenset[str]) -> str | None:
    """The session's single modality, or None when it has both."""
    return next(iter(kinds)) if len(kinds) == 1 else None


def _no_mood_message(kinds: frozenset[str], what: str) -> str:
    """Placeholder text for a chart of the windows' mood when no window has one."""
    if kinds == {"speech"}:
        cause = "Too little speech in every window"
    elif "speech" in kinds:
        cause = "Neither a face nor enough speech in any window"
    else:
        cause = "No face found often enough in any window"
    return f"{cause}: {what}."


def _no_windows_message(kinds: frozenset[str]) -> str:
    if kinds == {"speech"}:
        return "No speech found in the audio: nothing to show."
    return "No windows: nothing was analysed."


def _has_mood(window: Mapping[str, Any]) -> bool:
    has = window.get("has_mood")
    return bool(has) if has is not None else window.get("dominant") is not None


def _time_domain(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                 times: np.ndarray, utts: Sequence[Utterance] = ()) -> tuple[float, float]:
    ends = [_finite(summary.get("duration_s"))]
    starts: list[float | None] = [0.0]
    for w in windows:
        starts.append(_finite(w.get("start")))
        ends.append(_finite(w.get("end")))
    if len(times):
        starts.append(float(times[0]))
        ends.append(float(times[-1]))
    if utts:
        starts.append(min(u.start for u in utts))
        ends.append(max(u.end for u in utts))
    t0 = min(s for s in starts if s is not None)
    t1 = max((e for e in ends if e is not None), default=t0)
    return t0, (t1 if t1 > t0 else t0 + 1.0)


def _warnings(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], n_items: int,
              any_face: bool, kinds: frozenset[str] = frozenset({"face"})) -> list[str]:
    given = summary.get("warnings")
    if isinstance(given, str):
        given = [given]
    out = [str(w) for w in given or [] if w is not None and str(w).strip()]
    mentions_no_face = any("no face" in w.casefold() for w in out)
    mentions_no_speech = any("no speech" in w.casefold() for w in out)
    coverage = _mapping(summary.get("coverage"))
    windows_with_mood = sum(_has_mood(w) for w in windows) or (_finite(summary.get("windows_with_mood")) or 0)
    speech = _mapping(coverage.get("speech"))
    speech_found = bool(_finite(speech.get("present"))) or bool(_finite(speech.get("seconds")))
    if n_items == 0 and not windows and not _finite(summary.get("windows")):
        if kinds == {"speech"}:
            if not mentions_no_speech:
                out.append("no speech found in the audio: the report holds no mood estimate")
        else:
            out.append("no frame was analysed: the session is empty")
    elif not windows_with_mood:
        if "face" in kinds and not mentions_no_face:
            share = _finite(_mapping(coverage.get("face")).get("share"))
            if any_face or share:
                out.append(f"no face found in enough frames for a mood estimate (a face was seen in "
                           f"{_pct(share)} of analysed frames, below each window's minimum)")
            else:
                out.append("no face found in any analysed frame: the report holds no mood estimate")
        if "speech" in kinds and not mentions_no_speech:
            if speech_found:
                out.append(f"too little speech for a mood estimate (speech in {_pct(speech.get('share'))} of "
                           f"the recording, below each window's minimum)")
            else:
                out.append("no speech found in the audio: the report holds no voice estimate")
    return out


def _argmax_label(probs: Mapping[str, Any]) -> str | None:
    best: tuple[float, str] | None = None
    for lab in LABELS:
        v = _finite(probs.get(lab))
        if v is not None and (best is None or v > best[0]):
            best = (v, lab)
    return None if best is None else best[1]


def _prosody_values(windows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for w in windows:
        prosody = _mapping(w.get("prosody"))
        out.append(_finite(prosody.get(key)) if _finite(prosody.get("speech_s")) else None)
    return out
