"""Frames from a recorded video file at media time, sampled at the analysis rate.

Used by `affectbox analyze` (as fast as the CPU allows) and later by the daemon's replay mode.
Decoding is PyAV's (FFmpeg libraries in the wheel): it reports bad input as exceptions rather
than log lines on stderr, and gives each frame its presentation time, so variable-frame-rate
files get true media times. Frames between samples are decoded but not converted to BGR.
A file that breaks off mid-stream yields the frames before the break and records why in
`decode_error`, so a partly damaged recording is still analysed.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from device.capture.probe import (
    ANALYSIS_MAX_SIDE,
    check_duration,
    check_media_path,
    check_video_header,
)
from device.errors import MediaError
from device.observation import Frame


class VideoFileSource:
    def __init__(self, path: str | Path, analysis_fps: float) -> None:
        self.path = Path(path)
        check_media_path(self.path)
        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise MediaError(f"{self.path}: not a video file that can be decoded ({_reason(exc)})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(f"{self.path}: has no video stream")
        self.stream = self.container.streams.video[0]
        rate = self.stream.average_rate or self.stream.guessed_rate
        self.fps = float(rate) if rate and 0 < float(rate) < 1000 else 0.0
        self.frame_count = int(self.stream.frames or 0)
        self.width = int(self.stream.codec_context.width or 0)
        self.height = int(self.stream.codec_context.height or 0)
        try:
            check_video_header(self.path, self.width, self.height)
        except MediaError:
            self.container.close()
            raise
        self.analysis_fps = analysis_fps
        self.frames_read = 0
        self.decode_error: str | None = None
        base = self.stream.time_base or Fraction(1, 1)
        self._time_base = float(base)
        self._start = float(self.stream.start_time * base) if self.stream.start_time is not None else 0.0
        # from the container's header, read now: the container is closed after iteration
        if self.stream.duration is not None and self._time_base:
            self.duration = float(self.stream.duration) * self._time_base
        elif self.container.duration is not None:
            self.duration = self.container.duration / av.time_base
        else:
            self.duration = self.frame_count / self.fps if self.fps and self.frame_count else 0.0
        try:
            check_duration(self.path, self.duration)
        except MediaError:
            self.container.close()
            raise

    def expected_samples(self) -> int:
        if not self.duration:
            return 0
        return int(self.duration * min(self.analysis_fps, self.fps or self.analysis_fps)) + 1

    def _bgr(self, frame: av.VideoFrame) -> Any:
        """The frame as BGR, scaled down while converting when it is larger than the analysis needs
        (one conversion, never a full-size BGR copy); frames over the header limits are refused."""
        width, height = int(frame.width), int(frame.height)
        if (width, height) != (self.width, self.height):
            check_video_header(self.path, width, height)  # the stream changed size mid-file
        longest = max(width, height)
        if longest <= ANALYSIS_MAX_SIDE:
            return frame.to_ndarray(format="bgr24")
        scale = ANALYSIS_MAX_SIDE / longest
        return frame.reformat(width=max(2, round(width * scale)), height=max(2, round(height * scale)),
                              format="bgr24").to_ndarray()

    def _media_time(self, frame: av.VideoFrame, index: int) -> float:
        if frame.pts is not None:
            return max(0.0, frame.pts * self._time_base - self._start)
        return index / self.fps if self.fps else 0.0

    def __iter__(self) -> Iterator[Frame]:
        step = 1.0 / self.analysis_fps
        next_t = 0.0
        index = 0
        try:
            for frame in self.container.decode(self.stream):
                t = self._media_time(frame, index)
                index += 1
                self.frames_read = index
                # small tolerance so a 30 fps file sampled at 10 fps keeps every third frame
                if t + 1e-6 < next_t:
                    continue
                # keep the nominal cadence (a 15 fps file still gives 10 samples a second), but
                # after a gap in the stream resume it from this frame instead of catching up
                next_t += step
                if next_t <= t:
                    next_t = t + step
                yield Frame(t, self._bgr(frame), index - 1)
        except (av.FFmpegError, ValueError) as exc:
            self.decode_error = f"decoding stopped after {index} frames ({_reason(exc)})"
        finally:
            self.container.close()
        if index == 0:
            detail = f": {self.decode_error}" if self.decode_error else ""
            raise MediaError(f"{self.path}: the video holds no decodable frames{detail}")


def _reason(exc: BaseException) -> str:
    """FFmpeg's own short reason, without the errno and file name PyAV adds."""
    strerror = getattr(exc, "strerror", None)
    return str(strerror or exc).splitlines()[0] if (strerror or str(exc)) else type(exc).__name__
