"""Live capture: the bounded hand-off, the supervised capture thread, replay backends, factories."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from device.capture.live import (
    BoundedLatest,
    CaptureError,
    CaptureThread,
    EndOfStream,
    ReplayCamera,
    ReplayMicrophone,
    Sample,
    open_camera,
    open_microphone,
)
from device.observation import SAMPLE_RATE, AudioBlock, Frame
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


class FakeCamera:
    """Yields small frames every 10 ms; can be told to stall forever or to raise."""

    name = "fake"

    def __init__(self, mode: str = "ok", good_reads: int = 0) -> None:
        self.mode = mode
        self.good_reads = good_reads  # reads that succeed before the mode kicks in
        self.opens = 0
        self.closes = 0
        self.reads = 0
        self.open_times: list[float] = []
        self.release = threading.Event()  # never set: a stall lasts forever

    def open(self) -> None:
        self.opens += 1
        self.open_times.append(time.monotonic())

    def read(self) -> Sample | None:
        self.reads += 1
        if self.reads > self.good_reads:
            if self.mode == "stall":
                self.release.wait()
            elif self.mode == "error":
                raise OSError("device unplugged")
        time.sleep(0.01)
        return Sample(np.zeros((4, 4, 3), np.uint8))

    def close(self) -> None:
        self.closes += 1


def test_bounded_latest_drops_oldest_and_counts() -> None:
    q: BoundedLatest[int] = BoundedLatest(2)
    for i in range(5):
        q.put(i)
    assert q.dropped == 3 and len(q) == 2
    assert q.get(0) == 3 and q.get(0) == 4
    t0 = time.monotonic()
    assert q.get(0.05) is None
    assert time.monotonic() - t0 < 1.0
    threading.Timer(0.05, q.put, args=(9,)).start()
    assert q.get(2.0) == 9
    for bad in (0, 10_001):
        with pytest.raises(ValueError):
            BoundedLatest(bad)
    audio = BoundedLatest(200)  # the daemon's audio queue: a few seconds of blocks
    for i in range(205):
        audio.put(i)
    assert len(audio) == 200 and audio.dropped == 5 and audio.get(0) == 5


def test_capture_thread_delivers_items_and_heartbeats() -> None:
    beats: list[str] = []
    q: BoundedLatest[Frame] = BoundedLatest(1)
    start = time.monotonic()
    cap = CaptureThread(FakeCamera(), q, "video", session_start=start, on_beat=beats.append)
    cap.start()
    try:
        first = q.get(2.0)
        assert isinstance(first, Frame) and 0 <= first.t < 2.0
        assert wait_until(lambda: cap.items >= 10)
        assert cap.healthy(0.5) and cap.last_item_age() is not None
        assert beats and set(beats) == {"capture_video"}
        assert cap.reopens == 0
    finally:
        cap.stop()


def test_capture_thread_stall_goes_stale_reopens_and_stops_quickly() -> None:
    cam = FakeCamera("stall", good_reads=3)
    q: BoundedLatest[Frame] = BoundedLatest(1)
    cap = CaptureThread(cam, q, "video", stale_after_s=0.3, backoff_initial_s=0.1)
    cap.start()
    try:
        assert wait_until(lambda: cap.items == 3)
        assert wait_until(lambda: not cap.healthy(0.2), 2.0)
        assert wait_until(lambda: cap.reopens >= 1 and cam.opens >= 2, 3.0)
        assert cap.abandoned_reads >= 1 and cam.closes >= 1
    finally:
        t0 = time.monotonic()
        cap.stop()
        assert time.monotonic() - t0 < 1.5
    assert cap.items == 3  # a stalled source delivers nothing more


def test_capture_thread_errors_reopen_with_backoff() -> None:
    cam = FakeCamera("error")
    q: BoundedLatest[Frame] = BoundedLatest(1)
    cap = CaptureThread(cam, q, "video", backoff_initial_s=0.05, backoff_max_s=0.4)
    cap.start()
    try:
        assert wait_until(lambda: cam.opens >= 5, 5.0)
    finally:
        cap.stop()
    assert cap.reopens >= 4 and cap.errors >= 4
    assert "device unplugged" in (cap.last_error or "")
    gaps = np.diff(cam.open_times)
    # 0.05, 0.1, 0.2, 0.4 (capped): each wait at least the backoff, growing
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095 and gaps[2] >= 0.19 and gaps[3] >= 0.39
    assert gaps[3] < 1.0  # bounded by backoff_max_s


@pytest.fixture(scope="module")
def mjpg_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("live") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(10):  # 1 s at 10 fps
        writer.write(np.full((48, 64, 3), i * 20, np.uint8))
    writer.release()
    return path


def test_replay_camera_paces_frames_to_media_time(mjpg_video: Path) -> None:
    cam = ReplayCamera(mjpg_video, realtime=True, fps=10.0)
    cam.open()
    arrivals: list[tuple[float, float]] = []
    t0 = time.monotonic()
    try:
        while True:
            try:
                sample = cam.read()
            except EndOfStream:
                break
            assert sample is not None and sample.data.shape == (48, 64, 3)
            arrivals.append((time.monotonic() - t0, sample.t - t0))
    finally:
        cam.close()
    assert len(arrivals) == 10
    for n, (arrived, stamped) in enumerate(arrivals):
        assert abs(arrived - n / 10) < 0.1 and abs(stamped - n / 10) < 0.1


def test_replay_camera_through_capture_thread_ends(mjpg_video: Path) -> None:
    q: BoundedLatest[Frame] = BoundedLatest(2)
    start = time.monotonic()
    cap = CaptureThread(open_camera("replay", str(mjpg_video), fps=10.0), q, "video", session_start=start)
    cap.start()
    frames = []
    try:
        while len(frames) < 10:
            frame = q.get(1.0)
            assert frame is not None
            frames.append(frame)
        assert wait_until(lambda: cap.ended, 2.0)
    finally:
        cap.stop()
    times = np.array([f.t for f in frames])
    assert np.allclose(times - times[0], np.arange(10) / 10, atol=0.1)
    assert cap.reopens == 0 and q.dropped == 0


def test_replay_microphone_yields_30ms_blocks(tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    path = tmp_path / "tone.wav"
    t = np.arange(int(0.3 * SAMPLE_RATE)) / SAMPLE_RATE
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    q: BoundedLatest[AudioBlock] = BoundedLatest(2)
    start = time.monotonic()
    cap = CaptureThread(open_microphone("replay", str(path), block_ms=30), q, "audio", session_start=start)
    cap.start()
    blocks: list[AudioBlock] = []
    try:
        while len(blocks) < 10:
            block = q.get(1.0)
            assert block is not None
            blocks.append(block)
        assert wait_until(lambda: cap.ended, 2.0)
    finally:
        cap.stop()
    assert all(len(b.pcm) == 480 and b.pcm.dtype == np.int16 for b in blocks)
    assert time.monotonic() - start >= 0.25  # real-time pace, not as fast as decoding
    times = np.array([b.t for b in blocks])
    assert np.allclose(np.diff(times), 0.03, atol=0.02)
    assert not any(b.padded for b in blocks)


def test_replay_microphone_direct(tmp_path: Path) -> None:
    soundfile = pytest.importorskip("soundfile")
    path = tmp_path / "short.wav"
    soundfile.write(path, np.zeros(800, np.int16), SAMPLE_RATE)  # 50 ms: one full block, one padded
    mic = ReplayMicrophone(path, block_ms=30)
    mic.open()
    first, second = mic.read(), mic.read()
    assert first is not None and second is not None and second.valid == 320
    with pytest.raises(EndOfStream):
        mic.read()
    mic.close()


def test_picamera2_off_pi_is_a_one_line_error() -> None:
    try:
        import picamera2  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(CaptureError) as err:
        open_camera("picamera2", 0)
    assert "picamera2" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("build", [lambda: open_camera("webcam9000", 0), lambda: open_microphone("alsa-magic", 0),
                                   lambda: open_microphone("replay", None)])
def test_unknown_kinds_are_one_line_errors(build) -> None:
    with pytest.raises(CaptureError) as err:
        build()
    assert "\n" not in str(err.value)
