"""Self-contained HTML report of one analysed session, for `affectbox analyze`.

`render_report(summary, windows, timeline)` turns the analysis outputs (the dict from
`device.aggregate.summarize` plus the caller's metadata, `Window.to_json()` rows and
`Observation.to_json()` rows of both modalities) into one HTML5 document that opens offline: no
scripts, no fonts, no stylesheets or images from elsewhere. It reads well for the three kinds of
session: face only (video without audio), voice only (audio file) and both. Charts are inline
SVG drawn here, each only for the modalities the session has:

1. the seven facial expression probabilities over time (face; binned to at most `MAX_POINTS`
   points; frames without a face are gaps, not zeros);
2. the utterances over time, coloured by the voice model's most likely label (voice);
3. valence and arousal per window, from the window's mood (fused when both modalities exist;
   -1..1, zero line);
4. per window, the share of frames with a face and of time with speech (bars, with each
   modality's minimum), and with both modalities how much each counted in the fusion;
5. prosody per window (voice): mean pitch with its SD as a band, speaking rate, pause ratio;
6. the dominant label per window as a coloured strip, and bar charts of how many windows each
   label dominated and of the session's mean probabilities.

Around them: the "does not diagnose" notice, source/model/software metadata, warnings, a summary
table (with per-modality and combined mood, and a prosody block explained in plain language from
device/audio/prosody.py) and a table of windows. Every piece of text is HTML-escaped. The page is
styled for screen and for A4 printing. Missing keys and None values render as a dash; a
modality the session has but that found nothing renders placeholders ("no face found", "no
speech found") instead of empty charts.
"""

from __future__ import annotations

import html
import json
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
from device.notice import NOT_A_DIAGNOSIS

MAX_POINTS = 600  # most points per probability line; longer timelines are averaged into time bins

# the two at 80% on white, opaque: adjacent thin bars neither overlap darker nor show the grid through
FACE_TINT, VOICE_TINT = "#33B18F", "#8864AE"
THRESHOLD_COLOUR = "#B33C00"
VOICE_THRESHOLD_COLOUR = "#3B1F5C"
MODALITY_NAMES = {"face": "face", "speech": "voice"}
DASH = "\u2014"
MIDDOT = " \u00b7 "
NUM = ' class="num"'

SVG_NS = "http://www.w3.org/2000/svg"
WIDTH = 880  # chart viewBox width; the SVG scales to the page width
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 22, 10, 24
_TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800, 21600, 43200)
_MARKER_LIMIT = 150  # draw a dot per window up to this many windows
DEFAULT_MIN_PAUSE_S = 0.15  # device.config.SpeechConfig.min_pause_ms, when the config is not given

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
table.windows th { white-space: normal; vertical-align: bottom; }
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
.prosody-note { margin: 6px 0 0; }
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


def _time_axis(xs: _Scale, top: float, bottom: float, labels: bool = True) -> list[str]:
    """Vertical grid lines and (unless `labels` is False) mm:ss labels under the plot area."""
    out = []
    for t in _time_ticks(xs.d0, xs.d1):
        x = xs(t)
        out.append(f'<line class="grid" x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}"/>')
        if labels:
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


# --------------------------------------------------------------------------------------------
# charts


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
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{colour}"/>'
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
    return (f'<line x1="{xs.r0:.1f}" x2="{xs.r1:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{colour}" '
            f'stroke-width="1.2" stroke-dasharray="{dash}"/>')


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
                            f'fill="{colour}" fill-opacity="0.8" data-series="{name}"/>')
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
                             f'fill="{colour}"/>')
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


def _prosody_values(windows: Sequence[Mapping[str, Any]], key: str) -> list[float | None]:
    out: list[float | None] = []
    for w in windows:
        prosody = _mapping(w.get("prosody"))
        out.append(_finite(prosody.get(key)) if _finite(prosody.get("speech_s")) else None)
    return out


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
                       f'stroke="{colour}" stroke-opacity="0.45" stroke-width="3"/>')
            continue
        upper = " ".join(f"{mids[i]:.1f},{highs[i]:.1f}" for i in run)
        lower = " ".join(f"{mids[i]:.1f},{lows[i]:.1f}" for i in reversed(run))
        out.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.2"/>')
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
            body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.4" fill="{VOICE_COLOUR}"/>'
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
                    f'fill="{colour}"><title>{_esc(tip)}</title></rect>')
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
                        f'fill="{LABEL_COLOURS[lab]}"/>')
        body.append(f'<text x="{left + bar + 5:.1f}" y="{y + 14}">{_esc(fmt(v))}</text>')
    return _figure(caption, _svg(height, aria, body, width=width))


# --------------------------------------------------------------------------------------------
# sections


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


def _dominant_html(label: Any, probs: Mapping[str, Any], missing: str = "no mood estimate") -> str:
    if label is None:
        return f'{DASH} <span class="muted">({_esc(missing)})</span>'
    html_text = _swatch(_label_colour(label)) + " " + _esc(label)
    p = _finite(probs.get(label))
    if p is not None:
        html_text += f' <span class="muted">(mean probability {p:.2f})</span>'
    return html_text


def _argmax_label(probs: Mapping[str, Any]) -> str | None:
    best: tuple[float, str] | None = None
    for lab in LABELS:
        v = _finite(probs.get(lab))
        if v is not None and (best is None or v > best[0]):
            best = (v, lab)
    return None if best is None else best[1]


def _rows_html(rows: Iterable[tuple[str, str, str]], cls: str = "summary") -> str:
    """Table of (name, already-escaped value, about) rows."""
    body = "".join(f'<tr><th scope="row">{_esc(name)}</th><td>{value}</td>'
                   f'<td class="about">{_esc(about)}</td></tr>' for name, value, about in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>'


ANALYSED = {
    "face": "face only (the recording has no audio: voice and prosody were not analysed)",
    "speech": "voice only (the recording has no video: facial expression was not analysed)",
}


def _summary_table(summary: Mapping[str, Any], windows: Sequence[Mapping[str, Any]],
                   window_seconds: float | None, kinds: frozenset[str] = frozenset({"face"})) -> str:
    duration = _finite(summary.get("duration_s"))
    coverage = _mapping(summary.get("coverage"))
    both = len(kinds) > 1
    rows = [("Duration", _esc(f"{clock(duration)} ({_fmt(duration, '.1f')} s)" if duration is not None else DASH),
             "length of the analysed recording (mm:ss)")]
    # only name the modalities when the summary says which ones were analysed
    if any(m in coverage for m in MODALITY_NAMES):
        rows.append(("Analysed", _esc(ANALYSED.get(_only(kinds) or "", "face and voice")),
                     "what the recording allowed: video for the face, audio for the voice"))
    if "face" in kinds:
        face = _mapping(coverage.get("face"))
        share, items, present = face.get("share"), face.get("items"), face.get("present")
        face_text = _pct(share)
        if _finite(items) is not None and _finite(present) is not None:
            face_text += f" ({present:g} of {items:g} analysed frames)"
        rows.append(("Share of time with a face", _esc(face_text), "analysed frames in which a face was found"))
    if "speech" in kinds:
        speech = _mapping(coverage.get("speech"))
        speech_text = _pct(speech.get("share"))
        seconds, n = _finite(speech.get("seconds")), _finite(speech.get("items"))
        details = []
        if seconds is not None:
            details.append(f"{seconds:.1f} s")
        if n is not None:
            details.append(f"{n:g} utterance" + ("" if n == 1 else "s"))
        if details:
            speech_text += f" ({' in '.join(details)})"
        speakers = _mapping(summary.get("speakers"))
        attributed = speakers.get("attributed") is True
        rows.append(("Share of time with speech", _esc(speech_text),
                     "time covered by the patient's utterances (enrolled voices left out)" if attributed else
                     "time covered by the utterances the voice-activity detector found (every voice in the "
                     "room counts: speakers are not told apart)"))
        if speakers:
            other_text = (f"{_fmt(speakers.get('other_s'), '.1f')} s ({_pct(speakers.get('other_share'))} of the "
                          "speech)" if attributed else "not told apart")
            rows.append(("Speech of other voices", _esc(other_text),
                         _plain(speakers.get("note")) or ("enrolled voices (clinicians): counted, never analysed"
                                                          if attributed else "no voices enrolled")))
    probs = _mapping(summary.get("probs"))
    dominant = summary.get("dominant")
    modality_probs = _mapping(summary.get("modality_probs"))
    if both:
        for m, about in (("face", "face alone: highest mean probability over windows in which a face was seen"),
                         ("speech", "voice alone: highest mean probability over windows with speech")):
            mp = _mapping(modality_probs.get(m))
            missing = "no face estimate" if m == "face" else "no voice estimate"
            rows.append((f"Dominant mood: {MODALITY_NAMES[m]}", _dominant_html(_argmax_label(mp), mp, missing),
                         about))
        rows.append(("Dominant mood: combined", _dominant_html(dominant, probs),
                     "face and voice fused per window, then the label with the highest mean probability over "
                     "windows with a mood"))
    else:
        name = "Dominant mood" + (f" ({MODALITY_NAMES[_only(kinds) or 'face']})"
                                  if any(m in coverage for m in MODALITY_NAMES) else "")
        rows.append((name, _dominant_html(dominant, probs),
                     "label with the highest mean probability over windows with a mood"))

    def va(key: str) -> str:
        mean, sd = _finite(summary.get(key)), _finite(summary.get(f"{key}_sd"))
        return DASH if mean is None else f"{mean:+.2f}" + ("" if sd is None else f" (SD {sd:.2f})")

    combined = " (combined)" if both else ""
    rows += [
        (f"Mean valence{combined}", _esc(va("valence")),
         "\u22121 unpleasant \u2026 +1 pleasant; SD across windows (emotional range)"),
        (f"Mean arousal{combined}", _esc(va("arousal")), "\u22121 calm \u2026 +1 activated; SD across windows"),
    ]
    if "face" in kinds:
        rows.append(("Facial expressivity", _esc(_fmt(summary.get("face_expressivity"), ".3f")),
                     "mean spread of the probabilities within windows; higher means more varied expressions"))
    n_windows = summary.get("windows", len(windows))
    window_text = f"{_plain(summary.get('windows_with_mood'))} of {_plain(n_windows)}"
    if window_seconds is not None:
        window_text += f" (windows of {window_seconds:g} s)"
    need = {"face": "enough frames with a face", "speech": "enough speech"}.get(
        _only(kinds) or "", "enough frames with a face or enough speech")
    rows.append(("Windows with a mood estimate", _esc(window_text), f"a window needs {need} to carry a mood"))
    return _rows_html(rows)


def _prosody_block(summary: Mapping[str, Any], min_pause_s: float) -> str:
    """The session's prosody with a plain-language reading of each measure (device/audio/prosody.py)."""
    heading = "<h3>Voice: prosody (how the patient speaks)</h3>"
    prosody = _mapping(summary.get("prosody"))
    if not _finite(prosody.get("speech_s")):
        return heading + _empty("No speech found: no prosody measures.")

    def value(key: str, spec: str, unit: str) -> str:
        x = _finite(prosody.get(key))
        return DASH if x is None else f"{format(x, spec)}{unit}"

    pitch_sd = value("f0_sd_st", ".1f", " semitones")
    if _finite(prosody.get("f0_sd_hz")) is not None:
        pitch_sd += f" (SD {value('f0_sd_hz', '.0f', ' Hz')})"
    rate = value("speaking_rate", ".1f", " syllables/s")
    if _finite(prosody.get("articulation_rate")) is not None:
        rate += f" (articulation rate {value('articulation_rate', '.1f', '')}, pauses excluded)"
    pause_ms = f"{1000 * min_pause_s:.0f} ms"
    rows = [
        ("Speech measured", _esc(value("speech_s", ".1f", " s")),
         "speaking time the measures below come from (pauses excluded); the more, the steadier they are"),
        ("Pitch (F0), mean", _esc(value("f0_mean_hz", ".0f", " Hz")),
         "average voice pitch; differs a lot between people (for example between men and women)"),
        ("Pitch variability", _esc(pitch_sd),
         "how much the voice moves; lower variability = more monotonous speech (semitones make men's and "
         "women's voices comparable)"),
        ("Speaking rate", _esc(rate),
         "syllables per second, pauses included; slower speech gives lower values (the count is approximate: "
         "the change across sessions is what matters)"),
        ("Pause ratio", _esc(_pct(prosody.get("pause_ratio"))),
         f"share of the speaking time spent in silent gaps of at least {pause_ms}; more and longer pauses go "
         f"with slowed, effortful speech"),
        ("Mean pause length", _esc(value("mean_pause_s", ".2f", " s")),
         "average length of those pauses; longer pauses go with slowed, effortful speech"),
        ("Loudness variability", _esc(value("energy_sd_db", ".1f", " dB")),
         "SD of loudness while voicing; lower = flatter, more monotonous speech"),
    ]
    note = ("Prosody differs a lot between people: it is most meaningful compared with the same patient's "
            "earlier sessions, recorded the same way. None of these measures is a diagnosis.")
    return heading + _rows_html(rows) + f'<p class="note prosody-note">{_esc(note)}</p>'


def _dl(pairs: Iterable[tuple[str, str]]) -> str:
    """Definition list of already-escaped (term, value) pairs."""
    items = "".join(f"<dt>{term}</dt><dd>{value}</dd>" for term, value in pairs)
    return f'<dl class="meta">{items}</dl>' if items else f'<p class="muted">{DASH}</p>'


ANALYSIS_NAMES = {
    "face_cpu_ms_per_frame": "Face CPU time per frame (ms)",
    "speech_real_time_factor": "Speech real-time factor (CPU s per audio s)",
}


def _source_block(summary: Mapping[str, Any], kinds: frozenset[str] = frozenset({"face"})) -> str:
    source = dict(_mapping(summary.get("source")))
    pairs: list[tuple[str, str]] = []
    for key in ("file", "file_name", "name", "path"):
        if key in source:
            pairs.append(("File", _esc(_plain(source.pop(key)))))
    if "audio_file" in source:
        audio_file = source.pop("audio_file")
        if audio_file is not None:
            pairs.append(("Audio file", _esc(_plain(audio_file))))
    for key in ("duration_s", "duration"):
        if key in source:
            d = source.pop(key)
            text = f"{clock(d)} ({_fmt(d, '.1f')} s)" if _finite(d) is not None else _plain(d)
            pairs.append(("Duration", _esc(text)))
    if "audio_seconds" in source:
        a = source.pop("audio_seconds")
        if _finite(a):
            pairs.append(("Audio", _esc(f"{clock(a)} ({_fmt(a, '.1f')} s)")))
        elif "speech" not in kinds:
            pairs.append(("Audio", "none"))
    if "fps" in source:
        fps = source.pop("fps")
        if fps is not None:
            pairs.append(("Frame rate", _esc(f"{fps:g} fps" if _finite(fps) is not None else _plain(fps))))
    if "width" in source or "height" in source:
        w, h = source.pop("width", None), source.pop("height", None)
        if w is not None or h is not None:
            pairs.append(("Frame size", _esc(f"{_plain(w)} \u00d7 {_plain(h)} px")))
    if "face" not in kinds and not _finite(source.get("frames_read")):
        source.pop("frames_read", None)
    pairs += [(_esc(_human(k)), _esc(_plain(v))) for k, v in source.items() if v is not None]
    software = [("Software", _esc(f"affectbox {_plain(summary.get('software_version'))}")),
                ("Report created (UTC)", _esc(_plain(summary.get("created_utc"))))]
    analysis = _mapping(summary.get("analysis"))
    for k, v in analysis.items():
        other_modality = ("face" not in kinds and k in ("frames_analysed", "detector_runs")) or (
            "speech" not in kinds and k == "utterances")
        if v is None or (other_modality and not _finite(v)):
            continue
        software.append((_esc(ANALYSIS_NAMES.get(str(k), _human(k))), _esc(_plain(v))))
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


def _windows_table(windows: Sequence[Mapping[str, Any]], kinds: frozenset[str] = frozenset({"face"})) -> str:
    if not windows:
        return _empty(_no_windows_message(kinds))
    face, speech = "face" in kinds, "speech" in kinds
    both = face and speech
    columns = [("#", True), ("Start", False), ("End", False), ("Dominant (combined)" if both else "Dominant", False),
               ("Valence", True), ("Arousal", True)]
    if face:
        columns.append(("Face share", True))
    if speech:
        columns.append(("Speech share", True))
    if both:
        columns.append(("Weight face / voice", True))
    if speech:
        columns += [("Speaking rate (syll./s)", True), ("Pause ratio", True)]
    head = "".join(f'<th scope="col"{NUM if num else ""}>{name}</th>' for name, num in columns)
    head = f"<thead><tr>{head}</tr></thead>"
    rows = []
    for w in windows:
        mood = _has_mood(w)
        dominant = w.get("dominant") if mood else None
        dom = DASH + " no mood" if dominant is None else _swatch(_label_colour(dominant)) + " " + _esc(dominant)
        cls = "" if mood else ' class="nomood"'
        cells = [f"<td{NUM}>{_esc(_plain(w.get('index')))}</td><td>{clock(w.get('start'))}</td>"
                 f"<td>{clock(w.get('end'))}</td><td>{dom}</td><td{NUM}>{_fmt(w.get('valence'), '+.2f')}</td>"
                 f"<td{NUM}>{_fmt(w.get('arousal'), '+.2f')}</td>"]
        if face:
            cells.append(f"<td{NUM}>{_pct(_window_face(w).get('share'))}</td>")
        if speech:
            cells.append(f"<td{NUM}>{_pct(_window_speech(w).get('share') or 0.0)}</td>")
        if both:
            weights = _mapping(w.get("fusion_weights"))
            wf, wv = _finite(weights.get("face")) or 0.0, _finite(weights.get("speech")) or 0.0
            text = f"{wf / (wf + wv):.0%} / {wv / (wf + wv):.0%}" if mood and wf + wv > 0 else DASH
            cells.append(f"<td{NUM}>{text}</td>")
        if speech:
            prosody = _mapping(w.get("prosody"))
            cells.append(f"<td{NUM}>{_fmt(prosody.get('speaking_rate'), '.1f')}</td>"
                         f"<td{NUM}>{_pct(prosody.get('pause_ratio'))}</td>")
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f'<table class="windows">{head}<tbody>{"".join(rows)}</tbody></table>'


# --------------------------------------------------------------------------------------------


def render_report(summary: dict[str, Any], windows: list[dict[str, Any]], timeline: list[dict[str, Any]],
                  title: str = "affectbox session report") -> str:
    """The whole session as one self-contained HTML5 document (no network access needed to view it)."""
    summary = summary if isinstance(summary, Mapping) else {}
    windows = [w for w in windows or [] if isinstance(w, Mapping)]
    times, probs = timeline_arrays(timeline or [])
    utts = utterances(timeline or [])
    kinds = _session_modalities(summary, windows, len(times) > 0, bool(utts))
    any_face = bool(np.isfinite(probs).any())
    t0, t1 = _time_domain(summary, windows, times, utts)
    config = _mapping(summary.get("config"))
    aggregation = _mapping(config.get("aggregation"))
    threshold = _finite(aggregation.get("min_face_share"))
    window_seconds = _finite(aggregation.get("window_seconds"))
    speech_min = _finite(_mapping(config.get("fusion")).get("speech_min_coverage"))
    min_pause_ms = _finite(_mapping(config.get("speech")).get("min_pause_ms"))
    min_pause_s = min_pause_ms / 1000 if min_pause_ms else DEFAULT_MIN_PAUSE_S
    notice = summary.get("notice") or NOT_A_DIAGNOSIS

    warnings = _warnings(summary, windows, len(times) + len(utts), any_face, kinds)
    warnings_html = ""
    if warnings:
        items = "".join(f"<li>{_esc(w)}</li>" for w in warnings)
        warnings_html = (f'<section class="warnings" aria-label="Warnings"><h2>Warnings</h2>'
                         f"<ul>{items}</ul></section>")

    source = _mapping(summary.get("source"))
    subtitle = [s for s in (source.get("file"), source.get("audio_file"), summary.get("created_utc")) if s]
    subtitle_html = f'<p class="sub">{_esc(MIDDOT.join(str(s) for s in subtitle))}</p>' if subtitle else ""

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
    mood_charts = []
    if "face" in kinds:
        mood_charts.append(_probability_chart(times, probs, t0, t1))
    if "speech" in kinds:
        mood_charts.append(_utterance_chart(utts, t0, t1))
    mood_charts += [_valence_arousal_chart(windows, t0, t1, kinds), _dominant_strip(windows, t0, t1, kinds),
                    f'<div class="cols">{bars}</div>']
    coverage_title = "Coverage and fusion" if len(kinds) > 1 else "Coverage"
    coverage_charts = [_coverage_chart(windows, t0, t1, threshold, kinds, speech_min)]
    if len(kinds) > 1:
        coverage_charts.append(_weights_chart(windows, t0, t1))
    prosody_html = ""
    if "speech" in kinds:
        prosody_html = (f'<section aria-label="Prosody over time"><h2>Prosody over time</h2>'
                        f"{_prosody_chart(windows, t0, t1)}</section>")

    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light">',
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body><main>",
        f"<header><h1>{_esc(title)}</h1>{subtitle_html}",
        f'<p class="notice" role="note"><strong>Not a diagnosis.</strong> {_esc(notice)}</p></header>',
        warnings_html,
        f'<section aria-label="Recording"><h2>Recording</h2>{_source_block(summary, kinds)}</section>',
        '<section aria-label="Summary"><h2>Summary</h2>',
        _summary_table(summary, windows, window_seconds, kinds),
        _prosody_block(summary, min_pause_s) if "speech" in kinds else "",
        "</section>",
        '<section aria-label="Mood over time"><h2>Mood over time</h2>',
        *mood_charts,
        "</section>",
        f'<section aria-label="{coverage_title}"><h2>{coverage_title}</h2>',
        *coverage_charts,
        "</section>",
        prosody_html,
        f'<section aria-label="Windows"><h2>Windows</h2>{_windows_table(windows, kinds)}</section>',
        '<section aria-label="Technical details"><h2>Technical details</h2><h3>Models</h3>',
        _models_table(summary),
        f"<h3>Configuration</h3>{_config_block(summary)}</section>",
        f"<footer><p>Generated by affectbox {_esc(_plain(summary.get('software_version')))}"
        f"{' on ' + _esc(summary['created_utc']) if summary.get('created_utc') else ''}. "
        f"{_esc(notice)}</p></footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
