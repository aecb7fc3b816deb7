"""Tracking between detector runs follows a moving face and gives up when it is gone."""

import numpy as np

from device.inference.blazeface import Detection
from device.inference.tracker import FaceTracker


def scene(offset: int, face: np.ndarray | None) -> np.ndarray:
    rng = np.random.default_rng(1)
    frame = (rng.random((240, 320)) * 40 + 80).astype(np.uint8)
    if face is not None:
        frame[60 + offset // 2 : 60 + offset // 2 + 64, 100 + offset : 164 + offset] = face
    return frame


def test_follows_and_loses():
    rng = np.random.default_rng(2)
    face = (rng.random((64, 64)) * 255).astype(np.uint8)
    keypoints = np.full((6, 2), 130.0, dtype=np.float32)
    det = Detection(100, 60, 164, 124, 0.95, keypoints)
    tracker = FaceTracker(max_shift=0.5)
    tracker.start(scene(0, face), det)
    moved = tracker.track(scene(16, face))
    assert moved is not None
    assert abs(moved.x0 - 116) <= 2 and abs(moved.y0 - 68) <= 2
    assert np.allclose(moved.keypoints - keypoints, [moved.x0 - 100, moved.y0 - 60])
    assert tracker.track(scene(0, None)) is None  # face gone: the caller must run the detector
    tracker.reset()
    assert tracker.track(scene(0, face)) is None
