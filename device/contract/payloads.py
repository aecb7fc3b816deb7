"""Builders for every MQTT payload the device publishes, and their JSON Schemas (docs/MQTT.md).

Every JSON payload starts with the same envelope:
- `schema`: the payload schema version (`SCHEMA_VERSION`); a hub rejects versions it does not know;
- `kind`: `info`, `status`, `session`, `mood`, `summary` or `command_result`;
- `event_id`: a UUID, the hub deduplicates on it (QoS 1 is at-least-once): version 5, derived from
  (device, session, kind, stored item) for session, mood and summary events, so an event queued
  again after a crash keeps its id; random (version 4) for the others;
- `device_id`, `session_id` (null for device-level payloads: info, status, command results);
- `seq`: per stream, strictly increasing: one stream per session (session, mood and summary
  events of that session) and one for the device (session_id null). Gaps are possible (an event
  dropped at the outbox bound, a crash between numbering and queueing); the hub orders by seq;
- `ts`: when the payload was built, UTC ISO-8601 with milliseconds (`2025-01-31T09:15:02.123Z`,
  `device.contract.timestamps.utc_timestamp`, the one format of every outward timestamp).
  A Pi has no real-time clock: before NTP sync `ts` can be off, so order by `seq`, never by `ts`.

Only aggregates leave the device. The mood and summary builders copy named fields from
`Window.to_json()` and `summarize()` (a whitelist, with every number checked finite), so nothing
that was not meant for the hub (let alone frames or audio) can ride along; the schemas say
`additionalProperties: false` wherever the content is fixed.

Availability is not JSON: the plain strings `online` / `offline` (`AVAILABILITY_ONLINE`, ...),
the form home-automation style consumers expect.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from importlib import resources
from typing import Any

from device.contract.timestamps import utc_timestamp
from device.labels import LABELS

SCHEMA_VERSION = 2  # 2: mood and summary carry `speakers` (patient and other speech seconds); 1 still validates
AVAILABILITY_ONLINE = "online"
AVAILABILITY_OFFLINE = "offline"
KINDS = ("info", "status", "session", "mood", "summary", "command_result")
SCHEMA_NAMES = ("availability", *KINDS, "command")  # one file per name in device/contract/schemas/
SESSION_EVENTS = ("started", "ended", "interrupted")
MODALITIES = ("face", "speech")
ERROR_CODES = ("malformed", "too_large", "unknown_command", "disabled", "invalid", "refused", "internal")

_MODALITY_KEYS = ("items", "present", "share", "seconds", "mean_quality", "expressivity", "dominant", "probs")
_WINDOW_PROSODY_KEYS = ("n_utterances", "speech_s", "speech_share", "voiced_s", "pause_ratio", "pause_count",
                        "mean_pause_s", "speaking_rate", "articulation_rate", "f0_mean_hz", "f0_sd_hz",
                        "f0_mean_st", "f0_sd_st", "energy_mean_db", "energy_sd_db")
_SUMMARY_PROSODY_KEYS = ("speech_s", "f0_mean_hz", "f0_sd_hz", "f0_mean_st", "f0_sd_st", "energy_sd_db",
                         "speaking_rate", "articulation_rate", "pause_ratio", "mean_pause_s")
_DEVIATION_FIELD_KEYS = ("value", "mean", "sd", "sd_used", "n", "z")


def envelope(kind: str, device_id: str, session_id: str | None, seq: int, *,
             now: datetime | None = None) -> dict[str, Any]:
    """The fields every JSON payload starts with (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"unknown payload kind {kind!r}")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise ValueError(f"seq must be a non-negative integer (got {seq!r})")
    return {"schema": SCHEMA_VERSION, "kind": kind, "event_id": str(uuid.uuid4()), "device_id": device_id,
            "session_id": session_id, "seq": seq, "ts": utc_timestamp(now)}


EVENT_ID_NAMESPACE = uuid.UUID("6f1c2a8e-52f4-4e3b-9d8e-2b7a4c1e9f30")


def derived_event_id(device_id: str, session_id: str, kind: str, key: str) -> str:
    """A stable event id (UUID version 5) for an event derived from a stored item.

    Queuing the same stored item twice (after a crash) yields the same id, so the hub's
    deduplication on `event_id` removes the copy.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{device_id}/{session_id}/{kind}/{key}"))


def encode(payload: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (JSON has none)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# ---- value checks: only plain, finite values of the expected type get through --------------------------------

def _number(value: Any, digits: int = 4) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return 0
    return max(0, int(value))


def _label(value: Any) -> str | None:
    return value if value in LABELS else None


def _probs(value: Any) -> dict[str, float] | None:
    """A distribution over the seven labels (a mapping label -> p, or a sequence in LABELS order)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        items = [value.get(label) for label in LABELS]
    else:
        items = list(value)
        if len(items) != len(LABELS):
            raise ValueError(f"a distribution needs {len(LABELS)} probabilities (got {len(items)})")
    out = {}
    for label, p in zip(LABELS, items, strict=True):
        number = _number(p)
        if number is None:
            raise ValueError(f"probability of {label!r} is not a finite number ({p!r})")
        out[label] = min(1.0, max(0.0, number))
    return out


def _pick_numbers(source: Mapping[str, Any] | None, keys: Iterable[str]) -> dict[str, float | int | None] | None:
    if source is None:
        return None
    return {key: _count(source.get(key)) if key == "n_utterances" else _number(source.get(key)) for key in keys}


def _modality(stats: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "items": _count(stats.get("items")),
        "present": _count(stats.get("present")),
        "share": min(1.0, max(0.0, _number(stats.get("share")) or 0.0)),
    }
    for key in ("seconds", "mean_quality", "expressivity"):
        if key in stats:
            out[key] = _number(stats.get(key), 3 if key == "seconds" else 4)
    if "dominant" in stats:
        out["dominant"] = _label(stats.get("dominant"))
    if "probs" in stats:
        out["probs"] = _probs(stats.get("probs"))
    return out


def _modalities(source: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    out = {}
    for name, stats in (source or {}).items():
        if name not in MODALITIES:
            raise ValueError(f"unknown modality {name!r} (the schema knows {', '.join(MODALITIES)})")
        out[name] = _modality(stats)
    return out


def _speakers(source: Mapping[str, Any] | None) -> dict[str, Any]:
    """Speech seconds by speaker: counts only (never who the other voices are, never a voiceprint)."""
    source = source or {}
    patient_s = max(0.0, _number(source.get("patient_s"), 3) or 0.0)
    other_s = max(0.0, _number(source.get("other_s"), 3) or 0.0)
    total = patient_s + other_s
    return {"attributed": source.get("attributed") is True, "patient_s": patient_s, "other_s": other_s,
            "other_share": round(other_s / total, 4) if total > 0 else None}


def _window_json(window: Any) -> Mapping[str, Any]:
    return window.to_json() if hasattr(window, "to_json") else window


# ---- builders ------------------------------------------------------------------------------------------------

def info_payload(device_id: str, seq: int, *, software_version: str, models: Iterable[Mapping[str, Any]] = (),
                 capabilities: Iterable[str] = (), commands: Iterable[str] = (),
                 window_seconds: float | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Retained `info`: software and model versions, what the device can do, the label order."""
    payload = envelope("info", device_id, None, seq, now=now)
    payload.update({
        "software_version": str(software_version),
        "labels": list(LABELS),
        "models": [{"name": str(m["name"]), "version": None if m.get("version") is None else str(m["version"]),
                    "sha256": m.get("sha256")} for m in models],
        "capabilities": sorted(set(capabilities)),
        "commands": list(commands),
        "window_seconds": _number(window_seconds, 3),
    })
    return payload


def status_payload(device_id: str, seq: int, *, state: str, session_id: str | None = None,
                   components: Mapping[str, Mapping[str, Any]] | None = None, uptime_s: float | None = None,
                   temperature_c: float | None = None, throttled: bool | None = None,
                   outbox: Mapping[str, Any] | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Retained `status`: a health snapshot (components such as camera, microphone, models) and the outbox."""
    payload = envelope("status", device_id, None, seq, now=now)
    payload.update({
        "state": state,
        "active_session_id": session_id,
        "uptime_s": _number(uptime_s, 1),
        "temperature_c": _number(temperature_c, 1),
        "throttled": throttled if isinstance(throttled, bool) else None,
        "components": {str(name): {"ok": bool(c.get("ok")),
                                   "detail": None if c.get("detail") is None else str(c["detail"])[:200]}
                       for name, c in (components or {}).items()},
        "outbox": outbox_stats_json(outbox or {}),
    })
    return payload


def outbox_stats_json(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The outbox part of `status` (from `Outbox.stats()`)."""
    return {
        "depth": _count(stats.get("depth")),
        "bytes": _count(stats.get("bytes")),
        "oldest_age_s": _number(stats.get("oldest_age_s"), 1),
        "dropped": {str(k): _count(v) for k, v in (stats.get("dropped") or {}).items()},
        "rejected": {str(k): _count(v) for k, v in (stats.get("rejected") or {}).items()},
    }


def session_payload(device_id: str, session_id: str, seq: int, event: str, *, patient_id: str | None = None,
                    reason: str | None = None, duration_s: float | None = None, windows: int | None = None,
                    max_duration_s: float | None = None, now: datetime | None = None) -> dict[str, Any]:
    """`session`: a session `started`, `ended` or was `interrupted` (crash, power loss, a fault)."""
    if event not in SESSION_EVENTS:
        raise ValueError(f"session event must be one of {', '.join(SESSION_EVENTS)} (got {event!r})")
    payload = envelope("session", device_id, session_id, seq, now=now)
    payload.update({
        "event": event,
        "patient_id": patient_id,
        "reason": None if reason is None else " ".join(str(reason).split())[:200],
        "duration_s": _number(duration_s, 3),
        "windows": None if windows is None else _count(windows),
        "max_duration_s": _number(max_duration_s, 3),
    })
    return payload


def mood_payload(device_id: str, session_id: str, seq: int, window: Any, *,
                 now: datetime | None = None) -> dict[str, Any]:
    """`mood`: one aggregation window (a `device.aggregate.Window` or its `to_json()`).

    Carries the fused distribution, its dominant label, valence and arousal, the fusion weights,
    each modality's coverage (share of frames with a face, share of time with speech), its own
    distribution and expressivity, the window's prosody (the patient's speech only), and its speech by
    speaker (`speakers`: the patient's and other voices' seconds). Times are seconds since session start.
    """
    w = _window_json(window)
    probs = _probs(w.get("probs"))
    payload = envelope("mood", device_id, session_id, seq, now=now)
    payload.update({
        "window_index": _count(w.get("index")),
        "start_s": _number(w.get("start"), 3) or 0.0,
        "end_s": _number(w.get("end"), 3) or 0.0,
        "has_mood": probs is not None,
        "dominant": _label(w.get("dominant")) if probs is not None else None,
        "valence": _number(w.get("valence")) if probs is not None else None,
        "arousal": _number(w.get("arousal")) if probs is not None else None,
        "probs": probs,
        "fusion_weights": {m: _number(v) or 0.0 for m, v in (w.get("fusion_weights") or {}).items()
                           if m in MODALITIES},
        "modalities": _modalities(w.get("modalities")),
        "prosody": _pick_numbers(w.get("prosody"), _WINDOW_PROSODY_KEYS),
        "speakers": _speakers(w.get("speakers")),
    })
    return payload


def summary_payload(device_id: str, session_id: str, seq: int, summary: Mapping[str, Any], *,
                    patient_id: str | None = None, deviation: Mapping[str, Any] | None = None,
                    now: datetime | None = None) -> dict[str, Any]:
    """`summary`: a finished session (`device.aggregate.summarize`), with the deviation from the
    patient's own baseline (`device.store.deviation`) where one exists, and the not-a-diagnosis notice."""
    payload = envelope("summary", device_id, session_id, seq, now=now)
    coverage = {}
    for name, c in (summary.get("coverage") or {}).items():
        if name not in MODALITIES:
            raise ValueError(f"unknown modality {name!r} (the schema knows {', '.join(MODALITIES)})")
        entry = {"items": _count(c.get("items")), "present": _count(c.get("present")),
                 "share": min(1.0, max(0.0, _number(c.get("share")) or 0.0))}
        if "seconds" in c:
            entry["seconds"] = _number(c.get("seconds"), 3)
        coverage[name] = entry
    dominant_windows = {label: _count(n) for label, n in (summary.get("dominant_windows") or {}).items()
                        if label in LABELS}
    modality_probs = {}
    for name, probs in (summary.get("modality_probs") or {}).items():
        if name in MODALITIES:
            modality_probs[name] = _probs(probs)
    payload.update({
        "patient_id": patient_id,
        "duration_s": _number(summary.get("duration_s"), 3) or 0.0,
        "windows": _count(summary.get("windows")),
        "windows_with_mood": _count(summary.get("windows_with_mood")),
        "probs": _probs(summary.get("probs")),
        "dominant": _label(summary.get("dominant")),
        "valence": _number(summary.get("valence")),
        "arousal": _number(summary.get("arousal")),
        "valence_sd": _number(summary.get("valence_sd")),
        "arousal_sd": _number(summary.get("arousal_sd")),
        "dominant_windows": dominant_windows,
        "face_expressivity": _number(summary.get("face_expressivity")),
        "modality_probs": modality_probs,
        "coverage": coverage,
        "prosody": _pick_numbers(summary.get("prosody"), _SUMMARY_PROSODY_KEYS),
        "speakers": _speakers(summary.get("speakers")),
        "deviation": _deviation(deviation),
        "notice": str(summary.get("notice") or ""),
    })
    return payload


def _deviation(deviation: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not deviation:
        return None
    fields = {}
    for name, stats in (deviation.get("fields") or {}).items():
        fields[str(name)] = {key: (_count(stats.get(key)) if key == "n" else _number(stats.get(key)))
                             for key in _DEVIATION_FIELD_KEYS}
    return {"baseline_n": _count(deviation.get("baseline_n")),
            "baseline_sessions": [str(s) for s in deviation.get("baseline_sessions") or []],
            "fields": fields}


def command_result_payload(device_id: str, seq: int, command: str | None, request_id: str | None, *,
                           result: Mapping[str, Any] | None = None, error_code: str | None = None,
                           error: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """`cmd/<name>/result`: `ok` with the handler's `result`, or an `error` with a code and a one-line message."""
    payload = envelope("command_result", device_id, None, seq, now=now)
    payload.update({"command": command, "request_id": request_id, "ok": error_code is None})
    if error_code is None:
        payload["result"] = dict(result or {})
    else:
        if error_code not in ERROR_CODES:
            raise ValueError(f"unknown error code {error_code!r}")
        payload["error"] = {"code": error_code, "message": " ".join(str(error or error_code).split())[:300]}
    return payload


# ---- schemas -------------------------------------------------------------------------------------------------

def load_schema(name: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one payload, shipped as package data."""
    if name not in SCHEMA_NAMES:
        raise ValueError(f"no schema named {name!r} (known: {', '.join(SCHEMA_NAMES)})")
    text = resources.files("device.contract").joinpath("schemas", f"{name}.schema.json").read_text(encoding="utf-8")
    return json.loads(text)
