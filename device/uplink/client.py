"""The MQTT link to the clinic hub: availability, retained state, events through the outbox, commands.

`HubClient` wraps one paho-mqtt 2.x client (callback API version 2). The contract it implements
is docs/MQTT.md; the rules it follows come from ARCHITECTURE.md:

- Identity: client id `affectbox-<device_id>` (stable, unique per device); topics under
  `hub.topic_prefix`. MQTT 5 by default, 3.1.1 with `hub.protocol = "mqtt311"`. Clean start on
  every connection: nothing is kept in the broker's session, because the outbox (SQLite) is
  what keeps events, and subscriptions are renewed on every connect.
- The last will, `offline` retained on `availability`, is set before connecting. On every
  successful connect (reason code success only; a refusal is logged and paho retries):
  paho's leftovers from the previous connection are dropped (`drop_out_messages`: only the
  outbox retransmits, with fresh message ids), `cmd/+` is subscribed, the retained `info` and
  `status` are republished, `online` retained goes out last, and then the outbox drains.
  `stop()` publishes `offline` retained and disconnects cleanly (a clean disconnect discards
  the will, so `offline` has to be published by hand).
- Events: `publish_session/mood/summary` number the event (per-session `seq`), commit it to the
  outbox and wake the worker thread; the worker feeds paho at most `hub.max_inflight` rows at a
  time and deletes each row when its PUBACK arrives (see device/uplink/outbox.py for why message
  ids are mapped per connection). paho's own queue is bounded (`max_queued_messages_set`).
- Reconnects use paho's exponential backoff (`reconnect_delay_set`, from `hub.reconnect_min_s`
  to `hub.reconnect_max_s`). Repeated identical problems are logged once, then counted
  (`RateLimitedLog`); `last_error` holds the latest one for the status page.
- Security: TLS with certificate and host name verification (`hub.ca_file`, else the system's
  CAs; an optional client certificate whose key is a credential file); user name and password,
  the password read from a file in `secrets_dir` (systemd's `$CREDENTIALS_DIRECTORY`), never
  from the config and never logged. Unencrypted MQTT to a host other than this machine is
  refused unless `hub.allow_plaintext = true`.
- Commands (`cmd/<name>`, JSON objects of at most `COMMAND_MAX_BYTES`): `start_session`,
  `stop_session`, `ping`, `get_status`, each enabled or not by `hub.commands_enabled`. Every
  request is validated (`parse_command`) before anything is called (retained commands are
  never obeyed: they would replay at every connect); malformed, oversized,
  unknown, disabled or invalid requests get an error result and call nothing. Valid ones go to
  the `CommandHandler` (the daemon) on the worker thread, never on paho's network thread. The
  result goes to `cmd/<name>/result` with the request id echoed and, for MQTT 5 requests that
  carry them, to the response topic with the correlation data.

Threads: paho's network thread runs the callbacks, which only post events to a queue (plus the
connect sequence, which must happen before anything else is sent on the new connection). One
worker thread (`affectbox-hub`) applies acknowledgements, feeds the outbox to paho and runs
commands. The worker never holds a lock of ours while calling paho, and paho's callbacks never
wait for the worker, so the two cannot deadlock.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import queue
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from device import __version__
from device.config import HUB_COMMANDS, HUB_DEFAULT_PORTS, HubConfig, hub_config_problems
from device.contract import payloads
from device.contract.topics import OPAQUE_ID_PATTERN, Topics, validate_device_id
from device.credentials import CredentialError, check_secret_permissions, read_secret
from device.errors import AffectboxError, HubError
from device.mqtt_sockets import close_client_sockets
from device.safe_json import JSONLimitError, loads_bounded
from device.uplink.outbox import Outbox

log = logging.getLogger("affectbox.hub")

COMMAND_MAX_BYTES = 4096
COMMAND_BACKLOG = 16  # commands waiting for the worker; more are refused at once
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
_PATIENT_ID_RE = re.compile(OPAQUE_ID_PATTERN)
MAX_DURATION_S = (1.0, 86400.0)
RESULT_MAX_BYTES = 65536
# the largest packet the device reads from the broker (a command is at most COMMAND_MAX_BYTES, plus
# topic and properties): MQTT 5 tells the broker (it then never sends more), and the client refuses
# a larger one from its fixed header alone, before reading it into memory (MQTT 3.1.1 has no such
# property: the connection is dropped and made again)
INCOMING_MAX_PACKET_BYTES = 65536
STOP_TIMEOUT_S = 5.0
EXPIRE_EVERY_S = 60.0
# what each command accepts besides request_id: name -> (required, optional)
COMMAND_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "start_session": (("patient_id",), ("max_duration_s",)),
    "stop_session": ((), ()),
    "ping": ((), ()),
    "get_status": ((), ()),
    "resend": (("session_id", "from_window", "to_window"), ("session_events",)),
}
RESEND_MAX_WINDOWS = 100_000  # one request covers at most this many windows (about 11 days of 10-s windows)


class CommandHandler(Protocol):
    """What the daemon implements for hub commands. Each method returns a JSON-able dict (the
    result) or raises an `AffectboxError` whose one-line message becomes the error result."""

    def start_session(self, patient_id: str, max_duration_s: float | None) -> dict[str, Any]:
        """Start a session for the opaque patient id; return at least {"session_id": ...}."""
        ...

    def stop_session(self) -> dict[str, Any]:
        """Stop the running session; return at least {"session_id": ...}."""
        ...

    def ping(self) -> dict[str, Any]:
        """Prove the daemon (not just the network thread) is alive; e.g. {"uptime_s": ...}."""
        ...

    def get_status(self) -> dict[str, Any]:
        """A health snapshot (the client adds the outbox's counters under "outbox")."""
        ...

    def resend(self, session_id: str, from_window: int, to_window: int, session_events: bool) -> dict[str, Any]:
        """Queue again, with their event ids, the stored windows from_window..to_window of a finished
        session (and its started/ended events and summary when session_events); return at least
        {"session_id": ..., "held": bool}."""
        ...


class RateLimitedLog:
    """Logs a message once; identical repeats are only counted, and the count is logged when a
    different message comes, at `flush()`, or every `interval_s` while the repeats go on."""

    def __init__(self, logger: logging.Logger, interval_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: str | None = None
        self._level = logging.INFO
        self._repeats = 0
        self._since = 0.0

    def log(self, level: int, message: str) -> None:
        """Log `message` unless it repeats the previous one."""
        with self._lock:
            now = self._clock()
            if message == self._last:
                self._repeats += 1
                if now - self._since >= self._interval:
                    self._logger.log(level, "%s (repeated %d times in %.0f s)", message, self._repeats,
                                     now - self._since)
                    self._repeats, self._since = 0, now
                return
            self._flush_locked()
            self._logger.log(level, "%s", message)
            self._last, self._level, self._repeats, self._since = message, level, 0, now

    def flush(self) -> None:
        """Log the count of unreported repeats and forget the last message."""
        with self._lock:
            self._flush_locked()
            self._last = None

    def _flush_locked(self) -> None:
        if self._repeats:
            self._logger.log(self._level, "%s (repeated %d more times)", self._last, self._repeats)
        self._repeats = 0


@dataclass(frozen=True)
class ParsedCommand:
    """A command request after validation: either `error_code` is None and `args` are valid, or not."""

    name: str
    request_id: str | None
    args: dict[str, Any] = field(default_factory=dict)
    error_code: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error_code is None


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_command(name: str, payload: bytes, enabled: tuple[str, ...] | frozenset[str]) -> ParsedCommand:
    """Validate one request on `cmd/<name>`. Never raises; nothing is called here."""
    if len(payload) > COMMAND_MAX_BYTES:
        return ParsedCommand(name, None, error_code="too_large",
                             error=f"request of {len(payload)} bytes; at most {COMMAND_MAX_BYTES} are accepted")
    try:  # size checked above, nesting before parsing (device/safe_json.py)
        body = loads_bounded(payload, max_bytes=COMMAND_MAX_BYTES)
    except JSONLimitError as exc:
        return ParsedCommand(name, None, error_code="malformed", error=str(exc))
    if not isinstance(body, dict):
        return ParsedCommand(name, None, error_code="malformed",
                             error=f"request must be a JSON object (got {type(body).__name__})")
    raw_id = body.get("request_id")
    request_id = raw_id if isinstance(raw_id, str) and REQUEST_ID_RE.fullmatch(raw_id) else None
    if name not in COMMAND_FIELDS:
        return ParsedCommand(name, request_id, error_code="unknown_command",
                             error=f"unknown command {_shown(name)} (known: {', '.join(COMMAND_FIELDS)})")
    if name not in enabled:
        return ParsedCommand(name, request_id, error_code="disabled",
                             error=f"command {name} is disabled on this device (hub.commands_enabled)")
    if request_id is None:
        what = "missing" if raw_id is None else f"invalid ({_shown(raw_id)})"
        return ParsedCommand(name, None, error_code="invalid",
                             error=f"request_id is {what}: give 1-64 characters of A-Z a-z 0-9 . _ : -")
    required, optional = COMMAND_FIELDS[name]
    unknown = sorted(k for k in body if k != "request_id" and k not in required and k not in optional)
    if unknown:
        return ParsedCommand(name, request_id, error_code="invalid",
                             error=f"unknown field(s) for {name}: {', '.join(_shown(k, 32) for k in unknown[:5])}")
    missing = [k for k in required if k not in body]
    if missing:
        return ParsedCommand(name, request_id, error_code="invalid",
                             error=f"missing field(s) for {name}: {', '.join(missing)}")
    args: dict[str, Any] = {}
    if name == "start_session":
        patient_id = body["patient_id"]
        if not isinstance(patient_id, str) or not _PATIENT_ID_RE.fullmatch(patient_id):
            return ParsedCommand(name, request_id, error_code="invalid",
                                 error=f"patient_id {_shown(patient_id)} must be an opaque id: 1-64 characters "
                                       "of A-Z a-z 0-9 . _ - (never a name)")
        args["patient_id"] = patient_id
        duration = body.get("max_duration_s")
        if duration is not None:
            lo, hi = MAX_DURATION_S
            if (isinstance(duration, bool) or not isinstance(duration, int | float) or not math.isfinite(duration)
                    or not lo <= duration <= hi):
                return ParsedCommand(name, request_id, error_code="invalid",
                                     error=f"max_duration_s must be a number from {lo:g} to {hi:g} seconds "
                                           f"(got {_shown(duration)})")
            duration = float(duration)
        args["max_duration_s"] = duration
    if name == "resend":
        problem = _resend_problem(body)
        if problem:
            return ParsedCommand(name, request_id, error_code="invalid", error=problem)
        args = {"session_id": body["session_id"], "from_window": body["from_window"],
                "to_window": body["to_window"], "session_events": body.get("session_events", False)}
    return ParsedCommand(name, request_id, args)


def _resend_problem(body: Mapping[str, Any]) -> str | None:
    """Why a resend request's fields are unusable, or None."""
    if not isinstance(body["session_id"], str) or not _PATIENT_ID_RE.fullmatch(body["session_id"]):
        return f"session_id {_shown(body['session_id'])} must be 1-64 characters of A-Z a-z 0-9 . _ -"
    first, last = body["from_window"], body["to_window"]
    for key, value in (("from_window", first), ("to_window", last)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            return f"{key} must be a non-negative integer (got {_shown(value)})"
    if last < first or last - first >= RESEND_MAX_WINDOWS:
        return f"to_window must be from from_window to from_window + {RESEND_MAX_WINDOWS - 1} (got {first}..{last})"
    if not isinstance(body.get("session_events", False), bool):
        return f"session_events must be true or false (got {_shown(body.get('session_events'))})"
    return None


class _TrackingSSLContext(ssl.SSLContext):
    """An SSL context that remembers the socket it wrapped last, so that a failed handshake's
    socket can be closed (paho drops it without closing it, leaving it to the garbage collector)."""

    last_socket: ssl.SSLSocket | None = None

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:  # type: ignore[override]
        sock = super().wrap_socket(*args, **kwargs)
        self.last_socket = sock
        return sock


class _PahoClient(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed (paho retries silently)."""

    last_connect_exception: BaseException | None = None
    tracking_context: _TrackingSSLContext | None = None
    oversized_refused = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        packet = self._in_packet
        if packet["have_remaining"] and packet["remaining_length"] > INCOMING_MAX_PACKET_BYTES:
            self.oversized_refused += 1
            log.warning("hub: refused an incoming packet of %d bytes (at most %d) before reading it; "
                        "reconnecting", packet["remaining_length"], INCOMING_MAX_PACKET_BYTES)
            raise OSError(f"incoming packet of {packet['remaining_length']} bytes refused")
        return super()._sock_recv(bufsize)

    def reconnect(self) -> MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_connect_exception = exc
            context = self.tracking_context
            if context is not None and context.last_socket is not None:
                with contextlib.suppress(OSError):
                    context.last_socket.close()
                context.last_socket = None
            raise


def _valid_response_topic(topic: Any, allowed_prefix: str) -> bool:
    """A response topic is honoured only under `hub.response_topic_prefix` (none when it is empty):
    never another device's topics, never a topic the configuration did not name."""
    return (bool(allowed_prefix) and isinstance(topic, str) and 0 < len(topic) <= 256
            and not any(c in topic for c in "+#\0") and topic.startswith(allowed_prefix + "/")
            and "//" not in topic and not topic.endswith("/"))


_CONNACK_HINTS = {
    0x84: "the broker does not accept this MQTT version (try hub.protocol = \"mqtt311\")",
    0x85: "the broker rejected the client id",
    0x86: "check hub.username and the password credential file",
    0x87: "check hub.username, the password credential file and the broker's access rules",
    0x88: "the broker is unavailable",
    0x8A: "the broker banned this client",
}


class HubClient:
    """The device's MQTT link to the clinic hub (see the module docstring)."""

    def __init__(self, config: HubConfig, device_id: str, secrets_dir: str | Path | None, outbox: Outbox,
                 command_handler: CommandHandler, *, software_version: str = __version__,
                 logger: logging.Logger | None = None) -> None:
        problems = hub_config_problems(config)
        if not config.host.strip():
            problems.insert(0, "hub.host: must be set")
        if problems:
            raise HubError(problems[0] if len(problems) == 1 else "; ".join(problems))
        self.config = config
        self.device_id = validate_device_id(device_id)
        self.topics = Topics.for_device(config.topic_prefix, device_id)
        self.outbox = outbox
        self.handler = command_handler
        self.software_version = software_version
        self.port = config.port or HUB_DEFAULT_PORTS[config.tls]
        self.client_id = f"affectbox-{device_id}"
        self.enabled_commands = frozenset(config.commands_enabled)
        self._log = logger or log
        self._limited = RateLimitedLog(self._log)
        self._secrets_dir = Path(secrets_dir) if secrets_dir else None
        self._password = self._read_secret(config.password_file, "password") if config.password_file else None
        self._ssl_context = self._make_ssl_context() if config.tls == "on" else None
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._epoch = 0  # connections so far; written on paho's thread only
        self._connected = threading.Event()
        self._ready = threading.Event()  # connected and the cmd/+ subscription acknowledged
        self._stopping = threading.Event()
        self._pending_commands = 0
        self._pending_lock = threading.Lock()
        # the connect sequence (retained state, then `online`, then connected) against set_info/set_status:
        # a change made while it runs is published after it, never lost until the next change
        self._retained_lock = threading.Lock()
        self._info: dict[str, Any] | None = None
        self._status: dict[str, Any] = {"state": "idle"}
        self._client: _PahoClient | None = None
        self._worker: threading.Thread | None = None
        self.last_error: str | None = None
        self.connections = 0

    # ---- set-up ----------------------------------------------------------------------------

    def _secret_path(self, name: str, what: str) -> Path:
        if self._secrets_dir is None:
            raise HubError(f"hub: the {what} credential {name!r} is configured but there is no credentials "
                           "directory ($CREDENTIALS_DIRECTORY is unset; systemd sets it with LoadCredential=)")
        path = self._secrets_dir / name
        if not path.is_file():
            raise HubError(f"hub: the {what} credential file {path} does not exist")
        try:
            check_secret_permissions(path, f"{what} credential")
        except CredentialError as exc:
            raise HubError(f"hub: {exc}") from None
        return path

    def _read_secret(self, name: str, what: str) -> str:
        path = self._secret_path(name, what)
        try:
            return read_secret(path, f"{what} credential")
        except CredentialError as exc:
            raise HubError(f"hub: {exc}") from None

    def _make_ssl_context(self) -> _TrackingSSLContext:
        key = self._secret_path(self.config.key_file, "TLS key") if self.config.cert_file else None
        context = make_ssl_context(self.config, key, _TrackingSSLContext)
        assert isinstance(context, _TrackingSSLContext)
        return context

    def _make_client(self) -> _PahoClient:
        mqtt5 = self.config.protocol == "mqtt5"
        client = _PahoClient(callback_api_version=CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
                             clean_session=None if mqtt5 else True, reconnect_on_failure=True)
        client.will_set(self.topics.availability, payloads.AVAILABILITY_OFFLINE, qos=1, retain=True)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
            client.tracking_context = self._ssl_context
        if self.config.username:
            client.username_pw_set(self.config.username, self._password)
        inflight = self.config.max_inflight
        # room above the outbox's share for retained state, availability and command results
        client.max_inflight_messages_set(inflight + 10)
        client.max_queued_messages_set(inflight + 10 + 2 * COMMAND_BACKLOG)
        client.reconnect_delay_set(self.config.reconnect_min_s, self.config.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    # ---- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background (paho's thread) and start the worker; returns at once."""
        if self._client is not None:
            raise HubError("hub: the client is already started")
        self._stopping.clear()
        self._client = self._make_client()
        self._worker = threading.Thread(target=self._run, name="affectbox-hub", daemon=True)
        self._worker.start()
        properties = None
        if self.config.protocol == "mqtt5":
            properties = Properties(PacketTypes.CONNECT)
            properties.MaximumPacketSize = INCOMING_MAX_PACKET_BYTES
        self._client.connect_async(self.config.host, self.port, keepalive=self.config.keepalive,
                                   clean_start=True, properties=properties)
        self._client.loop_start()

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Publish `offline` (retained), disconnect cleanly and stop both threads (bounded by `timeout`)."""
        client = self._client
        if client is None:
            return
        self._stopping.set()
        self._ready.clear()
        deadline = time.monotonic() + timeout
        if self._connected.is_set():
            info = client.publish(self.topics.availability, payloads.AVAILABILITY_OFFLINE, qos=1, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(max(0.1, deadline - time.monotonic()))
        self._events.put(("stop",))
        if self._worker is not None:
            self._worker.join(max(0.1, deadline - time.monotonic()))
        client.disconnect()
        client.loop_stop()
        # paho leaves the socket of an attempt still in progress (e.g. refused CONNACK) and its
        # wake-up socket pair open at loop_stop
        close_client_sockets(client)
        self._connected.clear()
        self.outbox.end_connection()
        self._limited.flush()
        self._client = None
        self._worker = None

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until connected with the command subscription in place."""
        return self._ready.wait(timeout) and self._connected.is_set()

    # ---- what the daemon publishes ---------------------------------------------------------

    def set_info(self, *, models: list[Mapping[str, Any]] | tuple[Mapping[str, Any], ...] = (),
                 capabilities: tuple[str, ...] | list[str] = (), window_seconds: float | None = None) -> None:
        """The retained `info` (republished on every connect); published now if connected."""
        with self._retained_lock:
            self._info = {"models": list(models), "capabilities": list(capabilities),
                          "window_seconds": window_seconds}
            client = self._client if self._connected.is_set() else None
        if client is not None:
            self._publish_retained(client, self.topics.info, self._info_payload())

    def set_status(self, *, state: str, session_id: str | None = None,
                   components: Mapping[str, Mapping[str, Any]] | None = None, uptime_s: float | None = None,
                   temperature_c: float | None = None, throttled: bool | None = None) -> None:
        """The retained `status` (with the outbox's counters added); published now if connected."""
        with self._retained_lock:
            self._status = {"state": state, "session_id": session_id, "components": dict(components or {}),
                            "uptime_s": uptime_s, "temperature_c": temperature_c, "throttled": throttled}
            client = self._client if self._connected.is_set() else None
        if client is not None:
            self._publish_retained(client, self.topics.status, self._status_payload())

    def publish_session(self, session_id: str, event: str, *, patient_id: str | None = None,
                        reason: str | None = None, duration_s: float | None = None, windows: int | None = None,
                        max_duration_s: float | None = None, event_key: str | None = None) -> dict[str, Any]:
        """Queue a `session` event (started / ended / interrupted); returns the payload."""
        return self._queue(self.topics.session, "session", session_id, lambda seq: payloads.session_payload(
            self.device_id, session_id, seq, event, patient_id=patient_id, reason=reason, duration_s=duration_s,
            windows=windows, max_duration_s=max_duration_s), event_key)

    def publish_mood(self, session_id: str, window: Any, *, event_key: str | None = None) -> dict[str, Any]:
        """Queue the `mood` event of one window (`device.aggregate.Window` or its JSON); returns the payload."""
        return self._queue(self.topics.mood, "mood", session_id,
                           lambda seq: payloads.mood_payload(self.device_id, session_id, seq, window), event_key)

    def publish_summary(self, session_id: str, summary: Mapping[str, Any], *, patient_id: str | None = None,
                        deviation: Mapping[str, Any] | None = None, event_key: str | None = None) -> dict[str, Any]:
        """Queue the `summary` of a finished session; returns the payload."""
        return self._queue(self.topics.summary, "summary", session_id, lambda seq: payloads.summary_payload(
            self.device_id, session_id, seq, summary, patient_id=patient_id, deviation=deviation), event_key)

    def _queue(self, topic: str, kind: str, session_id: str, build: Callable[[int], dict[str, Any]],
               event_key: str | None = None) -> dict[str, Any]:
        if event_key is not None:
            # the same stored item always gets the same event id, so an event queued again after
            # a crash (stored, queued, crashed before the store recorded it) is a duplicate the
            # hub drops, not a second event
            event_id = payloads.derived_event_id(self.device_id, session_id, kind, event_key)
            plain = build

            def build(seq: int) -> dict[str, Any]:
                return {**plain(seq), "event_id": event_id}

        payload = self.outbox.enqueue_event(topic, kind, session_id, build)
        self._events.put(("kick",))
        return payload

    def stats(self) -> dict[str, Any]:
        """Connection state and the outbox's counters (for the status page and `get_status`)."""
        return {"connected": self.connected, "connections": self.connections, "last_error": self.last_error,
                "outbox": self.outbox.stats()}

    # ---- payloads ----------------------------------------------------------------------------

    def _info_payload(self) -> dict[str, Any]:
        info = self._info or {}
        return payloads.info_payload(
            self.device_id, self.outbox.next_seq(None), software_version=self.software_version,
            models=info.get("models", ()), capabilities=info.get("capabilities", ()),
            commands=[c for c in HUB_COMMANDS if c in self.enabled_commands],
            window_seconds=info.get("window_seconds"))

    def _status_payload(self) -> dict[str, Any]:
        s = self._status
        return payloads.status_payload(
            self.device_id, self.outbox.next_seq(None), state=s["state"], session_id=s.get("session_id"),
            components=s.get("components"), uptime_s=s.get("uptime_s"), temperature_c=s.get("temperature_c"),
            throttled=s.get("throttled"), outbox=self.outbox.stats())

    def _publish_retained(self, client: mqtt.Client, topic: str, payload: Mapping[str, Any]) -> None:
        info = client.publish(topic, payloads.encode(payload), qos=1, retain=True)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._limited.log(logging.WARNING, f"hub: could not publish {topic}: {mqtt.error_string(info.rc)}")

    # ---- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            hint = _CONNACK_HINTS.get(int(reason_code.value), "")
            self._problem(f"hub: {self.config.host}:{self.port} refused the connection: {reason_code}"
                          + (f" ({hint})" if hint else ""))
            return
        self._epoch += 1
        self.connections += 1
        client.drop_out_messages()  # the previous connection's leftovers: the outbox sends them again
        if self.config.protocol == "mqtt5":
            # a retained command would be replayed at every connect: never have them sent
            # and retainAsPublished keeps the flag on one published retained while we are connected,
            # so that _on_message can ignore it too (the broker clears it otherwise)
            client.subscribe(self.topics.commands, options=SubscribeOptions(
                qos=1, noLocal=True, retainAsPublished=True, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND))
        else:
            client.subscribe(self.topics.commands, qos=1)
        with self._retained_lock:
            try:
                if self._info is not None:
                    self._publish_retained(client, self.topics.info, self._info_payload())
                self._publish_retained(client, self.topics.status, self._status_payload())
            except AffectboxError as exc:  # the outbox file failed (numbering): still announce availability
                self._problem(f"hub: cannot build the retained state: {exc}")
            client.publish(self.topics.availability, payloads.AVAILABILITY_ONLINE, qos=1, retain=True)
            self._connected.set()
        self.last_error = None
        self._limited.flush()
        self._log.info("hub: connected to %s:%d as %s (%s%s)", self.config.host, self.port, self.client_id,
                       self.config.protocol, ", TLS" if self._ssl_context else "")
        self._events.put(("connected", self._epoch))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        exc = getattr(client, "last_connect_exception", None)
        why = str(exc) if exc is not None else "connection failed"
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = f"the broker's TLS certificate was not accepted: {exc.verify_message or exc}"
        elif isinstance(exc, ssl.SSLError):
            why = f"TLS handshake failed: {exc}"
        self._problem(f"hub: cannot connect to {self.config.host}:{self.port}: {why}")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._ready.clear()
        if not self._connected.is_set():
            return  # a refused or failed attempt: already reported
        self._connected.clear()
        self._events.put(("disconnected", self._epoch))
        if not self._stopping.is_set():
            self._problem(f"hub: lost the connection to {self.config.host}:{self.port}: {reason_code}")

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[Any],
                      properties: Any) -> None:
        if any(code.is_failure for code in reason_codes):
            self._problem(f"hub: the broker refused the subscription to {self.topics.commands} "
                          f"({', '.join(str(c) for c in reason_codes)}): commands will not arrive")
        self._ready.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: Any, properties: Any) -> None:
        self._events.put(("ack", self._epoch, mid, bool(reason_code.is_failure)))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.retain:  # a stale retained command (MQTT 3.1.1 has no retain handling): never obey it
            self._limited.log(logging.WARNING, f"hub: ignored a retained command on {message.topic}; commands "
                                               "must not be published with the retain flag")
            return
        with self._pending_lock:
            busy = self._pending_commands >= COMMAND_BACKLOG
            if not busy:
                self._pending_commands += 1
        if busy:
            name = self.topics.command_name(message.topic) or ""
            self._reply(message, ParsedCommand(name, None, error_code="refused",
                                               error="too many commands waiting; try again"))
            return
        self._events.put(("command", message))

    def _problem(self, message: str) -> None:
        self.last_error = message
        self._limited.log(logging.WARNING, message)

    # ---- the worker thread -------------------------------------------------------------------

    def _run(self) -> None:
        connection = 0  # the outbox's token for the current connection; 0 = none
        epoch = 0
        next_expire = time.monotonic() + EXPIRE_EVERY_S
        while True:
            events: list[tuple[Any, ...]] = []
            try:
                events.append(self._events.get(timeout=1.0))
                while len(events) < 512:
                    events.append(self._events.get_nowait())
            except queue.Empty:
                pass
            acks: list[tuple[int, bool]] = []
            stop = False
            try:
                for event in events:
                    kind = event[0]
                    if kind == "ack":
                        if event[1] == epoch:
                            acks.append((event[2], event[3]))
                    elif kind == "connected":
                        self.outbox.ack(connection, acks)
                        acks = []
                        connection, epoch = self.outbox.begin_connection(), event[1]
                    elif kind == "disconnected":
                        self.outbox.ack(connection, acks)
                        acks = []
                        self.outbox.end_connection()
                        connection = 0
                    elif kind == "command":
                        with self._pending_lock:
                            self._pending_commands -= 1
                        self._command(event[1])
                    elif kind == "stop":
                        stop = True
                self.outbox.ack(connection, acks)
                if stop:
                    return
                if time.monotonic() >= next_expire:
                    next_expire = time.monotonic() + EXPIRE_EVERY_S
                    self.outbox.expire()
                if connection and epoch == self._epoch and self._connected.is_set():
                    self._feed(connection, epoch)
            except AffectboxError as exc:  # the outbox file failed: keep running, say so once
                self._problem(f"hub: {exc}")
            except Exception:
                self._log.exception("hub: unexpected error in the hub worker (continuing)")

    def _feed(self, connection: int, epoch: int) -> None:
        client = self._client
        if client is None:
            return
        room = self.config.max_inflight - self.outbox.inflight
        for entry in self.outbox.next_batch(room):
            if epoch != self._epoch or self._stopping.is_set():
                return
            info = client.publish(entry.topic, entry.payload, qos=entry.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._limited.log(logging.WARNING, f"hub: paho refused an outbox event: {mqtt.error_string(info.rc)}")
                return
            self.outbox.mark_inflight(connection, info.mid, entry.id)

    # ---- commands ----------------------------------------------------------------------------

    def _command(self, message: mqtt.MQTTMessage) -> None:
        name = self.topics.command_name(message.topic)
        if name is None:
            return  # not a command topic (cannot happen with the cmd/+ subscription)
        parsed = parse_command(name, bytes(message.payload), self.enabled_commands)
        if not parsed.ok:
            self._limited.log(logging.INFO, f"hub: refused command on {message.topic}: {parsed.error_code}")
            self._reply(message, parsed)
            return
        try:
            if parsed.name == "start_session":
                result = self.handler.start_session(parsed.args["patient_id"], parsed.args["max_duration_s"])
            elif parsed.name == "stop_session":
                result = self.handler.stop_session()
            elif parsed.name == "ping":
                result = self.handler.ping()
            elif parsed.name == "resend":
                result = self.handler.resend(**parsed.args)
            else:
                result = dict(self.handler.get_status())
                result.setdefault("hub", {"connected": self.connected, "connections": self.connections})
                result.setdefault("outbox", self.outbox.stats())
            if not isinstance(result, Mapping):
                raise TypeError(f"the handler returned {type(result).__name__}, not a dict")
            if len(payloads.encode(result)) > RESULT_MAX_BYTES:
                raise ValueError(f"the handler's result is over {RESULT_MAX_BYTES} bytes")
        except AffectboxError as exc:
            self._reply(message, ParsedCommand(parsed.name, parsed.request_id, error_code="refused", error=str(exc)))
            return
        except Exception:
            self._log.exception("hub: command %s failed", parsed.name)
            self._reply(message, ParsedCommand(parsed.name, parsed.request_id, error_code="internal",
                                               error="the device failed to run the command (see its log)"))
            return
        self._reply(message, parsed, dict(result))

    def _reply(self, message: mqtt.MQTTMessage, parsed: ParsedCommand, result: dict[str, Any] | None = None) -> None:
        client = self._client
        if client is None:
            return
        known = parsed.name if parsed.name and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", parsed.name) else None
        try:
            payload = payloads.command_result_payload(
                self.device_id, self.outbox.next_seq(None), known, parsed.request_id, result=result,
                error_code=parsed.error_code, error=parsed.error)
        except AffectboxError as exc:
            self._problem(f"hub: cannot answer a command: {exc}")
            return
        data = payloads.encode(payload)
        properties = None
        response_topic = None
        incoming = getattr(message, "properties", None)
        if self.config.protocol == "mqtt5" and incoming is not None:
            correlation = getattr(incoming, "CorrelationData", None)
            if correlation is not None:
                properties = Properties(PacketTypes.PUBLISH)
                properties.CorrelationData = correlation
            candidate = getattr(incoming, "ResponseTopic", None)
            # never let a requester make the device publish onto its own topics
            if _valid_response_topic(candidate, self.config.response_topic_prefix) \
                    and not self.topics.is_own(candidate):
                response_topic = candidate
        for topic in (self.topics.result(known or "invalid"), response_topic):
            if topic is None:
                continue
            info = client.publish(topic, data, qos=1, properties=properties)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._limited.log(logging.WARNING, f"hub: could not publish a command result on {topic}: "
                                                   f"{mqtt.error_string(info.rc)}")


def make_ssl_context(config: HubConfig, key_path: Path | None,
                     context_class: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """The hub link's TLS settings (certificate and host name verified, TLS >= 1.2, the optional
    client certificate with its key), shared by the daemon and `affectbox provision --check`."""
    context = context_class(ssl.PROTOCOL_TLS_CLIENT)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if config.ca_file:
            context.load_verify_locations(cafile=config.ca_file)
        else:
            context.load_default_certs()
    except (OSError, ssl.SSLError) as exc:
        raise HubError(f"hub.ca_file: cannot load CA certificates from {config.ca_file}: "
                       f"{getattr(exc, 'strerror', None) or exc}") from None
    if config.cert_file and key_path is not None:
        try:
            context.load_cert_chain(config.cert_file, str(key_path))
        except (OSError, ssl.SSLError) as exc:
            raise HubError(f"hub.cert_file: cannot load the client certificate {config.cert_file} with its key "
                           f"{key_path}: {getattr(exc, 'strerror', None) or exc}") from None
    return context


def default_secrets_dir() -> Path | None:
    """systemd's credentials directory ($CREDENTIALS_DIRECTORY), or None outside systemd."""
    value = os.environ.get("CREDENTIALS_DIRECTORY")
    return Path(value) if value else None
