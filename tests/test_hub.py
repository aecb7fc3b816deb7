"""The hub link (device/uplink, docs/MQTT.md) against a real Mosquitto broker on 127.0.0.1.

Brokers are started by fixtures on a free loopback port with a generated config and stopped in
teardown; a second kind has TLS (certificates made here with the openssl CLI) and a password
file (mosquitto_passwd -b). The device's client runs in this process, or in a subprocess where
the test kills it (SIGKILL) or restarts it. Outage tests use a hub-side observer with a
persistent MQTT 5 session on a broker with persistence on, as a real hub would, so that what the
device sends before the observer is back is queued for it rather than lost to the test.
Every wait is bounded; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.aggregate import WindowAggregator, summarize
from device.config import AggregationConfig, HubConfig, config_from_dict
from device.contract import payloads
from device.contract.topics import OPAQUE_ID_PATTERN, Topics
from device.errors import AffectboxError, ConfigError, HubError
from device.labels import LABELS
from device.observation import Observation
from device.store import PATIENT_ID_PATTERN, deviation
from device.uplink import HubClient, Outbox, RateLimitedLog, parse_command
from device.uplink.client import COMMAND_MAX_BYTES
from tests.mqtt_support import (
    HOST,
    Broker,
    Observer,
    availability,
    events,
    needs_broker,
    validate,
)
from tests.support import wait_until

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parent.parent
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# ---- real aggregator output ------------------------------------------------------------------------------------

def onehot(label: str, strength: float = 0.9) -> np.ndarray:
    p = np.full(len(LABELS), (1.0 - strength) / (len(LABELS) - 1))
    p[LABELS.index(label)] = strength
    return p


def speech_obs(start: float, end: float, label: str) -> Observation:
    prosody = {"speech_start": start, "speech_end": end, "span_s": end - start, "phonation_s": end - start - 0.3,
               "pause_s": 0.3, "pause_count": 1, "nuclei": int(4 * (end - start)), "voiced_s": end - start - 0.5,
               "f0_mean_hz": 180.0, "f0_sd_hz": 22.0, "f0_mean_st": 10.1, "f0_sd_st": 2.0,
               "energy_mean_db": -28.0, "energy_sd_db": 5.0}
    return Observation((start + end) / 2, "speech", onehot(label), 0.8,
                       {"start": start, "end": end, "duration": end - start, "prosody": prosody})


@pytest.fixture(scope="module")
def session_output() -> tuple[list[Any], dict[str, Any]]:
    """Windows and summary from the real aggregator: face frames (with face-free stretches) and speech."""
    agg = WindowAggregator(AggregationConfig(window_seconds=10.0, min_face_share=0.2), lateness=9.0)
    windows = []
    utterances = {55: (2.0, "happy"), 95: (6.5, "neutral"), 160: (13.0, "sad")}  # reported as they end
    for i in range(300):  # 30 s of face frames at 10 fps; the third window has no face at all
        t = i / 10
        face = None if t >= 20 else onehot("happy" if t < 10 else "sad")
        windows += agg.add(Observation(t, "face", face, 0.9 if face is not None else 0.0))
        if i in utterances:
            start, label = utterances[i]
            windows += agg.add(speech_obs(start, start + 2.5, label))
    windows += agg.flush(30.0)
    counts = {"face": {"items": 300, "present": 200}, "speech": {"items": 3, "present": 3, "seconds": 7.5}}
    return windows, summarize(windows, 30.0, counts)


@pytest.fixture(scope="module")
def window_json(session_output: tuple[list[Any], dict[str, Any]]) -> dict[str, Any]:
    return session_output[0][0].to_json()


# ---- brokers and MQTT helpers ----------------------------------------------------------------------------------

@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def persistent_broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "pbroker", persistence=True)
    b.start()
    yield b
    b.stop()


class RecordingHandler:
    """A CommandHandler that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.running = False

    def start_session(self, patient_id: str, max_duration_s: float | None) -> dict[str, Any]:
        self.calls.append(("start_session", patient_id, max_duration_s))
        if self.running:
            raise AffectboxError("a session is already running")
        self.running = True
        return {"session_id": "s-0001"}

    def stop_session(self) -> dict[str, Any]:
        self.calls.append(("stop_session",))
        return {"session_id": "s-0001"}

    def ping(self) -> dict[str, Any]:
        self.calls.append(("ping",))
        return {"pong": True}

    def get_status(self) -> dict[str, Any]:
        self.calls.append(("get_status",))
        return {"state": "recording" if self.running else "idle"}


def hub_config(port: int, **overrides: Any) -> HubConfig:
    values: dict[str, Any] = {"enabled": True, "host": HOST, "port": port, "tls": "off", "reconnect_min_s": 1,
                              "reconnect_max_s": 1, "keepalive": 10, "max_inflight": 5}
    values.update(overrides)
    return HubConfig(**values)


@pytest.fixture
def running_clients() -> Iterator[list[HubClient]]:
    """Clients to stop (and outboxes to close) at teardown, even when a test fails."""
    clients: list[HubClient] = []
    yield clients
    for client in clients:
        client.stop(timeout=2)
        client.outbox.close()


def start_client(clients: list[HubClient], config: HubConfig, outbox_path: Path, *, device_id: str = "dev-1",
                 handler: Any = None, secrets_dir: Path | None = None) -> HubClient:
    outbox = Outbox(outbox_path, max_bytes=1 << 20)
    try:
        client = HubClient(config, device_id, secrets_dir, outbox, handler or RecordingHandler())
    except BaseException:
        outbox.close()
        raise
    clients.append(client)
    client.start()
    return client


CHILD = r"""
import json, sys
from device.config import HubConfig
from device.uplink import HubClient, Outbox

class Handler:
    def start_session(self, patient_id, max_duration_s): return {"session_id": "s-child"}
    def stop_session(self): return {"session_id": "s-child"}
    def ping(self): return {"pong": True}
    def get_status(self): return {"state": "idle"}

args = json.loads(sys.argv[1])
outbox = Outbox(args["outbox"], max_bytes=1 << 20)
client = HubClient(HubConfig(**args["hub"]), args["device_id"], None, outbox, Handler())
client.start()
print("started", flush=True)
for line in sys.stdin:
    command, _, arg = line.strip().partition(" ")
    if command == "wait_connected":
        print("connected" if client.wait_connected(float(arg)) else "not connected", flush=True)
    elif command == "mood":
        for _ in range(int(arg)):
            client.publish_mood(args["session_id"], args["window"])
        print("queued", outbox.stats()["depth"], flush=True)
    elif command == "stop":
        client.stop()
        print("stopped", flush=True)
        break
"""


class Child:
    """The device's hub client in a separate process, driven line by line over stdin."""

    def __init__(self, config: HubConfig, outbox: Path, window: dict[str, Any], session_id: str = "s-1") -> None:
        hub = {k: v for k, v in config.__dict__.items() if k != "commands_enabled"}
        args = {"hub": hub, "outbox": str(outbox), "device_id": "dev-1", "session_id": session_id, "window": window}
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(args)], cwd=REPO, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        assert self.expect(20) == "started"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the child said nothing for {timeout} s") from None

    def send(self, line: str, timeout: float = 20) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.expect(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.kill()


# ---- payloads and schemas ----------------------------------------------------------------------------------------

def test_schemas_are_valid_draft_2020_12():
    for name in payloads.SCHEMA_NAMES:
        schema = payloads.load_schema(name)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        jsonschema.Draft202012Validator.check_schema(schema)


def test_one_utc_format_is_the_schemas_ts_and_round_trips():
    from datetime import UTC, datetime, timedelta, timezone

    from device.contract import timestamps

    for name in payloads.SCHEMA_NAMES:
        ts = payloads.load_schema(name).get("properties", {}).get("ts")
        if ts is not None:
            assert ts["pattern"] == timestamps.UTC_TIMESTAMP_PATTERN, name
    moment = datetime(2025, 1, 31, 9, 15, 2, 123456, tzinfo=UTC)
    text = timestamps.utc_timestamp(moment)
    assert text == timestamps.EXAMPLE and TS.match(text) and timestamps.UTC_TIMESTAMP_RE.match(text)
    assert timestamps.utc_timestamp(moment.astimezone(timezone(timedelta(hours=2)))) == text
    assert timestamps.parse_utc_timestamp(text) == moment.replace(microsecond=123000)
    assert payloads.envelope("info", "dev-1", None, 0, now=moment)["ts"] == text  # payloads unchanged
    # what stores and older answers hold reads too; the one format comes out
    for stored in ("2025-01-31T09:15:02.123+00:00", "2025-01-31T10:15:02.123+01:00", "2025-01-31T09:15:02.123000Z"):
        assert timestamps.as_utc_timestamp(stored) == text, stored
    assert timestamps.as_utc_timestamp("2025-01-31T09:15:02Z") == "2025-01-31T09:15:02.000Z"
    assert timestamps.as_utc_timestamp(None) is None
    for bad in ("2025-01-31T09:15:02", "2025-01-31", "yesterday", ""):
        with pytest.raises(ValueError):
            timestamps.parse_utc_timestamp(bad)
    assert timestamps.parse_utc_timestamp("2025-01-31T09:15:02", assume_utc=True) == moment.replace(microsecond=0)


def test_payloads_built_from_real_output_validate(session_output, tmp_path: Path):
    windows, summary = session_output
    assert len(windows) == 3 and any(w.probs is None for w in windows) and windows[0].prosody is not None
    device, session = "dev-1", "s-0001"
    built = []
    for seq, window in enumerate(windows, start=1):
        mood = payloads.mood_payload(device, session, seq, window)
        validate("mood", mood)
        built.append(mood)
        json_form = window.to_json()
        assert mood["has_mood"] == json_form["has_mood"] and mood["dominant"] == json_form["dominant"]
        assert mood["probs"] == json_form["probs"] and mood["valence"] == json_form["valence"]
        assert set(mood["modalities"]) == set(json_form["modalities"])
    first = built[0]
    assert first["modalities"]["face"]["share"] == 1.0 and first["modalities"]["speech"]["share"] > 0
    assert first["prosody"]["f0_mean_hz"] == pytest.approx(180.0)
    assert built[2]["has_mood"] is False and built[2]["probs"] is None

    baseline = {"n": 3, "session_ids": ["a", "b", "c"],
                "fields": {"valence": {"mean": 0.1, "sd": 0.2, "n": 3},
                           "speech_share": {"mean": 0.3, "sd": 0.0, "n": 3}}}
    for dev in (deviation(summary, baseline), None):
        result = payloads.summary_payload(device, session, 9, summary, patient_id="P-001", deviation=dev)
        validate("summary", result)
    assert result["notice"] and "diagnos" in result["notice"]
    empty = summarize([w for w in windows if w.probs is None], 10.0, {"face": {"items": 100, "present": 0}})
    validate("summary", payloads.summary_payload(device, session, 10, empty, patient_id=None))

    for seq, (event, extra) in enumerate((("started", {"patient_id": "P-001", "max_duration_s": 3600}),
                                          ("ended", {"duration_s": 30.0, "windows": 3}),
                                          ("interrupted", {"reason": "power loss\nrecovered"}))):
        validate("session", payloads.session_payload(device, session, seq, event, **extra))

    with Outbox(tmp_path / "o.db", max_bytes=1 << 20) as outbox:
        outbox.enqueue("t", b"x", kind="mood")
        stats = outbox.stats()
    status = payloads.status_payload(device, 2, state="recording", session_id=session, uptime_s=12.5,
                                     components={"camera": {"ok": True, "detail": None},
                                                 "microphone": {"ok": False, "detail": "no device"}},
                                     temperature_c=51.2, throttled=False, outbox=stats)
    validate("status", status)
    info = payloads.info_payload(device, 1, software_version="0.1.0", capabilities=["face", "speech"],
                                 models=[{"name": "face_expression", "version": "3", "sha256": "0" * 64}],
                                 commands=["ping"], window_seconds=10.0)
    validate("info", info)
    ok = payloads.command_result_payload(device, 3, "ping", "r-1", result={"pong": True})
    err = payloads.command_result_payload(device, 4, None, None, error_code="malformed", error="not JSON")
    for p in (ok, err):
        validate("command_result", p)
    for state in ("online", "offline"):
        validate("availability", state)
    validate("command", {"request_id": "r-1", "patient_id": "P-001", "max_duration_s": 600})

    every = [*built, result, status, info, ok, err]
    assert all(UUID4.match(p["event_id"]) and TS.match(p["ts"]) for p in every)
    assert len({p["event_id"] for p in every}) == len(every)
    assert all(len(payloads.encode(p)) < 6000 for p in every)  # aggregates, never media


def test_payload_whitelist_and_schema_strictness(window_json):
    polluted = dict(window_json, frame=[[1, 2, 3]] * 50, audio="UklGRg==")
    polluted["modalities"] = {m: dict(v, raw=[0] * 10) for m, v in window_json["modalities"].items()}
    mood = payloads.mood_payload("dev-1", "s-1", 0, polluted)
    validate("mood", mood)
    text = payloads.encode(mood).decode()
    assert "frame" not in text and "audio" not in text and "raw" not in text
    with pytest.raises(jsonschema.ValidationError):
        validate("mood", dict(mood, frame=[1]))
    with pytest.raises(jsonschema.ValidationError):
        validate("mood", dict(mood, probs={k: v for k, v in mood["probs"].items() if k != "sad"}))
    with pytest.raises(ValueError, match="unknown modality"):
        payloads.mood_payload("dev-1", "s-1", 0, dict(window_json, modalities={"gait": {}}))
    with pytest.raises(ValueError):
        payloads.encode({"x": float("nan")})
    assert OPAQUE_ID_PATTERN == PATIENT_ID_PATTERN


# ---- config ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("hub", "fragment"),
    [
        ({"enabled": True}, "hub.host: must be set"),
        ({"host": "10.1.2.3", "tls": "off"}, "hub.tls: refusing unencrypted MQTT to '10.1.2.3'"),
        ({"port": 70000}, "hub.port: must be between 0 and 65535"),
        ({"protocol": "mqtt3"}, "hub.protocol: must be one of"),
        ({"cert_file": "/etc/c.pem"}, "hub.cert_file: cert_file and key_file go together"),
        ({"key_file": "../key.pem", "cert_file": "/c.pem"}, "hub.key_file: must be the name of a file"),
        ({"password_file": "pw"}, "hub.password_file: a password needs hub.username"),
        ({"ca_file": "ca.pem"}, "hub.ca_file: must be an absolute path"),
        ({"tls": "off", "ca_file": "/ca.pem", "host": "localhost"}, 'hub.ca_file: only used with hub.tls = "on"'),
        ({"topic_prefix": "clinic/devices"}, "hub.topic_prefix: must contain {device_id}"),
        ({"topic_prefix": "clinic/+/{device_id}"}, "hub.topic_prefix: must be topic levels"),
        ({"commands_enabled": ["ping", "reboot"]}, "hub.commands_enabled[1]: must be one of"),
        ({"commands_enabled": ["ping", "ping"]}, "hub.commands_enabled: must not repeat"),
        ({"reconnect_min_s": 30, "reconnect_max_s": 10}, "hub.reconnect_min_s: must not exceed"),
        ({"max_inflight": 0}, "hub.max_inflight: must be between 1 and 100"),
        ({"outbox_max_bytes": 10}, "hub.outbox_max_bytes: must be between"),
    ],
)
def test_hub_config_rejections_name_the_key(hub, fragment):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"hub": hub}, "test.toml")
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_hub_config_accepts_loopback_plaintext_and_explicit_opt_in():
    assert config_from_dict({}).hub.enabled is False
    for host in ("127.0.0.1", "localhost", "::1", "127.0.1.1"):
        assert config_from_dict({"hub": {"enabled": True, "host": host, "tls": "off"}}).hub.host == host
    remote = config_from_dict({"hub": {"enabled": True, "host": "hub.clinic.example", "tls": "off",
                                       "allow_plaintext": True, "commands_enabled": ["ping"]}}).hub
    assert remote.allow_plaintext and remote.commands_enabled == ("ping",)


def test_plaintext_to_non_loopback_host_is_refused(tmp_path: Path):
    with Outbox(tmp_path / "o.db", max_bytes=1 << 20) as outbox:
        with pytest.raises(HubError) as err:
            HubClient(HubConfig(enabled=True, host="192.0.2.10", tls="off"), "dev-1", None, outbox, RecordingHandler())
        message = str(err.value)
        assert "refusing unencrypted MQTT" in message and "allow_plaintext" in message and "\n" not in message
        # opting in is possible (the client is only built here, never started: no traffic leaves 127.0.0.1)
        HubClient(HubConfig(enabled=True, host="192.0.2.10", tls="off", allow_plaintext=True), "dev-1", None,
                  outbox, RecordingHandler())
        with pytest.raises(HubError, match="no credentials directory"):
            HubClient(hub_config(1883, username="u", password_file="pw"), "dev-1", None, outbox, RecordingHandler())
        with pytest.raises(HubError, match="does not exist"):
            HubClient(hub_config(1883, username="u", password_file="pw"), "dev-1", tmp_path, outbox,
                      RecordingHandler())
        with pytest.raises(HubError, match="device id"):
            HubClient(hub_config(1883), "dev/1", None, outbox, RecordingHandler())
        loose = tmp_path / "pw"
        loose.write_text("s3cret-password\n")
        loose.chmod(0o644)
        with pytest.raises(HubError, match="readable or writable by other users") as err:
            HubClient(hub_config(1883, username="u", password_file="pw"), "dev-1", tmp_path, outbox,
                      RecordingHandler())
        assert "s3cret" not in str(err.value) and "chmod 600" in str(err.value)


# ---- outbox (no broker) ----------------------------------------------------------------------------------------

def test_outbox_bound_drops_oldest_mood_first_and_counts(tmp_path: Path):
    path = tmp_path / "outbox.db"
    with Outbox(path, max_bytes=2000) as outbox:
        outbox.enqueue("s", b"S" * 199, kind="session")
        moods = [outbox.enqueue("m", bytes([65 + i]) * 199, kind="mood") for i in range(12)]
        outbox.enqueue("y", b"Y" * 199, kind="summary")
        stats = outbox.stats()
        assert stats["bytes"] <= 2000
        assert stats["by_kind"] == {"session": 1, "summary": 1, "mood": 8}
        assert stats["dropped"] == {"mood": 4}
        kept = [e.id for e in outbox.next_batch(100) if e.kind == "mood"]
        assert kept == moods[4:]  # the oldest four went
        # only lifecycle events left to drop: then the oldest of those goes, and is counted
        for _ in range(12):
            outbox.enqueue("y", b"Y" * 199, kind="summary")
        stats = outbox.stats()
        assert stats["by_kind"] == {"summary": 10} and stats["dropped"] == {"mood": 12, "session": 1, "summary": 3}
    with Outbox(path, max_bytes=2000) as reopened:  # counters and rows survive a restart
        assert reopened.stats()["dropped"] == {"mood": 12, "session": 1, "summary": 3}
        assert reopened.stats()["depth"] == 10


def test_outbox_never_drops_inflight_rows_and_expires_by_age(tmp_path: Path):
    now = [1000.0]
    with Outbox(tmp_path / "o.db", max_bytes=1000, max_age_s=60, clock=lambda: now[0]) as outbox:
        first = outbox.enqueue("m", b"a" * 299, kind="mood")
        connection = outbox.begin_connection()
        (entry,) = outbox.next_batch(1)
        assert entry.id == first and outbox.mark_inflight(connection, 7, first)
        for _ in range(5):
            outbox.enqueue("m", b"b" * 299, kind="mood")
        assert outbox.inflight == 1 and first not in [e.id for e in outbox.next_batch(10)]
        assert outbox.stats()["depth"] == 3  # the in-flight row and the two newest
        now[0] += 61
        outbox.expire()
        assert outbox.stats()["depth"] == 1 and outbox.stats()["dropped"]["mood"] == 5
        assert outbox.ack(connection, [(7, False)]) == 1
        assert outbox.stats()["depth"] == 0 and outbox.stats()["delivered"] == {"mood": 1}


def test_outbox_message_ids_are_per_connection(tmp_path: Path):
    with Outbox(tmp_path / "o.db", max_bytes=1 << 20) as outbox:
        ids = [outbox.enqueue("m", f"{i}".encode(), kind="mood") for i in range(4)]
        one = outbox.begin_connection()
        batch = outbox.next_batch(2)
        for mid, entry in enumerate(batch, start=1):
            outbox.mark_inflight(one, mid, entry.id)
        assert [e.id for e in outbox.next_batch(10)] == ids[2:]  # in flight: not handed out twice
        outbox.end_connection()
        two = outbox.begin_connection()
        assert outbox.ack(one, [(1, False), (2, False)]) == 0  # a stale connection's acks mean nothing
        assert not outbox.mark_inflight(one, 3, ids[3])
        again = outbox.next_batch(10)
        assert [e.id for e in again] == ids  # unacknowledged rows go out again, in order
        outbox.mark_inflight(two, 1, ids[2])  # mid 1 again, now meaning another row
        outbox.mark_inflight(two, 2, ids[0])
        assert outbox.ack(two, [(1, False), (2, True), (99, False)]) == 2
        stats = outbox.stats()
        assert stats["depth"] == 2 and stats["delivered"] == {"mood": 1} and stats["rejected"] == {"mood": 1}
        assert [e.id for e in outbox.next_batch(10)] == [ids[1], ids[3]]


def test_outbox_sequences_continue_after_restart(tmp_path: Path, window_json):
    path = tmp_path / "o.db"
    with Outbox(path, max_bytes=1 << 20) as outbox:
        made = [outbox.enqueue_event("mood", "mood", "s-1", lambda seq: payloads.mood_payload("d", "s-1", seq,
                                                                                             window_json))
                for _ in range(3)]
        assert [p["seq"] for p in made] == [0, 1, 2]
        assert outbox.next_seq(None) == 0 and outbox.next_seq("s-2") == 0
    with Outbox(path, max_bytes=1 << 20) as outbox:
        assert outbox.next_seq("s-1") == 3 and outbox.next_seq(None) == 1
        assert [json.loads(e.payload)["seq"] for e in outbox.next_batch(10)] == [0, 1, 2]
        with pytest.raises(ValueError, match="qos"):
            outbox.enqueue("t", b"x", kind="mood", qos=0)


def test_rate_limited_log_reports_repeats_once_with_a_count(caplog: pytest.LogCaptureFixture):
    logger = logging.getLogger("test.hub.ratelimit")
    now = [0.0]
    limited = RateLimitedLog(logger, interval_s=100, clock=lambda: now[0])
    with caplog.at_level(logging.INFO, logger="test.hub.ratelimit"):
        for _ in range(50):
            limited.log(logging.WARNING, "cannot connect: refused")
        now[0] = 150
        limited.log(logging.WARNING, "cannot connect: refused")  # the interval passed: one summary line
        limited.log(logging.WARNING, "cannot connect: refused")
        limited.log(logging.WARNING, "connected")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["cannot connect: refused", "cannot connect: refused (repeated 50 times in 150 s)",
                     "cannot connect: refused (repeated 1 more times)", "connected"]


# ---- commands: validation (no broker) --------------------------------------------------------------------------

ENABLED = ("start_session", "stop_session", "ping", "get_status")


def test_parse_command_cases():
    ok = parse_command("start_session", b'{"request_id":"r-1","patient_id":"P-001","max_duration_s":60}', ENABLED)
    assert ok.ok and ok.args == {"patient_id": "P-001", "max_duration_s": 60.0}
    cases = [
        ("ping", b"{not json", "malformed", None),
        ("ping", b"[1, 2]", "malformed", None),
        ("ping", b"\xff\xfe", "malformed", None),
        ("ping", b'{"request_id": NaN}', "malformed", None),
        ("ping", b"[" * 3000 + b"]" * 3000, "too_large", None),
        ("ping", b"[" * 2000 + b"]" * 2000, "malformed", None),
        ("reboot", b'{"request_id":"r-2"}', "unknown_command", "r-2"),
        ("ping", b'{"request_id":""}', "invalid", None),
        ("ping", b'{"request_id":"r-3","extra":1}', "invalid", "r-3"),
        ("start_session", b'{"request_id":"r-4"}', "invalid", "r-4"),
        ("start_session", b'{"request_id":"r-5","patient_id":"Jane Doe"}', "invalid", "r-5"),
        ("start_session", b'{"request_id":"r-6","patient_id":"p","max_duration_s":"1h"}', "invalid", "r-6"),
        ("start_session", b'{"request_id":"r-7","patient_id":"p","max_duration_s":true}', "invalid", "r-7"),
        ("start_session", b'{"request_id":"r-8","patient_id":"p","max_duration_s":1e9}', "invalid", "r-8"),
    ]
    for name, body, code, request_id in cases:
        parsed = parse_command(name, body, ENABLED)
        assert (parsed.error_code, parsed.request_id) == (code, request_id), (name, body[:40], parsed)
    disabled = parse_command("start_session", b'{"request_id":"r-9","patient_id":"p"}', ("ping",))
    assert disabled.error_code == "disabled" and disabled.request_id == "r-9"


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # a named function, not a lambda: hypothesis checks by source inspection that `extend` uses its
    # argument, and a lambda next to another lambda can fail that check (a deprecation warning)
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(
    st.binary(max_size=300),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                 json_containers, max_leaves=12).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"request_id": st.text(max_size=70)},
                          optional={"patient_id": st.one_of(st.text(max_size=70), st.integers()),
                                    "max_duration_s": st.one_of(st.floats(), st.integers(), st.text(max_size=5))}
                          ).map(lambda v: json.dumps(v).encode()),
), st.sampled_from([*ENABLED, "reboot", ""]))
def test_parse_command_never_raises_and_only_accepts_valid_requests(body: bytes, name: str):
    parsed = parse_command(name, body, ENABLED)
    if parsed.ok:
        request = json.loads(body)
        validate("command", request)
        assert parsed.name in ENABLED and re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", parsed.request_id or "")
        if name == "start_session":
            assert re.fullmatch(PATIENT_ID_PATTERN, parsed.args["patient_id"])
    else:
        assert parsed.error_code in payloads.ERROR_CODES and parsed.error


# ---- against a real broker --------------------------------------------------------------------------------------

@needs_broker
def test_connect_publishes_retained_state_then_online_then_drains(broker: Broker, tmp_path: Path,
                                                                  running_clients, session_output):
    windows, _ = session_output
    observer = Observer(broker.port, ["affectbox/dev-1/#"])
    try:
        outbox = Outbox(tmp_path / "pre.db", max_bytes=1 << 20)
        client = HubClient(hub_config(broker.port), "dev-1", None, outbox, RecordingHandler())
        running_clients.append(client)
        client.set_info(capabilities=["face", "speech"], window_seconds=10.0,
                        models=[{"name": "face_expression", "version": "1", "sha256": None}])
        client.publish_session("s-1", "started", patient_id="P-001")
        client.publish_mood("s-1", windows[0])  # queued before the first connection
        client.start()
        assert client.wait_connected(10)
        assert observer.wait_for(lambda ms: len(events(ms, "/mood")) == 1, 10)
        topics = [m.topic.rsplit("/", 1)[1] for m in observer.messages]
        assert topics[:5] == ["info", "status", "availability", "session", "mood"], topics
        assert availability(observer.messages) == ["online"]
        for name in ("info", "status", "session", "mood"):
            for payload in events(observer.messages, "/" + name):
                validate(name, payload)
        assert wait_until(lambda: outbox.stats()["depth"] == 0, 5)
        client.stop()
        assert observer.wait_for(lambda ms: availability(ms)[-1:] == ["offline"], 5)
    finally:
        observer.close()


@needs_broker
def test_availability_offline_on_sigkill_and_online_after_broker_restart(broker: Broker, tmp_path: Path, children,
                                                                         running_clients, window_json):
    child = Child(hub_config(broker.port), tmp_path / "child.db", window_json)
    children.append(child)
    assert child.send("wait_connected 15") == "connected"
    observer = Observer(broker.port, ["affectbox/dev-1/availability"])
    try:
        assert observer.wait_for(lambda ms: availability(ms) == ["online"], 5)
        retained = Observer(broker.port, ["affectbox/dev-1/availability"])  # a late subscriber sees it
        try:
            assert retained.wait_for(lambda ms: availability(ms) == ["online"] and ms[0].retain, 5)
        finally:
            retained.close()
        child.kill()  # SIGKILL: no clean disconnect, the broker publishes the will
        assert observer.wait_for(lambda ms: availability(ms) == ["online", "offline"], 10)
    finally:
        observer.close()
    late = Observer(broker.port, ["affectbox/dev-1/availability"])
    try:
        assert late.wait_for(lambda ms: availability(ms) == ["offline"] and ms[0].retain, 5)
    finally:
        late.close()

    client = start_client(running_clients, hub_config(broker.port), tmp_path / "c.db")
    assert client.wait_connected(10)
    broker.stop()
    assert wait_until(lambda: not client.connected, 10)
    broker.start()  # persistence off: the broker forgot every retained message
    assert wait_until(lambda: client.connections == 2 and client.connected, 15)
    after = Observer(broker.port, ["affectbox/dev-1/availability", "affectbox/dev-1/status"])
    try:
        assert after.wait_for(lambda ms: availability(ms) == ["online"], 5)
        assert after.wait_for(lambda ms: len(events(ms, "/status")) == 1, 5)
    finally:
        after.close()


def _check_delivery(observer: Observer, expected_ids: list[str], timeout: float) -> list[dict[str, Any]]:
    """Wait until every expected event arrived; return the deduplicated events in arrival order."""
    want = set(expected_ids)
    assert observer.wait_for(lambda ms: want <= {e["event_id"] for e in events(ms, "/mood")}, timeout), \
        f"missing {len(want - {e['event_id'] for e in events(observer.messages, '/mood')})} events"
    seen: set[str] = set()
    unique = []
    for event in events(observer.messages, "/mood"):
        if event["event_id"] not in seen:
            seen.add(event["event_id"])
            unique.append(event)
    assert seen == want  # nothing unexpected
    return unique


@needs_broker
def test_events_queued_during_a_broker_outage_arrive_once_in_order(persistent_broker: Broker, tmp_path: Path,
                                                                   running_clients, session_output):
    windows, _ = session_output
    observer = Observer(persistent_broker.port, ["affectbox/dev-1/mood"], persistent=True)
    try:
        client = start_client(running_clients, hub_config(persistent_broker.port), tmp_path / "o.db")
        assert client.wait_connected(10)
        sent = [client.publish_mood("s-1", windows[i % 3]) for i in range(5)]
        assert observer.wait_for(lambda ms: len(ms) >= 5, 10)
        assert wait_until(lambda: client.outbox.stats()["depth"] == 0, 5)
        persistent_broker.stop()
        assert wait_until(lambda: not client.connected, 10)
        started = time.monotonic()
        sent += [client.publish_mood("s-1", windows[i % 3]) for i in range(25)]
        assert client.outbox.stats()["depth"] == 25
        persistent_broker.start()
        unique = _check_delivery(observer, [p["event_id"] for p in sent], 20)
        recovery = time.monotonic() - started
        assert [e["seq"] for e in unique] == list(range(30))  # in order, none lost
        assert wait_until(lambda: client.outbox.stats()["depth"] == 0, 5)
        assert client.outbox.stats()["delivered"]["mood"] == 30
        assert recovery < 20
    finally:
        observer.close()


@needs_broker
def test_client_restarted_during_outage_drains_what_was_left(persistent_broker: Broker, tmp_path: Path, children,
                                                             running_clients, window_json):
    observer = Observer(persistent_broker.port, ["affectbox/dev-1/mood"], persistent=True)
    path = tmp_path / "outbox.db"
    try:
        child = Child(hub_config(persistent_broker.port), path, window_json)
        children.append(child)
        assert child.send("wait_connected 15") == "connected"
        assert child.send("mood 4").startswith("queued")
        assert observer.wait_for(lambda ms: len(ms) >= 4, 10)
        persistent_broker.stop()
        answer = child.send("mood 6")  # committed to the outbox while the broker is down
        assert answer.startswith("queued") and int(answer.split()[1]) >= 6
        child.kill()  # the daemon dies during the outage
        persistent_broker.start()
        # the restarted daemon: same outbox file, sends what was left
        client = start_client(running_clients, hub_config(persistent_broker.port), path)
        assert client.wait_connected(10)
        assert observer.wait_for(lambda ms: len({e["event_id"] for e in events(ms)}) >= 10, 15)
        assert wait_until(lambda: client.outbox.stats()["depth"] == 0, 5)
        unique = []
        seen: set[str] = set()
        for event in events(observer.messages):
            if event["event_id"] not in seen:
                seen.add(event["event_id"])
                unique.append(event)
        assert [e["seq"] for e in unique] == list(range(10))
    finally:
        observer.close()


def _command(commander: mqtt.Client, topic: str, body: bytes, properties: Properties | None = None) -> None:
    info = commander.publish(topic, body, qos=1, properties=properties)
    info.wait_for_publish(5)


@needs_broker
def test_commands_are_validated_answered_and_only_valid_ones_reach_the_handler(broker: Broker, tmp_path: Path,
                                                                               running_clients):
    handler = RecordingHandler()
    base = "affectbox/dev-1/cmd/"
    observer = Observer(broker.port, ["affectbox/dev-1/cmd/+/result", "test/replies"])
    commander = observer.client
    # a stale retained command must never be obeyed (it would replay at every connect)
    commander.publish(base + "start_session", b'{"request_id":"r-0","patient_id":"P-RETAINED"}', qos=1,
                      retain=True).wait_for_publish(5)
    config = hub_config(broker.port, commands_enabled=("start_session", "ping", "get_status"),
                        response_topic_prefix="test")
    client = start_client(running_clients, config, tmp_path / "o.db", handler=handler)
    assert client.wait_connected(10)
    try:
        _command(commander, base + "ping", b'{"request_id":"r-1"}')
        _command(commander, base + "get_status", b'{"request_id":"r-2"}')
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = "test/replies"
        props.CorrelationData = b"corr-3"
        _command(commander, base + "start_session",
                 b'{"request_id":"r-3","patient_id":"P-001","max_duration_s":600}', props)
        _command(commander, base + "start_session", b'{"request_id":"r-4","patient_id":"P-002"}')
        _command(commander, base + "ping", b"{not json")
        _command(commander, base + "ping", json.dumps({"request_id": "r-6", "pad": "x" * COMMAND_MAX_BYTES}).encode())
        _command(commander, base + "reboot", b'{"request_id":"r-7"}')
        _command(commander, base + "stop_session", b'{"request_id":"r-8"}')
        _command(commander, base + "start_session", b'{"request_id":"r-9","patient_id":"Jane Doe"}')
        _command(commander, base + "start_session", b'{"request_id":"r-10","patient_id":"P","max_duration_s":"1h"}')
        # 10 requests, 10 results, and r-3's result also on its MQTT 5 response topic
        assert observer.wait_for(lambda ms: len(ms) >= 11, 10), [m.topic for m in observer.messages]
        results = {}
        for message in observer.messages:
            payload = json.loads(message.payload)
            validate("command_result", payload)
            if message.topic == "test/replies":
                assert message.properties.CorrelationData == b"corr-3"
                assert payload["request_id"] == "r-3"
                continue
            key = payload["request_id"] or payload["error"]["code"]
            results[key] = (message.topic.removeprefix(base), payload)
        assert results["r-1"][0] == "ping/result" and results["r-1"][1]["result"] == {"pong": True}
        assert results["r-2"][1]["ok"] and results["r-2"][1]["result"]["outbox"]["depth"] == 0
        assert results["r-3"][0] == "start_session/result" and results["r-3"][1]["result"] == {"session_id": "s-0001"}
        expected_errors = {"r-4": "refused", "malformed": "malformed", "too_large": "too_large",
                           "r-7": "unknown_command", "r-8": "disabled", "r-9": "invalid", "r-10": "invalid"}
        for key, code in expected_errors.items():
            assert results[key][1]["ok"] is False and results[key][1]["error"]["code"] == code, key
        assert results["r-7"][0] == "reboot/result" and results["r-8"][0] == "stop_session/result"
        assert "already running" in results["r-4"][1]["error"]["message"]
        # the handler saw the valid requests only
        assert handler.calls == [("ping",), ("get_status",), ("start_session", "P-001", 600.0),
                                 ("start_session", "P-002", None)]
        assert client.connected  # and nothing crashed
    finally:
        observer.close()


# ---- TLS and passwords -----------------------------------------------------------------------------------------

def make_tls_material(folder: Path) -> None:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate (EC P-256, openssl CLI)."""
    folder.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True, timeout=30)

    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=affectbox test CA")
    common = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n" \
             "authorityKeyIdentifier=keyid\n"
    for name, cn, ext in (("server", "localhost", "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                                                  "extendedKeyUsage=serverAuth\n"),
                          ("client", "dev-tls", "extendedKeyUsage=clientAuth\n")):
        openssl("req", *key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}")
        (folder / f"{name}.ext").write_text(common + ext)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext")


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[Broker]:
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("openssl or mosquitto_passwd missing (./setup.sh --dev installs them)")
    pki = tmp_path / "pki"
    make_tls_material(pki)
    passwords = pki / "passwd"
    for user, password in (("dev-tls", "s3cret-device-pw"), ("observer", "observer-pw")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if not passwords.exists() else []), str(passwords),
                        user, password], check=True, capture_output=True, timeout=30)
    extra = (f"cafile {pki}/ca.crt", f"certfile {pki}/server.crt", f"keyfile {pki}/server.key",
             "require_certificate true", f"password_file {passwords}", "allow_anonymous false")
    b = Broker(tmp_path / "tls-broker", extra=extra)
    b.start()
    yield b
    b.stop()


@needs_broker
def test_tls_with_client_certificate_and_password(tls_broker: Broker, tmp_path: Path, running_clients,
                                                  caplog: pytest.LogCaptureFixture):
    pki = tmp_path / "pki"
    good, bad = tmp_path / "creds-good", tmp_path / "creds-bad"
    for folder, password in ((good, "s3cret-device-pw\n"), (bad, "wrong-password-123\n")):
        folder.mkdir()
        (folder / "mqtt-password").write_text(password)
        shutil.copy(pki / "client.key", folder / "device.key")
        for secret in folder.iterdir():
            secret.chmod(0o600)
    config = hub_config(tls_broker.port, tls="on", ca_file=str(pki / "ca.crt"), cert_file=str(pki / "client.crt"),
                        key_file="device.key", username="dev-tls", password_file="mqtt-password")
    tls = {"ca": str(pki / "ca.crt"), "cert": str(pki / "client.crt"), "key": str(pki / "client.key")}
    with caplog.at_level(logging.DEBUG):
        client = start_client(running_clients, config, tmp_path / "good.db", secrets_dir=good)
        assert client.wait_connected(10), client.last_error
        observer = Observer(tls_broker.port, ["affectbox/dev-1/availability"], tls=tls,
                            auth=("observer", "observer-pw"))
        try:
            assert observer.wait_for(lambda ms: availability(ms) == ["online"], 5)
        finally:
            observer.close()

        wrong = start_client(running_clients, config, tmp_path / "bad.db", device_id="dev-2", secrets_dir=bad)
        assert wait_until(lambda: wrong.last_error is not None, 10)
        assert not wrong.connected
        error = wrong.last_error or ""
        assert "refused the connection" in error and re.search(r"user name or password|Not authorized", error), error
        assert "check hub.username" in error and "\n" not in error

        untrusted_config = hub_config(tls_broker.port, tls="on", ca_file=str(pki / "client.crt"))
        untrusted = start_client(running_clients, untrusted_config, tmp_path / "untrusted.db", device_id="dev-3")
        assert wait_until(lambda: untrusted.last_error is not None, 10)
        assert "certificate" in (untrusted.last_error or "") and not untrusted.connected
    logged = caplog.text
    assert "s3cret-device-pw" not in logged and "wrong-password-123" not in logged
    assert "refused the connection" in logged


@needs_broker
def test_stopped_clients_leave_no_socket_open(broker: Broker, tmp_path: Path):
    """paho closes its wake-up socket pair only in __del__, which the garbage collector may run after
    finalising the sockets (ResourceWarning, descriptors held until then): stop() closes them itself."""
    outbox = Outbox(tmp_path / "o.db", max_bytes=1 << 20)
    client = HubClient(hub_config(broker.port), "dev-1", None, outbox, RecordingHandler())
    client.start()
    observer = Observer(broker.port, ["affectbox/dev-1/availability"])
    try:
        assert client.wait_connected(10)
        paho_clients = [client._client, observer.client]
        assert all(c is not None and c._sockpairR is not None for c in paho_clients)
    finally:
        client.stop(timeout=2)
        outbox.close()
        observer.close()
    for paho_client in paho_clients:
        assert paho_client._sockpairR is None and paho_client._sockpairW is None, paho_client
        assert paho_client.socket() is None, paho_client


@needs_broker
def test_mqtt311_works_too(broker: Broker, tmp_path: Path, running_clients):
    observer = Observer(broker.port, ["affectbox/dev-1/cmd/+/result", "affectbox/dev-1/availability"])
    observer.client.publish("affectbox/dev-1/cmd/ping", b'{"request_id":"r-stale"}', qos=1,
                            retain=True).wait_for_publish(5)
    handler = RecordingHandler()
    client = start_client(running_clients, hub_config(broker.port, protocol="mqtt311"), tmp_path / "o.db",
                          handler=handler)
    assert client.wait_connected(10)
    try:
        _command(observer.client, "affectbox/dev-1/cmd/ping", b'{"request_id":"r-311"}')
        _command(observer.client, "affectbox/dev-1/cmd/stop_session", b'{"request_id":"r-312"}')
        assert observer.wait_for(lambda ms: len(events(ms, "/result")) == 2, 5)
        results = events(observer.messages, "/result")
        assert [(r["request_id"], r["ok"]) for r in results] == [("r-311", True), ("r-312", True)]
        assert results[1]["result"] == {"session_id": "s-0001"}
        assert handler.calls == [("ping",), ("stop_session",)]  # the retained r-stale was ignored
        assert availability(observer.messages) == ["online"]
    finally:
        observer.close()


def test_topics_follow_the_prefix():
    topics = Topics.for_device("clinic/rooms/{device_id}", "dev-7")
    assert topics.mood == "clinic/rooms/dev-7/mood" and topics.commands == "clinic/rooms/dev-7/cmd/+"
    assert topics.command_name("clinic/rooms/dev-7/cmd/ping") == "ping"
    assert topics.command_name("clinic/rooms/dev-7/cmd/ping/result") is None
    assert topics.command_name("clinic/rooms/dev-8/cmd/ping") is None
    assert os.path.basename(topics.result("ping")) == "result"
