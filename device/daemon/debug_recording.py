"""Opt-in raw recording of sessions for troubleshooting: SENSITIVE, off by default, time-limited.

With `session.debug_recording = true` the analysed frames (MJPEG in an AVI file) and the audio
(16-bit WAV) of each session are written to `session.debug_recording_dir` (created 0700, files
0600), for at most `session.debug_recording_max_minutes` per session. These files are identifiable
patient media: the daemon logs a warning at start while the option is on, and they must be deleted
after use. Without the option nothing here runs and no raw media ever reach the disk.
"""

from __future__ import annotations

import logging
import os
import threading
import wave
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from device.observation import SAMPLE_RATE

log = logging.getLogger(__name__)


class DebugRecording:
    """Writes the frames and audio of the current session until its time limit."""

    def __init__(self, folder: str | Path, max_seconds: float, fps: float) -> None:
        self.folder = Path(folder)
        self.max_seconds = max_seconds
        self.fps = fps
        self._lock = threading.Lock()
        self._session: str | None = None
        self._video: Any = None
        self._audio: wave.Wave_write | None = None
        self._audio_seconds = 0.0
        self.files: list[Path] = []

    def _open_for(self, session_id: str) -> None:
        self._close_locked()
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        self._session = session_id
        self._audio_seconds = 0.0
        log.warning("debug recording ON: raw video and audio of session %s are written to %s (sensitive; "
                    "delete after use)", session_id, self.folder)

    def _private(self, path: Path) -> Path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        self.files.append(path)
        return path

    def frame(self, session_id: str | None, t: float, image: np.ndarray) -> None:
        if session_id is None or t > self.max_seconds:
            return
        with self._lock:
            if session_id != self._session:
                self._open_for(session_id)
            if self._video is None:
                path = self._private(self.folder / f"{session_id}-video.avi")
                height, width = image.shape[:2]
                self._video = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), self.fps, (width, height))
            self._video.write(image)

    def audio(self, session_id: str | None, pcm: np.ndarray) -> None:
        if session_id is None:
            return
        with self._lock:
            if session_id != self._session:
                self._open_for(session_id)
            if self._audio_seconds > self.max_seconds:
                return
            if self._audio is None:
                path = self._private(self.folder / f"{session_id}-audio.wav")
                self._audio = wave.open(str(path), "wb")  # noqa: SIM115 (closed in close())
                self._audio.setnchannels(1)
                self._audio.setsampwidth(2)
                self._audio.setframerate(SAMPLE_RATE)
            self._audio.writeframes(np.asarray(pcm, dtype=np.int16).tobytes())
            self._audio_seconds += len(pcm) / SAMPLE_RATE

    def _close_locked(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        self._session = None

    def close(self) -> None:
        with self._lock:
            self._close_locked()
