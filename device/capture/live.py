"""Live capture: camera and microphone backends, each read in its own thread, handed to analysis.

Pieces:

* `BoundedLatest` - a tiny hand-off queue (1-2 slots). `put()` never blocks; when full the
  OLDEST item is dropped and counted, so analysis always gets the freshest frame/block and
  capture never waits on it.
* `CaptureThread` - runs a backend's `read()` in a daemon thread, stamps items with monotonic
  time since the session start (or the backend's own monotonic timestamp), puts them into a
  `BoundedLatest` and calls a heartbeat callback per item. Health is judged by the AGE OF THE
  LAST ITEM, never by `read()` returning: a V4L2 read can block forever after an unplug.
  On a read error, or when no item arrived for `stale_after_s`, the backend is closed and
  reopened with exponential backoff (0.5 s doubling to 10 s), counted in `reopens`.
  A `read()` that blocks forever cannot be interrupted in Python: its thread is ABANDONED (left
  running as a daemon thread, its output discarded by a generation check) and a new reader
  thread is started on the reopened backend. `close()` of the stuck backend runs in a throwaway
  daemon thread too, so the supervisor never blocks. Each abandoned read leaks one thread (and
  the stuck device handle) until the read returns or the process exits.
* Backends, built only by `open_camera()` / `open_microphone()` (the point where tests and
  `--replay` substitute hardware): `OpenCVCamera` (V4L2 via cv2), `Picamera2Camera` (Pi only),
  `SoundDeviceMicrophone`, and the file-backed `ReplayCamera` / `ReplayMicrophone`, which pace
  the file to real time.

A backend has `open()`, `read() -> Sample | None` (None: nothing this time, e.g. a poll timeout),
`close()`; `read()` raises `EndOfStream` when a finite source (a replay file) is exhausted.
"""

from __future__ import annotations

import collections
import contextlib
import importlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from device.errors import AffectboxError
from device.observation import SAMPLE_RATE, AudioBlock, Frame

if TYPE_CHECKING:
    from device.config import CaptureConfig

log = logging.getLogger(__name__)

T = TypeVar("T")
Item = Frame | AudioBlock

CAMERA_KINDS = ("opencv", "v4l2", "picamera2", "replay")
MICROPHONE_KINDS = ("sounddevice", "replay")


class CaptureError(AffectboxError):
    """A capture device cannot be built or opened; the message is one line."""


class EndOfStream(Exception):
    """Raised by `read()` of a finite source (a replay file) once it is exhausted."""


@dataclass(frozen=True)
class Sample:
    """What a backend's read() returns: pixels or PCM, and optionally its own capture time.

    `t` is on the `time.monotonic()` clock (absolute), or None to stamp it on arrival.
    `valid` is passed on to AudioBlock (samples of real audio in a zero-padded last block).
    """

    data: np.ndarray
    t: float | None = None
    valid: int = -1


class Backend(Protocol):
    name: str

    def open(self) -> None: ...

    def read(self) -> Sample | None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- hand-off queue


class BoundedLatest(Generic[T]):
    """A bounded, thread-safe queue that drops its oldest item instead of blocking."""

    def __init__(self, maxsize: int = 1) -> None:
        # video keeps only the newest frame or two; audio keeps a few seconds of blocks, because a
        # gap in audio cuts an utterance while a skipped frame costs nothing
        if not 1 <= maxsize <= 10_000:
            raise ValueError(f"maxsize must be between 1 and 10000 (got {maxsize})")
        self.maxsize = maxsize
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.put_count = 0

    def put(self, item: T) -> None:
        """Add an item; never blocks. When full, the oldest item is discarded and counted."""
        with self._cond:
            if len(self._items) >= self.maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.put_count += 1
            self._cond.notify()

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest queued item, waiting up to `timeout` seconds; None when none came."""
        with self._cond:
            if not self._items:
                self._cond.wait_for(lambda: bool(self._items), timeout)
            return self._items.popleft() if self._items else None

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


# --------------------------------------------------------------------------- capture thread


class CaptureThread:
    """Read a backend in a daemon thread, supervise it by item age, reopen it with backoff."""

    def __init__(
        self,
        backend: Backend,
        out: BoundedLatest[Any],
        modality: str = "video",
        *,
        session_start: float | None = None,
        on_beat: Callable[[str], None] | None = None,
        stage: str | None = None,
        stale_after_s: float = 2.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        poll_s: float = 0.05,
    ) -> None:
        if modality not in ("video", "audio"):
            raise ValueError(f"modality must be 'video' or 'audio' (got {modality!r})")
        self.backend = backend
        self.out = out
        self.modality = modality
        self.session_start = time.monotonic() if session_start is None else session_start
        self.on_beat = on_beat
        self.stage = stage or f"capture_{modality}"
        self.stale_after_s = stale_after_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.poll_s = poll_s
        self.items = 0
        self.errors = 0
        self.reopens = 0
        self.abandoned_reads = 0
        self.ended = False  # a finite source ran out
        self.last_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._generation = 0
        self._last_item: float | None = None  # monotonic arrival of the last item
        self._opened_at: float | None = None
        self._failed: int | None = None  # generation whose reader reported an error
        self._reader: threading.Thread | None = None
        self._supervisor: threading.Thread | None = None

    # -- public

    def start(self) -> None:
        self._supervisor = threading.Thread(target=self._supervise, name=f"{self.stage}-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self, timeout_s: float = 1.0) -> None:
        """Stop supervising and reading; returns within about `timeout_s` even if read() is stuck."""
        self._stop.set()
        with self._lock:
            self._generation += 1  # any reader still inside read() discards its result
        deadline = time.monotonic() + timeout_s
        if self._supervisor is not None:
            self._supervisor.join(max(0.0, deadline - time.monotonic()))
        reader = self._reader
        if reader is not None:
            reader.join(max(0.0, min(0.2, deadline - time.monotonic())))
            if reader.is_alive():
                self.abandoned_reads += 1
        self._close_async(timeout_s=max(0.0, deadline - time.monotonic()))

    def last_item_age(self) -> float | None:
        """Seconds since the last item arrived; None before the first one."""
        last = self._last_item
        return None if last is None else time.monotonic() - last

    def healthy(self, max_age_s: float | None = None) -> bool:
        """True while the last item is younger than `max_age_s` (default: `stale_after_s`)."""
        age = self.last_item_age()
        return age is not None and age <= (self.stale_after_s if max_age_s is None else max_age_s)

    def stats(self) -> dict[str, Any]:
        age = self.last_item_age()
        return {"stage": self.stage, "items": self.items, "dropped": self.out.dropped, "errors": self.errors,
                "reopens": self.reopens, "abandoned_reads": self.abandoned_reads, "ended": self.ended,
                "last_item_age_s": None if age is None else round(age, 3), "last_error": self.last_error}

    # -- internals

    def _close_async(self, timeout_s: float = 0.5) -> None:
        """Close the backend from a throwaway daemon thread: close() may block behind a stuck read."""
        closer = threading.Thread(target=self._safe_close, name=f"{self.stage}-close", daemon=True)
        closer.start()
        closer.join(timeout_s)

    def _safe_close(self) -> None:
        try:
            self.backend.close()
        except Exception as exc:  # closing a dead device may fail in any way
            log.debug("%s: close failed: %s", self.stage, exc)

    def _open_and_read(self) -> bool:
        try:
            self.backend.open()
        except Exception as exc:  # any open failure means: back off and retry
            self.errors += 1
            self.last_error = f"open failed: {exc}"
            log.warning("%s: %s", self.stage, self.last_error)
            return False
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._opened_at = time.monotonic()
            self._failed = None
        self._reader = threading.Thread(target=self._read_loop, args=(generation,),
                                        name=f"{self.stage}-reader-{generation}", daemon=True)
        self._reader.start()
        return True

    def _read_loop(self, generation: int) -> None:
        index = 0
        while not self._stop.is_set() and generation == self._generation:
            try:
                sample = self.backend.read()
            except EndOfStream:
                if generation == self._generation:
                    self.ended = True
                return
            except Exception as exc:  # a device error of any kind triggers a reopen
                with self._lock:
                    if generation == self._generation:
                        self.errors += 1
                        self.last_error = f"read failed: {type(exc).__name__}: {exc}"
                        self._failed = generation
                return
            if sample is None:
                continue
            now = time.monotonic()
            with self._lock:
                if generation != self._generation:
                    return  # abandoned while blocked: discard
                self._last_item = now
                self.items += 1
            t = (sample.t if sample.t is not None else now) - self.session_start
            if self.modality == "video":
                item: Item = Frame(t, sample.data, index)
            else:
                item = AudioBlock(t, sample.data, sample.valid)
            index += 1
            self.out.put(item)
            if self.on_beat is not None:
                self.on_beat(self.stage)

    def _supervise(self) -> None:
        delay = self.backoff_initial_s
        opened = self._open_and_read()
        while not self._stop.is_set():
            if self.ended:
                return
            if opened:
                with self._lock:
                    failed = self._failed == self._generation
                    reference = max(self._last_item or 0.0, self._opened_at or 0.0)
                    got_item_since_open = self._last_item is not None and self._last_item >= (self._opened_at or 0.0)
                stale = time.monotonic() - reference > self.stale_after_s
                if not (failed or stale):
                    if got_item_since_open:
                        delay = self.backoff_initial_s  # working again: reset the backoff
                    self._stop.wait(self.poll_s)
                    continue
                reason = self.last_error if failed else f"no item for {self.stale_after_s:.1f} s"
                log.warning("%s: reopening in %.1f s (%s)", self.stage, delay, reason)
                with self._lock:
                    self._generation += 1  # the current reader, stuck or not, is now abandoned
                reader = self._reader
                if reader is not None and reader.is_alive():
                    reader.join(0.05)
                    if reader.is_alive():
                        self.abandoned_reads += 1
                self._close_async()
            if self._stop.wait(delay):
                return
            delay = min(delay * 2, self.backoff_max_s)
            self.reopens += 1
            opened = self._open_and_read()


# --------------------------------------------------------------------------- hardware backends


class OpenCVCamera:
    """A USB webcam through cv2.VideoCapture (V4L2 on Linux): BGR frames.

    Each open() makes a new VideoCapture with its own lock; read() and release() of one handle
    hold that lock, so a release never races a read, and a release behind a read stuck forever
    blocks only the throwaway closing thread.
    """

    def __init__(self, device: int | str = 0, width: int = 640, height: int = 480, fps: float = 15.0) -> None:
        self.name = f"opencv:{device}"
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.width, self.height, self.fps = width, height, fps
        self._cap: Any = None
        self._lock = threading.Lock()

    def open(self) -> None:
        import cv2

        api = cv2.CAP_V4L2 if isinstance(self.device, int) and hasattr(cv2, "CAP_V4L2") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.device, api)
        if not cap.isOpened():
            cap.release()
            raise CaptureError(f"camera {self.device!r} cannot be opened with OpenCV")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # latest frame, not a backlog
        self._cap, self._lock = cap, threading.Lock()

    def read(self) -> Sample | None:
        cap, lock = self._cap, self._lock
        if cap is None:
            raise CaptureError(f"camera {self.device!r} is not open")
        with lock:
            ok, image = cap.read()
        if not ok or image is None:
            raise CaptureError(f"camera {self.device!r} returned no frame")
        return Sample(image)

    def close(self) -> None:
        cap, lock = self._cap, self._lock
        self._cap = None
        if cap is not None:
            with lock:
                cap.release()


class Picamera2Camera:
    """The Pi camera through picamera2: a low-resolution YUV420 stream, Y plane or small BGR."""

    def __init__(self, device: int | str = 0, width: int = 640, height: int = 480, fps: float = 15.0,
                 gray: bool = False) -> None:
        try:
            self._module = importlib.import_module("picamera2")
        except ImportError:
            raise CaptureError("camera kind 'picamera2' needs the picamera2 package, available only on "
                               "Raspberry Pi OS (sudo apt install python3-picamera2)") from None
        self.name = f"picamera2:{device}"
        self.device = int(device) if str(device).isdigit() else 0
        self.width, self.height, self.fps, self.gray = width, height, fps, gray
        self._cam: Any = None

    def open(self) -> None:
        cam = self._module.Picamera2(self.device)
        try:
            config = cam.create_video_configuration(
                main={"size": (self.width, self.height)},
                lores={"size": (self.width, self.height), "format": "YUV420"},
                controls={"FrameRate": float(self.fps)}, buffer_count=3)
            cam.configure(config)
            cam.start()
        except Exception:
            # release the camera, or libcamera keeps it "busy" and every reopen fails too
            with contextlib.suppress(Exception):
                cam.close()
            raise
        self._cam = cam

    def read(self) -> Sample | None:
        import cv2

        cam = self._cam
        if cam is None:
            raise CaptureError("picamera2 camera is not open")
        request = cam.capture_request()
        try:
            yuv = request.make_array("lores")  # (h * 3 / 2, stride) uint8; copied out of the buffer
        finally:
            request.release()  # give the buffer back to the camera at once
        h, w = self.height, self.width
        if self.gray or yuv.shape[1] != w:  # padded stride: the Y plane is the safe part
            y = np.ascontiguousarray(yuv[:h, :w])
            return Sample(y if self.gray else cv2.cvtColor(y, cv2.COLOR_GRAY2BGR))
        return Sample(cv2.cvtColor(yuv, cv2.COLOR_YUV2BGR_I420))

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            try:
                cam.stop()
            finally:
                cam.close()


class SoundDeviceMicrophone:
    """A microphone through sounddevice: 16 kHz mono int16 blocks, resampled when unsupported.

    The PortAudio callback copies each block into a small queue (overflowing blocks are dropped
    and counted); `overflows` counts PortAudio input overflows, `dropped` blocks lost here.
    """

    def __init__(self, device: int | str | None = None, block_ms: int = 30) -> None:
        try:
            self._sd = importlib.import_module("sounddevice")
        except (ImportError, OSError) as exc:
            raise CaptureError(f"microphone kind 'sounddevice' needs the sounddevice package and PortAudio "
                               f"({' '.join(str(exc).split())})") from None
        self.name = f"sounddevice:{device}"
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.block_ms = block_ms
        self.block_samples = SAMPLE_RATE * block_ms // 1000
        self.native_rate = SAMPLE_RATE
        self.overflows = 0
        self.dropped = 0
        self._blocks: queue.Queue[tuple[float, np.ndarray]] = queue.Queue(maxsize=32)
        self._stream: Any = None

    def open(self) -> None:
        sd = self._sd
        try:
            sd.check_input_settings(device=self.device, channels=1, dtype="int16", samplerate=SAMPLE_RATE)
            rate = SAMPLE_RATE
        except Exception:  # PortAudio says "invalid sample rate" in several ways
            rate = int(sd.query_devices(self.device, "input")["default_samplerate"])
        self.native_rate = rate
        blocksize = rate * self.block_ms // 1000

        def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
            if status.input_overflow:
                self.overflows += 1
            stamp = time.monotonic() - frames / rate
            try:
                self._blocks.put_nowait((stamp, indata[:, 0].copy()))
            except queue.Full:
                self.dropped += 1

        stream = sd.InputStream(device=self.device, channels=1, dtype="int16", samplerate=rate,
                                blocksize=blocksize, callback=callback)
        try:
            stream.start()
        except Exception:
            with contextlib.suppress(Exception):
                stream.close()  # else PortAudio keeps the device open and reopening fails
            raise
        self._stream = stream

    def read(self) -> Sample | None:
        if self._stream is None:
            raise CaptureError("microphone is not open")
        try:
            stamp, pcm = self._blocks.get(timeout=0.5)
        except queue.Empty:
            return None
        if self.native_rate != SAMPLE_RATE:
            pcm = resample_block(pcm, self.block_samples)
        return Sample(pcm, stamp)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
            stream.close()


def resample_block(pcm: np.ndarray, n: int) -> np.ndarray:
    """Linear resampling of one int16 block to exactly `n` samples."""
    if len(pcm) == n:
        return pcm.astype(np.int16, copy=False)
    src = np.linspace(0.0, 1.0, num=len(pcm), endpoint=False)
    dst = np.linspace(0.0, 1.0, num=n, endpoint=False)
    return np.round(np.interp(dst, src, pcm.astype(np.float32))).astype(np.int16)


# --------------------------------------------------------------------------- file-backed backends


class _Paced:
    """Release items at anchor + media time, so a file plays at real-time pace."""

    def __init__(self, realtime: bool, speed: float = 1.0) -> None:
        if not 0.1 <= speed <= 100:
            raise CaptureError(f"replay speed must be between 0.1 and 100 (got {speed})")
        self.realtime = realtime
        self.speed = speed  # > 1 plays faster (soak tests); item times are compressed alike
        self._anchor: float | None = None
        self._closed = threading.Event()

    def _reset(self) -> None:
        self._anchor = None
        self._closed.clear()

    def _due(self, media_t: float) -> float:
        """Wait until the item at `media_t` is due; its monotonic time."""
        now = time.monotonic()
        media_t = media_t / self.speed
        if self._anchor is None:
            self._anchor = now - media_t
        target = self._anchor + media_t
        if self.realtime and target > now:
            self._closed.wait(target - now)  # close() interrupts a long wait
        return target if self.realtime else now


class ReplayCamera(_Paced):
    """Frames of a video file (VideoFileSource) released at media time; `EndOfStream` at its end."""

    def __init__(self, path: str | Path, realtime: bool = True, fps: float = 15.0, speed: float = 1.0) -> None:
        super().__init__(realtime, speed)
        from device.capture.video_file import VideoFileSource

        self._factory = VideoFileSource
        self.path = Path(path)
        self.fps = fps
        self.name = f"replay:{self.path.name}"
        self._frames: Any = None
        VideoFileSource(self.path, fps).container.close()  # a bad file fails here, one line

    def open(self) -> None:
        self._reset()
        self._frames = iter(self._factory(self.path, self.fps))

    def read(self) -> Sample | None:
        if self._frames is None:
            raise CaptureError(f"{self.path}: replay camera is not open")
        frame = next(self._frames, None)
        if frame is None:
            raise EndOfStream(str(self.path))
        return Sample(frame.image, self._due(frame.t))

    def close(self) -> None:
        self._closed.set()
        self._frames = None


class ReplayMicrophone(_Paced):
    """Blocks of an audio file (AudioFileSource) released at real-time pace; `EndOfStream` at its end."""

    def __init__(self, path: str | Path, block_ms: int = 30, realtime: bool = True, speed: float = 1.0) -> None:
        super().__init__(realtime, speed)
        from device.capture.audio_file import AudioFileSource

        self.path = Path(path)
        self.source = AudioFileSource(self.path, block_ms)  # a bad file fails here, one line
        self.name = f"replay:{self.path.name}"
        self._blocks: Any = None

    def open(self) -> None:
        self._reset()
        self._blocks = iter(self.source)

    def read(self) -> Sample | None:
        if self._blocks is None:
            raise CaptureError(f"{self.path}: replay microphone is not open")
        block = next(self._blocks, None)
        if block is None:
            raise EndOfStream(str(self.path))
        return Sample(block.pcm, self._due(block.t), block.valid)

    def close(self) -> None:
        self._closed.set()
        self._blocks = None


# --------------------------------------------------------------------------- factories


def open_camera(kind: str, device: int | str = 0, width: int = 640, height: int = 480,
                fps: float = 15.0) -> Backend:
    """Build (not yet open) a camera backend by kind; for "replay" `device` is the video path."""
    if kind in ("opencv", "v4l2"):
        return OpenCVCamera(device, width, height, fps)
    if kind == "picamera2":
        return Picamera2Camera(device, width, height, fps)
    if kind == "replay":
        return ReplayCamera(device, realtime=True, fps=fps)
    raise CaptureError(f"unknown camera kind {kind!r} (expected one of: {', '.join(CAMERA_KINDS)})")


def open_microphone(kind: str, device: int | str | None = None, block_ms: int = 30) -> Backend:
    """Build (not yet open) a microphone backend by kind; for "replay" `device` is the audio path."""
    if kind == "sounddevice":
        return SoundDeviceMicrophone(device, block_ms)
    if kind == "replay":
        if device is None:
            raise CaptureError("microphone kind 'replay' needs a file path as its device")
        return ReplayMicrophone(device, block_ms)
    raise CaptureError(f"unknown microphone kind {kind!r} (expected one of: {', '.join(MICROPHONE_KINDS)})")


def camera_from_config(capture: CaptureConfig) -> Backend | None:
    """The configured camera, not yet open; None for `capture.camera = "none"`.

    "auto" takes picamera2 when it imports (any failure counts: on Bookworm it can fail on a
    NumPy ABI mismatch), else OpenCV. Shared by the daemon and `affectbox selftest`.
    """
    kind = capture.camera
    if kind == "none":
        return None
    if kind == "auto":
        try:
            importlib.import_module("picamera2")
            kind = "picamera2"
        except Exception:
            kind = "opencv"
    return open_camera(kind, capture.camera_device, capture.width, capture.height, capture.fps)


def microphone_from_config(capture: CaptureConfig, block_ms: int) -> Backend | None:
    """The configured microphone, not yet open; None for `capture.microphone = "none"`."""
    if capture.microphone == "none":
        return None
    return open_microphone(capture.microphone, capture.microphone_device or None, block_ms)
