"""The analysis threads between capture and the recorder: one for the face, one for speech.

Each worker takes the newest items from its capture queue, and while a session runs, turns
them into observations with the same analyzers `affectbox analyze` uses, shifted to session
time. Between sessions they only drain their queue (no inference, so an idle device is cool).
Each beats its heartbeat once per loop, whether or not an item came, so only a stuck stage
(not a quiet camera) stops the systemd watchdog.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from device.capture.live import BoundedLatest
from device.errors import AffectboxError
from device.health import Heartbeats
from device.inference.face import FaceAnalyzer
from device.inference.speech import SpeechAnalyzer
from device.labels import LABELS
from device.observation import AudioBlock, Frame

if TYPE_CHECKING:
    from device.daemon.debug_recording import DebugRecording
    from device.daemon.faults import Faults
    from device.daemon.recorder import Recorder
    from device.voice.attribution import SpeakerAttributor

log = logging.getLogger(__name__)

POLL_S = 0.25
STAGE_MAX_AGE_S = 5.0  # a stage that has not looped for this long counts as stuck
WATERMARK_EVERY_S = 0.25  # how often the speech worker tells the recorder how far speech is settled


class _Worker:
    stage = ""

    def __init__(self, source: BoundedLatest[Any], recorder: Recorder, heartbeats: Heartbeats,
                 faults: Faults | None = None, debug: DebugRecording | None = None) -> None:
        self.source = source
        self.recorder = recorder
        self.heartbeats = heartbeats
        self.faults = faults
        self.debug = debug
        self.cpu_s = 0.0  # this thread's CPU time spent analysing
        self.items = 0
        self.analysed = 0
        self.errors = 0
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        heartbeats.register(self.stage, max_age_s=STAGE_MAX_AGE_S)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.stage, daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        generation = -1
        while not self._stop.is_set():
            item = self.source.get(timeout=POLL_S)
            self.heartbeats.beat(self.stage)
            if self.faults:
                self.faults.stall_point(self.stage)
            view = self.recorder.view
            if view.generation != generation:
                self._switch(generation, view.generation, view.active)
                generation = view.generation
            if item is None:
                continue
            self.items += 1
            self._seen(item)
            if view.origin is None or item.t < view.origin:
                continue  # idle, or captured before the session started
            started = time.thread_time()
            try:
                self._analyse(generation, item, view.origin)
            except Exception as exc:  # one bad item must not end the stage
                self.errors += 1
                if str(exc) != self.last_error:
                    log.exception("%s: analysis failed (continuing)", self.stage)
                self.last_error = str(exc)
            self.cpu_s += time.thread_time() - started

    def _seen(self, item: Any) -> None:
        """Every item, session or not (cheap bookkeeping only)."""

    def _switch(self, old_generation: int, generation: int, active: bool) -> None:
        raise NotImplementedError

    def _analyse(self, generation: int, item: Any, origin: float) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {"items": self.items, "analysed": self.analysed, "errors": self.errors,
                "cpu_s": round(self.cpu_s, 3), "last_error": self.last_error}


class FaceWorker(_Worker):
    """Frames -> face observations at `face.analysis_fps` (frames in between are skipped)."""

    stage = "face"

    def __init__(self, source: BoundedLatest[Frame], recorder: Recorder, heartbeats: Heartbeats,
                 template: FaceAnalyzer, faults: Faults | None = None, debug: DebugRecording | None = None) -> None:
        super().__init__(source, recorder, heartbeats, faults, debug)
        self.template = template  # holds the loaded models; each session gets a fresh tracker
        self.step_s = 1.0 / template.config.analysis_fps
        self.analyzer: FaceAnalyzer | None = None
        self.skipped = 0
        self._next_due = 0.0
        self.now: dict[str, Any] = {"face_present": None, "face_label": None, "t": None}

    def _switch(self, old_generation: int, generation: int, active: bool) -> None:
        self.analyzer = FaceAnalyzer(self.template.detector, self.template.classifier, self.template.config) \
            if active else None
        if self.debug is not None and not active:
            self.debug.close()
        self._next_due = 0.0
        self.now = {"face_present": None, "face_label": None, "t": None}

    def _analyse(self, generation: int, item: Frame, origin: float) -> None:
        t = item.t - origin
        if self.analyzer is None or t < self._next_due:
            self.skipped += 1
            return
        # keep the analysis rate, but never try to catch up on frames that were skipped
        self._next_due = max(self._next_due + self.step_s, t + self.step_s / 2)
        observation = self.analyzer.process(Frame(t, item.image, item.index))
        self.analysed += 1
        label = LABELS[int(np.argmax(observation.probs))] if observation.probs is not None else None
        self.now = {"face_present": observation.present, "face_label": label, "t": round(t, 2)}
        self.recorder.submit(generation, observation)
        if self.debug is not None:
            self.debug.frame(self.recorder.view.session_id, t, item.image)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        analyzer = self.analyzer  # read once: status() runs on other threads while a session ends
        stats.update({"skipped": self.skipped,
                      "detector_runs": self.template.detector_runs if analyzer is None else analyzer.detector_runs})
        return stats


class SpeechWorker(_Worker):
    """Audio blocks -> utterance observations; flushes the last utterance when a session ends."""

    stage = "speech"

    def __init__(self, source: BoundedLatest[AudioBlock], recorder: Recorder, heartbeats: Heartbeats,
                 template: SpeechAnalyzer, faults: Faults | None = None, debug: DebugRecording | None = None,
                 attributor_factory: Callable[[], SpeakerAttributor | None] | None = None) -> None:
        super().__init__(source, recorder, heartbeats, faults, debug)
        self.template = template
        # the enrolled voices are read again at each session start, so an enrollment counts from the next one
        self.attributor_factory = attributor_factory
        self.analyzer: SpeechAnalyzer | None = None
        self.utterances = 0
        self._levels: collections.deque[float] = collections.deque(maxlen=33)  # about 1 s of 30-ms blocks
        self.now: dict[str, Any] = {"speech_active": None}
        self._last_watermark = 0.0
        self._tap: list[np.ndarray] | None = None  # blocks collected for a voice enrollment
        self._tap_lock = threading.Lock()

    def _switch(self, old_generation: int, generation: int, active: bool) -> None:
        if self.analyzer is not None:
            try:
                tail = self.analyzer.flush()
            except Exception:
                log.exception("speech: flushing the last utterance failed")
                tail = []
            self.utterances += len(tail)
            self.recorder.flushed(old_generation, self.stage, tail)
        # a session that started and ended between two loops of this worker was never seen here:
        # say it has nothing to flush, so that its end does not wait for this worker in vain
        for skipped in range(max(old_generation + 1, 0), generation):
            self.recorder.flushed(skipped, self.stage, [])
        self.analyzer = SpeechAnalyzer(self.template.classifier, self.template.config,
                                       self._attributor() if active else None) if active else None
        self.now = {"speech_active": None}
        if self.debug is not None and not active:
            self.debug.close()

    def _attributor(self) -> SpeakerAttributor | None:
        if self.attributor_factory is None:
            return None
        try:
            return self.attributor_factory()
        except AffectboxError as exc:  # a missing model or an unreadable folder must not stop the session
            log.error("speech: speaker attribution is off for this session: %s", exc)
            return None

    def level_dbfs(self) -> float | None:
        """Recent microphone level (RMS, dB full scale), for status and selftest."""
        levels = list(self._levels)
        if not levels:
            return None
        power = sum(levels) / len(levels)
        return round(10 * math.log10(power), 1) if power > 0 else -120.0

    def record(self, seconds: float, timeout_s: float | None = None) -> np.ndarray:
        """int16 samples of the next `seconds` of microphone audio (a voice enrollment at the device).

        Refused while a session runs: the patient would be recorded too. Nothing is written to disk.
        """
        if self.recorder.view.session_id is not None:
            raise AffectboxError("a session is running: stop it before enrolling a voice")
        wanted = int(seconds * 16000)
        with self._tap_lock:
            if self._tap is not None:
                raise AffectboxError("another voice enrollment is recording now")
            self._tap = []
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else seconds + 10.0)
        try:
            while sum(len(b) for b in self._tap) < wanted and time.monotonic() < deadline:
                time.sleep(0.05)
            got = np.concatenate(self._tap) if self._tap else np.zeros(0, np.int16)
        finally:
            with self._tap_lock:
                self._tap = None
        if len(got) < wanted // 2:
            raise AffectboxError(f"the microphone delivered {len(got) / 16000:.1f} s of audio in "
                                 f"{seconds:g} s: check it (affectbox selftest)")
        return got[:wanted]

    def _seen(self, item: AudioBlock) -> None:
        tap = self._tap
        if tap is not None:
            tap.append(item.samples.copy())
        samples = item.samples.astype(np.float32) / 32768.0
        if samples.size:
            self._levels.append(float(np.mean(samples * samples)))

    def _analyse(self, generation: int, item: AudioBlock, origin: float) -> None:
        if self.analyzer is None:
            return
        observations = self.analyzer.process(AudioBlock(item.t - origin, item.pcm, item.valid))
        self.analysed += 1
        self.utterances += len(observations)
        self.now = {"speech_active": self.analyzer.segmenter.active}
        for observation in observations:
            self.recorder.submit(generation, observation)
        # after the observations, on the same queue: the recorder never sees a watermark first
        safe = self.analyzer.segmenter.safe_until
        now = time.monotonic()
        if safe is not None and now - self._last_watermark >= WATERMARK_EVERY_S:
            self._last_watermark = now
            self.recorder.watermark(generation, self.stage, safe)
        if self.debug is not None:
            self.debug.audio(self.recorder.view.session_id, item.samples)
