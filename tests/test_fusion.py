"""Late fusion: weights from quality and coverage, a missing modality drops out cleanly."""

import numpy as np
import pytest

from device.config import FusionConfig
from device.fusion import ModalityEstimate, confidence, fuse
from device.labels import LABELS


def dist(label: str, mass: float = 0.7) -> np.ndarray:
    p = np.full(len(LABELS), (1 - mass) / (len(LABELS) - 1))
    p[LABELS.index(label)] = mass
    return p


FLAT = np.full(len(LABELS), 1 / len(LABELS))


@pytest.mark.parametrize("method", ["log_linear", "linear"])
def test_single_modality_is_passed_through(method):
    config = FusionConfig(method=method)
    face = ModalityEstimate(dist("happy"), coverage=0.9, quality=0.8)
    fused, weights = fuse({"face": face}, config)
    assert fused == pytest.approx(face.probs)
    assert weights == {"face": pytest.approx(1.0)}


@pytest.mark.parametrize("method", ["log_linear", "linear"])
def test_nothing_qualifies(method):
    config = FusionConfig(method=method)
    assert fuse({}, config) == (None, {})
    fused, weights = fuse({"speech": ModalityEstimate(dist("sad"), coverage=0.01, quality=1.0)}, config)
    assert fused is None and weights == {"speech": 0.0}


def test_face_below_min_share_drops_out():
    config = FusionConfig()
    estimates = {"face": ModalityEstimate(dist("happy"), 0.1, 1.0), "speech": ModalityEstimate(dist("sad"), 0.5, 1.0)}
    fused, weights = fuse(estimates, config, min_face_share=0.2)
    assert weights["face"] == 0.0 and LABELS[int(np.argmax(fused))] == "sad"


@pytest.mark.parametrize("method", ["log_linear", "linear"])
def test_agreeing_modalities_reinforce_and_stay_normalised(method):
    config = FusionConfig(method=method)
    estimates = {"face": ModalityEstimate(dist("sad", 0.5), 1.0, 1.0),
                 "speech": ModalityEstimate(dist("sad", 0.5), 1.0, 1.0)}
    fused, _ = fuse(estimates, config)
    assert fused.sum() == pytest.approx(1.0)
    assert LABELS[int(np.argmax(fused))] == "sad"
    if method == "log_linear":
        assert fused[LABELS.index("sad")] > 0.5  # independent evidence sharpens
    else:
        assert fused[LABELS.index("sad")] == pytest.approx(0.5)


@pytest.mark.parametrize("method", ["log_linear", "linear"])
def test_quality_and_coverage_decide_conflicts(method):
    config = FusionConfig(method=method)
    strong_face = {"face": ModalityEstimate(dist("happy", 0.6), 1.0, 1.0),
                   "speech": ModalityEstimate(dist("angry", 0.6), 0.1, 0.2)}
    fused, weights = fuse(strong_face, config)
    assert LABELS[int(np.argmax(fused))] == "happy" and weights["face"] > weights["speech"]
    strong_voice = {"face": ModalityEstimate(dist("happy", 0.6), 0.3, 0.2),
                    "speech": ModalityEstimate(dist("angry", 0.6), 0.6, 1.0)}
    fused, weights = fuse(strong_voice, config)
    assert LABELS[int(np.argmax(fused))] == "angry" and weights["speech"] > weights["face"]


def test_prior_weight_zero_disables_a_modality():
    config = FusionConfig(speech_weight=0.0)
    estimates = {"face": ModalityEstimate(dist("happy"), 1.0, 1.0), "speech": ModalityEstimate(dist("sad"), 1.0, 1.0)}
    fused, weights = fuse(estimates, config)
    assert weights["speech"] == 0.0 and fused == pytest.approx(estimates["face"].probs)


def test_confidence():
    assert confidence(FLAT) == pytest.approx(0.0, abs=1e-9)
    assert confidence(np.eye(len(LABELS))[0]) > 0.99
    assert 0 < confidence(dist("fear", 0.5)) < 1


def test_flat_distribution_does_not_move_linear_fusion():
    config = FusionConfig(method="linear")
    fused, _ = fuse({"face": ModalityEstimate(dist("happy"), 1.0, 1.0), "speech": ModalityEstimate(FLAT, 1.0, 1.0)},
                    config)
    assert fused == pytest.approx(dist("happy"), abs=1e-4)
