"""Self-contained HTML report of one analysed session, for `affectbox analyze`.

`render_report(summary, windows, timeline)` turns the analysis outputs (the dict from
`device.aggregate.summarize` plus the caller's metadata, `Window.to_json()` rows and
`Observation.to_json()` rows) into one HTML5 document that opens offline: no scripts, no fonts,
no stylesheets or images from elsewhere. Charts are inline SVG drawn here:

1. the seven expression probabilities over time (binned to at most `MAX_POINTS` points; frames
   without a face are gaps, not zeros);
2. valence and arousal per window (-1..1, zero line);
3. the share of analysed frames with a face per window (bars, with the mood threshold);
4. the dominant label per window as a coloured strip, and bar charts of how many windows each
   label dominated and of the session's mean probabilities.

Around them: the "does not diagnose" notice, source/model/software metadata, warnings, a summary
table and a table of windows. Every piece of text is HTML-escaped. The page is styled for screen
and for A4 printing. Missing keys and None values render as a dash; a session without any face
renders placeholders ("no face found") instead of empty charts.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from device.aggregate import NOT_A_DIAGNOSIS
from device.labels import LABELS

MAX_POINTS = 600  # most points per probability line; longer timelines are averaged into time bins

# Okabe-Ito palette (distinguishable with the common colour-vision deficiencies); yellow is left
# out for its low contrast on white, neutral is a dark grey.
LABEL_COLOURS: dict[str, str] = {
    "angry": "#D55E00",
    "disgust": "#009E73",
    "fear": "#CC79A7",
    "happy": "#E69F00",
    "sad": "#0072B2",
    "surprise": "#56B4E9",
    "neutral": "#4D4D4D",
}
NO_MOOD_COLOUR = "#E3E3E3"
OTHER_COLOUR = "#999999"
VALENCE_COLOUR = "#0072B2"
AROUSAL_COLOUR = "#D55E00"
SHARE_COLOUR = "#009E73"
THRESHOLD_COLOUR = "#B33C00"
DASH = "\u2014"
MIDDOT = " \u00b7 "
NUM = ' class="num"'

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 880  # chart viewBox width; the SVG scales to the page width
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 22, 10, 24
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200)
_MARKER_LIMIT = 150  # draw a dot per window up to this many windows

CSS = """
:root { --ink: #1b1b1b; --muted: #5e5e5e; --rule: #d4d4d4; --soft: #f5f5f5; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 980px; margin: 0 auto; padding: 24px 28px 36px; }
h1 { font-size: 22px; margin: 0 0 2px; overflow-wrap: anywhere; }
h2 { font-size: 16px; margin: 26px 0 8px; padding-bottom: 3px; border-bottom: 1px solid var(--rule); }
h3 { font-size: 14px; margin: 14px 0 6px; }
p { margin: 4px 0; }
.sub, .muted, .note { color: var(--muted); }
.note { font-size: 12.5px; }
.notice { margin: 12px 0 6px; padding: 10px 14px; border: 2px solid #B35900; border-radius: 4px;
  background: #FFF4E5; font-size: 15px; }
.warnings { margin: 12px 0; padding: 8px 14px; border-left: 5px solid #C0392B; background: #FDECEA; }
.warnings h2 { border: 0; margin: 0 0 4px; padding: 0; color: #962D22; }
.warnings ul { margin: 0; padding-left: 20px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #E6E6E6; vertical-align: top; }
th { font-weight: 600; }
thead th { border-bottom: 1px solid #9E9E9E; background: var(--soft); }
.num { text-align: right; white-space: nowrap; }
table.summary th { width: 34%; }
table.summary td.about { color: var(--muted); font-size: 12.5px; width: 38%; }
table.windows { font-size: 12.5px; }
table.windows td, table.windows th { padding: 2px 8px; }
tr.nomood td { color: var(--muted); }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 8px 28px; }
.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12px;
  overflow-wrap: anywhere; word-break: break-all; }
figure { margin: 10px 0 18px; break-inside: avoid; page-break-inside: avoid; }
figcaption { font-weight: 600; margin-bottom: 2px; }
figcaption .note { font-weight: 400; }
svg.chart { display: block; width: 100%; height: auto; }
svg.chart text { font-size: 11px; fill: #444; font-family: inherit; }
svg.chart .grid { stroke: #E6E6E6; stroke-width: 1; }
svg.chart .axis { stroke: #8A8A8A; stroke-width: 1; }
svg.chart .zero { stroke: #6B6B6B; stroke-width: 1; stroke-dasharray: 4 3; }
svg.chart .series { fill: none; stroke-width: 1.5; stroke-linejoin: round; stroke-linecap: round; }
.legend { list-style: none; display: flex; flex-wrap: wrap; gap: 2px 16px; margin: 4px 0 0; padding: 0;
  font-size: 12.5px; }
.legend li { display: inline-flex; align-items: center; gap: 6px; }
.swatch { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; }
.swatch.line { width: 18px; height: 3px; border-radius: 1px; vertical-align: 3px; }
.empty { margin: 4px 0; padding: 18px; border: 1px dashed #BDBDBD; border-radius: 4px; background: #FAFAFA;
  color: var(--muted); text-align: center; }
footer { margin-top: 28px; padding-top: 8px; border-top: 1px solid var(--rule); color: var(--muted);
  font-size: 12px; }
@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { font-size: 10pt; }
  main { max-width: none; padding: 0; }
  h2 { break-after: avoid; page-break-after: avoid; }
  tr { break-inside: avoid; page-break-inside: avoid; }
  .cols { gap: 4px 18px; }
}
"""


# --------------------------------------------------------------------------------------------
# formatting helpers


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (None, bools, strings, NaN and infinities give None)."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        return None
    x = float(value)
    return x if math.isfinite(x) else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def clock(seconds: float | None) -> str:
    """Seconds as mm:ss (minutes keep counting past 59: one hour is 60:00); a dash for None."""
    s = _finite(seconds)
    if s is None:
        return DASH
    total = round(s)
    sign = "-" if total < 0 else ""
    minutes, secs = divmod(abs(total), 60)
    return f"{sign}{minutes:02d}:{secs:02d}"


def _fmt(value: Any, spec: str = ".2f") -> str:
    x = _finite(value)
    return DASH if x is None else format(x, spec)


def _pct(value: Any) -> str:
    x = _finite(value)
    return DASH if x is None else f"{100 * x:.0f}%"


def _plain(value: Any) -> str:
    """Generic metadata value as text (not yet escaped)."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return format(value, "g") if math.isfinite(value) else str(value)
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def _human(key: Any) -> str:
    text = str(key).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _swatch(colour: str, line: bool = False) -> str:
    cls = "swatch line" if line else "swatch"
    return f'<span class="{cls}" style="background:{_esc(colour)}" aria-hidden="true"></span>'


def _label_colour(label: Any) -> str:
    return LABEL_COLOURS.get(str(label), OTHER_COLOUR)


def _legend(items: Iterable[tuple[str, str]], chart: str, line: bool = False) -> str:
    lis = "".join(f"<li>{_swatch(colour, line)}{_esc(name)}</li>" for name, colour in items)
    return f'<ul class="legend" data-chart="{_esc(chart)}">{lis}</ul>'


def _empty(message: str) -> str:
    return f'<div class="empty" role="note">{_esc(message)}</div>'


def _figure(caption: str, body: str, note: str = "") -> str:
    extra = f' <span class="note">{_esc(note)}</span>' if note else ""
    return f"<figure><figcaption>{_esc(caption)}{extra}</figcaption>{body}</figure>"


# --------------------------------------------------------------------------------------------
# chart geometry


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
    return (f'<svg class="chart" xmlns="{SVG_NS}" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" role="img" aria-label="{_esc(label)}"><title>{_esc(label)}</title>'
            + "".join(body) + "</svg>")


def _time_axis(xs: _Scale, top: float, bottom: float) -> list[str]:
    """Vertical grid lines and mm:ss labels under the plot area."""
    out = []
    for t in _time_ticks(xs.d0, xs.d1):
        x = xs(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        out.append(f'<text x="{x:.1f}" y="{bottom + 15:.1f}" text-anchor="middle">{clock(t)}</text>')
    out.append(f'<line class="axis" x1="{xs.r0:.1f}" x2="{xs.r1:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}"/>')
    return out


def _value_axis(ys: _Scale, ticks: Sequence[float], x0: float, x1: float, spec: str,
                zero: bool = False) -> list[str]:
    """Horizontal grid lines with their labels left of the plot area; a dashed line at 0."""
    out = []
    for v in ticks:
        y = ys(v)
        cls = "zero" if zero and v == 0 else "grid"
        out.append(f'<line class="{cls}" x1="{x0:.1f}" x2="{x1:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>')
        text = "0" if v == 0 else format(v, spec)
        out.append(f'<text x="{x0 - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{text}</text>')
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


# --------------------------------------------------------------------------------------------
# data preparation


def timeline_arrays(timeline: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Times [N] and probabilities [N, 7] (rows of NaN where no face) from timeline rows.

    Uses the face modality when the timeline has one (other modalities would be mixed in
    otherwise); rows without a finite `t` are dropped. Rows come back sorted by time.
    """
    rows = [r for r in timeline if isinstance(r, Mapping)]
    if any(r.get("modality") == "face" for r in rows):
        rows = [r for r in rows if r.get("modality") == "face"]
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


def _has_mood(window: Mapping[str, Any]) -> bool:
    has = window.get("has_mood")
    return bool(has) if has is not None else window.get("dominant") is not None


def _time_domain(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                 times: np.ndarray) -> tuple[float, float]:
    ends = [_finite(summary.get("duration_s"))]
    starts: list[float | None] = [0.0]
    for w in windows:
        starts.append(_finite(w.get("start")))
        ends.append(_finite(w.get("end")))
    if len(times):
        starts.append(float(times[0]))
        ends.append(float(times[-1]))
    t0 = min(s for s in starts if s is not None)
    t1 = max((e for e in ends if e is not None), default=t0)
    return t0, (t1 if t1 > t0 else t0 + 1.0)


# --------------------------------------------------------------------------------------------
# charts


def _probability_chart(times: np.ndarray, probs: np.ndarray, t0: float, t1: float) -> str:
    caption = "Expression probabilities over time"
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
    svg = _svg(height, "Probability of each expression label over time, from 0 to 1", body)
    legend = _legend(((lab, LABEL_COLOURS[lab]) for lab in LABELS), "probabilities", line=True)
    return _figure(caption, svg + legend, note)


def _valence_arousal_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> str:
    caption = "Valence and arousal per window"
    if not windows:
        return _figure(caption, _empty("No windows: nothing was analysed."))
    if not any(_has_mood(w) for w in windows):
        return _figure(caption, _empty("No face found often enough in any window: no valence or arousal."))
    height = 210
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(-1.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (-1.0, -0.5, 0.0, 0.5, 1.0), xs.r0, xs.r1, "+g", zero=True)
    body += _time_axis(xs, MARGIN_TOP, bottom)
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
    markers = sum(_has_mood(w) for w in windows) <= _MARKER_LIMIT
    for key, colour in (("valence", VALENCE_COLOUR), ("arousal", AROUSAL_COLOUR)):
        values = [_finite(w.get(key)) if _has_mood(w) else None for w in windows]
        y_px = [ys(max(-1.0, min(1.0, v))) if v is not None else math.nan for v in values]
        body.append(_path(_segments(mids, y_px, breaks), colour, key))
        if markers:
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{colour}"/>'
                     for x, y in zip(mids, y_px, strict=True) if math.isfinite(x) and math.isfinite(y)]
    svg = _svg(height, "Valence and arousal per window, from -1 to +1", body)
    legend = _legend((("valence (unpleasant \u2212 / pleasant +)", VALENCE_COLOUR),
                      ("arousal (calm \u2212 / activated +)", AROUSAL_COLOUR)), "valence-arousal", line=True)
    return _figure(caption, svg + legend, "(gaps: windows without a mood estimate)")


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


def _face_share_chart(windows: Sequence[Mapping[str, Any]], t0: float, t1: float,
                      threshold: float | None) -> str:
    caption = "Share of analysed frames with a face, per window"
    if not windows:
        return _figure(caption, _empty("No windows: nothing was analysed."))
    height = 170
    bottom = height - MARGIN_BOTTOM
    xs = _Scale(t0, t1, MARGIN_LEFT, WIDTH - MARGIN_RIGHT)
    ys = _Scale(0.0, 1.0, bottom, MARGIN_TOP)
    body = _value_axis(ys, (0.0, 0.5, 1.0), xs.r0, xs.r1, ".0%")
    body += _time_axis(xs, MARGIN_TOP, bottom)
    for w, x, width in _window_rects(windows, xs):
        share = _finite(_window_face(w).get("share")) or 0.0
        y = ys(max(0.0, min(1.0, share)))
        if bottom - y > 0.05:
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 0.6, 0.6):.1f}" '
                        f'height="{bottom - y:.1f}" fill="{SHARE_COLOUR}" fill-opacity="0.8"/>')
    items = [("share of frames with a face", SHARE_COLOUR)]
    if threshold is not None and 0.0 <= threshold <= 1.0:
        y = ys(threshold)
        body.append(f'<line x1="{xs.r0:.1f}" x2="{xs.r1:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.2" stroke-dasharray="6 4"/>')
        items.append((f"minimum for a mood estimate ({threshold:.0%})", THRESHOLD_COLOUR))
    svg = _svg(height, "Share of analysed frames with a face in each window, from 0 to 100%", body)
    return _figure(caption, svg + _legend(items, "face-share"))


def _dominant_strip(windows: Sequence[Mapping[str, Any]], t0: float, t1: float) -> str:
    caption = "Dominant expression per window"
    if not windows:
        return _figure(caption, _empty("No windows: nothing was analysed."))
    if not any(_has_mood(w) for w in windows):
        return _figure(caption, _empty("No face found often enough in any window: no dominant expression."))
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
                    f'fill="{colour}"><title>{_esc(tip)}</title></rect>')
    svg = _svg(height, "Dominant expression label of each window over time", body)
    items = [(lab, LABEL_COLOURS[lab]) for lab in LABELS if lab in seen]
    items += [(lab, OTHER_COLOUR) for lab in sorted(seen - set(LABELS))]
    if no_mood:
        items.append(("no mood estimate (too few frames with a face)", NO_MOOD_COLOUR))
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
                        f'fill="{LABEL_COLOURS[lab]}"/>')
        body.append(f'<text x="{left + bar + 5:.1f}" y="{y + 14}">{_esc(fmt(v))}</text>')
    return _figure(caption, _svg(height, aria, body, width=width))


# --------------------------------------------------------------------------------------------
# sections


def _warnings(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]], n_times: int,
              any_face: bool) -> list[str]:
    given = summary.get("warnings")
    if isinstance(given, str):
        given = [given]
    out = [str(w) for w in given or [] if w is not None and str(w).strip()]
    mentions_no_face = any("no face" in w.casefold() for w in out)
    windows_with_mood = sum(_has_mood(w) for w in windows) or (_finite(summary.get("windows_with_mood")) or 0)
    if n_times == 0 and not windows and not _finite(summary.get("windows")):
        out.append("no frame was analysed: the session is empty")
    elif not windows_with_mood and not mentions_no_face:
        share = _finite(_mapping(_mapping(summary.get("coverage")).get("face")).get("share"))
        if any_face or share:
            out.append(f"no face found in enough frames for a mood estimate (a face was seen in "
                       f"{_pct(share)} of analysed frames, below each window's minimum)")
        else:
            out.append("no face found in any analysed frame: the report holds no mood estimate")
    return out


def _summary_table(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                   window_seconds: float | None) -> str:
    duration = _finite(summary.get("duration_s"))
    face = _mapping(_mapping(summary.get("coverage")).get("face"))
    share, items, present = face.get("share"), face.get("items"), face.get("present")
    face_text = _pct(share)
    if _finite(items) is not None and _finite(present) is not None:
        face_text += f" ({present:g} of {items:g} analysed frames)"
    dominant = summary.get("dominant")
    probs = _mapping(summary.get("probs"))
    if dominant is None:
        dominant_html = f"{DASH} <span class=\"muted\">(no mood estimate)</span>"
    else:
        p = _finite(probs.get(dominant))
        dominant_html = _swatch(_label_colour(dominant)) + " " + _esc(dominant)
        if p is not None:
            dominant_html += f' <span class="muted">(mean probability {p:.2f})</span>'
    n_windows = summary.get("windows", len(windows))
    with_mood = summary.get("windows_with_mood")
    window_text = f"{_plain(with_mood)} of {_plain(n_windows)}"
    if window_seconds is not None:
        window_text += f" (windows of {window_seconds:g} s)"

    def va(key: str) -> str:
        mean, sd = _finite(summary.get(key)), _finite(summary.get(f"{key}_sd"))
        return DASH if mean is None else f"{mean:+.2f}" + ("" if sd is None else f" (SD {sd:.2f})")

    rows = [
        ("Duration", _esc(f"{clock(duration)} ({_fmt(duration, '.1f')} s)" if duration is not None else DASH),
         "length of the analysed recording (mm:ss)"),
        ("Share of time with a face", _esc(face_text), "analysed frames in which a face was found"),
        ("Dominant mood", dominant_html, "label with the highest mean probability over windows with a mood"),
        ("Mean valence", _esc(va("valence")),
         "\u22121 unpleasant \u2026 +1 pleasant; SD across windows (emotional range)"),
        ("Mean arousal", _esc(va("arousal")), "\u22121 calm \u2026 +1 activated; SD across windows"),
        ("Facial expressivity", _esc(_fmt(summary.get("face_expressivity"), ".3f")),
         "mean spread of the probabilities within windows; higher means more varied expressions"),
        ("Windows with a mood estimate", _esc(window_text),
         "a window needs enough frames with a face to carry a mood"),
    ]
    body = "".join(f'<tr><th scope="row">{_esc(name)}</th><td>{value}</td>'
                   f'<td class="about">{_esc(about)}</td></tr>' for name, value, about in rows)
    return f'<table class="summary"><tbody>{body}</tbody></table>'


def _dl(pairs: Iterable[tuple[str, str]]) -> str:
    """Definition list of already-escaped (term, value) pairs."""
    items = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in pairs)
    return f'<dl class="meta">{items}</dl>' if items else f'<p class="muted">{DASH}</p>'


def _source_block(summary: Mapping[str, Any]) -> str:
    source = dict(_mapping(summary.get("source")))
    pairs: list[tuple[str, str]] = []
    for key in ("file", "file_name", "name", "path"):
        if key in source:
            pairs.append(("File", _esc(_plain(source.pop(key)))))
    for key in ("duration_s", "duration"):
        if key in source:
            d = source.pop(key)
            text = f"{clock(d)} ({_fmt(d, '.1f')} s)" if _finite(d) is not None else _plain(d)
            pairs.append(("Duration", _esc(text)))
    if "fps" in source:
        fps = source.pop("fps")
        pairs.append(("Frame rate", _esc(f"{fps:g} fps" if _finite(fps) is not None else _plain(fps))))
    if "width" in source or "height" in source:
        w, h = source.pop("width", None), source.pop("height", None)
        pairs.append(("Frame size", _esc(f"{_plain(w)} \u00d7 {_plain(h)} px")))
    pairs += [(_esc(_human(k)), _esc(_plain(v))) for k, v in source.items()]
    software = [("Software", _esc(f"affectbox {_plain(summary.get('software_version'))}")),
                ("Report created (UTC)", _esc(_plain(summary.get("created_utc"))))]
    analysis = _mapping(summary.get("analysis"))
    software += [(_esc(_human(k)), _esc(_plain(v))) for k, v in analysis.items()]
    return (f'<div class="cols"><div><h3>Source</h3>{_dl(pairs)}</div>'
            f"<div><h3>Software</h3>{_dl(software)}</div></div>")


def _models_table(summary: Mapping[str, Any]) -> str:
    models = [m for m in summary.get("models") or [] if isinstance(m, Mapping)]
    if not models:
        return f'<p class="muted">{DASH} (no model information)</p>'
    keys = ["name", "version"]
    keys += [k for m in models for k in m if k not in keys and k != "sha256"]
    keys = [*dict.fromkeys(keys), "sha256"]
    head = "".join(f'<th scope="col">{_esc("SHA-256" if k == "sha256" else _human(k))}</th>' for k in keys)
    rows = []
    mono = ' class="mono"'
    for m in models:
        cells = "".join(f"<td{mono if k == 'sha256' else ''}>{_esc(_plain(m.get(k)))}</td>" for k in keys)
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="models"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, value))


def _config_block(summary: Mapping[str, Any]) -> str:
    config = summary.get("config")
    if not isinstance(config, Mapping) or not config:
        return f'<p class="muted">{DASH} (no configuration recorded)</p>'
    flat: list[tuple[str, Any]] = []
    _flatten("", config, flat)
    return _dl((f'<span class="mono">{_esc(k)}</span>', f'<span class="mono">{_esc(_plain(v))}</span>')
               for k, v in flat)


def _windows_table(windows: Sequence[Mapping[str, Any]]) -> str:
    if not windows:
        return _empty("No windows: nothing was analysed.")
    columns = (("#", True), ("Start", False), ("End", False), ("Dominant", False), ("Valence", True),
               ("Arousal", True), ("Face share", True))
    head = "".join(f'<th scope="col"{NUM if num else ""}>{name}</th>' for name, num in columns)
    head = f"<thead><tr>{head}</tr></thead>"
    rows = []
    for w in windows:
        mood = _has_mood(w)
        dominant = w.get("dominant") if mood else None
        dom = DASH + " no mood" if dominant is None else _swatch(_label_colour(dominant)) + " " + _esc(dominant)
        cls = "" if mood else ' class="nomood"'
        rows.append(
            f"<tr{cls}><td{NUM}>{_esc(_plain(w.get('index')))}</td><td>{clock(w.get('start'))}</td>"
            f"<td>{clock(w.get('end'))}</td><td>{dom}</td><td{NUM}>{_fmt(w.get('valence'), '+.2f')}</td>"
            f"<td{NUM}>{_fmt(w.get('arousal'), '+.2f')}</td>"
            f"<td{NUM}>{_pct(_window_face(w).get('share'))}</td></tr>")
    return f'<table class="windows">{head}<tbody>{"".join(rows)}</tbody></table>'


# --------------------------------------------------------------------------------------------


def render_report(summary: dict[str, Any], windows: list[dict[str, Any]], timeline: list[dict[str, Any]],
                  title: str = "affectbox session report") -> str:
    """The whole session as one self-contained HTML5 document (no network access needed to view it)."""
    summary = summary if isinstance(summary, Mapping) else {}
    windows = [w for w in windows or [] if isinstance(w, Mapping)]
    times, probs = timeline_arrays(timeline or [])
    any_face = bool(np.isfinite(probs).any())
    t0, t1 = _time_domain(summary, windows, times)
    config = _mapping(summary.get("config"))
    aggregation = _mapping(config.get("aggregation"))
    threshold = _finite(aggregation.get("min_face_share"))
    window_seconds = _finite(aggregation.get("window_seconds"))
    notice = summary.get("notice") or NOT_A_DIAGNOSIS

    warnings = _warnings(summary, windows, len(times), any_face)
    warnings_html = ""
    if warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
        warnings_html = (f'<section class="warnings" aria-label="Warnings"><h2>Warnings</h2>'
                         f"<ul>{items}</ul></section>")

    source = _mapping(summary.get("source"))
    subtitle = [s for s in (source.get("file"), summary.get("created_utc")) if s]
    subtitle_html = f'<p class="sub">{_esc(MIDDOT.join(str(s) for s in subtitle))}</p>' if subtitle else ""

    dominant_counts = _mapping(summary.get("dominant_windows"))
    total = sum(v for v in (_finite(dominant_counts.get(lab)) for lab in LABELS) if v is not None)

    def count_text(v: float | None) -> str:
        return DASH if v is None else f"{v:g}" + (f" ({v / total:.0%})" if total else "")

    no_mood = "No face found often enough in any window: no dominant expression."
    bars = (
        _label_bars(dominant_counts, "Windows dominated by each label",
                    "Number of windows each label dominated", count_text, empty=no_mood)
        + _label_bars(_mapping(summary.get("probs")), "Mean probability over windows with a mood",
                      "Mean probability of each label over the session", lambda v: _fmt(v, ".2f"),
                      scale_max=1.0, empty="No face found: no mean probabilities.")
    )

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>",
        f"<header><h1>{_esc(title)}</h1>{subtitle_html}",
        f'<p class="notice" role="note"><strong>Not a diagnosis.</strong> {_esc(notice)}</p></header>',
        warnings_html,
        f'<section aria-label="Recording"><h2>Recording</h2>{_source_block(summary)}</section>',
        '<section aria-label="Summary"><h2>Summary</h2>',
        f"{_summary_table(summary, windows, window_seconds)}</section>",
        '<section aria-label="Mood over time"><h2>Mood over time</h2>',
        _probability_chart(times, probs, t0, t1),
        _valence_arousal_chart(windows, t0, t1),
        _face_share_chart(windows, t0, t1, threshold),
        _dominant_strip(windows, t0, t1),
        f'<div class="cols">{bars}</div></section>',
        f'<section aria-label="Windows"><h2>Windows</h2>{_windows_table(windows)}</section>',
        '<section aria-label="Technical details"><h2>Technical details</h2><h3>Models</h3>',
        _models_table(summary),
        f"<h3>Configuration</h3>{_config_block(summary)}</section>",
        f"<footer><p>Generated by affectbox {_esc(_plain(summary.get('software_version')))}"
        f"{' on ' + _esc(summary['created_utc']) if summary.get('created_utc') else ''}. "
        f"{_esc(notice)}</p></footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
