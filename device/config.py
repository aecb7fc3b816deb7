"""Typed configuration: TOML in, frozen dataclasses out, every bad key named in the error.

Each section is a dataclass; a field's `metadata` carries its bounds or allowed values and a
one-line help text. `load_config(path)` rejects unknown keys and out-of-range values and
collects all problems into one `ConfigError` (one line per problem, each naming the key).
Defaults are chosen so that `affectbox analyze` works with no config file at all.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from device.errors import ConfigError

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


@dataclass(frozen=True)
class Config:
    """The whole configuration; one attribute per TOML table."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    speech: SpeechConfig = field(default_factory=SpeechConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    store: StoreConfig = field(default_factory=StoreConfig)


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _check_value(key: str, value: Any, tp: Any, meta: dict[str, Any]) -> tuple[Any, str | None]:
    """Return (converted value, error message or None) for one scalar or tuple field."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _check_value(key, value, args[0], meta)
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


def config_from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Validate a parsed TOML document; raise ConfigError naming every bad key."""
    errors: list[str] = []
    sections = {f.name: f for f in dataclasses.fields(Config)}
    hints = typing.get_type_hints(Config)
    built: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in sections:
            errors.append(f"{name}: unknown section (known: {', '.join(sorted(sections))})")
            continue
        built[name] = _build_section(name, hints[name], value, errors)
    config = Config(**built)
    _validate_relations(config, errors)
    if errors:
        raise ConfigError(f"{source}: " + "; ".join(errors))
    return config


def load_config(path: str | Path | None) -> Config:
    """Load and validate a TOML file; `None` gives the defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    return config_from_dict(raw, str(path))


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
                lines.append(f'{f.name} = "{default}"')
            else:
                lines.append(f"{f.name} = {default!r}")
    return "\n".join(lines) + "\n"
