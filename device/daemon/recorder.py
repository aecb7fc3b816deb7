"""The session recorder: the one thread that owns sessions, aggregation, the store and hub events.

Everything that changes a session runs on this thread, in the order it was asked for: commands
(start, stop) from the control socket, the status page and the hub arrive as messages and wait
for their answer; observations from the face and speech workers arrive as messages too. So the
session state machine (idle -> running -> ending -> idle) needs no locks beyond the queue, and
the store sees one writer.

Time: items carry seconds on the capture clock (monotonic since the daemon started). A session
starts at capture time `origin`; workers shift items by it, so windows and summaries are in
session time from 0. The wall clock is used only for the store's UTC stamps: it may jump at NTP
sync without changing durations or order.

The store is the source of truth and the hub's outbox the transport: a window is stored first,
then queued for the hub, then marked published. What a crash leaves unmarked is queued again at
the next start (with the same derived event id, so the hub deduplicates it).
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from device.aggregate import Window, WindowAggregator, summarize
from device.config import Config
from device.contract.timestamps import utc_timestamp
from device.errors import AffectboxError
from device.health import Heartbeats
from device.observation import Observation
from device.store import SessionStateError, StorageError, Store, StoreError, validate_patient_id

if TYPE_CHECKING:
    from device.daemon.faults import Faults
    from device.uplink.client import HubClient

log = logging.getLogger(__name__)

TICK_S = 0.25
COMMAND_TIMEOUT_S = 15.0
FLUSH_WAIT_S = 3.0
RECENT_WINDOWS = 90  # 15 minutes of 10-s windows for the live page
BACKFILL_EVERY_S = 60.0
BACKFILL_BATCH_IDLE = 100  # items per tick (about 1 s of fsyncs on an SD card)
BACKFILL_BATCH_RUNNING = 10
RETENTION_EVERY_S = 24 * 3600.0
WATERMARK_FRESH_S = 2.0
MAX_PENDING_WINDOWS = 2000  # windows held in memory while the store cannot write (about 5 h)


class ConsentError(AffectboxError):
    """A session was started without consent where the config requires it."""


class RecorderBusyError(AffectboxError):
    """The recorder did not answer a command in time."""


@dataclass(frozen=True)
class SessionView:
    """What the workers need to know, swapped atomically: which session, from what capture time."""

    generation: int
    origin: float | None  # capture time of the session start; None when idle
    session_id: str | None = None

    @property
    def active(self) -> bool:
        return self.origin is not None


@dataclass
class _Running:
    session_id: str
    patient_id: str
    consent: bool
    origin: float  # capture time
    started_mono: float
    started_utc: str
    max_duration_s: float
    source: str
    aggregator: WindowAggregator
    windows: list[Window] = dataclasses.field(default_factory=list)
    counts: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    last_presence_mono: float = 0.0
    max_t: float = 0.0
    # per modality: (item time before which nothing more will come, monotonic time it was learnt)
    safe: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)


@dataclass
class _Ending:
    """A session's end (state, summary) waiting to be stored: it is stored only after its windows,
    because the store refuses windows for a session that is no longer running."""

    session_id: str
    patient_id: str
    state: str
    reason: str
    duration: float
    windows: int
    summary: dict[str, Any]
    stored: bool = False


class Recorder:
    """Owns the session state machine; other threads talk to it through `call()` and `submit()`."""

    def __init__(self, config: Config, store: Store, device_id: str, heartbeats: Heartbeats, *,
                 capture_origin: float, modalities: tuple[str, ...], speech_lateness_s: float,
                 hub: HubClient | None = None, faults: Faults | None = None) -> None:
        self.config = config
        self.store = store
        self.device_id = device_id
        self.heartbeats = heartbeats
        self.capture_origin = capture_origin
        self.modalities = modalities
        self.speech_lateness_s = speech_lateness_s
        self.hub = hub
        self.faults = faults
        self.view = SessionView(0, None)
        self.state = "idle"
        self._inbox: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._running: _Running | None = None
        self._flushed: set[tuple[int, str]] = set()
        self._pending: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()
        self._endings: collections.deque[_Ending] = collections.deque()  # ends the store could not take yet
        self._closing = False  # set by the shutdown command: no session may start after it
        self._lock = threading.Lock()  # guards the snapshot fields below (read by other threads)
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=RECENT_WINDOWS)
        self._session_info: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._next_backfill = 0.0
        self._next_retention = 0.0
        self.store_error: str | None = None
        self.hub_error: str | None = None
        self.sessions_started = 0
        self.windows_stored = 0
        self.late_observations = 0
        heartbeats.register("recorder", max_age_s=5.0)

    # ---- the thread -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)
        self._thread.start()

    def shutdown(self, reason: str, timeout_s: float = 8.0) -> None:
        """End a running session as interrupted (the service is stopping), then stop the thread."""
        if self._thread is None or not self._thread.is_alive():
            return
        try:
            self.call("shutdown", reason=reason, timeout_s=timeout_s)
        except AffectboxError as exc:
            log.error("recorder: could not end the session cleanly: %s", exc)
        except Exception:  # whatever ending raised, the service must still close the rest and exit 0
            log.exception("recorder: could not end the session cleanly")
        self._stop.set()
        self._thread.join(2.0)  # the thread leaves its loop within one tick once told to stop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._inbox.get(timeout=TICK_S)
            except queue.Empty:
                message = None
            try:
                if message is not None:
                    self._handle(message)
                self._tick()
            except Exception:  # the recorder must survive anything one message does
                log.exception("recorder: unexpected error (continuing)")

    # ---- what other threads call ------------------------------------------------------------

    def submit(self, generation: int, observation: Observation) -> None:
        """From a worker: one observation of the session `generation`."""
        self._inbox.put(("obs", generation, observation))

    def watermark(self, generation: int, modality: str, t: float) -> None:
        """From a worker: no observation of `modality` still to come is earlier than item time `t`."""
        self._inbox.put(("watermark", generation, modality, t))

    def flushed(self, generation: int, stage: str, observations: list[Observation]) -> None:
        """From a worker: its last observations of session `generation`, which it has let go."""
        self._inbox.put(("flushed", generation, stage, observations))

    def call(self, name: str, timeout_s: float = COMMAND_TIMEOUT_S, **kwargs: Any) -> dict[str, Any]:
        """Run a command on the recorder thread and return its answer (or raise its error)."""
        if self._stop.is_set():  # nobody would answer: say so now rather than after the timeout
            raise RecorderBusyError(f"the session recorder has stopped; {name!r} was not run")
        future: Future[dict[str, Any]] = Future()
        self._inbox.put(("cmd", name, kwargs, future))
        try:
            return future.result(timeout_s)
        except TimeoutError:
            # the caller is told it failed, so it must never run later: a cancelled future is skipped
            if future.cancel():
                raise RecorderBusyError(f"the session recorder did not answer {name!r} within {timeout_s:.0f} s "
                                        "(not run)") from None
        try:  # it is running already and will take effect: wait for its answer a little longer
            return future.result(timeout_s)
        except TimeoutError:
            raise RecorderBusyError(f"the session recorder is still running {name!r} after {2 * timeout_s:.0f} s"
                                    ) from None

    def start_session(self, patient_id: str, *, consent: bool = False, max_duration_s: float | None = None,
                      source: str = "cli") -> dict[str, Any]:
        return self.call("start", patient_id=patient_id, consent=consent, max_duration_s=max_duration_s,
                         source=source)

    def stop_session(self, *, source: str = "cli", reason: str | None = None) -> dict[str, Any]:
        return self.call("stop", source=source, reason=reason)

    def resend(self, session_id: str, from_window: int, to_window: int, session_events: bool) -> dict[str, Any]:
        """The hub's `cmd/resend`: queue stored items of a finished session again (same event ids)."""
        return self.call("resend", session_id=session_id, from_window=from_window, to_window=to_window,
                         session_events=session_events)

    def snapshot(self) -> dict[str, Any]:
        """The running session (or None), for status: safe from any thread."""
        with self._lock:
            info = dict(self._session_info) if self._session_info else None
        if info is not None:
            info["elapsed_s"] = round(time.monotonic() - info.pop("_started_mono"), 1)
        return {"state": self.state, "session": info}

    def recent_windows(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._recent)

    # ---- message handling (recorder thread) -------------------------------------------------

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "obs":
            self._observe(message[1], message[2])
        elif kind == "watermark":
            running = self._running
            if running is not None and message[1] == running_generation(self.view, self.state):
                running.safe[message[2]] = (message[3], time.monotonic())
                self._advance(running)
        elif kind == "flushed":
            for observation in message[3]:
                self._observe(message[1], observation)
            self._flushed.add((message[1], message[2]))
        elif kind == "cmd":
            _, name, kwargs, future = message
            if not future.set_running_or_notify_cancel():
                return
            try:
                handler = {"start": self._start, "stop": self._stop_cmd, "shutdown": self._shutdown,
                           "resend": self._resend}[name]
                future.set_result(handler(**kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def _observe(self, generation: int, observation: Observation) -> None:
        running = self._running
        if running is None or generation != running_generation(self.view, self.state):
            self.late_observations += 1  # from a session that has already ended
            return
        if observation.features.get("speaker") != "other":  # other voices: only the windows' speakers count them
            entry = running.counts.setdefault(observation.modality, {"items": 0, "present": 0})
            entry["items"] += 1
            entry["present"] += int(observation.present)
            if observation.modality == "speech":
                entry["seconds"] = entry.get("seconds", 0.0) + float(observation.features.get("duration", 0.0))
        if observation.present:
            running.last_presence_mono = time.monotonic()
        running.max_t = max(running.max_t, observation.t)
        if observation.modality == "face":  # one worker, in order: nothing earlier will follow
            running.safe["face"] = (observation.t, time.monotonic())
        for window in running.aggregator.add(observation):
            self._record_window(running, window)
        if observation.modality == "face":
            self._advance(running)

    def _advance(self, running: _Running) -> None:
        """Close the windows no observation can still reach, from the workers' watermarks.

        The aggregator's own lateness (the longest possible utterance, about 9 s) is the fallback;
        with both modalities flowing, windows close about a second after their end instead, which
        is what the live page shows. A modality that said nothing for 2 s (a stalled camera or
        microphone) does not hold the others back.
        """
        now = time.monotonic()
        fresh = [t for t, learnt in running.safe.values() if now - learnt <= WATERMARK_FRESH_S]
        if not fresh or any(m not in running.safe for m in self.modalities):
            return
        for window in running.aggregator.close_before(min(fresh)):
            self._record_window(running, window)

    def _record_window(self, running: _Running, window: Window) -> None:
        running.windows.append(window)
        row = window.to_json()
        with self._lock:
            self._recent.append(row)
        self._pending.append((running.session_id, row))
        self._drain_pending()

    def _drain_pending(self) -> None:
        """Store (then queue for the hub) the windows waiting; keep them in memory while storing fails."""
        while self._pending:
            session_id, row = self._pending[0]
            try:
                self.store.add_window(session_id, row)
            except StorageError as exc:
                self._store_failed(exc)
                while len(self._pending) > MAX_PENDING_WINDOWS:
                    self._pending.popleft()
                    log.error("recorder: dropped a window held in memory: the store has failed for too long")
                return
            except StoreError as exc:  # refused (e.g. the session is no longer running): cannot be fixed
                log.error("recorder: window %s of session %s not stored: %s", row.get("index"), session_id, exc)
                self._pending.popleft()
                continue
            self._pending.popleft()
            self.windows_stored += 1
            self._store_ok()
            self._publish(session_id, f"window:{row['index']}",
                          lambda s=session_id, r=row: self.hub.publish_mood(s, r, event_key=f"window:{r['index']}"))

    def _store_failed(self, exc: BaseException) -> None:
        message = str(exc)
        if message != self.store_error:
            log.error("recorder: %s (windows are kept in memory and stored when it works again)", message)
        self.store_error = message

    def _store_ok(self) -> None:
        if self._pending or self._endings:
            return  # still failing for what waits in memory
        if self.store_error is not None:
            log.warning("recorder: the store works again")
        self.store_error = None

    def _publish(self, session_id: str, item: str, queue_event: Any, *more: Any) -> None:
        """Queue hub event(s) for a stored item, then mark it published in the store."""
        if self.hub is None:
            return
        try:
            queue_event()
            for extra in more:
                extra()
        except Exception as exc:  # an unexpected payload error must not leave a session half-ended
            if str(exc) != self.hub_error:
                if isinstance(exc, AffectboxError):
                    log.error("recorder: could not queue a hub event (%s); it is queued again later", exc)
                else:
                    log.exception("recorder: building a hub event failed; it is tried again later")
            self.hub_error = str(exc)
            return
        self.hub_error = None
        try:
            self.store.mark_published(session_id, item)
        except StoreError as exc:
            self._store_failed(exc)
            return
        self._store_ok()

    # ---- commands ---------------------------------------------------------------------------

    def _start(self, patient_id: str, consent: bool = False, max_duration_s: float | None = None,
               source: str = "cli") -> dict[str, Any]:
        if self._closing:
            raise AffectboxError("the daemon is stopping; no session can start now")
        if self.state != "idle" or self._running is not None:
            running = self._running.session_id if self._running else "?"
            raise SessionStateError(f"a session is already running ({running}); stop it first")
        validate_patient_id(patient_id)
        if not isinstance(consent, bool):
            raise ConsentError(f"consent must be true or false (got {consent!r})")
        if self.config.session.consent_required and not consent:
            raise ConsentError("this device requires the patient's consent to start a session "
                               "(session.consent_required = true)")
        limit = self.config.session.max_duration_minutes * 60.0
        if max_duration_s is not None:
            if isinstance(max_duration_s, bool) or not isinstance(max_duration_s, int | float) \
                    or not 1.0 <= max_duration_s <= limit:
                raise AffectboxError(f"max duration must be between 1 and {limit:.0f} seconds "
                                     f"(session.max_duration_minutes) (got {max_duration_s!r})")
            limit = float(max_duration_s)
        # what an earlier failure left in memory goes first (the store allows one running session);
        # a failure already over must not refuse starts until a restart
        self._finish_endings()
        if self._pending or self._endings:
            raise AffectboxError(f"cannot start a session: the local record is failing ({self.store_error})")
        snapshot = {name: dataclasses.asdict(getattr(self.config, name))
                    for name in ("face", "speech", "aggregation", "fusion", "capture")}
        snapshot.update({"modalities": list(self.modalities), "source": source})
        try:
            session_id = self.store.start_session(patient_id, self.device_id, consent, snapshot)
        except StorageError as exc:
            self._store_failed(exc)
            raise AffectboxError(f"cannot start a session: the local record is failing ({exc})") from None
        self._store_ok()
        now = time.monotonic()
        origin = now - self.capture_origin
        aggregator = WindowAggregator(self.config.aggregation, self.config.fusion, start=0.0,
                                      lateness=self.speech_lateness_s if "speech" in self.modalities else 0.0,
                                      min_pause_s=self.config.speech.min_pause_ms / 1000)
        running = _Running(session_id, patient_id, consent, origin, now,
                           utc_timestamp(), limit, source,
                           aggregator, last_presence_mono=now)
        running.counts = {m: {"items": 0, "present": 0} for m in self.modalities}
        self._running = running
        self.state = "running"
        self.view = SessionView(self.view.generation + 1, origin, session_id)
        self.sessions_started += 1
        info = {"session_id": session_id, "patient_id": patient_id, "started_utc": running.started_utc,
                "max_duration_s": limit, "consent": consent, "source": source}
        with self._lock:
            self._recent.clear()
            self._session_info = {**info, "_started_mono": now}
        log.info("session %s started (source %s, max %.0f s)", session_id, source, limit)
        self._publish(session_id, "started", lambda: self.hub.publish_session(
            session_id, "started", patient_id=patient_id, max_duration_s=limit, event_key="started"))
        return info

    def _stop_cmd(self, source: str = "cli", reason: str | None = None) -> dict[str, Any]:
        if self._running is None:
            raise SessionStateError("no session is running")
        return self._end("ended", reason or f"stopped ({source})")

    def _shutdown(self, reason: str) -> dict[str, Any]:
        self._closing = True  # a start queued behind this command would be left running at exit
        if self._running is None:
            self._finish_endings()  # a last try for what waits in memory; the rest is recovered at start
            return {"state": "idle"}
        return self._end("interrupted", reason)

    def _end(self, state: str, reason: str) -> dict[str, Any]:
        """Let the workers flush, close the last windows, store the summary, queue the events."""
        running = self._running
        assert running is not None
        self.state = "ending"
        generation = self.view.generation
        self.view = SessionView(generation + 1, None)
        duration = time.monotonic() - running.started_mono
        deadline = time.monotonic() + FLUSH_WAIT_S
        waiting = {m for m in ("speech",) if m in self.modalities}
        while waiting - {stage for g, stage in self._flushed if g == generation} and time.monotonic() < deadline:
            try:
                message = self._inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if message[0] == "cmd":
                self._inbox.put(message)  # answered after this session has ended
                time.sleep(0.01)
                continue
            self._handle(message)
        self._flushed = {(g, s) for g, s in self._flushed if g > generation}
        for window in running.aggregator.flush(end=max(duration, running.max_t)):
            self._record_window(running, window)
        summary = summarize(running.windows, duration, running.counts)
        summary["end_reason"] = reason
        summary["source"] = running.source
        if running.aggregator.late_dropped:
            summary["late_observations"] = running.aggregator.late_dropped
        self._running = None
        with self._lock:
            self._session_info = None
        self.state = "idle"
        ending = _Ending(running.session_id, running.patient_id, state, reason, duration, len(running.windows),
                         summary)
        self._endings.append(ending)
        self._finish_endings()
        if not ending.stored:
            if any(e is ending for e in self._endings):
                # the session stays `running` in the file until the store works again (or, after a
                # restart, it is marked interrupted with the windows that reached the file)
                log.error("session %s: its end could not be stored (%s); retried while the daemon runs",
                          running.session_id, self.store_error)
            # say what is stored and what waits, never a count the record does not hold (issue 12)
            held = sum(1 for session_id, _ in self._pending if session_id == running.session_id)
            return {"session_id": running.session_id, "state": state, "reason": reason,
                    "duration_s": round(duration, 2), "windows": len(running.windows), "stored": False,
                    "windows_pending": held,
                    "pending": f"storing is pending: the store cannot write ({self.store_error or 'unknown'}); "
                               f"the end and {held} of {len(running.windows)} windows are held in memory and "
                               "stored when it can"}
        return {"session_id": running.session_id, "state": state, "reason": reason,
                "duration_s": round(duration, 2), "windows": len(running.windows), "stored": True}

    def _finish_endings(self) -> None:
        """Store the windows and then the ends that wait in memory, oldest first; stop at a failure."""
        self._drain_pending()
        while self._endings and not self._pending:  # an ended session refuses windows: windows first
            ending = self._endings[0]
            try:
                stored = self.store.end_session(ending.session_id, ending.state, ending.reason, ending.summary)
            except StorageError as exc:
                self._store_failed(exc)
                return
            except StoreError as exc:  # refused (e.g. no longer running): retrying cannot help
                self._endings.popleft()
                log.error("session %s: its end was not stored: %s", ending.session_id, exc)
                continue
            self._endings.popleft()
            ending.stored = True
            self._store_ok()
            log.info("session %s %s after %.1f s, %d windows (%s)", ending.session_id, ending.state,
                     ending.duration, ending.windows, ending.reason)
            self._publish_end(ending.session_id, ending.patient_id, ending.state, ending.reason, ending.duration,
                              ending.windows, stored.summary, stored.deviation)

    def _publish_end(self, session_id: str, patient_id: str, state: str, reason: str | None, duration: float | None,
                     windows: int, summary: dict[str, Any], deviation: dict[str, Any] | None) -> None:
        hub = self.hub
        if hub is None:
            return
        self._publish(
            session_id, "ended",
            lambda: hub.publish_session(session_id, state, patient_id=patient_id, reason=reason,
                                        duration_s=duration, windows=windows, event_key="ended"),
            lambda: hub.publish_summary(session_id, summary, patient_id=patient_id, deviation=deviation,
                                        event_key="summary"),
        )

    # ---- periodic work ----------------------------------------------------------------------

    def _tick(self) -> None:
        self.heartbeats.beat("recorder")
        if self.faults:
            self.faults.stall_point("recorder")
        now = time.monotonic()
        running = self._running
        if running is not None and self.state == "running":
            elapsed = now - running.started_mono
            auto_stop_s = self.config.session.auto_stop_minutes * 60.0
            if elapsed >= running.max_duration_s:
                self._end("ended", f"maximum duration reached ({running.max_duration_s:.0f} s)")
            elif auto_stop_s and now - running.last_presence_mono >= auto_stop_s:
                self._end("ended", f"no face or speech for {auto_stop_s:.0f} s")
        if self._pending or self._endings:
            self._finish_endings()
        if self.hub is not None and now >= self._next_backfill:
            # small batches during a session (observations must not wait), larger ones when idle;
            # a full batch means more is waiting: go on at the next tick
            batch = BACKFILL_BATCH_RUNNING if self._running is not None else BACKFILL_BATCH_IDLE
            more = self.backfill(limit=batch) >= batch
            self._next_backfill = now if more else now + BACKFILL_EVERY_S
        if now >= self._next_retention and self._running is None:
            self._next_retention = now + RETENTION_EVERY_S
            self._apply_retention()

    def _apply_retention(self) -> None:
        try:
            removed = self.store.apply_retention(self.config.store.retention_days)
        except StoreError as exc:
            self._store_failed(exc)
            return
        self._store_ok()
        if removed:
            log.info("retention: removed %d sessions older than %d days", len(removed),
                     self.config.store.retention_days)

    def _resend(self, session_id: str, from_window: int, to_window: int, session_events: bool) -> dict[str, Any]:
        """Forget that the items were handed over, so the next backfill (now) queues them again.

        Backfill derives every event id from the stored item, so the hub drops what it already
        has. A session still running is refused (its items are being published as they come).
        """
        if self._running is not None and self._running.session_id == session_id:
            raise AffectboxError(f"session {session_id} is still running; ask again after it ends")
        wanted = [f"window:{i}" for i in range(from_window, to_window + 1)]
        if session_events:
            wanted += ["started", "ended"]
        held = self.store.forget_published(session_id, wanted)
        if held is None:
            return {"session_id": session_id, "held": False, "queued": 0}
        self._next_backfill = 0.0
        windows = sum(1 for item in held if item.startswith("window:"))
        return {"session_id": session_id, "held": True, "queued": len(held),
                "windows_held": windows, "windows_missing": len(wanted) - (2 if session_events else 0) - windows}

    def backfill(self, limit: int | None = None) -> int:
        """Queue for the hub what is stored but not marked published (after a crash); returns the count.

        At most `limit` items per call: each is an fsync'd outbox write, and this runs on the
        recorder thread, which must keep beating its heartbeat and keep up with a live session.
        """
        hub = self.hub
        if hub is None:
            return 0
        max_age = self.config.hub.outbox_max_age_hours
        since = datetime.now(UTC) - timedelta(hours=max_age) if max_age else None
        current = self._running.session_id if self._running else None
        queued = 0
        try:
            backlog = self.store.unpublished(since)
            for record, items in backlog:
                if record.id == current:
                    continue  # the live session publishes its own items as it goes
                for item in items:
                    if limit is not None and queued >= limit:
                        return queued
                    if item == "started":
                        self._publish(record.id, item, lambda r=record: hub.publish_session(
                            r.id, "started", patient_id=r.patient_id, event_key="started"))
                    elif item.startswith("window:"):
                        row = self.store.window(record.id, int(item.split(":", 1)[1]))
                        if row is not None:
                            self._publish(record.id, item, lambda r=record, w=row, i=item: hub.publish_mood(
                                r.id, w, event_key=i))
                    elif item == "ended":
                        summary = self.store.summary(record.id)
                        if summary is not None:
                            self._publish_end(record.id, record.patient_id, record.state, record.end_reason,
                                              record.duration_s, record.windows, summary.summary,
                                              summary.deviation)
                    if self.hub_error is not None:
                        return queued  # the outbox refuses: try again at the next backfill
                    queued += 1
        except StoreError as exc:
            self._store_failed(exc)
        finally:
            if queued:
                log.info("hub: queued %d stored events that had not reached the outbox", queued)
        return queued

def running_generation(view: SessionView, state: str) -> int:
    """The generation whose observations still count: the current one, or while ending the one before."""
    return view.generation - 1 if state == "ending" else view.generation
