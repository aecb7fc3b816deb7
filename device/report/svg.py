"""The report's charts: inline SVG (with their HTML figure, caption and legend) built as strings.

The markup is programmatic; every text node and attribute value that is not a number formatted
here goes through `device.report.text._esc`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.labels import (
    AROUSAL_COLOUR,
    FACE_COLOUR,
    LABEL_COLOURS,
    LABELS,
    NO_MOOD_COLOUR,
    OTHER_COLOUR,
    VALENCE_COLOUR,
    VOICE_COLOUR,
)
from device.report.data import (
    Utterance,
    _breaks,
    _has_mood,
    _no_mood_message,
    _no_windows_message,
    _only,
    _prosody_values,
    _window_face,
    _window_speech,
    bin_probabilities,
)
from device.report.text import DASH, _empty, _esc, _figure, _finite, _fmt, _label_colour, _legend, _mapping, clock

# the two at 80% on white, opaque: adjacent thin bars neither overlap darker nor show the grid through
FACE_TINT, VOICE_TINT = "#33B18F", "#8864AE"
THRESHOLD_COLOUR = "#B33C00"
VOICE_THRESHOLD_COLOUR = "#3B1F5C"

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 880  # chart viewBox width; the SVG scales to the page width
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 22, 10, 24
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200)
_MARKER_LIMIT = 150  # draw a dot per window up to this many windows


@dataclass(frozen=True)
class _Scale:
    """Linear map from a data interval onto a pixel interval."""

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, value: float) -> float:
        span = self.d1 - self.d0
        return self.r0 + (value - self.d0) * (self.r1 - self.r0) / (span if span else 1.0)


def _time_ticks(t0: float, t1: float, max_ticks: int = 9) -> list[float]:
    span = max(t1 - t0, 1e-9)
    step: float = next((s for s in _TICK_STEPS if span / s <= max_ticks), 0.0)
    if not step:
        step = _TICK_STEPS[-1] * math.ceil(span / (_TICK_STEPS[-1] * max_ticks))
    return [k * step for k in range(math.ceil(t0 / step - 1e-9), math.floor(t1 / step + 1e-9) + 1)]


def _svg(height: int, label: str, body: Iterable[str], width: int = WIDTH) -> str:
    return (f'<svg class="chart" xmlns="{_esc(SVG_NS)}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_esc(label)}"><title>{_esc(label)}</title>'
            + "".join(body) + "</svg>")


def _time_axis(xs: _Scale, top: float, bottom: float, labels: bool = True) -> list[str]:
    """Vertical grid lines and (unless `labels` is False) mm:ss labels under the plot area."""
    out = []
    for t in _time_ticks(xs.d0, xs.d1):
        x = xs(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        if labels:
            out.append(f'<text x="{x:.1f}" y="{bottom + 15:.1f}" text-anchor="middle">{_esc(clock(t))}</text>')
    out.append(f'<line class="axis" x1="{xs.r0:.1f}" x2="{xs.r1:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}"/>')
    return out


def _value_axis(ys: _Scale, ticks: Sequence[float], x0: float, x1: float, spec: str,
                zero: bool = False) -> list[str]:
    """Horizontal grid lines with their labels left of the plot area; a dashed line at 0."""
    out = []
    for v in ticks:
        y = ys(v)
        cls = "zero" if zero and v == 0 else "grid"
        out.append(f'<line class="{_esc(cls)}" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        text = "0" if v == 0 else format(v, spec)
        out.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{_esc(text)}</text>')
    return out


def _segments(xs: Sequence[float], ys: Sequence[float],
              breaks: Sequence[bool] | None = None) -> list[list[tuple[float, float]]]:
    """Runs of consecutive finite points; a NaN point or `breaks[i]` (before point i) ends a run."""
    runs: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        if not (math.isfinite(x) and math.isfinite(y)):
            if current:
                runs.append(current)
                current = []
            continue
        if current and breaks is not None and breaks[i]:
            runs.append(current)
            current = []
        current.append((x, y))
    if current:
        runs.append(current)
    return runs


def _path(runs: list[list[tuple[float, float]]], colour: str, label: str) -> str:
    """One <path> for all runs; a lone point becomes a dot (zero-length segment, round cap)."""
    parts = []
    for run in runs:
        coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
        parts.append(f"M{coords}" + ("h0" if len(run) == 1 else ""))
    if not parts:
        return ""
    return (f'<path class="series" data-label="{_esc(label)}" stroke="{_esc(colour)}" '
            f'd="{" ".join(parts)}"/>')


def _probability_chart(times: np.ndarray, probs: np.ndarray, t0: float, t1: float) -> str:
    caption = "Facial expression probabilities over time"
    if len(times) == 0:
        return _figure(caption, _empty("No timeline: no frame was analysed."))
    if not np.isfinite(probs).any():
        return _figure(caption, _empty("No face found in any analysed frame: no probabilities to show."))
    bt, bp = bin_probabilities(times, probs)
    per_point = len(times) / len(bt)
    note = "(face frames; gaps where no face was found"
    note += f"; each point averages about {per_point:.0f} frames)" if len(bt) < len(times) else ")"
    height = 250
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(0.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (0.0, 0.25, 0.5, 0.75, 1.0), xs.r0, xs.r1, "g")
    body += _time_axis(xs, MARGIN_TOP, bottom)
    x_px = [xs(t) if math.isfinite(t) else math.nan for t in bt.tolist()]
    brk = _breaks(bt).tolist()
    for k, label in enumerate(LABELS):
        y_px = [ys(p) if math.isfinite(p) else math.nan for p in bp[:, k].tolist()]
        body.append(_path(_segments(x_px, y_px, brk), LABEL_COLOURS[label], label))
    svg = _svg(height, "Probability of each facial expression label over time, from 0 to 1", body)
    legend = _legend(((lab, LABEL_COLOURS[lab]) for lab in LABELS), "probabilities", line=True)
    return _figure(caption, svg + legend, note)


def _utterance_chart(utts: Sequence[Utterance], t0: float, t1: float) -> str:
    """Each utterance as a horizontal segment over time, coloured by its most likely label."""
    caption = "Speech over time: utterances and the voice's most likely label"
    if not utts:
        return _figure(caption, _empty("No speech found in the audio: no utterances to show."))
    height = 40 + MARGIN_BOTTOM
    top, bottom = 6, height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    body = _time_axis(xs, top, bottom)
    seen: set[str] = set()
    unlabelled = False
    for u in utts:
        x0, x1 = xs(u.start), xs(u.end)
        if u.label is None:
            unlabelled = True
            colour, name = NO_MOOD_COLOUR, "no estimate"
        else:
            seen.add(u.label)
            colour = _label_colour(u.label)
            name = u.label if u.p is None else f"{u.label} {u.p:.2f}"
        tip = f"{clock(u.start)}\u2013{clock(u.end)}: {name}"
        body.append(f'<rect x="{x0:.1f}" y="{top + 4}" width="{max(x1 - x0, 0.8):.1f}" '
                    f'height="{bottom - top - 8}" fill="{_esc(colour)}"><title>{_esc(tip)}</title></rect>')
    svg = _svg(height, "Utterances over time, coloured by the voice's most likely label", body)
    items = [(lab, LABEL_COLOURS[lab]) for lab in LABELS if lab in seen]
    items += [(lab, OTHER_COLOUR) for lab in sorted(seen - set(LABELS))]
    if unlabelled:
        items.append(("no estimate", NO_MOOD_COLOUR))
    count = f"{len(utts)} utterance" + ("" if len(utts) == 1 else "s")
    return _figure(caption, svg + _legend(items, "utterances"), f"({count}; blank: no speech)")


def _window_mids(windows: Sequence[Mapping[str, Any]], xs: _Scale) -> tuple[list[float], list[bool]]:
    """x of each window's midpoint (NaN when unknown) and whether a line breaks before it."""
    mids: list[float] = []
    breaks: list[bool] = []
    prev_index: Any = None
    for w in windows:
        start, end = _finite(w.get("start")), _finite(w.get("end"))
        if start is not None and end is not None:
            mid: float | None = (start + end) / 2
        else:
            mid = start if start is not None else end
        mids.append(xs(mid) if mid is not None else math.nan)
        index = w.get("index")
        breaks.append(isinstance(index, int) and isinstance(prev_index, int) and index != prev_index + 1)
        prev_index = index
    return mids, breaks


def _valence_arousal_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float,
                           kinds: frozenset[str] = frozenset({"face"})) -> str:
    caption = "Valence and arousal per window"
    if len(kinds) > 1:
        caption += " (combined face and voice)"
    elif kinds == {"speech"}:
        caption += " (voice)"
    if not windows:
        return _figure(caption, _empty(_no_windows_message(kinds)))
    if not any(_has_mood(w) for w in windows):
        return _figure(caption, _empty(_no_mood_message(kinds, "no valence or arousal")))
    height = 210
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(-1.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (-1.0, -0.5, 0.0, 0.5, 1.0), xs.r0, xs.r1, "+g", zero=True)
    body += _time_axis(xs, MARGIN_TOP, bottom)
    mids, breaks = _window_mids(windows, xs)
    markers = sum(_has_mood(w) for w in windows) <= _MARKER_LIMIT
    for key, colour in (("valence", VALENCE_COLOUR), ("arousal", AROUSAL_COLOUR)):
        values = [_finite(w.get(key)) if _has_mood(w) else None for w in windows]
        y_px = [ys(max(-1.0, min(1.0, v))) if v is not None else math.nan for v in values]
        body.append(_path(_segments(mids, y_px, breaks), colour, key))
        if markers:
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{_esc(colour)}"/>'
                     for x, y in zip(mids, y_px, strict=True) if math.isfinite(x) and math.isfinite(y)]
    svg = _svg(height, "Valence and arousal per window, from -1 to +1", body)
    legend = _legend((("valence (unpleasant \u2212 / pleasant +)", VALENCE_COLOUR),
                      ("arousal (calm \u2212 / activated +)", AROUSAL_COLOUR)), "valence-arousal", line=True)
    note = "(gaps: windows without a mood estimate"
    note += "; each window's face and voice estimates fused)" if len(kinds) > 1 else ")"
    return _figure(caption, svg + legend, note)


def _window_rects(windows: Sequence[Mapping[str, Any]],
                  xs: _Scale) -> list[tuple[Mapping[str, Any], float, float]]:
    out = []
    for w in windows:
        start, end = _finite(w.get("start")), _finite(w.get("end"))
        if start is None or end is None:
            continue
        x0, x1 = xs(start), xs(max(end, start))
        out.append((w, x0, max(x1 - x0, 0.6)))
    return out


def _threshold_line(xs: _Scale, y: float, colour: str, dash: str) -> str:
    return (f'<line x1="{xs.r0:.1f}" x2="{xs.r1:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{_esc(colour)}" '
            f'stroke-width="1.2" stroke-dasharray="{_esc(dash)}"/>')


def _coverage_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float, face_threshold: float | None,
                    kinds: frozenset[str] = frozenset({"face"}), speech_threshold: float | None = None) -> str:
    """Per window: share of analysed frames with a face and/or share of time with speech (bars)."""
    face, speech = "face" in kinds, "speech" in kinds
    if face and speech:
        caption = "Share of frames with a face and of time with speech, per window"
    elif speech:
        caption = "Share of time with speech, per window"
    else:
        caption = "Share of analysed frames with a face, per window"
    if not windows:
        return _figure(caption, _empty(_no_windows_message(kinds)))
    height = 170
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(0.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (0.0, 0.5, 1.0), xs.r0, xs.r1, ".0%")
    body += _time_axis(xs, MARGIN_TOP, bottom)
    series: list[tuple[str, str, Any]] = []
    if face:
        series.append(("face", FACE_COLOUR, _window_face))
    if speech:
        series.append(("speech", VOICE_COLOUR, _window_speech))
    rects = _window_rects(windows, xs)
    # side-by-side bars while each is wide enough to see; with many windows, one line per modality
    as_lines = len(series) > 1 and bool(rects) and (xs.r1 - xs.r0) / len(rects) / len(series) < 3.0
    if as_lines:
        mids, breaks = _window_mids(windows, xs)
        for name, colour, get in series:
            y_px = [ys(max(0.0, min(1.0, _finite(get(w).get("share")) or 0.0))) for w in windows]
            body.append(_path(_segments(mids, y_px, breaks), colour, name))
    for w, x, width in rects if not as_lines else ():
        bar = max(width - 0.6, 0.6) / len(series)
        for k, (name, colour, get) in enumerate(series):
            share = _finite(get(w).get("share")) or 0.0
            y = ys(max(0.0, min(1.0, share)))
            if bottom - y > 0.05:
                body.append(f'<rect x="{x + k * bar:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{bottom - y:.1f}" '
                            f'fill="{_esc(colour)}" fill-opacity="0.8" data-series="{_esc(name)}"/>')
    items = []
    if face:
        items.append(("share of frames with a face", FACE_COLOUR))
    if speech:
        items.append(("share of time with speech", VOICE_COLOUR))
    if face and face_threshold is not None and 0.0 <= face_threshold <= 1.0:
        body.append(_threshold_line(xs, ys(face_threshold), THRESHOLD_COLOUR, "6 4"))
        what = "the face to count" if speech else "a mood estimate"
        items.append((f"minimum for {what} ({face_threshold:.0%})", THRESHOLD_COLOUR))
    if speech and speech_threshold is not None and 0.0 < speech_threshold <= 1.0:
        body.append(_threshold_line(xs, ys(speech_threshold), VOICE_THRESHOLD_COLOUR, "2 3"))
        items.append((f"minimum for the voice to count ({speech_threshold:.0%})", VOICE_THRESHOLD_COLOUR))
    svg = _svg(height, caption + ", from 0 to 100%", body)
    note = "(left bar face, right bar voice)" if face and speech and not as_lines else ""
    return _figure(caption, svg + _legend(items, "coverage", line=as_lines), note)


def _weights_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> str:
    """Per window, the fusion weights of face (bottom) and voice (top) as a stacked bar."""
    caption = "How much face and voice counted in each window's combined estimate"
    if not any(_has_mood(w) for w in windows):
        return _figure(caption, _empty("Neither a face nor enough speech in any window: nothing was combined."))
    height = 130
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(0.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (0.0, 0.5, 1.0), xs.r0, xs.r1, ".0%")
    body += _time_axis(xs, MARGIN_TOP, bottom)
    for w, x, width in _window_rects(windows, xs):
        weights = _mapping(w.get("fusion_weights"))
        face = max(0.0, _finite(weights.get("face")) or 0.0)
        voice = max(0.0, _finite(weights.get("speech")) or 0.0)
        total = face + voice
        if not _has_mood(w) or total <= 0:
            continue
        level = 0.0
        bar = width - 0.6 if width > 3.0 else width  # no gaps between thin bars: they would read as stripes
        tip = f"{clock(w.get('start'))}\u2013{clock(w.get('end'))}: face {face / total:.0%}, voice {voice / total:.0%}"
        parts = []
        for share, colour in ((face / total, FACE_TINT), (voice / total, VOICE_TINT)):
            if share > 0:
                y_top, y_low = ys(level + share), ys(level)
                parts.append(f'<rect x="{x:.1f}" y="{y_top:.1f}" width="{bar:.1f}" height="{y_low - y_top:.1f}" '
                             f'fill="{_esc(colour)}"/>')
            level += share
        body.append(f'<g shape-rendering="crispEdges"><title>{_esc(tip)}</title>{"".join(parts)}</g>')
    svg = _svg(height, "Fusion weight of face and voice in each window, stacked to 100%", body)
    legend = _legend((("face", FACE_TINT), ("voice", VOICE_TINT)), "fusion-weights")
    return _figure(caption, svg + legend,
                   "(a modality counts more with more coverage and better quality; blank: no mood estimate)")


def _nice_ticks(lo: float, hi: float, count: int = 3) -> list[float]:
    """About `count` + 1 round tick values covering [lo, hi]."""
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    raw = (hi - lo) / count
    magnitude = 10.0 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * magnitude >= raw * (1 - 1e-9))
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 10) for k in range(first, last + 1)]


def _index_runs(valid: Sequence[bool], breaks: Sequence[bool]) -> list[list[int]]:
    """Runs of consecutive valid indices; `breaks[i]` (before index i) also ends a run."""
    runs: list[list[int]] = []
    current: list[int] = []
    for i, ok in enumerate(valid):
        if not ok or (current and breaks[i]):
            if current:
                runs.append(current)
            current = [i] if ok else []
            continue
        current.append(i)
    if current:
        runs.append(current)
    return runs


def _band(mids: Sequence[float], lows: Sequence[float], highs: Sequence[float], breaks: Sequence[bool],
          colour: str) -> list[str]:
    """A shaded band between `lows` and `highs` (pixels) per run of windows; a whisker for a lone window."""
    valid = [math.isfinite(x) and math.isfinite(a) and math.isfinite(b) for x, a, b in zip(mids, lows, highs,
                                                                                           strict=True)]
    out = []
    for run in _index_runs(valid, breaks):
        if len(run) == 1:
            i = run[0]
            out.append(f'<line x1="{mids[i]:.1f}" x2="{mids[i]:.1f}" y1="{lows[i]:.1f}" y2="{highs[i]:.1f}" '
                       f'stroke="{_esc(colour)}" stroke-opacity="0.45" stroke-width="3"/>')
            continue
        upper = " ".join(f"{mids[i]:.1f},{highs[i]:.1f}" for i in run)
        lower = " ".join(f"{mids[i]:.1f},{lows[i]:.1f}" for i in reversed(run))
        out.append(f'<polygon points="{upper} {lower}" fill="{_esc(colour)}" fill-opacity="0.2"/>')
    return out


@dataclass(frozen=True)
class _Panel:
    title: str
    key: str
    spec: str  # tick label format
    sd_key: str | None = None  # drawn as a band of mean -/+ SD
    from_zero: bool = True


PROSODY_PANELS = (
    _Panel("Pitch (F0), mean in Hz; band: \u00b11 SD within the window", "f0_mean_hz", "g", "f0_sd_hz",
           from_zero=False),
    _Panel("Speaking rate, syllables per second (pauses included)", "speaking_rate", "g"),
    _Panel("Pause ratio: share of the speaking time spent in pauses", "pause_ratio", ".0%"),
)


def _prosody_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> str:
    """Small multiples of prosody per window, on one time axis: pitch with its SD, rate, pauses."""
    caption = "Prosody per window"
    if not any(_finite(_mapping(w.get("prosody")).get("speech_s")) for w in windows):
        return _figure(caption, _empty("No speech found: no prosody to show."))
    title_h, plot_h, gap = 16, 66, 12
    height = len(PROSODY_PANELS) * (title_h + plot_h + gap) - gap + MARGIN_BOTTOM + 4
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    mids, breaks = _window_mids(windows, xs)
    markers = len(windows) <= _MARKER_LIMIT
    body: list[str] = []
    top = 4.0
    for n, panel in enumerate(PROSODY_PANELS):
        last = n == len(PROSODY_PANELS) - 1
        plot_top, plot_bottom = top + title_h, top + title_h + plot_h
        body.append(f'<text x="{xs.r0:.1f}" y="{top + 11:.1f}" font-weight="600">{_esc(panel.title)}</text>')
        values = _prosody_values(windows, panel.key)
        sds = _prosody_values(windows, panel.sd_key) if panel.sd_key else [None] * len(windows)
        lows = [v - (s or 0.0) for v, s in zip(values, sds, strict=True) if v is not None]
        highs = [v + (s or 0.0) for v, s in zip(values, sds, strict=True) if v is not None]
        body += _time_axis(xs, plot_top, plot_bottom, labels=last)
        if not lows:
            body.append(f'<text x="{(xs.r0 + xs.r1) / 2:.1f}" y="{(plot_top + plot_bottom) / 2 + 4:.1f}" '
                        f'text-anchor="middle">no measurement</text>')
            top = plot_bottom + gap
            continue
        lo, hi = (0.0 if panel.from_zero else min(lows)), max(highs)
        ticks = _nice_ticks(lo, hi if hi > lo else lo + (1.0 if panel.spec == "g" else 0.1), 2)
        ys = _Scale(ticks[0], ticks[-1], plot_bottom, plot_top)
        body += _value_axis(ys, ticks, xs.r0, xs.r1, panel.spec)
        y_px = [ys(v) if v is not None else math.nan for v in values]
        if panel.sd_key:
            low_px = [ys(v - s) if v is not None and s is not None else math.nan for v, s in zip(values, sds,
                                                                                                 strict=True)]
            high_px = [ys(v + s) if v is not None and s is not None else math.nan for v, s in zip(values, sds,
                                                                                                  strict=True)]
            body += _band(mids, low_px, high_px, breaks, VOICE_COLOUR)
        body.append(_path(_segments(mids, y_px, breaks), VOICE_COLOUR, panel.key))
        if markers:
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4" fill="{_esc(VOICE_COLOUR)}"/>'
                     for x, y in zip(mids, y_px, strict=True) if math.isfinite(x) and math.isfinite(y)]
        top = plot_bottom + gap
    svg = _svg(height, "Prosody per window: mean pitch with its spread, speaking rate and pause ratio", body)
    return _figure(caption, svg, "(one point per window with speech; gaps: windows without speech)")


def _dominant_strip(windows: Sequence[Mapping[str, Any]], t0: float, t1: float,
                    kinds: frozenset[str] = frozenset({"face"})) -> str:
    caption = {"face": "Dominant expression per window", "speech": "Dominant label of the voice per window"}.get(
        _only(kinds) or "", "Dominant label per window (combined face and voice)")
    if not windows:
        return _figure(caption, _empty(_no_windows_message(kinds)))
    if not any(_has_mood(w) for w in windows):
        return _figure(caption, _empty(_no_mood_message(kinds, "no dominant label")))
    height = 36 + MARGIN_BOTTOM
    top, bottom = 6, height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    body = _time_axis(xs, top, bottom)
    seen: set[str] = set()
    no_mood = False
    for w, x, width in _window_rects(windows, xs):
        label = w.get("dominant") if _has_mood(w) else None
        if label is None:
            no_mood = True
        else:
            seen.add(str(label))
        colour = NO_MOOD_COLOUR if label is None else _label_colour(label)
        name = label if label is not None else "no mood"
        tip = f"{clock(w.get('start'))}\u2013{clock(w.get('end'))}: {name}"
        body.append(f'<rect x="{x:.1f}" y="{top}" width="{width:.1f}" height="{bottom - top}" '
                    f'fill="{_esc(colour)}"><title>{_esc(tip)}</title></rect>')
    svg = _svg(height, "Dominant label of each window over time", body)
    items = [(lab, LABEL_COLOURS[lab]) for lab in LABELS if lab in seen]
    items += [(lab, OTHER_COLOUR) for lab in sorted(seen - set(LABELS))]
    if no_mood:
        cause = {"face": "too few frames with a face", "speech": "too little speech"}.get(
            _only(kinds) or "", "too few frames with a face and too little speech")
        items.append((f"no mood estimate ({cause})", NO_MOOD_COLOUR))
    return _figure(caption, svg + _legend(items, "dominant"))


def _label_bars(values: Mapping[str, Any], caption: str, aria: str, fmt: Any, scale_max: float | None = None,
                empty: str = "") -> str:
    """Horizontal bars, one per label, with `fmt(value)` written after each bar."""
    nums = {lab: _finite(values.get(lab)) for lab in LABELS}
    if not any(v is not None for v in nums.values()):
        return _figure(caption, _empty(empty))
    width, row, left, right = 430, 22, 70, 96
    height = row * len(LABELS) + 8
    top_value = scale_max or max((v for v in nums.values() if v is not None), default=1.0) or 1.0
    xs = _Scale(0.0, top_value, left, width - right)
    body = [f'<line class="axis" x1="{left}" x2="{left}" y1="2" y2="{height - 4}"/>']
    for i, lab in enumerate(LABELS):
        y = 4 + i * row
        v = nums[lab]
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_esc(lab)}</text>')
        bar = 0.0 if v is None else max(0.0, xs(max(0.0, min(v, top_value))) - left)
        if bar > 0:
            body.append(f'<rect x="{left}" y="{y + 3}" width="{bar:.1f}" height="{row - 8}" '
                        f'fill="{_esc(LABEL_COLOURS[lab])}"/>')
        body.append(f'<text x="{left + bar + 5:.1f}" y="{y + 14}">{_esc(fmt(v))}</text>')
    return _figure(caption, _svg(height, aria, body, width=width))


def _label_bar_charts(summary: Mapping[str, Any], kinds: frozenset[str]) -> str:
    """Side by side: how many windows each label dominated, and the session's mean probabilities."""
    dominant_counts = _mapping(summary.get("dominant_windows"))
    total = sum(v for v in (_finite(dominant_counts.get(lab)) for lab in LABELS) if v is not None)

    def count_text(v: float | None) -> str:
        return DASH if v is None else f"{v:g}" + (f" ({v / total:.0%})" if total else "")

    no_mood = _no_mood_message(kinds, "no dominant label")
    combined = " (combined)" if len(kinds) > 1 else ""
    bars = (
        _label_bars(dominant_counts, f"Windows dominated by each label{combined}",
                    "Number of windows each label dominated", count_text, empty=no_mood)
        + _label_bars(_mapping(summary.get("probs")), f"Mean probability over windows with a mood{combined}",
                      "Mean probability of each label over the session", lambda v: _fmt(v, ".2f"),
                      scale_max=1.0, empty=_no_mood_message(kinds, "no mean probabilities"))
    )
    return f'<div class="cols">{bars}</div>'
