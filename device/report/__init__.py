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

The package, along its seams: `data` prepares what is shown (no markup), `svg` draws the charts
(SVG built in Python), `tables` prepares what the tables hold, `text` holds the formatting and the
one escaping helper (`_esc`); the page itself is `templates/report.html.j2` (tables laid out by
`templates/tables.html.j2`) with `style.css`, rendered here by Jinja2 with autoescaping on. The
template's output goes through `_esc` as well (its `finalize`), so plain values are escaped the same
way everywhere (`&quot;`, `&#x27;`, as `html.escape` does); built fragments arrive as Markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib.resources import files
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from device.labels import AROUSAL_COLOUR, VALENCE_COLOUR
from device.notice import NOT_A_DIAGNOSIS
from device.report.data import (
    DEFAULT_MIN_PAUSE_S,
    MAX_POINTS,
    Utterance,
    _no_windows_message,
    _session_modalities,
    _time_domain,
    _warnings,
    bin_probabilities,
    timeline_arrays,
    utterances,
)
from device.report.svg import (
    _coverage_chart,
    _dominant_strip,
    _label_bar_charts,
    _probability_chart,
    _prosody_chart,
    _utterance_chart,
    _valence_arousal_chart,
    _weights_chart,
)
from device.report.tables import (
    PROSODY_NOTE,
    _config_pairs,
    _model_rows,
    _prosody_rows,
    _source_pairs,
    _summary_rows,
    _window_table,
)
from device.report.text import DASH, MIDDOT, _esc, _finite, _mapping, _plain, clock

__all__ = ["AROUSAL_COLOUR", "MAX_POINTS", "VALENCE_COLOUR", "Utterance", "bin_probabilities", "clock",
           "render_report", "timeline_arrays", "utterances"]


def _finalize(value: Any) -> Markup:
    """Every `{{ value }}` of the template: built fragments (Markup) as they are, the rest through `_esc`."""
    return value if isinstance(value, Markup) else Markup(_esc(value))


@cache
def _template() -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.PackageLoader("device.report", "templates"), autoescape=True,
                             finalize=_finalize, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    return env.get_template("report.html.j2")


@cache
def _css() -> str:
    return files("device.report").joinpath("style.css").read_text(encoding="utf-8")


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
    source = _mapping(summary.get("source"))
    subtitle = [s for s in (source.get("file"), source.get("audio_file"), summary.get("created_utc")) if s]

    mood_charts = []
    if "face" in kinds:
        mood_charts.append(_probability_chart(times, probs, t0, t1))
    if "speech" in kinds:
        mood_charts.append(_utterance_chart(utts, t0, t1))
    mood_charts += [_valence_arousal_chart(windows, t0, t1, kinds), _dominant_strip(windows, t0, t1, kinds),
                    _label_bar_charts(summary, kinds)]
    coverage_title = "Coverage and fusion" if len(kinds) > 1 else "Coverage"
    coverage_charts = [_coverage_chart(windows, t0, t1, threshold, kinds, speech_min)]
    if len(kinds) > 1:
        coverage_charts.append(_weights_chart(windows, t0, t1))
    created = summary.get("created_utc")
    source_pairs, software_pairs = _source_pairs(summary, kinds)
    return _template().render(
        title=title, css=Markup(_css()), subtitle=MIDDOT.join(str(s) for s in subtitle), notice=notice, dash=DASH,
        warnings=warnings, source=source_pairs, software=software_pairs,
        summary_rows=_summary_rows(summary, windows, window_seconds, kinds), speech="speech" in kinds,
        prosody_rows=_prosody_rows(summary, min_pause_s), prosody_note=PROSODY_NOTE,
        mood_charts=[Markup(c) for c in mood_charts], coverage_title=coverage_title,
        coverage_charts=[Markup(c) for c in coverage_charts],
        prosody_chart=Markup(_prosody_chart(windows, t0, t1)) if "speech" in kinds else "",
        window_table=_window_table(windows, kinds), no_windows=_no_windows_message(kinds),
        models=_model_rows(summary), config=_config_pairs(summary),
        software_version=_plain(summary.get("software_version")), created=created if created else "")
