"""Shared fixtures: the real models, and test media generated from photos shipped in installed packages."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from device.config import Config
from device.inference.runtime import MODELS_DIR

# The astronaut photo (scikit-image's wheel): the head occupies roughly this square.
HEAD_BOX = (130, 30, 330, 230)  # x0, y0, x1, y1 in the 512x512 image


@pytest.fixture(scope="session")
def models_dir() -> Path:
    return MODELS_DIR


@pytest.fixture(scope="session")
def config() -> Config:
    return Config()


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    return cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)


@dataclass(frozen=True)
class SyntheticVideo:
    path: Path
    fps: float
    frames: int
    # per frame: the pasted head's box (x0, y0, x1, y1) or None in face-free stretches
    boxes: list[tuple[int, int, int, int] | None]

    def box_at(self, t: float) -> tuple[int, int, int, int] | None:
        return self.boxes[min(int(round(t * self.fps)), self.frames - 1)]


def make_face_video(path: Path, astronaut_bgr: np.ndarray, fps: float = 15.0, size: tuple[int, int] = (640, 480)
                    ) -> SyntheticVideo:
    """A 10 s MJPG video: 2 s empty, the astronaut's head moving right and growing for 3 s,
    2 s empty, then the head moving left and shrinking for 2 s, 1 s empty."""
    width, height = size
    x0, y0, x1, y1 = HEAD_BOX
    head = astronaut_bgr[y0:y1, x0:x1]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    rng = np.random.default_rng(3)
    background = rng.integers(60, 120, size=(height, width, 3), dtype=np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 8)
    boxes: list[tuple[int, int, int, int] | None] = []
    frames = int(10 * fps)
    for i in range(frames):
        t = i / fps
        frame = background.copy()
        box = None
        if 2.0 <= t < 5.0:
            k = (t - 2.0) / 3.0
            side = int(180 + 100 * k)
            box = (int(40 + 250 * k), int(60 + 40 * k), 0, 0)
        elif 7.0 <= t < 9.0:
            k = (t - 7.0) / 2.0
            side = int(260 - 90 * k)
            box = (int(360 - 200 * k), int(150 - 60 * k), 0, 0)
        if box is not None:
            bx, by = box[0], box[1]
            frame[by : by + side, bx : bx + side] = cv2.resize(head, (side, side), interpolation=cv2.INTER_AREA)
            box = (bx, by, bx + side, by + side)
        boxes.append(box)
        writer.write(frame)
    writer.release()
    return SyntheticVideo(path, fps, frames, boxes)


@pytest.fixture(scope="session")
def face_video(tmp_path_factory: pytest.TempPathFactory, astronaut_bgr: np.ndarray) -> SyntheticVideo:
    return make_face_video(tmp_path_factory.mktemp("media") / "session.avi", astronaut_bgr)


@pytest.fixture(scope="session")
def av_session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A 24 s 640x480 video with an audio track: face in 0-10 s and 14-24 s, speech at 1, 7, 13, 19 s."""
    from tests.media import write_av_session

    folder = tmp_path_factory.mktemp("av-session")
    return write_av_session(folder / "session.mkv", 24.0, [1.0, 7.0, 13.0, 19.0], [(0.0, 10.0), (14.0, 24.0)])


# ---- CPU budgets and emulation ----------------------------------------------------------------------

EMULATION_VARIABLES = ("AFFECTBOX_EMULATED", "QEMU_CPU")  # tests/test_arm64.py sets both inside its root


def under_emulation() -> bool:
    """True when this suite runs under an emulator (qemu-user), where CPU time says nothing about a Pi."""
    return any(os.environ.get(name) for name in EMULATION_VARIABLES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not under_emulation():
        return
    skip = pytest.mark.skip(reason="asserts a CPU budget: emulated CPU time says nothing about a Pi")
    for item in items:
        if item.get_closest_marker("cpu_budget") is not None:
            item.add_marker(skip)
