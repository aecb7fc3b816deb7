"""Typed configuration: TOML in, frozen dataclasses out, every bad key named in the error.

Each section is a dataclass; a field's `metadata` carries its bounds or allowed values and a
one-line help text. `load_config(path)` rejects unknown keys and out-of-range values and
collects all problems into one `ConfigError` (one line per problem, each naming the key).
Defaults are chosen so that `affectbox analyze` works with no config file at all.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import re
import stat
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from device.contract.ids import is_opaque_id, patient_id_problem
from device.errors import ConfigError

T = TypeVar("T")

DEFAULT_CONFIG_PATH = Path("/etc/affectbox/config.toml")


def _opt(default: Any, help: str, *, min: float | None = None, max: float | None = None,
         choices: tuple[Any, ...] | None = None) -> Any:
    return field(default=default, metadata={"help": help, "min": min, "max": max, "choices": choices})


@dataclass(frozen=True)
class RuntimeConfig:
    """How models are loaded and run."""

    num_threads: int = _opt(1, "LiteRT threads per interpreter (one interpreter per model)", min=1, max=8)
    models_dir: str = _opt("", "folder holding the model files; empty = the install's models/ folder")


@dataclass(frozen=True)
class FaceConfig:
    """Face detection, patient selection, cropping and expression recognition."""

    analysis_fps: float = _opt(10.0, "frames per second analysed (live and offline alike)", min=0.5, max=60)
    detect_every: int = _opt(
        2, "run the detector every N analysed frames and track the face in between", min=1, max=30
    )
    min_score: float = _opt(0.6, "minimum detector confidence for a face", min=0.05, max=0.99)
    nms_iou: float = _opt(0.3, "overlap above which two detections are the same face", min=0.05, max=0.95)
    min_face_px: int = _opt(24, "ignore faces narrower than this many pixels", min=8, max=1000)
    roi: tuple[float, float, float, float] | None = _opt(
        None, "patient region [x0, y0, x1, y1] as fractions of the frame; faces centred outside are ignored"
    )
    crop_scale: float = _opt(
        1.18, "crop side as a multiple of the detector's box (matched to FER2013 framing)", min=0.8, max=3.0
    )
    crop_shift_y: float = _opt(
        -0.10, "vertical crop offset as a fraction of the box height (+ = down)", min=-0.5, max=0.5
    )
    align: bool = _opt(True, "rotate the crop so the eyes are level")
    flip_average: bool = _opt(True, "average the model's logits over the crop and its mirror image")
    track_max_shift: float = _opt(
        0.5, "tracking search radius as a fraction of the face size", min=0.05, max=2.0
    )
    detector: str = _opt(
        "full_range", "BlazeFace model: full_range (faces to about 2.5 m) or short_range (selfie distance)",
        choices=("full_range", "short_range"),
    )
    search_tile_px: int = _opt(
        256, "no face known: search the frame (or roi) in overlapping square tiles of this side at "
        "native resolution, besides the whole frame; 0 = whole frame only", min=0, max=4096,
    )
    search_tiles_per_round: int = _opt(
        2, "tiles searched per detection round while no face is known, in turn (0 = all at once): "
        "bounds the CPU while nobody is in view; a new face is found within a few rounds", min=0, max=64,
    )
    camera_hfov_deg: float = _opt(
        66.0, "the camera's horizontal field of view (Camera Module 3: 66; webcams 60-78), for the "
        "face distance that selftest reports", min=20.0, max=170.0,
    )


@dataclass(frozen=True)
class AggregationConfig:
    """How observations become windows and a session summary."""

    window_seconds: float = _opt(10.0, "length of one aggregation window in seconds", min=1.0, max=600.0)
    min_face_share: float = _opt(
        0.2, "a window needs at least this share of analysed frames with a face to carry a mood",
        min=0.0, max=1.0,
    )


@dataclass(frozen=True)
class SpeechConfig:
    """Voice activity detection, utterance segmentation and prosody."""

    block_ms: int = _opt(
        30, "length of one audio block from a file or the microphone in ms", min=10, max=1000
    )
    vad_aggressiveness: int = _opt(
        2, "WebRTC VAD aggressiveness: 0 keeps the most speech, 3 rejects the most noise", min=0, max=3
    )
    energy_gate_db: float = _opt(
        6.0, "a speech frame must be this far above the quietest frame of the last second (0 = off)",
        min=0.0, max=30.0,
    )
    onset_ms: int = _opt(
        90, "speech needed within a short stretch (twice as long, less one frame) to start an utterance",
        min=30, max=600,
    )
    pre_roll_ms: int = _opt(
        300, "audio kept before detected speech onset (soft word beginnings the VAD misses)", min=0, max=1000
    )
    hangover_ms: int = _opt(
        300, "non-speech shorter than this does not end an utterance", min=30, max=3000
    )
    post_roll_ms: int = _opt(
        150, "audio kept after the last speech frame (at most hangover_ms)", min=0, max=1000
    )
    min_utterance_ms: int = _opt(
        500, "utterances with less speech than this (first to last speech frame) are dropped",
        min=30, max=5000,
    )
    max_utterance_ms: int = _opt(
        8000, "longer speech is cut into utterances of at most this length (bounds latency and memory)",
        min=1000, max=30000,
    )
    min_pause_ms: int = _opt(
        150, "silent gaps at least this long count as pauses in prosody", min=50, max=2000
    )


@dataclass(frozen=True)
class FusionConfig:
    """How face and speech estimates of one window combine (device/fusion.py; defaults in docs/DESIGN.md)."""

    method: str = _opt("log_linear", "pooling rule for the modalities' distributions",
                       choices=("log_linear", "linear"))
    face_weight: float = _opt(1.0, "prior weight of the face modality", min=0.0, max=10.0)
    speech_weight: float = _opt(1.0, "prior weight of the speech modality", min=0.0, max=10.0)
    face_full_coverage: float = _opt(
        0.5, "share of a window's frames with a face at which the face counts fully", min=0.01, max=1.0
    )
    speech_full_coverage: float = _opt(
        0.3, "share of a window's time with speech at which speech counts fully", min=0.01, max=1.0
    )
    speech_min_coverage: float = _opt(
        0.05, "a window needs at least this share of speech time for speech to count", min=0.0, max=1.0
    )


@dataclass(frozen=True)
class StoreConfig:
    """The local record of sessions, windows and summaries (device/store.py)."""

    path: str = _opt(
        "/var/lib/affectbox/affectbox.db",
        "SQLite file of the local record; its folder is created 0700 and the file 0600 (patient data)",
    )
    retention_days: int = _opt(
        365, "sessions that ended more than this many days ago are deleted with their windows", min=1, max=3650
    )
    baseline_min_sessions: int = _opt(
        3, "earlier ended sessions of a patient needed before deviation from their baseline is reported",
        min=2, max=100,
    )


HUB_COMMANDS = ("start_session", "stop_session", "ping", "get_status", "resend")
HUB_DEFAULT_PORTS = {"off": 1883, "on": 8883}
_CREDENTIAL_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,128}")


@dataclass(frozen=True)
class HubConfig:
    """The MQTT link to the clinic hub (device/uplink, docs/MQTT.md); secrets come from credential files."""

    enabled: bool = _opt(False, "publish aggregated mood events to the clinic hub over MQTT")
    host: str = _opt("", "the broker's host name or IP address (required when enabled)")
    port: int = _opt(0, "the broker's TCP port; 0 = the usual one (1883 without TLS, 8883 with TLS)",
                     min=0, max=65535)
    protocol: str = _opt("mqtt5", "MQTT protocol version", choices=("mqtt5", "mqtt311"))
    tls: str = _opt("on", "encrypt the connection and verify the broker's certificate", choices=("off", "on"))
    ca_file: str = _opt("", "absolute path of the CA certificate(s) that sign the broker's certificate; "
                            "empty = the system's CAs")
    cert_file: str = _opt("", "absolute path of this device's client certificate (with key_file); empty = none")
    key_file: str = _opt("", "name of the credential file (in $CREDENTIALS_DIRECTORY) holding the client "
                             "certificate's private key")
    username: str = _opt("", "MQTT user name; empty = none")
    password_file: str = _opt("", "name of the credential file (in $CREDENTIALS_DIRECTORY) holding the MQTT "
                                  "password; the password itself never goes in this file")
    allow_plaintext: bool = _opt(False, "allow tls = \"off\" to a host that is not this machine "
                                        "(only on a trusted, isolated network)")
    topic_prefix: str = _opt("affectbox/{device_id}", "topic prefix; {device_id} is replaced by the device id")
    keepalive: int = _opt(60, "seconds between MQTT keep-alive pings", min=5, max=3600)
    reconnect_min_s: int = _opt(1, "first delay before reconnecting; doubled after every failure", min=1, max=300)
    reconnect_max_s: int = _opt(120, "longest delay between reconnect attempts", min=1, max=3600)
    commands_enabled: tuple[str, ...] = _opt(
        HUB_COMMANDS, "commands the hub may send (others are answered with an error)", choices=HUB_COMMANDS
    )
    outbox_path: str = _opt(
        "/var/lib/affectbox/hub-outbox.db", "SQLite file of events waiting for the broker's acknowledgement"
    )
    outbox_max_bytes: int = _opt(
        33554432, "bound on queued events (payload + topic bytes); the oldest mood events are dropped first",
        min=65536, max=1073741824,
    )
    outbox_max_age_hours: float = _opt(
        168.0, "queued events older than this are dropped; 0 = no age bound", min=0.0, max=8760.0
    )
    max_inflight: int = _opt(10, "events handed to the broker and not yet acknowledged, at most", min=1, max=100)
    response_topic_prefix: str = _opt(
        "", "MQTT 5 response topics of commands are honoured only under this prefix (e.g. \"clinic-hub/replies\"); "
            "empty = results go only to the device's own cmd/<name>/result topics")


@dataclass(frozen=True)
class DeviceConfig:
    """Who this device is; the id is opaque and appears in topics and stored sessions."""

    id: str = _opt("", "device id (A-Z a-z 0-9 . _ -); empty = derived once from the Pi serial or generated, "
                       "kept in state_dir/device-id")
    site: str = _opt("", "site label shown on the status page and in the hub's info (free text, no patient data)")
    room: str = _opt("", "room label shown on the status page and in the hub's info (free text, no patient data)")
    state_dir: str = _opt("/var/lib/affectbox", "folder for the device id and other state (systemd StateDirectory)")


CAMERA_CHOICES = ("auto", "picamera2", "opencv", "none")
MICROPHONE_CHOICES = ("sounddevice", "none")


@dataclass(frozen=True)
class CaptureConfig:
    """Live camera and microphone (device/capture/live.py); `affectbox selftest` lists the devices found."""

    camera: str = _opt("auto", "camera backend: auto (picamera2 if present, else opencv), picamera2, opencv "
                               "(USB/V4L2 webcam), none", choices=CAMERA_CHOICES)
    camera_device: str = _opt("0", "camera index or name (opencv: index or /dev/videoN; picamera2: index)")
    width: int = _opt(640, "camera frame width in pixels", min=160, max=1920)
    height: int = _opt(480, "camera frame height in pixels", min=120, max=1080)
    fps: float = _opt(15.0, "camera frames per second requested from the device", min=1.0, max=60.0)
    microphone: str = _opt("sounddevice", "microphone backend: sounddevice (ALSA/PortAudio) or none",
                           choices=MICROPHONE_CHOICES)
    microphone_device: str = _opt("", "microphone index or (part of) its name; empty = the system default")
    stale_after_s: float = _opt(
        2.0, "a source with no new frame or audio block for this long is reopened (with backoff)", min=0.5, max=60.0
    )


@dataclass(frozen=True)
class SessionConfig:
    """Sessions: limits, consent and the (off by default) debug recording."""

    max_duration_minutes: float = _opt(120.0, "a session is stopped after this long", min=1.0, max=720.0)
    auto_stop_minutes: float = _opt(
        0.0, "stop a session after this many minutes with neither a face nor speech; 0 = never", min=0.0, max=120.0
    )
    consent_required: bool = _opt(False, "a session starts only with an explicit consent flag")
    debug_recording: bool = _opt(
        False, "SENSITIVE: write raw frames and audio of sessions to debug_recording_dir (for troubleshooting only)"
    )
    debug_recording_max_minutes: float = _opt(
        10.0, "debug recording stops after this many minutes of a session", min=0.5, max=60.0
    )
    debug_recording_dir: str = _opt("/var/lib/affectbox/debug-recordings",
                                    "folder for debug recordings (created 0700; delete after use)")


@dataclass(frozen=True)
class ControlConfig:
    """The local control socket used by `affectbox session start/stop/status`."""

    socket: str = _opt("/run/affectbox/control.sock",
                       "Unix socket of the running daemon (created 0660; systemd RuntimeDirectory)")


@dataclass(frozen=True)
class WebConfig:
    """The status page and its JSON API (device/web)."""

    enabled: bool = _opt(True, "serve the status page")
    bind: str = _opt("127.0.0.1", "address to listen on: 127.0.0.1 for a headless device, 0.0.0.0 for a kiosk "
                                  "reached over the LAN")
    port: int = _opt(8080, "TCP port of the status page", min=1, max=65535)
    password_file: str = _opt("web-password", "name of the credential file (in $CREDENTIALS_DIRECTORY) holding "
                                              "the status page's password hash (written by `affectbox provision`)")
    session_minutes: float = _opt(60.0, "a login expires after this many minutes", min=1.0, max=1440.0)


@dataclass(frozen=True)
class GpioConfig:
    """The optional recording LED and start/stop button on the Pi's GPIO header (device/indicator.py, gpiozero)."""

    enabled: bool = _opt(False, "drive the recording LED and read the button through gpiozero (hardware/README.md); "
                                "without gpiozero the daemon runs on and reports gpio as degraded")
    led_pin: int = _opt(27, "BCM number of the GPIO driving the LED, lit while a session runs and blinking while it "
                            "ends; 0 = no LED", min=0, max=27)
    button_pin: int = _opt(17, "BCM number of the GPIO the push button connects to ground; 0 = no button",
                           min=0, max=27)
    kiosk_patient_id: str = _opt("", "opaque patient id for which a press starts a session when none runs (a kiosk "
                                     "for one patient); empty = the button only stops a running session")
    consent_by_button: bool = _opt(False, "a press counts as the patient's consent; without it the button cannot "
                                          "start a session where session.consent_required = true")


@dataclass(frozen=True)
class VoiceConfig:
    """Speaker attribution: utterances matching an enrolled voice (a clinician) are not the patient's (device/voice)."""

    enabled: bool = _opt(True, "attribute each utterance to the patient or to an enrolled voice (when voices are "
                               "enrolled); false = every voice is the patient's")
    threshold: float = _opt(0.72, "cosine similarity to an enrolled voice at or above which an utterance is "
                                  "someone else's (bench/bench_speaker.py chooses it)", min=0.0, max=1.0)
    max_partials: int = _opt(1, "1.6 s pieces of an utterance embedded (each about 14 ms of CPU on the bench "
                                "machine)", min=1, max=8)
    adaptive: bool = _opt(True, "learn the patient's voice during the session and attribute each utterance to the "
                                "closer of the two voices (device/voice/attribution.py)")
    margin: float = _opt(0.0, "with adaptive: how much closer to an enrolled voice than to the patient an "
                              "utterance must be to count as other", min=-0.5, max=0.5)
    min_enroll_speech_s: float = _opt(10.0, "enrollment needs at least this much speech", min=3.0, max=120.0)
    voiceprints_dir: str = _opt("", "folder of the enrolled voiceprints (0700, files 0600); empty = "
                                    "state_dir/voiceprints")


@dataclass(frozen=True)
class Config:
    """The whole configuration; one attribute per TOML table."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    web: WebConfig = field(default_factory=WebConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> tuple[Any, str | None]:
    """Return (converted value, error message or None) for one scalar or tuple field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(key, value, args[0], meta)
    if origin is tuple and typing.get_args(tp)[-1:] == (Ellipsis,):
        item_type = typing.get_args(tp)[0]
        if not isinstance(value, list):
            return None, f"{key}: must be a list (got {value!r})"
        items = []
        for i, v in enumerate(value):
            item, err = _check_value(f"{key}[{i}]", v, item_type, meta)
            if err:
                return None, err
            items.append(item)
        if len(set(items)) != len(items):
            return None, f"{key}: must not repeat an entry (got {value!r})"
        return tuple(items), None
    if origin is tuple:
        item_types = typing.get_args(tp)
        if not isinstance(value, list) or len(value) != len(item_types):
            return None, f"{key}: must be a list of {len(item_types)} numbers (got {value!r})"
        items = []
        for i, (v, t) in enumerate(zip(value, item_types, strict=True)):
            item, err = _check_value(f"{key}[{i}]", v, t, meta)
            if err:
                return None, err
            items.append(item)
        return tuple(items), None
    if tp is bool:
        if not isinstance(value, bool):
            return None, f"{key}: must be true or false (got {value!r})"
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return None, f"{key}: must be an integer (got {value!r})"
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, f"{key}: must be a number (got {value!r})"
        value = float(value)
    elif tp is str and not isinstance(value, str):
        return None, f"{key}: must be a string (got {value!r})"
    elif tp is str and "\0" in value:  # a NUL ends a C string: paths and names would mean something else
        return None, f"{key}: must not contain a NUL character (got {value!r})"
    if meta.get("choices") is not None and value not in meta["choices"]:
        allowed = ", ".join(repr(c) for c in meta["choices"])
        return None, f"{key}: must be one of {allowed} (got {value!r})"
    lo, hi = meta.get("min"), meta.get("max")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    if numeric and ((lo is not None and value < lo) or (hi is not None and value > hi) or value != value):
        return None, f"{key}: must be between {lo:g} and {hi:g} (got {value!r})"
    return value, None


def _build_section(name: str, cls: type, raw: Any, errors: list[str]) -> Any:
    if not isinstance(raw, dict):
        errors.append(f"{name}: must be a table (got {raw!r})")
        return cls()
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        full = f"{name}.{key}"
        if key not in known:
            errors.append(f"{full}: unknown key (known: {', '.join(sorted(known))})")
            continue
        converted, err = _check_value(full, value, hints[key], dict(known[key].metadata))
        if err:
            errors.append(err)
        else:
            values[key] = converted
    return cls(**values)


def _validate_relations(config: Config, errors: list[str]) -> None:
    roi = config.face.roi
    if roi is not None:
        x0, y0, x1, y1 = roi
        if not (0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0):
            errors.append(
                f"face.roi: must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (got {list(roi)!r})"
            )
    if 0 < config.face.search_tile_px < 96:
        errors.append(f"face.search_tile_px: must be 0 (off) or at least 96 (got {config.face.search_tile_px})")
    speech = config.speech
    if speech.post_roll_ms > speech.hangover_ms:
        errors.append(f"speech.post_roll_ms: must not exceed speech.hangover_ms ({speech.hangover_ms}) "
                      f"(got {speech.post_roll_ms})")
    if speech.min_utterance_ms >= speech.max_utterance_ms:
        errors.append(f"speech.min_utterance_ms: must be less than speech.max_utterance_ms "
                      f"({speech.max_utterance_ms}) (got {speech.min_utterance_ms})")
    if speech.pre_roll_ms + speech.post_roll_ms >= speech.max_utterance_ms:
        errors.append("speech.pre_roll_ms: pre_roll_ms + post_roll_ms must be less than max_utterance_ms")
    if not config.store.path.strip():
        errors.append("store.path: must not be empty")
    errors.extend(hub_config_problems(config.hub))
    errors.extend(fusion_config_problems(config.fusion))
    errors.extend(file_setting_problems(config))
    device_id = config.device.id
    if device_id and not is_opaque_id(device_id):
        errors.append(f"device.id: must be 1-64 characters of A-Z a-z 0-9 . _ -, not only dots (got {device_id!r})")
    for key in ("state_dir",):
        value = getattr(config.device, key)
        if not value.startswith("/"):
            errors.append(f"device.{key}: must be an absolute path (got {value!r})")
    if not config.session.debug_recording_dir.startswith("/"):
        errors.append(f"session.debug_recording_dir: must be an absolute path "
                      f"(got {config.session.debug_recording_dir!r})")
    if not config.control.socket.startswith("/") or len(config.control.socket.encode()) > 100:
        errors.append(f"control.socket: must be an absolute path of at most 100 bytes (got {config.control.socket!r})")
    name = config.web.password_file
    if name and (not _CREDENTIAL_NAME_RE.fullmatch(name) or name in (".", "..")):
        errors.append(f"web.password_file: must be the name of a file in the credentials directory, "
                      f"without a folder (got {name!r})")
    try:
        ipaddress.ip_address(config.web.bind)
    except ValueError:
        errors.append(f"web.bind: must be an IP address such as 127.0.0.1 or 0.0.0.0 (got {config.web.bind!r})")
    gpio = config.gpio
    if gpio.led_pin and gpio.led_pin == gpio.button_pin:
        errors.append(f"gpio.button_pin: must differ from gpio.led_pin (both {gpio.led_pin})")
    if gpio.enabled and not gpio.led_pin and not gpio.button_pin:
        errors.append("gpio.enabled: needs gpio.led_pin or gpio.button_pin (both are 0)")
    if gpio.kiosk_patient_id:
        problem = patient_id_problem(gpio.kiosk_patient_id)
        if problem is not None:
            errors.append(f"gpio.kiosk_patient_id: {problem}")
        if not gpio.button_pin:
            errors.append("gpio.kiosk_patient_id: needs gpio.button_pin (the button starts the kiosk's sessions)")


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback addresses (127.0.0.0/8, ::1); names are not resolved."""
    name = host.strip().lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def hub_plaintext_problem(hub: HubConfig) -> str | None:
    """The one-line refusal of unencrypted MQTT to another machine, or None when allowed."""
    if hub.tls == "off" and hub.host and not is_loopback_host(hub.host) and not hub.allow_plaintext:
        return (f"hub.tls: refusing unencrypted MQTT to {hub.host!r}, which is not this machine: set "
                'hub.tls = "on" (or, on a trusted isolated network only, hub.allow_plaintext = true)')
    return None


def hub_config_problems(hub: HubConfig) -> list[str]:
    """Relations between [hub] keys, one message per problem (also checked by device.uplink.client)."""
    problems: list[str] = []
    if hub.enabled and not hub.host.strip():
        problems.append("hub.host: must be set when hub.enabled = true")
    if hub.host != hub.host.strip() or any(c in hub.host for c in "/ \t"):
        problems.append(f"hub.host: must be a bare host name or IP address (got {hub.host!r})")
    plaintext = hub_plaintext_problem(hub)
    if plaintext:
        problems.append(plaintext)
    for key in ("ca_file", "cert_file"):
        value = getattr(hub, key)
        if value and not value.startswith("/"):
            problems.append(f"hub.{key}: must be an absolute path (got {value!r})")
    for key in ("key_file", "password_file"):
        value = getattr(hub, key)
        if value and (not _CREDENTIAL_NAME_RE.fullmatch(value) or value in (".", "..")):
            problems.append(f"hub.{key}: must be the name of a file in the credentials directory, "
                            f"without a folder (got {value!r})")
    if bool(hub.cert_file) != bool(hub.key_file):
        problems.append("hub.cert_file: cert_file and key_file go together (a client certificate needs its key)")
    if hub.tls == "off":
        for key in ("ca_file", "cert_file", "key_file"):
            if getattr(hub, key):
                problems.append(f'hub.{key}: only used with hub.tls = "on"')
    if hub.password_file and not hub.username:
        problems.append("hub.password_file: a password needs hub.username")
    if hub.reconnect_min_s > hub.reconnect_max_s:
        problems.append(f"hub.reconnect_min_s: must not exceed hub.reconnect_max_s ({hub.reconnect_max_s}) "
                        f"(got {hub.reconnect_min_s})")
    prefix = hub.topic_prefix
    if "{device_id}" not in prefix:
        problems.append(f"hub.topic_prefix: must contain {{device_id}} so that every device has its own "
                        f"topics (got {prefix!r})")
    else:
        bare = prefix.replace("{device_id}", "x")
        if (len(prefix) > 128 or any(c in bare for c in "+#{}\0") or bare.startswith(("/", "$"))
                or bare.endswith("/") or "//" in bare):
            problems.append("hub.topic_prefix: must be topic levels separated by '/', without wildcards, "
                            f"braces other than {{device_id}}, empty levels or a leading '$' (got {prefix!r})")
    if not hub.outbox_path.strip():
        problems.append("hub.outbox_path: must not be empty")
    replies = hub.response_topic_prefix
    if replies:
        device_root = prefix.split("{device_id}", 1)[0].rstrip("/")
        if (len(replies) > 128 or any(c in replies for c in "+#{}\0") or replies.startswith(("/", "$"))
                or replies.endswith("/") or "//" in replies):
            problems.append("hub.response_topic_prefix: must be topic levels separated by '/', without wildcards, "
                            f"braces, empty levels or a leading '$' (got {replies!r})")
        elif not device_root or device_root == replies or device_root.startswith(replies + "/") \
                or replies.startswith(device_root + "/"):
            problems.append(f"hub.response_topic_prefix: {replies!r} overlaps the devices' topics "
                            f"({prefix!r}); a requester could then make this device publish onto another "
                            "device's topics")
    return problems


def fusion_config_problems(fusion: FusionConfig) -> list[str]:
    """Fusion settings that could never give a window a mood."""
    if fusion.face_weight == 0 and fusion.speech_weight == 0:
        return ["fusion.face_weight: face_weight and speech_weight are both 0, so no window could ever carry a "
                "mood; give at least one modality a weight above 0"]
    return []


# folders the daemon must never create its socket in (system files, kernel interfaces, devices)
SYSTEM_FOLDERS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/sbin", "/sys", "/usr")


def _normalised(path: str) -> str:
    """`path` with `..`, `.`, repeated slashes and symbolic links resolved (the path need not exist)."""
    return os.path.realpath(os.path.normpath(path))


def _is_under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def file_setting_problems(config: Config) -> list[str]:
    """Settings that name files the daemon writes: no two may name the same file (or a file's SQLite
    -wal/-shm companion), and the control socket must be a path of its own, outside system folders,
    the state files and the debug recordings, and not an existing file of another kind."""
    problems: list[str] = []
    state_dir = config.device.state_dir
    files = {"store.path": config.store.path, "hub.outbox_path": config.hub.outbox_path,
             "control.socket": config.control.socket}
    if state_dir.startswith("/"):
        files["device.state_dir (its device-id file)"] = os.path.join(state_dir, "device-id")
    seen: dict[str, str] = {}
    for key, value in files.items():
        if not value.strip() or "\0" in value:
            continue  # reported by its own check
        real = _normalised(value)
        names = [real] + ([real + "-wal", real + "-shm", real + "-journal"]
                          if key in ("store.path", "hub.outbox_path") else [])
        for name in names:
            other = seen.get(name)
            if other is not None:
                problems.append(f"{key}: names the same file as {other} ({value!r}); every file needs its own path")
                break
        else:
            for name in names:
                seen[name] = key
    socket_path = config.control.socket
    if socket_path.startswith("/") and "\0" not in socket_path:
        real = _normalised(socket_path)
        forbidden = [(folder, "a system folder") for folder in SYSTEM_FOLDERS if folder != "/dev" or
                     not _is_under(real, "/dev/shm")]
        forbidden.append((_normalised(config.session.debug_recording_dir), "session.debug_recording_dir"))
        for folder, what in forbidden:
            if _is_under(real, folder):
                problems.append(f"control.socket: {socket_path!r} lies in {folder} ({what}), where the daemon must "
                                "not create files; use a path such as /run/affectbox/control.sock")
                break
        if state_dir.startswith("/") and real == _normalised(state_dir):
            problems.append(f"control.socket: {socket_path!r} is device.state_dir itself")
        try:
            mode = os.lstat(socket_path).st_mode
        except OSError:
            mode = None
        if mode is not None and not stat.S_ISSOCK(mode):
            problems.append(f"control.socket: {socket_path!r} exists and is not a socket; the daemon would refuse "
                            "to remove it (name a path of its own)")
    return problems


MAX_CONFIG_BYTES = 1 << 20  # a real config is a few kilobytes


def parse_toml(text: str, source: str) -> dict[str, Any]:
    """Parse a config document, refusing one line for what tomllib cannot take (nesting too deep for
    its recursion, a document over MAX_CONFIG_BYTES) instead of a traceback."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: config file of {len(text)} characters; at most {MAX_CONFIG_BYTES}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not a config file: arrays or tables nested too deeply") from None


def build_config(cls: type[T], raw: dict[str, Any], source: str,
                 relations: Callable[[T, list[str]], None]) -> T:
    """A config dataclass of sections (`cls`, the device's `Config` or the hub's) from a parsed TOML
    document: every key checked against its section's fields, then `relations` between keys;
    raise ConfigError naming every bad key."""
    errors: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    built: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in sections:
            errors.append(f"{name}: unknown section (known: {', '.join(sorted(sections))})")
            continue
        built[name] = _build_section(name, hints[name], value, errors)
    config = cls(**built)
    relations(config, errors)
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
    return config


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read and parse a TOML config file, with one-line errors (missing, unreadable, bad TOML, too
    deep, too large)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a NUL in the path
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    return parse_toml(text, str(path))


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming every bad key."""
    return build_config(Config, raw, source, _validate_relations)


def load_config(path: str | Path | None) -> Config:
    """Load and validate a TOML file; `None` gives the defaults."""
    if path is None:
        return Config()
    return config_from_dict(read_config_file(path), str(path))


def describe_defaults() -> str:
    """A commented TOML document with every key, its default and its help text."""
    lines = ["# affectbox configuration; every key is optional, shown here with its default."]
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        lines += ["", f"[{section.name}]", f"# {cls.__doc__}"]
        for f in dataclasses.fields(cls):
            meta = f.metadata
            bounds = ""
            if meta.get("min") is not None:
                bounds = f" ({meta['min']:g} to {meta['max']:g})"
            lines.append(f"# {meta['help']}{bounds}")
            default = f.default
            if default is None:
                lines.append(f"# {f.name} = ")
            elif isinstance(default, bool):
                lines.append(f"{f.name} = {'true' if default else 'false'}")
            elif isinstance(default, str):
                lines.append(f"{f.name} = {json.dumps(default)}")
            elif isinstance(default, tuple):
                lines.append(f"{f.name} = [{', '.join(json.dumps(v) for v in default)}]")
            else:
                lines.append(f"{f.name} = {default!r}")
    return "\n".join(lines) + "\n"
