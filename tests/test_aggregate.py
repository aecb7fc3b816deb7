"""Windows and session summary from observations."""

import numpy as np
import pytest

from device.aggregate import WindowAggregator, summarize
from device.config import AggregationConfig
from device.labels import LABELS, VALENCE_AROUSAL
from device.observation import Observation


def onehot(label: str) -> np.ndarray:
    p = np.zeros(len(LABELS))
    p[LABELS.index(label)] = 1.0
    return p


DEFAULT = AggregationConfig(window_seconds=10.0, min_face_share=0.2)


def feed(observations, config=DEFAULT, end=None):
    agg = WindowAggregator(config)
    windows = []
    for obs in observations:
        windows += agg.add(obs)
    windows += agg.flush(end)
    return windows


def test_windows_split_by_time_and_carry_means():
    obs = [Observation(t / 10, "face", onehot("happy"), 1.0) for t in range(100)]
    obs += [Observation(10 + t / 10, "face", onehot("sad") if t % 2 else None, 0.0 if t % 2 == 0 else 1.0)
            for t in range(100)]
    windows = feed(obs, end=20.0)
    assert [w.index for w in windows] == [0, 1]
    first, second = windows
    assert (first.start, first.end) == (0.0, 10.0) and (second.start, second.end) == (10.0, 20.0)
    assert first.dominant == "happy" and second.dominant == "sad"
    assert first.valence_arousal == pytest.approx(VALENCE_AROUSAL["happy"])
    assert second.modalities["face"]["share"] == 0.5
    assert first.modalities["face"]["expressivity"] == pytest.approx(0.0)


def test_quality_weights_the_mean():
    obs = [Observation(0.0, "face", onehot("happy"), 0.9), Observation(0.1, "face", onehot("sad"), 0.1)]
    (window,) = feed(obs)
    assert window.probs[LABELS.index("happy")] == pytest.approx(0.9)


def test_low_coverage_window_has_no_mood():
    obs = [Observation(t / 10, "face", onehot("angry") if t == 0 else None, 1.0 if t == 0 else 0.0)
           for t in range(100)]
    (window,) = feed(obs)
    assert window.probs is None and window.dominant is None
    assert window.to_json()["has_mood"] is False


def test_empty_spans_emit_no_window_and_time_never_goes_back():
    obs = [Observation(1.0, "face", onehot("happy"), 1.0), Observation(35.0, "face", onehot("sad"), 1.0),
           Observation(34.0, "face", onehot("sad"), 1.0)]  # out of order: kept in the open window
    windows = feed(obs)
    assert [w.index for w in windows] == [0, 3]
    assert windows[1].modalities["face"]["items"] == 2


def test_summary_variability_and_counts():
    obs = [Observation(t, "face", onehot("happy" if t < 10 else "sad"), 1.0) for t in range(20)]
    windows = feed(obs, end=20.0)
    summary = summarize(windows, 20.0, {"face": {"items": 20, "present": 20}})
    assert summary["windows_with_mood"] == 2
    assert summary["dominant_windows"]["happy"] == 1 and summary["dominant_windows"]["sad"] == 1
    vh, vs = VALENCE_AROUSAL["happy"][0], VALENCE_AROUSAL["sad"][0]
    assert summary["valence"] == pytest.approx((vh + vs) / 2, abs=1e-4)
    assert summary["valence_sd"] == pytest.approx(abs(vh - vs) / 2, abs=1e-4)
    assert summary["coverage"]["face"]["share"] == 1.0
    assert "does not diagnose" in summary["notice"]


def test_summary_without_any_face():
    obs = [Observation(t, "face", None, 0.0) for t in range(5)]
    windows = feed(obs)
    summary = summarize(windows, 5.0, {"face": {"items": 5, "present": 0}})
    assert summary["dominant"] is None and summary["windows_with_mood"] == 0


def speech_obs(start: float, end: float, label: str, quality: float = 1.0) -> Observation:
    prosody = {"speech_start": start, "speech_end": end, "span_s": end - start, "phonation_s": end - start,
               "pause_s": 0.0, "pause_count": 0, "nuclei": int(4 * (end - start)), "voiced_s": end - start,
               "f0_mean_hz": 120.0, "f0_sd_hz": 10.0, "f0_mean_st": 3.2, "f0_sd_st": 1.0,
               "energy_mean_db": -30.0, "energy_sd_db": 4.0}
    features = {"start": start, "end": end, "duration": end - start, "prosody": prosody}
    return Observation((start + end) / 2, "speech", onehot(label), quality, features)


def test_late_speech_lands_in_its_window_with_lateness():
    config = AggregationConfig(window_seconds=10.0, min_face_share=0.2)
    agg = WindowAggregator(config, lateness=9.0)
    closed = []
    for t in range(0, 190):  # face frames 0..18.9 s
        closed += agg.add(Observation(t / 10, "face", onehot("neutral"), 1.0))
    # an utterance from 6 to 9 s reported at 18.9 s: its window (0-10 s) is still open
    assert closed == []
    closed += agg.add(speech_obs(6.0, 9.0, "sad"))
    closed += agg.flush(20.0)
    first = closed[0]
    assert set(first.modalities) == {"face", "speech"}
    assert first.modalities["speech"]["share"] == pytest.approx(0.3)
    assert first.prosody["n_utterances"] == 1 and first.prosody["speech_s"] == pytest.approx(3.0)
    assert first.weights["speech"] > 0 and first.weights["face"] > 0
    assert agg.late_dropped == 0
    assert closed[1].prosody is None


def test_observation_for_a_closed_window_is_counted_not_misplaced():
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0), lateness=0.0)
    agg.add(Observation(1.0, "face", onehot("happy"), 1.0))
    (closed,) = agg.add(Observation(12.0, "face", onehot("happy"), 1.0))
    assert closed.index == 0
    assert agg.add(speech_obs(2.0, 4.0, "sad")) == []
    assert agg.late_dropped == 1
    (last,) = agg.flush(20.0)
    assert "speech" not in last.modalities


def test_speech_only_session_summary():
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0), lateness=9.0)
    windows = []
    for start in (1.0, 4.0, 12.0):
        windows += agg.add(speech_obs(start, start + 2.0, "angry"))
    windows += agg.flush(20.0)
    summary = summarize(windows, 20.0, {"speech": {"items": 3, "present": 3, "seconds": 6.0}})
    assert summary["dominant"] == "angry" and summary["windows_with_mood"] == 2
    assert summary["coverage"]["speech"]["share"] == pytest.approx(0.3)
    assert summary["prosody"]["speech_s"] == pytest.approx(6.0)
    assert summary["prosody"]["f0_mean_hz"] == pytest.approx(120.0)
    assert summary["modality_probs"]["speech"]["angry"] == pytest.approx(1.0)


def _face_and_speech_window(span: float, speech: tuple[float, float]):
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0, min_face_share=0.2), lateness=9.0)
    for t in range(int(span * 10)):
        agg.add(Observation(t / 10, "face", onehot("neutral"), 1.0))
    agg.add(speech_obs(*speech, "sad"))
    (window,) = agg.flush(span)
    return window


def test_short_clip_weighs_the_voice_as_a_full_window_with_the_same_speech_share():
    # a 2.3 s clip with 1.6 s of speech, and a full 10 s window with the same share (0.7)
    short = _face_and_speech_window(2.3, (0.4, 2.0))
    full = _face_and_speech_window(10.0, (1.0, 8.0))
    assert (short.start, short.end) == (0.0, 2.3)
    assert short.modalities["speech"]["share"] == pytest.approx(1.6 / 2.3, abs=1e-3)
    assert full.modalities["speech"]["share"] == pytest.approx(0.7)
    assert short.weights["speech"] == pytest.approx(full.weights["speech"], abs=0.01)
    assert short.weights["speech"] > 0.3  # the voice is not reduced to a rounding error
    assert short.dominant == full.dominant
