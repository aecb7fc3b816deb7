"""BlazeFace post-processing (anchors, decoding, NMS, letterbox) and detection on a real photo."""

from pathlib import Path

import numpy as np
import pytest

from device.assets import third_party_entry
from device.inference.blazeface import (
    ANCHORS,
    BlazeFaceDetector,
    Letterbox,
    decode_boxes,
    generate_anchors,
    iou,
    prepare_input,
    sigmoid_scores,
    weighted_nms,
)
from device.inference.runtime import ModelSpec, load_model


@pytest.fixture(scope="module")
def detector(models_dir: Path) -> BlazeFaceDetector:
    spec = ModelSpec.from_manifest(third_party_entry("blazeface_short_range", models_dir))
    return BlazeFaceDetector(load_model(spec, models_dir))


def test_anchor_count_and_layout():
    anchors = generate_anchors()
    assert anchors.shape == (896, 2)
    # first grid: 16x16 cells, 2 anchors each, centres at (x + 0.5) / 16
    assert np.allclose(anchors[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[1], anchors[0])
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(anchors[511], [15.5 / 16, 15.5 / 16])
    # second grid: 8x8 cells, 6 anchors each (three stride-16 layers share it)
    assert np.allclose(anchors[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(anchors[-1], [7.5 / 8, 7.5 / 8])
    assert anchors.min() > 0 and anchors.max() < 1


def test_decode_centre_size_and_keypoints():
    raw = np.zeros((1, 16), dtype=np.float32)
    raw[0, :4] = [12.8, -6.4, 32.0, 64.0]  # dx = 0.1, dy = -0.05, w = 0.25, h = 0.5 (x128)
    raw[0, 4:6] = [6.4, 12.8]  # first keypoint offset (0.05, 0.1)
    anchor = np.array([[0.5, 0.5]], dtype=np.float32)
    out = decode_boxes(raw, anchor)[0]
    assert out[:4] == pytest.approx([0.6 - 0.125, 0.45 - 0.25, 0.6 + 0.125, 0.45 + 0.25])
    assert out[4:6] == pytest.approx([0.55, 0.6])
    assert out[6:8] == pytest.approx([0.5, 0.5])


def test_scores_are_clipped_sigmoid_without_overflow():
    with np.errstate(all="raise"):
        s = sigmoid_scores(np.array([-1000.0, 0.0, 1000.0], dtype=np.float32))
    assert s[1] == pytest.approx(0.5)
    assert 0 < s[0] < 1e-40 and s[2] == pytest.approx(1.0)


def test_iou():
    box = np.array([0, 0, 2, 2], dtype=np.float32)
    others = np.array([[0, 0, 2, 2], [1, 1, 3, 3], [5, 5, 6, 6]], dtype=np.float32)
    assert iou(box, others) == pytest.approx([1.0, 1 / 7, 0.0])


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    coords = np.zeros((4, 16), dtype=np.float32)
    coords[0, :4] = [0.10, 0.10, 0.30, 0.30]
    coords[1, :4] = [0.12, 0.12, 0.32, 0.32]
    coords[2, :4] = [0.60, 0.60, 0.80, 0.80]
    coords[3, :4] = [0.11, 0.09, 0.31, 0.29]
    scores = np.array([0.9, 0.6, 0.8, 0.3])
    result = weighted_nms(coords, scores, 0.3)
    assert len(result) == 2
    (first, s1), (second, s2) = result
    assert s1 == pytest.approx(0.9) and s2 == pytest.approx(0.8)
    expected = (coords[0] * 0.9 + coords[1] * 0.6 + coords[3] * 0.3) / 1.8
    assert first == pytest.approx(expected)
    assert second[:4] == pytest.approx(coords[2, :4])


def test_letterbox_round_trip():
    frame = np.zeros((480, 640, 3), dtype=np.uint8)
    tensor, box = prepare_input(frame)
    assert tensor.shape == (1, 128, 128, 3) and tensor.dtype == np.float32
    assert tensor.min() >= -1.0 and tensor.max() <= 1.0
    # the frame's top-left and bottom-right corners sit at the padded square's content edges
    top = (128 - 96) // 2 / 128
    assert box.to_pixels(np.array([[0.0, top], [1.0, 1 - top]])) == pytest.approx(
        np.array([[0.0, 0.0], [640.0, 480.0]]), abs=1e-3
    )
    assert Letterbox(100, 100).to_pixels(np.array([0.5, 0.5])) == pytest.approx([50, 50])


def test_detects_the_astronaut(detector: BlazeFaceDetector, astronaut_bgr: np.ndarray):
    faces = detector.detect(astronaut_bgr)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.8
    # the face lies inside the head region and is a plausible size
    assert 150 < face.x0 < face.x1 < 300 and 50 < face.y0 < face.y1 < 220
    assert 70 < face.width < 130
    right_eye, left_eye, nose, mouth = face.keypoints[:4]
    assert right_eye[0] < nose[0] < left_eye[0]  # the subject's right eye is on the image's left
    assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]


def test_no_face_in_noise(detector: BlazeFaceDetector):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, size=(240, 320, 3), dtype=np.uint8)
    assert detector.detect(noise) == []
    assert detector.detect(np.zeros((240, 320, 3), dtype=np.uint8)) == []


def test_anchor_constant_matches_generator():
    assert np.array_equal(ANCHORS, generate_anchors())
