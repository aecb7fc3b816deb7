"""`affectbox selftest`: is this device ready for a session? One pass/fail/skip row per check.

Checks, in order (each one line in the table, all of them in `--json`):

- `devices`: the cameras and microphones found (V4L2 `/dev/video*` with their names, picamera2's
  `global_camera_info()` and `sounddevice.query_devices()` where those import); informational.
- `models`: the face detector, expression and speech-emotion models load and match the sha256 and
  input contract of their manifests (`FaceAnalyzer.from_config`, `SpeechAnalyzer.from_config`).
- `answers`: every model of the manifests (whose file is there) on its known-answer input gives
  the output recorded when it was published (device/inference/known_answer.py; the daemon refuses to start otherwise).
- `camera`: frames from the configured camera (or `--camera-file`, replayed with `ReplayCamera`)
  for a few seconds; size, rate and brightness. `face`: the face pathway on those frames;
  the face's width in pixels.
- `microphone`: audio from the configured microphone (or `--microphone-file`, `ReplayMicrophone`)
  for a few seconds; level in dBFS. `speech`: utterances found by the voice pathway.
- `hub`: the step-by-step hub check of `affectbox provision --check` (skipped when no hub).
- `disk`: free space where the state folder lives. `clock`: synchronised per systemd-timesyncd
  (`/run/systemd/timesync/synchronized`) or `timedatectl`, 'unknown' (skip) without them.
- `power`: the Pi's under-voltage and throttling flags (skipped on other machines).

Reads never block the self-test: live devices are read in a helper thread with a deadline. The
exit code is 1 when any check fails, 0 otherwise.
"""

from __future__ import annotations

import contextlib
import glob
import importlib
import math
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from device.config import Config
from device.errors import AffectboxError

CHECKS = ("devices", "models", "answers", "camera", "face", "microphone", "speech", "hub", "disk", "clock", "power")
MIN_FREE_BYTES = 256 * 1024 * 1024
MIN_FREE_SHARE = 0.02
# below this width (in the analysed frame) the face pathway's recall falls under 95 %
# (bench/bench_far_face.py); a face is about 15 cm wide
RELIABLE_FACE_PX = 40
FACE_WIDTH_M = 0.15
SILENCE_DBFS = -80.0
TIMESYNC_FLAG = "run/systemd/timesync/synchronized"


@dataclass
class CheckResult:
    """One row of the table: `status` is pass, warn (works, but not reliably), fail or skip."""

    name: str
    status: str
    detail: str
    data: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "status": self.status, "detail": self.detail, **({"data": self.data}
                                                                                      if self.data else {})}


@dataclass
class SelftestOptions:
    """Where the camera and microphone come from, and for how long they are read."""

    camera_file: Path | None = None
    microphone_file: Path | None = None
    seconds: float = 3.0
    skip: tuple[str, ...] = ()
    config_path: Path | None = None
    root: str = "/"
    hub_timeout_s: float = 5.0


# ---- devices -----------------------------------------------------------------------------------------


def list_v4l2(root: str = "/") -> list[dict[str, str]]:
    """`/dev/video*` nodes with the driver's name from sysfs."""
    found = []
    for node in sorted(glob.glob(os.path.join(root, "dev", "video*")),
                       key=lambda p: (len(p), p)):
        name_file = Path(root, "sys/class/video4linux", Path(node).name, "name")
        try:
            name = name_file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            name = ""
        found.append({"device": "/dev/" + Path(node).name, "name": name})
    return found


def list_picamera2() -> list[dict[str, Any]] | None:
    """picamera2's cameras, or None when picamera2 is not installed (it is on Raspberry Pi OS)."""
    try:
        module = importlib.import_module("picamera2")
    except ModuleNotFoundError:
        return None
    except Exception as exc:  # installed but broken: libcamera, or a NumPy ABI mismatch with apt's modules
        return [{"error": f"cannot import picamera2: {' '.join(str(exc).split())}"}]
    try:
        return [{k: str(v) for k, v in dict(info).items()} for info in module.Picamera2.global_camera_info()]
    except Exception as exc:  # libcamera errors are not typed
        return [{"error": " ".join(str(exc).split())}]


def list_microphones() -> list[dict[str, Any]] | None:
    """sounddevice's input devices, or None when sounddevice (or PortAudio) is missing."""
    try:
        sd = importlib.import_module("sounddevice")
    except (ImportError, OSError):
        return None
    try:
        devices = sd.query_devices()
    except Exception as exc:  # PortAudio errors
        return [{"error": " ".join(str(exc).split())}]
    return [{"index": i, "name": d["name"], "channels": d["max_input_channels"],
             "rate": d["default_samplerate"]} for i, d in enumerate(devices) if d["max_input_channels"] > 0]


def check_devices(options: SelftestOptions) -> CheckResult:
    v4l2 = list_v4l2(options.root)
    picam = list_picamera2()
    mics = list_microphones()
    parts = []
    if v4l2:
        shown = [d["device"] + (f" ({d['name']})" if d["name"] else "") for d in v4l2[:6]]
        parts.append("V4L2: " + ", ".join(shown) + (" ..." if len(v4l2) > 6 else ""))
    else:
        parts.append("V4L2: no /dev/video*")
    if picam is None:
        parts.append("picamera2: not installed")
    elif picam and "error" in picam[0]:
        parts.append(f"picamera2: {picam[0]['error']}")
    else:
        parts.append(f"picamera2: {len(picam)} camera{'s' if len(picam) != 1 else ''}")
    if mics is None:
        parts.append("microphones: sounddevice not installed")
    else:
        names = ", ".join(f"{m.get('index', '?')}: {m.get('name', m.get('error'))}" for m in mics[:4])
        parts.append(f"microphones: {names or 'none'}")
    data = {"v4l2": v4l2, "picamera2": picam, "microphones": mics}
    if not v4l2 and not [c for c in picam or [] if "error" not in c] and not mics:
        return CheckResult("devices", "skip", "no camera or microphone found; " + "; ".join(parts), data)
    return CheckResult("devices", "pass", "; ".join(parts), data)


# ---- reading a source with a deadline ----------------------------------------------------------------


def read_for(backend: Any, seconds: float, *, max_samples: int | None, wall_limit_s: float
             ) -> tuple[list[Any], str | None]:
    """Samples read from an opened `backend` for `seconds` of wall time, or up to `max_samples`
    (replays, read as fast as they decode), in a helper thread so a stuck device cannot hang the
    self-test; (samples, error)."""
    samples: list[Any] = []
    outcome: dict[str, str | None] = {"error": None}
    done = threading.Event()

    def reader() -> None:
        from device.capture.live import EndOfStream

        start = time.monotonic()
        try:
            while not done.is_set():
                sample = backend.read()
                if sample is not None:
                    samples.append(sample)
                if max_samples is not None:
                    if len(samples) >= max_samples:
                        break
                elif time.monotonic() - start >= seconds:
                    break
        except EndOfStream:
            pass
        except Exception as exc:  # device errors come in many types; report the message
            outcome["error"] = " ".join(str(exc).split()) or type(exc).__name__
        finally:
            done.set()

    thread = threading.Thread(target=reader, name="affectbox-selftest-read", daemon=True)
    thread.start()
    if not done.wait(wall_limit_s):
        done.set()
        return list(samples), f"reading blocked for more than {wall_limit_s:g} s"
    return list(samples), outcome["error"]


# ---- camera and face ------------------------------------------------------------------------------------


def _camera_backend(config: Config, options: SelftestOptions) -> tuple[Any | None, str]:
    """(backend or None, what it is / why there is none)."""
    from device.capture.live import ReplayCamera, camera_from_config

    if options.camera_file is not None:
        return ReplayCamera(options.camera_file, realtime=False, fps=config.face.analysis_fps), \
            f"replay {options.camera_file.name}"
    backend = camera_from_config(config.capture)
    return backend, backend.name if backend is not None else "capture.camera = none"


def check_camera_and_face(config: Config, options: SelftestOptions) -> list[CheckResult]:
    from device.inference.face import FaceAnalyzer
    from device.observation import Frame

    try:
        backend, what = _camera_backend(config, options)
    except AffectboxError as exc:
        return [CheckResult("camera", "fail", str(exc)), CheckResult("face", "skip", "no camera")]
    if backend is None:
        return [CheckResult("camera", "skip", what), CheckResult("face", "skip", what)]
    replay = options.camera_file is not None
    try:
        backend.open()
    except Exception as exc:  # device errors: OpenCV, libcamera, ...
        return [CheckResult("camera", "fail", f"{what}: cannot open: {' '.join(str(exc).split())}"),
                CheckResult("face", "skip", "no camera")]
    try:
        start = time.monotonic()
        limit = max(1, round(options.seconds * config.face.analysis_fps)) if replay else None
        samples, error = read_for(backend, options.seconds, max_samples=limit, wall_limit_s=options.seconds + 10.0)
        elapsed = time.monotonic() - start
    finally:
        with contextlib.suppress(Exception):
            backend.close()
    if not samples:
        return [CheckResult("camera", "fail", f"{what}: no frame in {options.seconds:g} s"
                                              + (f" ({error})" if error else "")),
                CheckResult("face", "skip", "no frame")]
    first = samples[0].data
    height, width = first.shape[:2]
    brightness = float(np.mean([np.mean(s.data) for s in samples[:: max(1, len(samples) // 10)]]))
    if replay:
        rate = f"{len(samples) / config.face.analysis_fps:.1f} s of video at {config.face.analysis_fps:g} fps"
    else:
        rate = f"{len(samples) / max(elapsed, 1e-9):.1f} fps"
    detail = f"{what}: {len(samples)} frames {width}x{height}, {rate}, mean brightness {brightness:.0f}/255"
    if brightness < 30:
        detail += " (very dark: add frontal light)"
    camera = CheckResult("camera", "pass" if not error else "fail",
                         detail + (f"; then: {error}" if error else ""),
                         {"frames": len(samples), "width": width, "height": height, "brightness": round(brightness, 1)})
    if "face" in options.skip:
        return [camera, CheckResult("face", "skip", "skipped (--skip face)")]
    try:
        analyzer = FaceAnalyzer.from_config(config)
    except AffectboxError as exc:
        return [camera, CheckResult("face", "fail", f"face models: {exc}")]
    widths, scores, seen = [], [], 0
    base = samples[0].t or 0.0
    for index, sample in enumerate(samples):
        t = index / config.face.analysis_fps if replay else (sample.t or 0.0) - base
        observation = analyzer.process(Frame(t, sample.data, index))
        if observation.present:
            seen += 1
            x0, _, x1, _ = observation.features["box"]
            widths.append(x1 - x0)
            scores.append(observation.features["score"])
    if not seen:
        return [camera, CheckResult("face", "fail", f"no face in {len(samples)} frames: sit facing the camera at "
                                                    "eye level, 0.6-2 m away, with light on the face")]
    median_px = float(np.median(widths))
    distance = implied_distance_m(median_px, width, config.face.camera_hfov_deg)
    detail = (f"face in {seen}/{len(samples)} frames, {median_px:.0f} px wide (median), about {distance:.1f} m "
              f"away at {config.face.camera_hfov_deg:g} degrees across, detector score {max(scores):.2f}")
    data = {"frames_with_face": seen, "face_px": round(median_px, 1), "distance_m": round(distance, 2),
            "reliable_face_px": RELIABLE_FACE_PX}
    if median_px < RELIABLE_FACE_PX:
        detail += (f"; under the reliable floor of {RELIABLE_FACE_PX} px (faces are often missed): move the "
                   "camera closer (hardware/README.md, placement)")
        return [camera, CheckResult("face", "warn", detail, data)]
    return [camera, CheckResult("face", "pass", detail, data)]


def implied_distance_m(face_px: float, frame_width: int, hfov_deg: float) -> float:
    """Camera-to-face distance for a face FACE_WIDTH_M wide seen `face_px` wide across `frame_width`
    pixels by a camera of `hfov_deg` horizontal field of view (pinhole model)."""
    focal_px = (frame_width / 2) / math.tan(math.radians(hfov_deg) / 2)
    return FACE_WIDTH_M * focal_px / max(face_px, 1.0)


# ---- microphone and speech ------------------------------------------------------------------------------


def _microphone_backend(config: Config, options: SelftestOptions) -> tuple[Any | None, str]:
    from device.capture.live import ReplayMicrophone, microphone_from_config

    block_ms = config.speech.block_ms
    if options.microphone_file is not None:
        return ReplayMicrophone(options.microphone_file, block_ms, realtime=False), \
            f"replay {options.microphone_file.name}"
    backend = microphone_from_config(config.capture, block_ms)
    if backend is None:
        return None, "capture.microphone = none"
    return backend, f"sounddevice:{config.capture.microphone_device or 'default'}"


def dbfs(pcm: np.ndarray) -> float:
    """RMS level of int16 samples in dB relative to full scale (-inf for digital silence)."""
    if pcm.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(pcm.astype(np.float64) / 32768.0))))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def check_microphone_and_speech(config: Config, options: SelftestOptions) -> list[CheckResult]:
    from device.inference.speech import SpeechAnalyzer
    from device.observation import AudioBlock

    try:
        backend, what = _microphone_backend(config, options)
    except AffectboxError as exc:
        return [CheckResult("microphone", "fail", str(exc)), CheckResult("speech", "skip", "no microphone")]
    if backend is None:
        return [CheckResult("microphone", "skip", what), CheckResult("speech", "skip", what)]
    replay = options.microphone_file is not None
    try:
        backend.open()
    except Exception as exc:  # PortAudio errors
        return [CheckResult("microphone", "fail", f"{what}: cannot open: {' '.join(str(exc).split())}"),
                CheckResult("speech", "skip", "no microphone")]
    try:
        limit = max(1, round(options.seconds * 1000 / config.speech.block_ms)) if replay else None
        samples, error = read_for(backend, options.seconds, max_samples=limit, wall_limit_s=options.seconds + 10.0)
    finally:
        with contextlib.suppress(Exception):
            backend.close()
    if not samples:
        return [CheckResult("microphone", "fail", f"{what}: no audio in {options.seconds:g} s"
                                                  + (f" ({error})" if error else "")),
                CheckResult("speech", "skip", "no audio")]
    pcm = np.concatenate([s.data[: s.valid if s.valid >= 0 else None] for s in samples])
    seconds = pcm.size / 16000
    level = dbfs(pcm)
    peak = 20 * math.log10(max(int(np.max(np.abs(pcm.astype(np.int32)))), 1) / 32768.0)
    data = {"seconds": round(seconds, 2), "level_dbfs": None if math.isinf(level) else round(level, 1),
            "peak_dbfs": round(peak, 1)}
    if level <= SILENCE_DBFS:
        microphone = CheckResult("microphone", "fail", f"{what}: {seconds:.1f} s of silence (level "
                                                       f"{level:.0f} dBFS): is the microphone muted? "
                                                       "(alsamixer, arecord -l)", data)
    else:
        microphone = CheckResult("microphone", "pass" if not error else "fail",
                                 f"{what}: {seconds:.1f} s, level {level:.0f} dBFS, peak {peak:.0f} dBFS"
                                 + (f"; then: {error}" if error else ""), data)
    if "speech" in options.skip:
        return [microphone, CheckResult("speech", "skip", "skipped (--skip speech)")]
    try:
        analyzer = SpeechAnalyzer.from_config(config)
    except AffectboxError as exc:
        return [microphone, CheckResult("speech", "fail", f"speech model: {exc}")]
    block = config.speech.block_ms * 16
    observations = []
    for k in range(0, pcm.size - pcm.size % block, block):
        observations += analyzer.process(AudioBlock(k / 16000, pcm[k : k + block]))
    observations += analyzer.flush()
    utterances = [o for o in observations if o.present]
    if not utterances:
        return [microphone, CheckResult("speech", "fail", f"no speech found in {seconds:.1f} s: speak during the "
                                                          "test, about 1 m from the microphone")]
    spoken = sum(o.features.get("duration", 0.0) for o in utterances)
    plural = "s" if len(utterances) != 1 else ""
    return [microphone, CheckResult("speech", "pass", f"{len(utterances)} utterance{plural}, {spoken:.1f} s of speech",
                                    {"utterances": len(utterances), "speech_seconds": round(spoken, 2)})]


# ---- models, hub, disk, clock, power -------------------------------------------------------------------


def load_models(config: Config) -> list[Any]:
    """The face detector, expression and speech-emotion models, as the daemon loads them."""
    from device.inference.face import FaceAnalyzer
    from device.inference.speech import SpeechAnalyzer

    face = FaceAnalyzer.from_config(config)
    speech = SpeechAnalyzer.from_config(config)
    return [face.detector.model, face.classifier.model, speech.classifier.model]


def check_models(config: Config) -> CheckResult:
    from device.inference.runtime import runtime_name

    start = time.monotonic()
    try:
        models = load_models(config)
        runtime = runtime_name()
    except AffectboxError as exc:
        return CheckResult("models", "fail", str(exc))
    names = ", ".join(f"{m.spec.name} ({m.spec.sha256[:8]})" for m in models)
    return CheckResult("models", "pass", f"{len(models)} models load and match their manifests in "
                                         f"{time.monotonic() - start:.1f} s with {runtime}: {names}",
                       {"models": [{"name": m.spec.name, "file": str(m.path), "sha256": m.spec.sha256}
                                   for m in models]})


def check_answers(config: Config) -> CheckResult:
    """Every model of the manifests on its known-answer input, as the daemon checks before READY."""
    from device.inference.known_answer import check_models_dir
    from device.inference.runtime import resolve_models_dir

    try:
        answers = check_models_dir(resolve_models_dir(config.runtime.models_dir))
    except AffectboxError as exc:
        return CheckResult("answers", "fail", f"models do not load: {exc}")
    data = {"models": [{"name": a.name, "status": a.status, "detail": a.detail} for a in answers]}
    failed = [a for a in answers if a.status == "fail"]
    if failed:
        return CheckResult("answers", "fail", "; ".join(a.detail for a in failed), data)
    missing = [a.name for a in answers if a.status == "missing"]
    passed = [a.detail.replace(": ", " ", 1) for a in answers if a.status == "pass"]
    detail = (f"{len(passed)} model{'s' if len(passed) != 1 else ''} give the answers recorded at publishing"
              f" ({', '.join(passed)})" if passed else "no model has a known answer")
    if missing:
        detail += f"; no known answer recorded for {', '.join(missing)}"
    return CheckResult("answers", "pass" if passed else "skip", detail, data)


def check_hub(config: Config, options: SelftestOptions, device_id: str) -> CheckResult:
    from device.hub_check import check_hub as run_hub_check
    from device.hub_check import hub_secrets_dir

    if not config.hub.enabled:
        return CheckResult("hub", "skip", "hub.enabled = false")
    check = run_hub_check(config.hub, device_id, hub_secrets_dir(options.config_path), options.hub_timeout_s)
    failed = check.failed
    if failed is not None:
        return CheckResult("hub", "fail", f"{check.target}: {failed.name.upper()}: {failed.detail}", check.to_json())
    return CheckResult("hub", "pass", f"{check.target}: DNS, TCP, TLS, auth and ACL ok"
                       if all(s.status == "ok" for s in check.steps)
                       else f"{check.target}: " + ", ".join(f"{s.name} {s.status}" for s in check.steps),
                       check.to_json())


def _existing_parent(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def check_disk(config: Config, options: SelftestOptions) -> CheckResult:
    state = Path(options.root, config.device.state_dir.lstrip("/"))
    where = _existing_parent(state)
    usage = shutil.disk_usage(where)
    free_share = usage.free / usage.total if usage.total else 0.0
    detail = (f"{usage.free / 1e9:.1f} GB free of {usage.total / 1e9:.1f} GB ({free_share:.0%}) "
              f"at {config.device.state_dir}")
    if where != state:
        detail += f" (measured on {where}: the folder is not made yet)"
    data = {"free_bytes": usage.free, "total_bytes": usage.total}
    if usage.free < MIN_FREE_BYTES or free_share < MIN_FREE_SHARE:
        return CheckResult("disk", "fail", detail + ": too little room for the local record", data)
    return CheckResult("disk", "pass", detail, data)


def check_clock(options: SelftestOptions) -> CheckResult:
    year = time.gmtime().tm_year
    if year < 2024:
        return CheckResult("clock", "fail", f"the clock says {year}: it has not been set (the Pi has no "
                                            "battery-backed clock; check network time)")
    if Path(options.root, TIMESYNC_FLAG).exists():
        return CheckResult("clock", "pass", "synchronised (systemd-timesyncd)")
    exe = shutil.which("timedatectl") if options.root == "/" else None
    if exe is not None:
        try:
            done = subprocess.run([exe, "show", "--property=NTPSynchronized", "--value"], capture_output=True,
                                  text=True, timeout=5, check=False)
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0:
            if done.stdout.strip() == "yes":
                return CheckResult("clock", "pass", "synchronised (timedatectl)")
            if done.stdout.strip() == "no":
                return CheckResult("clock", "fail", "not synchronised (timedatectl): session times and the hub's "
                                                    "timestamps may be wrong; check the network and NTP")
    return CheckResult("clock", "skip", "unknown (neither systemd-timesyncd's flag nor timedatectl answered)")


def check_power(options: SelftestOptions) -> CheckResult:
    from device.health import read_cpu_temperature_c, read_throttled

    flags = read_throttled(options.root)
    temperature = read_cpu_temperature_c(options.root)
    temp = f", CPU {temperature:.0f} °C" if temperature is not None else ""
    if flags is None:
        return CheckResult("power", "skip", f"no Raspberry Pi throttling flags here{temp}")
    now = [name.removesuffix("_now") for name in ("under_voltage_now", "throttled_now", "frequency_capped_now",
                                                  "soft_temp_limit_now") if flags.get(name)]
    before = [name.removesuffix("_since_boot") for name in ("under_voltage_since_boot", "throttled_since_boot")
              if flags.get(name)]
    data = {"throttled": flags, "cpu_temperature_c": temperature}
    if now:
        return CheckResult("power", "fail", f"now: {', '.join(now)} ({flags['raw']}){temp}: use the official "
                                            "power supply and a heatsink or fan", data)
    return CheckResult("power", "pass", f"no throttling now ({flags['raw']}){temp}"
                       + (f"; since boot: {', '.join(before)}" if before else ""), data)


# ---- the whole run --------------------------------------------------------------------------------------


def run_selftest(config: Config, options: SelftestOptions, device_id: str) -> Iterator[CheckResult]:
    """Each check's result, in table order (generated one at a time, so a terminal sees progress)."""
    wanted = [name for name in CHECKS if name not in options.skip]

    def skipped(name: str) -> CheckResult:
        return CheckResult(name, "skip", f"skipped (--skip {name})")

    for name in CHECKS:
        if name in ("face", "speech"):
            continue  # reported with their source
        if name not in wanted and name not in ("camera", "microphone"):
            yield skipped(name)
            continue
        if name == "devices":
            yield check_devices(options)
        elif name == "models":
            yield check_models(config)
        elif name == "answers":
            yield check_answers(config)
        elif name == "camera":
            if "camera" in options.skip:
                yield skipped("camera")
                yield CheckResult("face", "skip", "skipped with the camera")
            else:
                yield from check_camera_and_face(config, options)
        elif name == "microphone":
            if "microphone" in options.skip:
                yield skipped("microphone")
                yield CheckResult("speech", "skip", "skipped with the microphone")
            else:
                yield from check_microphone_and_speech(config, options)
        elif name == "hub":
            yield check_hub(config, options, device_id)
        elif name == "disk":
            yield check_disk(config, options)
        elif name == "clock":
            yield check_clock(options)
        elif name == "power":
            yield check_power(options)


def format_row(result: CheckResult) -> str:
    """One table row: name, status, detail."""
    return f"{result.name:<11} {result.status:<5} {result.detail}"
