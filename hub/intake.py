"""What one MQTT message is: an accepted event, availability, something to ignore, or a rejection.

Checks, in order, each rejection carrying a code and a one-line reason (kept in `rejected`):
the topic (`<root>/<device_id>/<name>`, a valid device id, a known name); the size
(`ingest.max_payload_bytes`, checked before parsing); UTF-8 JSON of an object, without NaN or
Infinity, nested at most a few levels deep; the schema version (the accepted set comes from the
contract's JSON Schemas, so a version the contract adds is accepted without a change here); the
JSON Schema of the payload's kind (device/contract/schemas, formats checked); the kind against
the topic; and the payload's `device_id` against the topic's (a device publishing under another
device's id is refused here even where the broker's ACL would let it through).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from typing import Any

import jsonschema

from device.contract import payloads
from device.contract.ids import is_opaque_id

# topic names after <root>/<device_id>/ that carry a JSON payload of this kind
EVENT_TOPICS = {"session": "session", "mood": "mood", "summary": "summary", "info": "info", "status": "status"}
SUBSCRIBED = ("availability", "info", "status", "session", "mood", "summary", "cmd/+/result")
MAX_DEPTH = 8  # the deepest payload (summary.modality_probs.face.<label>) is 4 levels


@dataclass(frozen=True)
class Accepted:
    kind: str
    device_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class Availability:
    device_id: str
    value: str


@dataclass(frozen=True)
class Ignored:
    why: str


@dataclass(frozen=True)
class Rejected:
    code: str  # topic | too_large | malformed | schema_version | invalid | wrong_kind | wrong_device
    reason: str
    device_id: str | None = None
    keep_payload: bool = True


Verdict = Accepted | Availability | Ignored | Rejected


def subscriptions(root: str, share_group: str = "") -> list[str]:
    """The topic filters a collector subscribes to (as members of `$share/<group>/` when given)."""
    prefix = f"$share/{share_group}/" if share_group else ""
    return [f"{prefix}{root}/+/{name}" for name in SUBSCRIBED]


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(payloads.load_schema(kind), format_checker=jsonschema.FormatChecker())


@cache
def accepted_versions(kind: str) -> frozenset[int]:
    """The schema versions the contract's JSON Schema of `kind` accepts (`const` or `enum`)."""
    spec = payloads.load_schema(kind)["properties"]["schema"]
    if "const" in spec:
        return frozenset({spec["const"]})
    return frozenset(spec.get("enum", ()))


def _depth(value: Any, limit: int) -> bool:
    """True when `value` nests no deeper than `limit` containers."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > limit:
                return False
            stack.extend((v, depth + 1) for v in (item.values() if isinstance(item, dict) else item))
    return True


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_topic(root: str, topic: str) -> tuple[str | None, str | None]:
    """(device_id, name) of `<root>/<device_id>/<name...>`; (None, None) if the topic is not under root."""
    head = root + "/"
    if not topic.startswith(head):
        return None, None
    device_id, _, name = topic[len(head):].partition("/")
    return device_id, name


def classify(root: str, topic: str, data: bytes, max_bytes: int) -> Verdict:
    """The verdict on one message (never raises)."""
    device_id, name = parse_topic(root, topic)
    if device_id is None or not is_opaque_id(device_id):
        return Rejected("topic", f"topic {_shown(topic)} is not <root>/<device_id>/<name> with a valid device id")
    if name == "check":
        return Ignored("link check")
    if name == "availability":
        if data in (b"online", b"offline"):
            return Availability(device_id, data.decode())
        return Rejected("malformed", "availability must be 'online' or 'offline'", device_id)
    command = None
    if name.startswith("cmd/"):
        parts = name.split("/")
        if len(parts) != 3 or parts[2] != "result":
            return Ignored("a command request, not a result")  # the hub's own requests come back on cmd/+
        kind, command = "command_result", parts[1]
    elif name in EVENT_TOPICS:
        kind = EVENT_TOPICS[name]
    else:
        return Rejected("topic", f"unknown topic name {_shown(name)}", device_id)
    if len(data) > max_bytes:
        return Rejected("too_large", f"{len(data)} bytes; at most {max_bytes} are accepted", device_id,
                        keep_payload=False)
    try:
        payload = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        return Rejected("malformed", "payload is not UTF-8", device_id)
    except (ValueError, RecursionError):
        return Rejected("malformed", "payload is not valid JSON", device_id)
    if not isinstance(payload, dict):
        return Rejected("malformed", f"payload must be a JSON object (got {type(payload).__name__})", device_id)
    if not _depth(payload, MAX_DEPTH):
        return Rejected("malformed", f"payload nests deeper than {MAX_DEPTH} levels", device_id)
    version = payload.get("schema")
    if isinstance(version, bool) or version not in accepted_versions(kind):
        known = ", ".join(str(v) for v in sorted(accepted_versions(kind)))
        return Rejected("schema_version", f"{kind} schema version {_shown(version)} is not one this hub knows "
                                          f"({known})", device_id)
    if payload.get("kind") != kind:
        return Rejected("wrong_kind", f"payload kind {_shown(payload.get('kind'))} on a {kind} topic", device_id)
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(payload))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        return Rejected("invalid", f"{kind} does not match its schema at {where}: {error.message[:200]}", device_id)
    if payload["device_id"] != device_id:
        return Rejected("wrong_device", f"payload device_id {_shown(payload['device_id'])} published under device "
                                        f"{device_id!r}", device_id)
    if command is not None and payload.get("command") not in (command, None):
        return Rejected("wrong_kind", f"result of {_shown(payload.get('command'))} on cmd/{command}/result",
                        device_id)
    return Accepted(kind, device_id, payload)
