"""Inline SVG charts drawn on the server: the course, a session timeline, mood shares, small series.

Every text that comes from data is escaped (markupsafe); colours are SVG attributes, never inline
styles (the CSP forbids those). A chart is readable without scripts and prints as it shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from markupsafe import Markup, escape

from device.labels import AROUSAL_COLOUR, LABEL_COLOURS, LABELS, NO_MOOD_COLOUR, OTHER_COLOUR, VALENCE_COLOUR
from hub.dashboard.flags import Chart
from hub.dashboard.records import SessionPoint, parse_time

EWMA_COLOUR = "#0072B2"
LIMIT_COLOUR = "#b3261e"
PHQ_COLOUR = "#a25b00"
GAD_COLOUR = "#009E73"
W, H, LEFT, RIGHT, TOP, BOTTOM = 900, 280, 46, 46, 14, 30


def colour(label: str | None) -> str:
    return LABEL_COLOURS.get(str(label), OTHER_COLOUR) if label else NO_MOOD_COLOUR


def _f(x: float) -> str:
    return f"{x:.1f}"


class _Svg:
    def __init__(self, label: str, width: int = W, height: int = H) -> None:
        self.parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(label)}" '
                      f'xmlns="http://www.w3.org/2000/svg">']

    def add(self, tag: str, title: str | None = None, text: str | None = None, **attrs: Any) -> None:
        body = "".join(f' {k.rstrip("_").replace("_", "-")}="{escape(v)}"' for k, v in attrs.items() if v is not None)
        inner = (f"<title>{escape(title)}</title>" if title else "") + (str(escape(text)) if text else "")
        self.parts.append(f"<{tag}{body}>{inner}</{tag}>")

    def done(self) -> Markup:
        return Markup("".join(self.parts) + "</svg>")


def _time_axis(times: Sequence[datetime]) -> tuple[float, float]:
    lo, hi = min(times).timestamp(), max(times).timestamp()
    if hi - lo < 86400:
        lo, hi = lo - 43200, hi + 43200
    return lo, hi


def course_chart(points: Sequence[SessionPoint], chart: Chart, periods: Sequence[Mapping[str, Any]], *,
                 field: str = "valence", questionnaires: Sequence[Mapping[str, Any]] = (),
                 changes: Sequence[Mapping[str, Any]] = ()) -> Markup:
    """Sessions as dots (dominant mood colour), the period mean with a +-SD band, the baseline, the
    EWMA and its lower limit (valence only), model-change markers and questionnaire totals (right axis)."""
    pts = [(parse_time(p.at), p) for p in points if getattr(p, field) is not None and parse_time(p.at)]
    svg = _Svg(f"{field} per session over time")
    if not pts:
        svg.add("text", x=W / 2, y=H / 2, text_anchor="middle", text="no sessions with a mood estimate yet")
        return svg.done()
    lo, hi = _time_axis([t for t, _ in pts] + [d for d in (parse_time(q["taken_on"] + "T12:00:00Z")
                                                           for q in questionnaires) if d])
    x = lambda t: LEFT + (t.timestamp() - lo) / (hi - lo) * (W - LEFT - RIGHT)  # noqa: E731
    y = lambda v: TOP + (1 - (v + 1) / 2) * (H - TOP - BOTTOM)  # noqa: E731
    for v in (-1, -0.5, 0, 0.5, 1):
        svg.add("line", x1=LEFT, x2=W - RIGHT, y1=_f(y(v)), y2=_f(y(v)), class_="zero-line" if v == 0 else "grid-line")
        svg.add("text", x=LEFT - 6, y=_f(y(v) + 4), text_anchor="end", text=f"{v:+.1f}" if v else "0")
    for tick in _ticks(lo, hi):
        label = tick.strftime("%Y-%m" if hi - lo > 86400 * 120 else "%m-%d")
        svg.add("text", x=_f(x(tick)), y=H - 10, text_anchor="middle", text=label)
    if field == "valence" and chart.baseline_mean is not None:
        mu, sd = chart.baseline_mean, chart.baseline_sd or 0
        top, bottom = y(min(1, mu + sd)), y(max(-1, mu - sd))
        svg.add("rect", x=LEFT, width=W - LEFT - RIGHT, y=_f(top), height=_f(bottom - top),
                fill="#0072B2", fill_opacity="0.07", title=f"baseline {mu:+.2f} ± {sd:.2f} (SD)")
        svg.add("line", x1=LEFT, x2=W - RIGHT, y1=_f(y(mu)), y2=_f(y(mu)), stroke=EWMA_COLOUR, stroke_dasharray="6 4",
                title=f"baseline mean {mu:+.2f}")
    band_top, band_bottom, means = [], [], []
    for row in periods:
        start = parse_time(row["start"] + "T00:00:00Z")
        value = row.get(field)
        if start is None or value is None:
            continue
        members = [t for t, p in pts if p.at >= row["start"]]
        mid = start if not members else min(members)
        spread = row.get(f"{field}_sd") or 0.0
        band_top.append((x(mid), y(min(1, value + spread))))
        band_bottom.append((x(mid), y(max(-1, value - spread))))
        means.append((x(mid), y(value)))
    if len(band_top) >= 2:
        poly = band_top + band_bottom[::-1]
        svg.add("polygon", points=" ".join(f"{_f(a)},{_f(b)}" for a, b in poly), fill="#1b1f24", fill_opacity="0.10",
                title="period mean ± SD between sessions")
        svg.add("polyline", points=" ".join(f"{_f(a)},{_f(b)}" for a, b in means), fill="none",
                stroke=VALENCE_COLOUR if field == "valence" else AROUSAL_COLOUR, stroke_width="2")
    if field == "valence":
        shown = {p.key for _, p in pts}  # a report page shows one period: only its part of the EWMA
        ewma = [(parse_time(c.at), c) for c in chart.points if c.ewma is not None and c.key in shown]
        if ewma:
            svg.add("polyline", points=" ".join(f"{_f(x(t))},{_f(y(c.ewma))}" for t, c in ewma if t), fill="none",
                    stroke=EWMA_COLOUR, stroke_width="1.5", title="EWMA of session means")
            svg.add("polyline", points=" ".join(f"{_f(x(t))},{_f(y(max(-1, c.lcl)))}" for t, c in ewma if t),
                    fill="none", stroke=LIMIT_COLOUR, stroke_dasharray="3 3", title="lower control limit")
        for flag in (f for f in chart.flags if f.key in shown):
            t = parse_time(flag.at)
            if t:
                svg.add("path", d=f"M{_f(x(t))},{_f(H - BOTTOM - 2)} l-6,10 l12,0 z", fill=LIMIT_COLOUR,
                        title=f"review suggested ({flag.at[:10]})")
    for change in changes:
        t = parse_time(change["at"])
        if t:
            svg.add("line", x1=_f(x(t)), x2=_f(x(t)), y1=TOP, y2=H - BOTTOM, stroke="#7a4fa0", stroke_dasharray="2 3",
                    class_="model-change", title=f"{change['device_id']}: {change['from']} → {change['to']}")
    for t, p in pts:
        value = getattr(p, field)
        svg.add("circle", cx=_f(x(t)), cy=_f(y(value)), r="3.5", fill=colour(p.dominant),
                title=f"{p.at[:16]} {p.device_id}: {field} {value:+.2f}, {p.dominant or 'no mood'}")
    if questionnaires:
        _overlay(svg, questionnaires, x, lo, hi)
    return svg.done()


def _overlay(svg: _Svg, questionnaires: Sequence[Mapping[str, Any]], x: Any, lo: float, hi: float) -> None:
    """PHQ-9 (0-27) and GAD-7 (0-21) totals on a right-hand axis of 0-27."""
    yq = lambda v: TOP + (1 - v / 27) * (H - TOP - BOTTOM)  # noqa: E731
    for v in (0, 9, 18, 27):
        svg.add("text", x=W - RIGHT + 6, y=_f(yq(v) + 4), text=str(v), fill=PHQ_COLOUR)
    for instrument, col in (("PHQ-9", PHQ_COLOUR), ("GAD-7", GAD_COLOUR)):
        rows = [(parse_time(q["taken_on"] + "T12:00:00Z"), q) for q in questionnaires if q["instrument"] == instrument]
        rows = [(t, q) for t, q in rows if t]
        if len(rows) >= 2:
            svg.add("polyline", points=" ".join(f"{_f(x(t))},{_f(yq(q['total']))}" for t, q in rows), fill="none",
                    stroke=col, stroke_width="1.5")
        for t, q in rows:
            svg.add("rect", x=_f(x(t) - 4), y=_f(yq(q["total"]) - 4), width="8", height="8", fill=col,
                    class_="questionnaire", title=f"{instrument} {q['total']} on {q['taken_on']}")


def _ticks(lo: float, hi: float, n: int = 6) -> list[datetime]:
    from datetime import UTC
    step = (hi - lo) / n
    return [datetime.fromtimestamp(lo + step * (i + 0.5), UTC) for i in range(n)]


def mood_bars(periods: Sequence[Mapping[str, Any]]) -> Markup:
    """One stacked bar per period: the share of windows per dominant mood."""
    n = max(1, len(periods))
    width = max(W, n * 14 + LEFT + RIGHT)
    svg = _Svg("dominant mood share per period", width, 170)
    bar = (width - LEFT - RIGHT) / n
    for i, row in enumerate(periods):
        y0 = 150.0
        for label in LABELS:
            share = row["mood_share"].get(label, 0)
            if share:
                h = share * 130
                svg.add("rect", x=_f(LEFT + i * bar + 1), y=_f(y0 - h), width=_f(max(1, bar - 2)), height=_f(h),
                        fill=colour(label), title=f"{row['period']}: {label} {share:.0%}")
                y0 -= h
        if n <= 24 or i % max(1, n // 12) == 0:
            svg.add("text", x=_f(LEFT + (i + 0.5) * bar), y=165, text_anchor="middle", text=row["period"])
    return svg.done()


def series(values: Sequence[tuple[str, float | None]], label: str, lo: float | None = None,
           hi: float | None = None, col: str = VALENCE_COLOUR) -> Markup:
    """A small line over periods (prosody, coverage)."""
    known = [v for _, v in values if v is not None]
    svg = _Svg(label, W, 120)
    if not known:
        svg.add("text", x=W / 2, y=60, text_anchor="middle", text=f"no {label} yet")
        return svg.done()
    lo = min(known) if lo is None else lo
    hi = max(known) if hi is None else hi
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    n = len(values)
    x = lambda i: LEFT + (i + 0.5) / n * (W - LEFT - RIGHT)  # noqa: E731
    y = lambda v: 10 + (1 - (v - lo) / (hi - lo)) * 85  # noqa: E731
    svg.add("text", x=LEFT - 6, y=14, text_anchor="end", text=f"{hi:.2g}")
    svg.add("text", x=LEFT - 6, y=99, text_anchor="end", text=f"{lo:.2g}")
    line = [(x(i), y(v)) for i, (_, v) in enumerate(values) if v is not None]
    svg.add("polyline", points=" ".join(f"{_f(a)},{_f(b)}" for a, b in line), fill="none", stroke=col,
            stroke_width="2")
    for i, (key, v) in enumerate(values):
        if v is not None:
            svg.add("circle", cx=_f(x(i)), cy=_f(y(v)), r="3", fill=col, title=f"{key}: {v:.3g}")
    svg.add("text", x=LEFT, y=115, text=values[0][0])
    svg.add("text", x=W - RIGHT, y=115, text_anchor="end", text=values[-1][0])
    return svg.done()


def timeline(windows: Sequence[Mapping[str, Any]]) -> Markup:
    """One session: a coloured strip of windows (dominant mood) and valence/arousal lines over time."""
    svg = _Svg("session timeline", W, 220)
    if not windows:
        svg.add("text", x=W / 2, y=110, text_anchor="middle", text="no windows received")
        return svg.done()
    end = max(w["end_s"] for w in windows) or 1.0
    x = lambda s: LEFT + s / end * (W - LEFT - RIGHT)  # noqa: E731
    y = lambda v: 40 + (1 - (v + 1) / 2) * 150  # noqa: E731
    for w in windows:
        svg.add("rect", x=_f(x(w["start_s"])), y=8, width=_f(max(1, x(w["end_s"]) - x(w["start_s"]))), height=22,
                fill=colour(w["dominant"] if w["has_mood"] else None),
                title=f"{w['start_s']:.0f}-{w['end_s']:.0f} s: {w['dominant'] or 'no mood'}")
    for v in (-1, 0, 1):
        svg.add("line", x1=LEFT, x2=W - RIGHT, y1=_f(y(v)), y2=_f(y(v)), class_="zero-line" if v == 0 else "grid-line")
        svg.add("text", x=LEFT - 6, y=_f(y(v) + 4), text_anchor="end", text=str(v))
    for key, col in (("valence", VALENCE_COLOUR), ("arousal", AROUSAL_COLOUR)):
        runs: list[list[tuple[float, float]]] = [[]]
        for w in windows:  # a window without an estimate breaks the line: nothing is drawn across it
            if w.get(key) is None or not w["has_mood"]:
                runs.append([])
            else:
                runs[-1].append((x((w["start_s"] + w["end_s"]) / 2), y(w[key])))
        for line in (r for r in runs if r):
            if len(line) == 1:
                svg.add("circle", cx=_f(line[0][0]), cy=_f(line[0][1]), r="2.5", fill=col, title=key)
            else:
                svg.add("polyline", points=" ".join(f"{_f(a)},{_f(b)}" for a, b in line), fill="none", stroke=col,
                        stroke_width="2", title=key)
    for s in range(0, int(end) + 1, max(60, int(end / 6) // 60 * 60 or 60)):
        svg.add("text", x=_f(x(s)), y=212, text_anchor="middle", text=f"{s // 60} min")
    return svg.done()


def legend() -> Markup:
    """The mood colours as small SVG swatches (no inline styles)."""
    items = "".join(f'<li><svg width="12" height="12" aria-hidden="true"><rect width="12" height="12" rx="2" '
                    f'fill="{colour(label)}"/></svg> {escape(label)}</li>' for label in LABELS)
    return Markup(f'<ul class="legend">{items}</ul>')
