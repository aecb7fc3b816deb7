"""`affectbox run`: build the appliance from its config, run it under systemd, stop it cleanly.

Start-up order (each step fails with one line naming what is wrong):
1. models (face, speech) loaded and checked against their manifests, then every model described in
   the manifests run on its known-answer input (device/inference/known_answer.py): a wrong answer
   stops the start with one line;
2. the local record opened; sessions left `running` by a crash or power cut become `interrupted`
   (their windows are kept);
3. the hub link (when enabled), which drains the outbox left by the previous run;
4. the recorder, the analysis workers and the capture threads; the control socket; the status page;
5. `READY=1`, then the watchdog is petted while every stage's heartbeat is fresh.

Shutdown (SIGTERM or SIGINT): `STOPPING=1`, a running session ends as `interrupted`, its last
windows and summary are stored and queued, the hub link disconnects cleanly, exit 0.

Thread map: capture (one reader + supervisor per source) -> bounded queues -> face / speech
workers -> recorder (the only writer of the store) -> hub outbox -> paho. The main thread waits
for a signal and refreshes the status line.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device import __version__
from device.capture.live import (
    Backend,
    BoundedLatest,
    CaptureError,
    CaptureThread,
    EndOfStream,
    ReplayCamera,
    ReplayMicrophone,
    Sample,
    camera_from_config,
    microphone_from_config,
)
from device.capture.probe import probe_media
from device.config import Config
from device.credentials import credentials_dir
from device.daemon.control import ControlServer
from device.daemon.debug_recording import DebugRecording
from device.daemon.faults import Faults
from device.daemon.recorder import Recorder
from device.daemon.workers import FaceWorker, SpeechWorker
from device.errors import AffectboxError
from device.health import Heartbeats, SystemdNotifier, WatchdogPetter, pi_health
from device.identity import resolve_device_id
from device.indicator import Indicator
from device.inference.face import FaceAnalyzer
from device.inference.known_answer import require_known_answers
from device.inference.runtime import model_metadata, resolve_models_dir
from device.inference.speech import SpeechAnalyzer
from device.store import Store
from device.voice.loading import device_attributor

log = logging.getLogger(__name__)

STATUS_EVERY_S = 5.0
HUB_STATUS_EVERY_S = 30.0
AUDIO_QUEUE_BLOCKS = 200  # 6 s of 30-ms blocks: an utterance is never cut by a slow moment


class Looping:
    """A replay backend that starts again at its end (for demos: `run --replay FILE --loop`)."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = f"loop:{inner.name}"

    def open(self) -> None:
        self.inner.open()

    def read(self) -> Sample | None:
        try:
            return self.inner.read()
        except EndOfStream:
            self.inner.close()
            self.inner.open()
            return None

    def close(self) -> None:
        self.inner.close()


class Daemon:
    """The running appliance; also the object the status page, the hub and the socket control."""

    def __init__(self, config: Config, *, replay_video: str | Path | None = None,
                 replay_audio: str | Path | None = None, replay_loop: bool = False, replay_speed: float = 1.0,
                 notifier: SystemdNotifier | None = None) -> None:
        self.config = config
        self.replay_video = Path(replay_video) if replay_video else None
        self.replay_audio = Path(replay_audio) if replay_audio else None
        self.replay_loop = replay_loop
        self.replay_speed = replay_speed
        self.notifier = notifier or SystemdNotifier()
        self.heartbeats = Heartbeats()
        self.faults = Faults.from_environment()
        self.store_path = Path(config.store.path)
        self.started_mono = time.monotonic()
        self.capture_origin = self.started_mono
        self.device_id = ""
        self.store: Store | None = None
        self.hub: Any = None
        self.recorder: Recorder | None = None
        self.face_worker: FaceWorker | None = None
        self.speech_worker: SpeechWorker | None = None
        self.camera: CaptureThread | None = None
        self.microphone: CaptureThread | None = None
        self.control: ControlServer | None = None
        self.web: Any = None
        self.indicator: Indicator | None = None
        self.petter: WatchdogPetter | None = None
        self.models: list[dict[str, Any]] = []
        self.recovered: list[str] = []
        self.camera_name = "none"
        self.microphone_name = "none"
        self._stop = threading.Event()
        self.stop_reason: str | None = None
        self._last_status_line = ""
        self._status_error: str | None = None

    # ---- building -----------------------------------------------------------------------------

    def _camera_backend(self) -> Backend | None:
        capture = self.config.capture
        if self.replay_video is not None:
            info = probe_media(self.replay_video)
            if not info.has_video:
                return None
            backend: Backend = ReplayCamera(self.replay_video, realtime=True, fps=capture.fps,
                                             speed=self.replay_speed)
        else:
            camera = camera_from_config(capture)
            if camera is None:
                return None
            backend = camera
        if self.replay_loop and self.replay_video is not None:
            backend = Looping(backend)
        return self.faults.wrap(backend, "camera")

    def _microphone_backend(self) -> Backend | None:
        capture = self.config.capture
        block_ms = self.config.speech.block_ms
        if self.replay_video is not None or self.replay_audio is not None:
            path = self.replay_audio
            if path is None:
                assert self.replay_video is not None
                path = self.replay_video if probe_media(self.replay_video).has_audio else None
            if path is None:
                return None
            backend: Backend = ReplayMicrophone(path, block_ms, realtime=True, speed=self.replay_speed)
            if self.replay_loop:
                backend = Looping(backend)
        else:
            microphone = microphone_from_config(capture, block_ms)
            if microphone is None:
                return None
            backend = microphone
        return self.faults.wrap(backend, "microphone")

    def start(self) -> None:
        """Build and start everything; READY=1 at the end. Raises AffectboxError (one line) on failure."""
        config = self.config
        self.notifier.status("starting: loading models")
        camera = self._camera_backend()
        microphone = self._microphone_backend()
        if camera is None and microphone is None:
            raise CaptureError("no camera and no microphone configured (capture.camera and capture.microphone "
                               "are both 'none', or the replay file has neither video nor audio)")
        face = FaceAnalyzer.from_config(config) if camera is not None else None
        speech = SpeechAnalyzer.from_config(config) if microphone is not None else None
        models = []
        if face is not None:
            models += [face.detector.model, face.classifier.model]
        if speech is not None:
            models.append(speech.classifier.model)
        self.notifier.status("starting: checking the models' known answers")
        models_dir = resolve_models_dir(config.runtime.models_dir)
        for answer in require_known_answers(models_dir):  # a wrong answer raises: never READY with it
            log.log(logging.INFO if answer.status == "pass" else logging.WARNING, "known answer: %s", answer.detail)
        self.models = model_metadata(models)
        self.device_id = resolve_device_id(config.device)

        self.notifier.status("starting: opening the local record")
        self.store = Store.from_config(config.store)
        self.recovered = self.store.recover_interrupted()
        for session_id in self.recovered:
            log.warning("session %s was left running by a crash or power cut: marked interrupted, "
                        "its stored windows are kept", session_id)

        if config.hub.enabled:
            self._start_hub()

        modalities = tuple(m for m, on in (("face", face is not None), ("speech", speech is not None)) if on)
        self.recorder = Recorder(config, self.store, self.device_id, self.heartbeats,
                                 capture_origin=self.capture_origin, modalities=modalities,
                                 speech_lateness_s=speech.lateness if speech is not None else 0.0,
                                 hub=self.hub, faults=self.faults)
        self.recorder.start()
        if config.gpio.enabled:
            self._start_indicator()

        debug = None
        if config.session.debug_recording:
            debug = DebugRecording(config.session.debug_recording_dir,
                                   config.session.debug_recording_max_minutes * 60, config.face.analysis_fps)
            log.warning("session.debug_recording is ON: raw video and audio of sessions will be written to %s "
                        "(sensitive patient media; turn it off and delete the files after troubleshooting)",
                        config.session.debug_recording_dir)
        stale = config.capture.stale_after_s
        if camera is not None and face is not None:
            frames: BoundedLatest[Any] = BoundedLatest(1)
            self.heartbeats.register("capture_video", max_age_s=stale, required=False)
            self.camera = CaptureThread(camera, frames, "video", session_start=self.capture_origin,
                                        on_beat=self.heartbeats.beat, stage="capture_video", stale_after_s=stale)
            self.camera_name = camera.name
            self.face_worker = FaceWorker(frames, self.recorder, self.heartbeats, face, self.faults, debug)
        if microphone is not None and speech is not None:
            blocks: BoundedLatest[Any] = BoundedLatest(AUDIO_QUEUE_BLOCKS)
            self.heartbeats.register("capture_audio", max_age_s=stale, required=False)
            self.microphone = CaptureThread(microphone, blocks, "audio", session_start=self.capture_origin,
                                            on_beat=self.heartbeats.beat, stage="capture_audio",
                                            stale_after_s=stale)
            self.microphone_name = microphone.name
            self.speech_worker = SpeechWorker(blocks, self.recorder, self.heartbeats, speech, self.faults, debug,
                                              attributor_factory=lambda: device_attributor(config))
        for part in (self.face_worker, self.speech_worker, self.camera, self.microphone):
            if part is not None:
                part.start()

        self.control = ControlServer(config.control.socket, self._control_request)
        self.control.start()
        if config.web.enabled:
            self._start_web()

        self.petter = WatchdogPetter(self.notifier, self.heartbeats)
        self.petter.start()
        self.notifier.ready()
        self._publish_status(force=True)
        log.info("affectbox %s ready: device %s, camera %s, microphone %s, control socket %s", __version__,
                 self.device_id, self.camera_name, self.microphone_name, config.control.socket)

    def _start_hub(self) -> None:
        from device.uplink.client import HubClient
        from device.uplink.outbox import Outbox

        outbox = Outbox.from_config(self.config.hub)
        self.hub = HubClient(self.config.hub, self.device_id, credentials_dir(), outbox, _HubCommands(self))
        self.hub.set_info(models=self.models, capabilities=["face", "speech"],
                          window_seconds=self.config.aggregation.window_seconds)
        self.hub.start()

    def _start_indicator(self) -> None:
        """The recording LED and button; never fails the start (gpiozero or the pins may be missing)."""
        recorder = self.recorder
        assert recorder is not None
        self.indicator = Indicator(self.config.gpio, consent_required=self.config.session.consent_required,
                                   control=self, state=lambda: recorder.snapshot()["state"])
        self.indicator.start()

    def _start_web(self) -> None:
        try:
            from device.web.server import load_password_hash, start_status_page
        except ImportError as exc:  # the page is optional; the daemon works without it
            log.warning("status page not available (%s)", exc)
            return
        self.web = start_status_page(self, password_hash=load_password_hash(self.config.web))

    # ---- running ------------------------------------------------------------------------------

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Ask the main loop to stop; as a signal handler, remember which signal (for the log line)."""
        if signum is not None and self.stop_reason is None:
            self.stop_reason = f"the service was stopped ({signal.Signals(signum).name})"
        self._stop.set()

    def wait(self) -> None:
        """Block until SIGTERM/SIGINT (or request_stop), refreshing the status line."""
        next_status = 0.0
        while not self._stop.wait(1.0):
            if time.monotonic() >= next_status:
                next_status = time.monotonic() + STATUS_EVERY_S
                self._publish_status()

    def shutdown(self, reason: str = "the service was stopped") -> None:
        """Stop cleanly: end a running session as interrupted, flush the store and the hub, close."""
        self.notifier.stopping()
        log.info("stopping: %s", reason)
        if self.petter is not None:
            self.petter.stop()
        if self.web is not None:
            self.web.stop()
        if self.control is not None:
            self.control.stop()
        for capture in (self.camera, self.microphone):
            if capture is not None:
                capture.stop(timeout_s=1.0)
        if self.indicator is not None:  # capture has stopped: the device no longer listens, the LED goes off
            self.indicator.close()
        if self.recorder is not None:
            self.recorder.shutdown(reason)
        for worker in (self.face_worker, self.speech_worker):
            if worker is not None:
                worker.stop()
                if worker.debug is not None:
                    worker.debug.close()
        if self.hub is not None:
            try:  # the retained status is a courtesy: a full outbox must not keep the rest from closing
                self.hub.set_status(state="offline")
            except AffectboxError as exc:
                log.warning("hub: could not queue the offline status: %s", exc)
            self.hub.stop()
            self.hub.outbox.close()
        if self.store is not None:
            self.store.close()
        self.notifier.close()

    # ---- what the status page, the hub and the control socket see ------------------------------

    def _component(self, capture: CaptureThread | None, worker: Any) -> dict[str, Any]:
        if capture is None:
            return {"state": "off", "detail": "not configured"}
        stats = capture.stats()
        if capture.healthy():
            state, detail = "ok", "receiving"
        elif stats["ended"]:
            state, detail = "ended", "the replay file has ended"
        else:
            age = stats["last_item_age_s"]
            state = "degraded"
            detail = stats["last_error"] or ("no data yet" if age is None else f"no data for {age:.0f} s")
        out = {"state": state, "detail": detail, "name": capture.backend.name, "frames": stats["items"],
               "dropped": stats["dropped"], "errors": stats["errors"], "reopens": stats["reopens"],
               "last_item_age_s": stats["last_item_age_s"]}
        if isinstance(worker, SpeechWorker):
            out["level_dbfs"] = worker.level_dbfs()
        return out

    def status(self) -> dict[str, Any]:
        """The device's health and what it is doing (JSON-ready; see the status page and `get_status`)."""
        recorder = self.recorder
        snapshot = recorder.snapshot() if recorder else {"state": "starting", "session": None}
        stages = self.heartbeats.snapshot()["stages"]
        components: dict[str, Any] = {
            "camera": self._component(self.camera, self.face_worker),
            "microphone": self._component(self.microphone, self.speech_worker),
        }
        for name, worker in (("face", self.face_worker), ("speech", self.speech_worker)):
            if worker is None:
                components[name] = {"state": "off", "detail": "no source"}
                continue
            stage = stages.get(name, {})
            fresh = not stage.get("stale", False)
            age = stage.get("last_beat_age_s") or 0.0
            components[name] = {"state": "ok" if fresh else "failed",
                                "detail": "running" if fresh else f"stuck for {age:.0f} s",
                                **worker.stats()}
        store_error = recorder.store_error if recorder else None
        components["store"] = {"state": "failed" if store_error else "ok",
                               "detail": store_error or str(self.store_path)}
        if self.hub is not None:
            hub_stats = self.hub.stats()
            components["hub"] = {"state": "ok" if hub_stats["connected"] else "degraded",
                                 "detail": "connected" if hub_stats["connected"]
                                 else (hub_stats["last_error"] or "connecting"),
                                 "connected": hub_stats["connected"], "outbox": hub_stats["outbox"]}
        else:
            components["hub"] = {"state": "off", "detail": "hub.enabled = false", "connected": False}
        components["gpio"] = self.indicator.status() if self.indicator is not None else {
            "state": "off", "detail": "gpio.enabled = false" if not self.config.gpio.enabled else "not started"}
        states = [c["state"] for c in components.values()]
        health = "failed" if "failed" in states else "degraded" if "degraded" in states else "ok"
        return {
            "state": snapshot["state"],
            "health": health,
            "software_version": __version__,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "device": {"id": self.device_id, "site": self.config.device.site, "room": self.config.device.room},
            "session": snapshot["session"],
            "components": components,
            "models": self.models,
            "pi": pi_health(),
            "watchdog": {"enabled": bool(self.petter and self.petter.interval_s), "stalled": self.petter.stalled
                         if self.petter else [], "pings": self.petter.pings if self.petter else 0},
            "recovered_sessions": self.recovered,
        }

    def live(self) -> dict[str, Any]:
        """The running session, its recent windows and what each modality sees now."""
        recorder = self.recorder
        snapshot = recorder.snapshot() if recorder else {"session": None}
        now: dict[str, Any] = {"face_present": None, "face_label": None, "speech_active": None}
        if snapshot["session"] is not None:
            if self.face_worker is not None:
                now.update({k: self.face_worker.now.get(k) for k in ("face_present", "face_label")})
            if self.speech_worker is not None:
                now["speech_active"] = self.speech_worker.now.get("speech_active")
        return {"session": snapshot["session"], "windows": recorder.recent_windows() if recorder else [],
                "now": now}

    def start_session(self, patient_id: str, *, consent: bool = False, max_duration_s: float | None = None,
                      source: str = "cli") -> dict[str, Any]:
        if self.recorder is None:
            raise AffectboxError("the daemon is still starting")
        result = self.recorder.start_session(patient_id, consent=consent, max_duration_s=max_duration_s,
                                             source=source)
        self._publish_status(force=True)
        return result

    def stop_session(self, *, source: str = "cli", reason: str | None = None) -> dict[str, Any]:
        if self.recorder is None:
            raise AffectboxError("the daemon is still starting")
        result = self.recorder.stop_session(source=source, reason=reason)
        self._publish_status(force=True)
        return result

    def record_voice(self, seconds: float) -> Any:
        """Microphone audio for a voice enrollment from the status page (device/voice)."""
        if self.speech_worker is None:
            raise AffectboxError("this device has no microphone configured: enroll with "
                                 "'affectbox voice enroll FILE' instead")
        return self.speech_worker.record(seconds)

    def _control_request(self, request: dict[str, Any]) -> dict[str, Any]:
        command = request["command"]
        if command == "status":
            return self.status()
        if command == "stop":
            return self.stop_session(source="cli")
        max_duration = request.get("max_duration_s")
        return self.start_session(request.get("patient_id"), consent=request.get("consent", False),  # type: ignore[arg-type]
                                  max_duration_s=max_duration, source="cli")

    def _publish_status(self, force: bool = False) -> None:
        """The systemd STATUS= line and the hub's retained status; never raises.

        It runs on the main thread's loop (an exception there would end the daemon without its
        shutdown) and after a session starts or stops (which must not then be reported as failed);
        the hub's status writes the outbox, which fails while the disk is full.
        """
        try:
            self._publish_status_now(force)
        except Exception as exc:
            if str(exc) != self._status_error:
                log.exception("could not publish the status (continuing)")
            self._status_error = str(exc)
        else:
            self._status_error = None

    def _publish_status_now(self, force: bool) -> None:
        """The systemd STATUS= line (when it changes) and the hub's retained status (every 30 s)."""
        status = self.status()
        parts = [status["state"] if status["session"] is None
                 else f"session {status['session']['session_id'][:8]} running {status['session']['elapsed_s']:.0f} s"]
        for name in ("camera", "microphone", "hub"):
            component = status["components"][name]
            if component["state"] != "off":
                parts.append(f"{name} {component['state']}")
        line = "; ".join(parts)
        if line != self._last_status_line:
            self.notifier.status(line)
            self._last_status_line = line
        if self.hub is not None:
            now = time.monotonic()
            if force or now >= getattr(self, "_next_hub_status", 0.0):
                self._next_hub_status = now + HUB_STATUS_EVERY_S
                pi = status["pi"]
                throttled = pi.get("throttled")
                self.hub.set_status(
                    state=status["state"], session_id=(status["session"] or {}).get("session_id"),
                    # the contract's components carry `ok` (status.schema.json); healthy as in `health` above
                    components={k: {"ok": v["state"] not in ("failed", "degraded"),
                                    "detail": str(v.get("detail", ""))[:200]}
                                for k, v in status["components"].items()},
                    uptime_s=status["uptime_s"], temperature_c=pi.get("cpu_temperature_c"),
                    throttled=None if throttled is None else bool(throttled.get("throttled_now")
                                                                  or throttled.get("under_voltage_now")))


class _HubCommands:
    """The hub's commands, answered by the daemon (device.uplink.client.CommandHandler)."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def start_session(self, patient_id: str, max_duration_s: float | None) -> dict[str, Any]:
        return self.daemon.start_session(patient_id, max_duration_s=max_duration_s, source="hub")

    def stop_session(self) -> dict[str, Any]:
        return self.daemon.stop_session(source="hub")

    def ping(self) -> dict[str, Any]:
        return {"pong": True, "uptime_s": round(time.monotonic() - self.daemon.started_mono, 1)}

    def get_status(self) -> dict[str, Any]:
        status = self.daemon.status()
        status.pop("models", None)  # in the retained info already
        return status

    def resend(self, session_id: str, from_window: int, to_window: int, session_events: bool) -> dict[str, Any]:
        if self.daemon.recorder is None:
            raise AffectboxError("the daemon is still starting")
        return self.daemon.recorder.resend(session_id, from_window, to_window, session_events)


def configure_logging(verbose: bool = False) -> None:
    """Log lines to stdout for journald (which adds time and unit); journal fields with systemd-python."""
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM"):
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]

            handler = JournalHandler(SYSLOG_IDENTIFIER="affectbox")
        except ImportError:
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def run_daemon(config: Config, *, replay_video: str | None = None, replay_audio: str | None = None,
               replay_loop: bool = False, replay_speed: float = 1.0, patient: str | None = None,
               verbose: bool = False) -> int:
    """The body of `affectbox run`: returns the exit status."""
    configure_logging(verbose)
    daemon = Daemon(config, replay_video=replay_video, replay_audio=replay_audio, replay_loop=replay_loop,
                    replay_speed=replay_speed)
    signal.signal(signal.SIGTERM, daemon.request_stop)
    signal.signal(signal.SIGINT, daemon.request_stop)
    try:
        daemon.start()
        if patient is not None:
            daemon.start_session(patient, consent=True, source="cli")
    except AffectboxError:
        daemon.shutdown("start-up failed")
        raise
    daemon.wait()
    daemon.shutdown(daemon.stop_reason or "the service was stopped")
    return 0

