"""Frames from a recorded video file at media time, sampled at the analysis rate.

Used by `affectbox analyze` (as fast as the CPU allows) and later by the daemon's replay mode.
Decoding is OpenCV's (FFmpeg inside opencv-python-headless). Frames between samples are only
grabbed, not converted, which keeps the cost of a 30 fps file analysed at 10 fps low.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2

from device.errors import MediaError
from device.observation import Frame


class VideoFileSource:
    def __init__(self, path: str | Path, analysis_fps: float) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise MediaError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise MediaError(f"{self.path}: not a file")
        self.capture = cv2.VideoCapture(str(self.path))
        if not self.capture.isOpened():
            raise MediaError(f"{self.path}: not a video file OpenCV can decode")
        fps = self.capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else 0.0
        count = self.capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.frame_count = int(count) if count and count > 0 else 0
        self.width = int(self.capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self.capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        self.analysis_fps = analysis_fps
        self.frames_read = 0

    @property
    def duration(self) -> float:
        """Duration in seconds from the container's frame count, 0 when unknown."""
        return self.frame_count / self.fps if self.fps and self.frame_count else 0.0

    def expected_samples(self) -> int:
        if not self.duration:
            return 0
        return int(self.duration * min(self.analysis_fps, self.fps or self.analysis_fps)) + 1

    def _media_time(self, index: int) -> float:
        if self.fps:
            return index / self.fps
        return max(0.0, self.capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0)

    def __iter__(self) -> Iterator[Frame]:
        step = 1.0 / self.analysis_fps
        next_t = 0.0
        index = 0
        try:
            while self.capture.grab():
                t = self._media_time(index)
                index += 1
                self.frames_read = index
                # small tolerance so a 30 fps file sampled at 10 fps keeps every third frame
                if t + 1e-6 < next_t:
                    continue
                ok, image = self.capture.retrieve()
                if not ok or image is None:
                    continue
                # keep the nominal cadence (a 15 fps file still gives 10 samples a second), but
                # after a gap in the stream resume it from this frame instead of catching up
                next_t += step
                if next_t <= t:
                    next_t = t + step
                yield Frame(t, image, index - 1)
        finally:
            self.capture.release()
        if index == 0:
            raise MediaError(f"{self.path}: the video holds no decodable frames")
