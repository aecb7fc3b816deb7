"""The session recorder in-process: commands racing timeouts and shutdown, store failures at a
session's end, and the daemon's status and shutdown paths when the hub's outbox fails.

Fast: a real `Store` in tmp_path, a `Recorder` thread, observations submitted by hand (no models,
no capture), and a hub double whose outbox writes fail like a full disk.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from device.config import Config
from device.daemon.recorder import Recorder, RecorderBusyError
from device.daemon.service import Daemon
from device.errors import AffectboxError
from device.health import Heartbeats, SystemdNotifier
from device.labels import LABELS
from device.observation import Observation
from device.store import StorageError, Store
from device.uplink.outbox import OutboxError
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)


def observation(t: float, label: str = "happy") -> Observation:
    probs = np.full(len(LABELS), 0.02, dtype=np.float32)
    probs[LABELS.index(label)] = 1 - 0.02 * (len(LABELS) - 1)
    return Observation(t, "face", probs, 1.0, {})


def make_recorder(store: Store, hub: Any = None) -> Recorder:
    return Recorder(Config(), store, "dev-test", Heartbeats(), capture_origin=time.monotonic(),
                    modalities=("face",), speech_lateness_s=0.0, hub=hub)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = Store(tmp_path / "record.db")
    yield store
    store.close()


def feed(recorder: Recorder, seconds: int) -> None:
    """One face observation per second of session time: windows 0 and 1 close on the way, 2 at the end."""
    generation = recorder.view.generation
    for i in range(seconds):
        recorder.submit(generation, observation(float(i)))


class Failing:
    """Wraps a store method so that it raises StorageError (like a full disk) while `on` is set."""

    def __init__(self, method: Callable[..., Any], times: int | None = None) -> None:
        self.method = method
        self.on = True
        self.times = times  # None: until switched off
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.on and (self.times is None or self.calls <= self.times):
            raise StorageError("record.db: cannot store (database or disk is full)")
        return self.method(*args, **kwargs)


# ---- commands, timeouts and shutdown -----------------------------------------------------------------------------

def test_a_command_that_timed_out_is_never_run_later(store: Store):
    """The caller was told "did not answer": the command must not take effect behind its back."""
    recorder = make_recorder(store)  # not started yet: as busy as a recorder can be
    with pytest.raises(RecorderBusyError):
        recorder.call("start", timeout_s=0.2, patient_id="p-late")
    recorder.start()
    try:
        time.sleep(0.6)  # several ticks: the queued command has been looked at
        assert recorder.state == "idle" and store.running_session() is None
    finally:
        recorder.shutdown("test over")


def test_a_start_queued_behind_the_shutdown_is_refused(store: Store):
    """A start from the hub or the socket that arrives while the daemon stops must not leave a
    session `running` in the file after a clean exit (the next start would call it a crash)."""
    recorder = make_recorder(store)
    shutdown: Future[dict[str, Any]] = Future()
    start: Future[dict[str, Any]] = Future()
    recorder._inbox.put(("cmd", "shutdown", {"reason": "the service was stopped"}, shutdown))
    recorder._inbox.put(("cmd", "start", {"patient_id": "p-racing"}, start))
    recorder.start()
    try:
        assert shutdown.result(5) == {"state": "idle"}
        with pytest.raises(AffectboxError, match="stopping"):
            start.result(5)
    finally:
        recorder.shutdown("test over")
    assert store.running_session() is None
    with pytest.raises(RecorderBusyError):  # and once stopped, callers hear so at once
        recorder.call("start", timeout_s=5.0, patient_id="p-after")


# ---- the store fails -----------------------------------------------------------------------------------------------

def test_a_store_failure_between_sessions_does_not_block_later_sessions(store: Store,
                                                                          monkeypatch: pytest.MonkeyPatch):
    """A one-off failure outside a session (here the daily retention) must not refuse every start
    until the daemon restarts, nor leave the store reported as failed."""
    retention = Failing(store.apply_retention, times=1)
    monkeypatch.setattr(store, "apply_retention", retention)
    recorder = make_recorder(store)
    recorder.start()
    try:
        assert wait_until(lambda: retention.calls >= 1)
        started = recorder.start_session("p-after-retention")
        assert started["session_id"] and recorder.store_error is None
        recorder.stop_session()
    finally:
        recorder.shutdown("test over")


def _cli_stop_output(tmp_path: Path, answer: dict) -> str:
    """What `affectbox session stop` prints for this answer of the daemon (through a real socket)."""
    import contextlib
    import io

    from device.cli import main
    from device.daemon.control import ControlServer

    path = tmp_path / "stop.sock"
    server = ControlServer(path, lambda request: answer)
    server.start()
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            assert main(["session", "stop", "--socket", str(path)]) == 0
    finally:
        server.stop()
    return printed.getvalue()


def test_an_end_that_could_not_be_stored_is_stored_when_the_store_works_again(store: Store, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch):
    """Disk full at the stop: the last window and the end wait in memory; once the disk has room
    the window is stored, then the session ends with its summary, and a new session can start."""
    recorder = make_recorder(store)
    recorder.start()
    try:
        first = recorder.start_session("p-full")["session_id"]
        feed(recorder, 25)
        assert wait_until(lambda: store.session(first).windows == 2)
        add_window, end_session = Failing(store.add_window), Failing(store.end_session)
        monkeypatch.setattr(store, "add_window", add_window)
        monkeypatch.setattr(store, "end_session", end_session)
        ended = recorder.stop_session()
        assert ended["stored"] is False and recorder.store_error is not None
        # issue 12: what is reported is what will be stored, and it says that storing is pending
        assert ended["windows"] == 3 and ended["windows_pending"] == 1 and ended["duration_s"] > 0
        assert ended["pending"].startswith("storing is pending") and "\n" not in ended["pending"]
        printed = _cli_stop_output(tmp_path, ended)
        assert "NOT stored yet: storing is pending" in printed and "3 windows" in printed, printed
        add_window.on = end_session.on = False  # room again
        assert wait_until(lambda: store.session(first).state == "ended"), store.session(first)
        assert [w["index"] for w in store.windows(first)] == [0, 1, 2]
        assert store.session(first).windows == ended["windows"]
        summary = store.summary(first)
        assert summary is not None and summary.summary["end_reason"] == "stopped (cli)"
        assert recorder.store_error is None
        second = recorder.start_session("p-full")["session_id"]
        assert store.running_session() is not None and store.running_session().id == second
    finally:
        recorder.shutdown("test over")


def test_a_window_held_in_memory_at_the_end_is_not_lost(store: Store, monkeypatch: pytest.MonkeyPatch):
    """A store failure for the last window only (the end itself would succeed) must not end the
    session first: an ended session refuses windows, so the held window would be dropped."""
    recorder = make_recorder(store)
    recorder.start()
    try:
        session_id = recorder.start_session("p-blip")["session_id"]
        feed(recorder, 25)
        assert wait_until(lambda: store.session(session_id).windows == 2)
        # the failure lasts through both tries at the stop (the flushed window, then the drain before the end)
        monkeypatch.setattr(store, "add_window", Failing(store.add_window, times=2))
        recorder.stop_session()
        assert wait_until(lambda: store.session(session_id).state == "ended")
        assert [w["index"] for w in store.windows(session_id)] == [0, 1, 2]
    finally:
        recorder.shutdown("test over")


# ---- the daemon's status and shutdown when the hub's outbox fails ---------------------------------------------------

class FullOutboxHub:
    """A hub double whose every outbox write fails, as on a full disk, while it is connected."""

    def __init__(self) -> None:
        self.outbox = self
        self.stopped = False
        self.closed = False

    def _full(self, *args: Any, **kwargs: Any) -> Any:
        raise OutboxError("outbox.db: cannot queue an event in the hub outbox (database or disk is full)")

    publish_session = publish_mood = publish_summary = set_status = _full

    def stats(self) -> dict[str, Any]:
        return {"connected": True, "connections": 1, "last_error": None, "outbox": {"depth": 0}}

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    daemon = Daemon(Config(), notifier=SystemdNotifier(""))
    daemon.store = Store(tmp_path / "record.db")
    daemon.hub = FullOutboxHub()
    daemon.recorder = make_recorder(daemon.store, hub=daemon.hub)
    daemon.recorder.start()
    yield daemon
    daemon.recorder.shutdown("test over")
    daemon.store.close()


def test_a_failing_status_publication_neither_fails_a_start_nor_ends_the_daemon(daemon: Daemon):
    started = daemon.start_session("p-hub", source="hub")  # the session starts: say so, not an error
    assert daemon.recorder is not None and daemon.recorder.state == "running"
    assert daemon.status()["session"]["session_id"] == started["session_id"]
    threading.Timer(1.3, daemon.request_stop).start()
    daemon.wait()  # refreshes the status once a second; must return on request_stop, not raise
    assert daemon.stop_session()["session_id"] == started["session_id"]


def test_shutdown_ends_cleanly_when_the_outbox_is_full(daemon: Daemon):
    assert daemon.store is not None
    session_id = daemon.start_session("p-stop")["session_id"]
    daemon.shutdown("the service was stopped (SIGTERM)")  # exit 0 follows only if this returns
    hub = daemon.hub
    assert hub.stopped and hub.closed
    with Store(daemon.store.path, readonly=True) as store:
        assert store.session(session_id).state == "interrupted"


# ---- status from other threads while a session ends ------------------------------------------------------------------

def test_face_stats_survive_the_worker_dropping_its_analyzer_meanwhile():
    """status() runs on the web, socket and hub threads while the face worker sets its analyzer to
    None at a session's end: reading the attribute twice (check, then use) can see both values."""
    from types import SimpleNamespace

    from device.capture.live import BoundedLatest
    from device.daemon.workers import FaceWorker

    class EndingMeanwhile(FaceWorker):
        """The worker's thread ends the session between any two reads of `analyzer`."""

        reads = 0

        @property  # type: ignore[override]
        def analyzer(self) -> Any:
            self.reads += 1
            return SimpleNamespace(detector_runs=7) if self.reads == 1 else None

        @analyzer.setter
        def analyzer(self, value: Any) -> None:
            pass

    template: Any = SimpleNamespace(config=SimpleNamespace(analysis_fps=10.0), detector_runs=3)
    worker = EndingMeanwhile(BoundedLatest(1), SimpleNamespace(view=None), Heartbeats(),  # type: ignore[arg-type]
                             template)
    assert worker.stats()["detector_runs"] in (3, 7)


def speech(start: float, end: float, label: str = "sad") -> Observation:
    probs = np.full(len(LABELS), 0.02, dtype=np.float32)
    probs[LABELS.index(label)] = 1 - 0.02 * (len(LABELS) - 1)
    return Observation((start + end) / 2, "speech", probs, 1.0,
                       {"start": start, "end": end, "duration": end - start})


def test_watermarks_close_windows_soon_after_their_end(store: Store):
    """With both modalities reporting, a window closes when both have passed it, not ~9 s later."""
    recorder = Recorder(Config(), store, "dev-test", Heartbeats(), capture_origin=time.monotonic(),
                        modalities=("face", "speech"), speech_lateness_s=9.13)
    recorder.start()
    try:
        started = recorder.start_session("p-mark")
        generation = recorder.view.generation
        for i in range(120):  # 12 s of faces at 10 fps
            recorder.submit(generation, observation(i / 10))
        recorder.submit(generation, speech(2.0, 4.0))
        # the fixed lateness alone (9.13 s behind 11.9 s) would close nothing yet
        time.sleep(0.3)
        assert store.session(started["session_id"]).windows == 0
        recorder.watermark(generation, "speech", 11.5)  # no utterance still to come starts before 11.5 s
        assert wait_until(lambda: store.session(started["session_id"]).windows == 1)  # window 0 (0-10 s)
        # an utterance that started after the watermark still lands in its own, open window
        recorder.submit(generation, speech(11.6, 12.4))
        ended = recorder.stop_session()
    finally:
        recorder.shutdown("test over")
    windows = store.windows(started["session_id"])
    assert ended["windows"] == 2 and [w["index"] for w in windows] == [0, 1]
    assert "speech" in windows[0]["modalities"] and "speech" in windows[1]["modalities"]
    assert recorder.late_observations == 0


def test_a_silent_modality_does_not_hold_windows_back(store: Store):
    """A camera that stopped (no face for 2 s) leaves speech's watermark in charge."""
    recorder = Recorder(Config(), store, "dev-test", Heartbeats(), capture_origin=time.monotonic(),
                        modalities=("face", "speech"), speech_lateness_s=9.13)
    recorder.start()
    try:
        started = recorder.start_session("p-stall")
        generation = recorder.view.generation
        for i in range(30):
            recorder.submit(generation, observation(i / 10))  # faces until 3 s, then the camera stops
        time.sleep(2.2)
        recorder.submit(generation, speech(5.0, 7.0))
        recorder.watermark(generation, "speech", 21.0)
        assert wait_until(lambda: store.session(started["session_id"]).windows == 1, 3)
    finally:
        recorder.shutdown("test over")


class BrokenPayloadHub(FullOutboxHub):
    """A hub double whose payload builders fail with an unexpected (non-affectbox) error."""

    def _broken(self, *args: Any, **kwargs: Any) -> Any:
        raise ValueError("a payload builder choked on a value")

    publish_session = publish_mood = publish_summary = _broken


def test_an_unexpected_hub_error_never_leaves_a_session_half_ended(store: Store):
    recorder = make_recorder(store, hub=BrokenPayloadHub())
    recorder.start()
    try:
        started = recorder.start_session("p-broken")
        feed(recorder, 25)
        ended = recorder.stop_session()
        assert ended["stored"] is True and recorder.state == "idle"
        assert recorder.start_session("p-next")["session_id"] != started["session_id"]  # not stuck
        recorder.stop_session()
    finally:
        recorder.shutdown("test over")
    assert store.session(started["session_id"]).state == "ended"
    # nothing reached the outbox, so everything is still owed to the hub
    owed = dict((record.id, items) for record, items in store.unpublished())
    assert owed[started["session_id"]][0] == "started" and owed[started["session_id"]][-1] == "ended"


class CountingHub(FullOutboxHub):
    """A hub double that accepts every event and records its key and the time it was queued."""

    def __init__(self) -> None:
        super().__init__()
        self.queued: list[tuple[str, str]] = []

    def _accept(self, session_id: str, *args: Any, event_key: str | None = None, **kwargs: Any) -> dict[str, Any]:
        self.queued.append((session_id, event_key or ""))
        return {}

    publish_session = publish_mood = publish_summary = _accept

    def set_status(self, **kwargs: Any) -> None:
        return None


def test_a_large_backlog_is_queued_in_batches_without_starving_the_recorder(store: Store):
    # a session of 250 stored windows that never reached the hub (the hub was off, or a crash)
    session_id = store.start_session("p-backlog", "dev-test", False, {})
    for index in range(250):
        store.add_window(session_id, {"index": index, "start": index * 10.0, "end": index * 10.0 + 10,
                                      "modalities": {}, "probs": None, "fusion_weights": {}})
    store.end_session(session_id)
    hub = CountingHub()
    recorder = make_recorder(store, hub=hub)
    assert recorder.backfill(limit=100) == 100  # one batch at a time
    assert len(hub.queued) == 100
    recorder.start()
    try:
        # the rest follows tick by tick, and the recorder stays responsive meanwhile
        assert recorder.start_session("p-live")["patient_id"] == "p-live"
        recorder.stop_session()
        assert wait_until(lambda: store.unpublished() == [], 10)
    finally:
        recorder.shutdown("test over")
    keys = [key for sid, key in hub.queued if sid == session_id]
    assert keys[0] == "started" and keys[-1] == "summary"
    assert sorted(k for k in keys if k.startswith("window:")) == sorted(f"window:{i}" for i in range(250))
    assert recorder.heartbeats.stale(required_only=True) == []
