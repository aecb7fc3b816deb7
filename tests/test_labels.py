"""The shared label order and the valence/arousal table."""

import numpy as np
import pytest

from device.labels import LABELS, VA_TABLE, VALENCE_AROUSAL, valence_arousal


def test_label_order_is_fer2013_order():
    assert LABELS == ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def test_table_covers_every_label_within_unit_square():
    assert set(VALENCE_AROUSAL) == set(LABELS)
    assert np.all(np.abs(VA_TABLE) <= 1.0)


def test_circumplex_ordering():
    v = {lab: VALENCE_AROUSAL[lab][0] for lab in LABELS}
    a = {lab: VALENCE_AROUSAL[lab][1] for lab in LABELS}
    assert VALENCE_AROUSAL["neutral"] == (0.0, 0.0)
    assert v["happy"] > 0 and all(v[lab] < 0 for lab in ("angry", "disgust", "fear", "sad"))
    assert a["sad"] < 0 < a["happy"] < a["angry"]
    assert a["fear"] > a["disgust"] and a["surprise"] > a["happy"]


def test_valence_arousal_is_expectation():
    onehot = np.eye(len(LABELS))
    for i, lab in enumerate(LABELS):
        assert valence_arousal(onehot[i]) == pytest.approx(VALENCE_AROUSAL[lab])
    mix = np.zeros(len(LABELS))
    mix[LABELS.index("happy")] = 0.5
    mix[LABELS.index("sad")] = 0.5
    expected = (np.array(VALENCE_AROUSAL["happy"]) + np.array(VALENCE_AROUSAL["sad"])) / 2
    assert valence_arousal(mix) == pytest.approx(tuple(expected))
    # unnormalised input is normalised; an empty vector is neutral
    assert valence_arousal(onehot[3] * 4) == pytest.approx(VALENCE_AROUSAL["happy"])
    assert valence_arousal(np.zeros(len(LABELS))) == (0.0, 0.0)


def test_chart_colours_are_never_label_colours():
    """A valence line must not read as "sad", a face-coverage bar not as "disgust" (issue 13)."""
    from device.labels import CHART_COLOURS, LABEL_COLOURS, OTHER_COLOUR

    label_colours = {c.lower() for c in LABEL_COLOURS.values()} | {OTHER_COLOUR.lower()}
    chart = [c.lower() for c in CHART_COLOURS.values()]
    assert len(set(chart)) == len(chart), CHART_COLOURS
    assert not label_colours & set(chart), CHART_COLOURS


def test_the_report_and_the_page_draw_lines_in_the_chart_colours():
    import re
    from pathlib import Path

    from device.labels import AROUSAL_COLOUR, VALENCE_COLOUR

    root = Path(__file__).resolve().parent.parent
    script = (root / "device" / "web" / "static" / "app.js").read_text()
    # the page's script holds no colour of its own for the lines: it reads them from the template
    assert not re.search(r"_COLOUR\s*=\s*\"#", script)
    from device import report

    assert report.VALENCE_COLOUR == VALENCE_COLOUR and report.AROUSAL_COLOUR == AROUSAL_COLOUR
