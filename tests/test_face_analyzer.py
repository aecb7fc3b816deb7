"""Patient selection: the largest face, or the face inside the configured region of interest."""

from dataclasses import replace

import cv2
import numpy as np
import pytest

from device.config import Config
from device.inference.face import FaceAnalyzer
from device.observation import Frame
from tests.conftest import HEAD_BOX


def two_faces(astronaut_bgr: np.ndarray) -> np.ndarray:
    """A 640x480 frame: a smaller head on the left (the patient), a larger one on the right."""
    x0, y0, x1, y1 = HEAD_BOX
    head = astronaut_bgr[y0:y1, x0:x1]
    frame = np.full((480, 640, 3), 90, dtype=np.uint8)
    frame[140:340, 20:220] = cv2.resize(head, (200, 200))
    frame[100:380, 340:620] = cv2.resize(head, (280, 280))
    return frame


@pytest.fixture(scope="module")
def base_config() -> Config:
    return Config()


def analyse(config: Config, frame: np.ndarray) -> dict:
    analyzer = FaceAnalyzer.from_config(config)
    return analyzer.process(Frame(0.0, frame)).to_json()


def test_largest_face_by_default(base_config: Config, astronaut_bgr: np.ndarray):
    row = analyse(base_config, two_faces(astronaut_bgr))
    assert row["present"] and row["faces"] == 2
    assert (row["box"][0] + row["box"][2]) / 2 > 320


def test_region_of_interest_picks_the_patient(base_config: Config, astronaut_bgr: np.ndarray):
    config = replace(base_config, face=replace(base_config.face, roi=(0.0, 0.0, 0.45, 1.0)))
    row = analyse(config, two_faces(astronaut_bgr))
    assert row["present"] and row["faces"] == 1
    assert (row["box"][0] + row["box"][2]) / 2 < 220


def test_region_without_a_face(base_config: Config, astronaut_bgr: np.ndarray):
    config = replace(base_config, face=replace(base_config.face, roi=(0.36, 0.0, 0.5, 0.3)))
    assert not analyse(config, two_faces(astronaut_bgr))["present"]


def test_grayscale_frames_are_accepted(base_config: Config, astronaut_bgr: np.ndarray):
    gray = cv2.cvtColor(two_faces(astronaut_bgr), cv2.COLOR_BGR2GRAY)
    assert analyse(base_config, gray)["present"]
