"""The HTML report: well-formed, offline, escaped, and robust to empty, face-free and long sessions.

Inputs are built with the real pipeline objects (`Observation`, `WindowAggregator`, `summarize`)
fed with random probabilities, so the report is tested against the shapes the analysis produces.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict
from html.parser import HTMLParser
from typing import Any

import numpy as np
import pytest

from device.aggregate import NOT_A_DIAGNOSIS, WindowAggregator, summarize
from device.config import AggregationConfig
from device.labels import LABELS
from device.observation import Observation
from device.report import MAX_POINTS, bin_probabilities, clock, render_report, timeline_arrays

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
MALICIOUS = "<script>alert(1)</script>.mp4"
NO_FACE_WARNING = "no face was found in any analysed frame: the report holds no mood estimate"

Session = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


def make_session(seconds: float, fps: float = 10.0, face: Any = 0.9, seed: int = 0,
                 window_seconds: float = 10.0, file_name: str = "session.mp4") -> Session:
    """summary, window rows and timeline rows as `analyze_video` makes them, from random probabilities.

    `face` is the chance that a frame has a face, or a function of time giving that chance.
    """
    rng = np.random.default_rng(seed)
    config = AggregationConfig(window_seconds=window_seconds, min_face_share=0.2)
    aggregator = WindowAggregator(config)
    n = round(seconds * fps)
    probs = rng.dirichlet(np.full(len(LABELS), 0.6), size=n)
    quality = rng.uniform(0.3, 1.0, size=n)
    draws = rng.random(n)
    windows = []
    timeline = []
    counts = {"face": {"items": 0, "present": 0}}
    for i in range(n):
        t = i / fps
        chance = face(t) if callable(face) else face
        if draws[i] < chance:
            box = [100.0, 80.0, 220.0, 200.0]
            obs = Observation(t, "face", probs[i], float(quality[i]),
                              {"faces": 1, "box": box, "score": 0.9, "tracked": bool(i % 2), "roll_deg": 0.0})
        else:
            obs = Observation(t, "face", None, 0.0, {"faces": 0})
        counts["face"]["items"] += 1
        counts["face"]["present"] += int(obs.present)
        timeline.append(obs.to_json())
        windows.extend(aggregator.add(obs))
    windows.extend(aggregator.flush(end=seconds))
    summary = summarize(windows, seconds, counts)
    summary.update({
        "software_version": "0.1.0",
        "created_utc": "2025-01-02T03:04:05Z",
        "source": {"file": file_name, "duration_s": seconds, "fps": 30.0, "width": 640, "height": 480,
                   "frames_read": n * 3},
        "analysis": {"frames_analysed": n, "detector_runs": n // 2},
        "models": [
            {"name": "blazeface", "version": "1", "sha256": "ab" * 32, "runtime": "litert"},
            {"name": "expression", "version": "2", "sha256": "cd" * 32, "runtime": "litert"},
        ],
        "config": {"aggregation": asdict(config), "face": {"analysis_fps": fps, "roi": None}},
        "warnings": [] if counts["face"]["present"] else [NO_FACE_WARNING],
    })
    return summary, [w.to_json() for w in windows], timeline


class Checker(HTMLParser):
    """Collects parse problems (unbalanced tags), tags, legends and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.svg_opened = 0
        self.legends: dict[str, list[str]] = {}
        self._legend: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "svg":
            self.svg_opened += 1
        if tag == "ul" and dict(attrs).get("class") == "legend":
            self._legend = dict(attrs).get("data-chart") or ""
            self.legends[self._legend] = []
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("svg", "ul", "li", "div", "p", "table", "section", "figure"):
            self.problems.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            self.problems.append(f"end tag for void element {tag}")
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> does not close <{self.stack[-1] if self.stack else None}>")
            if tag in self.stack:
                while self.stack and self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()
        if tag == "ul":
            self._legend = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._legend is not None and self.stack and self.stack[-1] == "li" and data.strip():
            self.legends[self._legend].append(data.strip())


def check_html(doc: str) -> Checker:
    assert doc.startswith("<!DOCTYPE html>")
    checker = Checker()
    checker.feed(doc)
    checker.close()
    assert checker.problems == []
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    return checker


def external_urls(doc: str) -> list[str]:
    stripped = doc.replace('xmlns="http://www.w3.org/2000/svg"', "")
    return re.findall(r"https?://\S*", stripped, flags=re.IGNORECASE)


@pytest.fixture(scope="module")
def session() -> Session:
    # two minutes with a face-free stretch from 40 s to 65 s
    return make_session(125.0, face=lambda t: 0.0 if 40.0 <= t < 65.0 else 0.9, seed=1)


def test_report_is_well_formed_html_with_balanced_svg(session: Session) -> None:
    summary, windows, timeline = session
    doc = render_report(summary, windows, timeline)
    checker = check_html(doc)
    assert checker.svg_opened >= 5  # probabilities, valence/arousal, face share, strip, two bar charts
    assert doc.count("<svg") == doc.count("</svg>") == checker.svg_opened
    assert "<title>affectbox session report</title>" in doc
    assert "<script" not in doc.lower()


def test_report_contains_the_notice_prominently(session: Session) -> None:
    summary, windows, timeline = session
    doc = render_report(summary, windows, timeline)
    notice = re.search(r'<p class="notice"[^>]*>(.*?)</p>', doc, flags=re.S)
    assert notice is not None and NOT_A_DIAGNOSIS in notice.group(1)
    assert doc.index('class="notice"') < doc.index("<svg")
    summary = {k: v for k, v in summary.items() if k != "notice"}
    assert NOT_A_DIAGNOSIS in render_report(summary, windows, timeline)


def test_report_has_no_external_resources(session: Session) -> None:
    doc = render_report(*session)
    assert external_urls(doc) == []
    for needle in ("<link", "<img", "<script", "@import", "url("):
        assert needle not in doc.lower()


def test_report_escapes_untrusted_text(session: Session) -> None:
    summary, windows, timeline = session
    summary = {**summary, "source": {**summary["source"], "file": MALICIOUS},
               "warnings": ['<img src=x onerror="alert(2)">'], "software_version": "<b>1</b>",
               "config": {"face": {"note": "</style><script>x</script>"}}}
    doc = render_report(summary, windows, timeline, title=f"affectbox report: {MALICIOUS}")
    check_html(doc)
    assert "<script" not in doc.lower()
    assert "<img" not in doc and "<b>1</b>" not in doc
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.mp4" in doc
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt;" in doc


def test_summary_and_windows_tables(session: Session) -> None:
    summary, windows, timeline = session
    doc = render_report(summary, windows, timeline)
    text = " ".join(check_html(doc).text)
    assert "02:05 (125.0 s)" in text  # duration in mm:ss
    assert summary["dominant"] in text
    assert f"{summary['valence']:+.2f} (SD {summary['valence_sd']:.2f})" in text
    assert f"{summary['windows_with_mood']} of {summary['windows']}" in text
    rows = re.findall(r"<tr(?: class=\"nomood\")?><td class=\"num\">\d+</td>", doc)
    assert len(rows) == len(windows) == 13
    assert doc.count('<tr class="nomood">') == sum(not w["has_mood"] for w in windows) >= 2
    assert "ab" * 32 in doc  # model hash
    for tick in ("00:00", "01:00", "02:00"):
        assert f">{tick}</text>" in doc


def test_legend_lists_every_label(session: Session) -> None:
    checker = check_html(render_report(*session))
    assert checker.legends["probabilities"] == list(LABELS)
    for label in LABELS:
        assert f'data-label="{label}"' in render_report(*session)


def test_no_face_session_shows_warning_and_placeholders() -> None:
    summary, windows, timeline = make_session(35.0, face=0.0)
    assert summary["windows_with_mood"] == 0 and windows
    for given in (summary, {**summary, "warnings": []}):  # with the caller's warning, and without any
        doc = render_report(given, windows, timeline)
        checker = check_html(doc)
        warnings = re.search(r'<section class="warnings".*?</section>', doc, flags=re.S)
        assert warnings is not None and "no face" in warnings.group(0).lower()
        assert warnings.group(0).lower().count("no face") == 1
        assert 'class="empty"' in doc and "No face found" in doc
        assert "probabilities" not in checker.legends
        assert 'class="series"' not in doc
    assert external_urls(doc) == []


def test_face_too_rare_for_a_mood_is_warned() -> None:
    summary, windows, timeline = make_session(30.0, face=0.05, seed=4)
    assert summary["windows_with_mood"] == 0 and summary["coverage"]["face"]["present"] > 0
    doc = render_report({**summary, "warnings": []}, windows, timeline)
    check_html(doc)
    assert "no face found in enough frames" in doc


def test_empty_session() -> None:
    summary = summarize([], 0.0, {})
    doc = render_report(summary, [], [])
    check_html(doc)
    assert NOT_A_DIAGNOSIS in doc
    assert "no frame was analysed" in doc
    assert "<svg" not in doc  # nothing to draw: placeholders only


def test_minimal_and_odd_inputs_do_not_break() -> None:
    summary, windows, timeline = make_session(3.0, seed=2)  # one short window
    assert len(windows) == 1
    doc = render_report(summary, windows, timeline)
    check_html(doc)
    assert "<circle" in doc  # a single window still shows its valence/arousal point
    bare = {"notice": summary["notice"], "duration_s": None, "source": None, "models": None,
            "warnings": None, "config": None, "coverage": None, "probs": None, "dominant": None}
    odd_timeline = [{"t": None}, {"t": "x", "present": True},
                    {"t": 1.0, "present": True, "probs": {"happy": "?"}}, {"t": 2.0, "present": False},
                    "not a row"]
    check_html(render_report(bare, [{"index": 0}], odd_timeline))  # type: ignore[list-item]
    check_html(render_report({}, [], []))


def test_long_session_is_fast_and_small() -> None:
    summary, windows, timeline = make_session(3600.0, face=lambda t: 0.0 if 1200 <= t < 1500 else 0.85)
    assert len(timeline) == 36_000
    start = time.perf_counter()
    doc = render_report(summary, windows, timeline)
    elapsed = time.perf_counter() - start
    check_html(doc)
    assert elapsed < 1.0, f"rendering took {elapsed:.2f} s"
    assert len(doc.encode("utf-8")) < 1_000_000
    for label in LABELS:  # at most MAX_POINTS points per probability line
        d = re.search(rf'data-label="{label}" stroke="[^"]+" d="([^"]*)"', doc)
        assert d is not None
        assert len(re.findall(r"-?\d+\.\d,-?\d+\.\d", d.group(1))) <= MAX_POINTS
        assert d.group(1).count("M") >= 2  # the face-free stretch is a gap
    assert ">60:00</text>" in doc


def test_binning_averages_and_leaves_gaps() -> None:
    timeline = make_session(200.0, fps=10.0, face=lambda t: 0.0 if 50 <= t < 100 else 1.0)[2]
    times, probs = timeline_arrays(timeline)
    assert probs.shape == (2000, len(LABELS))
    assert np.isnan(probs[(times >= 50) & (times < 100)]).all()
    bt, bp = bin_probabilities(times, probs, max_points=100)
    assert len(bt) == len(bp) == 100
    gap = slice(25, 50)  # 2 s bins: 50..100 s has no face
    assert np.isnan(bp[gap]).all() and np.isnan(bt[gap]).all()
    kept = ~np.isnan(bt)
    assert kept.sum() == 75
    np.testing.assert_allclose(bp[kept].sum(axis=1), 1.0, atol=1e-3)  # averages of distributions
    np.testing.assert_allclose(bp[0], probs[:20].mean(axis=0), atol=1e-9)
    short_t, _ = bin_probabilities(times[:50], probs[:50], max_points=100)
    assert len(short_t) == 50  # short timelines pass through unbinned


@pytest.mark.parametrize(("seconds", "text"), [(0, "00:00"), (9.6, "00:10"), (65, "01:05"), (3600, "60:00"),
                                                (-5, "-00:05"), (None, "\u2014"), (math.nan, "\u2014")])
def test_clock(seconds: float | None, text: str) -> None:
    assert clock(seconds) == text
