"""The daemon's hub link end to end: `affectbox run --replay` as a subprocess against a real Mosquitto.

What a hub sees of a real device (docs/MQTT.md): availability and its last will, the retained
`info` and `status`, every stored window as exactly one `mood` event (after deduplication by
`event_id`) across broker outages, a network cut and daemon restarts and crashes, and commands
from the hub. The daemon runs the replayed 24 s session (`av_session`, looped) with 2-s windows
and a short `speech.max_utterance_ms`, so windows close about 3 s after they end. The local record
is the reference: it is read back read-only (device.store.Store) and compared with what arrived.

Outage tests use a broker with persistence and a hub-side observer with a persistent MQTT 5
session, as a real hub would: the observer is disconnected too while its broker is down, and
what the device sends before the observer is back is queued for it by the broker. Nothing
leaves 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device.daemon.control import send_request
from device.store import PATIENT_ID_PATTERN, Store
from device.uplink.client import COMMAND_MAX_BYTES
from tests.daemon_harness import DaemonProcess, write_config
from tests.mqtt_support import Broker, Observer, Relay, availability, events, needs_broker, validate
from tests.support import wait_until

pytestmark = [pytest.mark.timeout(300), needs_broker]

DEVICE = "test-device"
PREFIX = f"affectbox/{DEVICE}/"
COMMANDS = ("start_session", "stop_session", "ping", "get_status", "resend")
EVENT_KINDS = ("session", "mood", "summary")


# ---- the daemon, its config and its record ------------------------------------------------------------------

def hub_config(folder: Path, port: int) -> Path:
    """write_config with the hub on (plain MQTT to 127.0.0.1:port, outbox under `folder`, fast reconnects)."""
    extra = f"""
[speech]
max_utterance_ms = 2000
[hub]
enabled = true
host = "127.0.0.1"
port = {port}
tls = "off"
outbox_path = "{folder / 'state' / 'hub-outbox.db'}"
reconnect_min_s = 1
response_topic_prefix = "hub/replies"
reconnect_max_s = 1
keepalive = 5
"""
    return write_config(folder, extra=extra)


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Daemons, observers and brokers to stop at teardown (in reverse order), even when a test fails."""
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, DaemonProcess):
            thing.kill()
        elif isinstance(thing, Observer):
            thing.close()
        else:
            thing.stop()


def start_broker(cleanup: list[Any], folder: Path, *, persistence: bool = False) -> Broker:
    broker = Broker(folder, persistence=persistence)
    broker.start()
    cleanup.append(broker)
    return broker


def observe(cleanup: list[Any], port: int, topics: list[str], *, persistent: bool = False) -> Observer:
    observer = Observer(port, topics, persistent=persistent)
    cleanup.append(observer)
    return observer


def start_daemon(cleanup: list[Any], folder: Path, video: Path, config: Path, *,
                 extra_args: tuple[str, ...] = ()) -> DaemonProcess:
    daemon = DaemonProcess(folder, video, config=config, loop=True, extra_args=extra_args)
    cleanup.append(daemon)
    daemon.wait_ready()
    return daemon


def report(name: str, **figures: Any) -> None:
    """Print a figure line for docs/RELIABILITY.md (visible with pytest -s)."""
    print(f"\nRELIABILITY {name}: {json.dumps(figures)}")


def control(folder: Path) -> dict[str, Any]:
    """The daemon's status through its control socket (in this process: cheaper than the CLI)."""
    return send_request(folder / "control.sock", {"command": "status"}, timeout_s=10)


def hub_state(folder: Path) -> dict[str, Any]:
    return control(folder)["components"]["hub"]


def stored_windows(db: Path, session_id: str) -> list[dict[str, Any]]:
    with Store.open(db, readonly=True) as store:
        return store.windows(session_id)


def outbox_depth(path: Path) -> int:
    """Rows waiting in an outbox file that no process has open (read-only)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    finally:
        conn.close()


def session_id_of(daemon: DaemonProcess) -> str:
    sid = wait_until(lambda: bool((control(daemon.folder).get("session") or {}).get("session_id")), 30)
    assert sid, daemon.log()
    return control(daemon.folder)["session"]["session_id"]


def moods_of(messages: list[mqtt.MQTTMessage], session_id: str) -> list[dict[str, Any]]:
    return [e for e in events(messages, "/mood") if e["session_id"] == session_id]


def dedup(payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first arrival of every event_id, in arrival order (what a hub keeps)."""
    seen: set[str] = set()
    out = []
    for payload in payloads:
        if payload["event_id"] not in seen:
            seen.add(payload["event_id"])
            out.append(payload)
    return out


def check_session_delivery(observer: Observer, db: Path, session_id: str, end_event: str,
                           timeout: float = 45) -> dict[str, Any]:
    """Wait until the whole session has arrived, then check it against the local record.

    Every stored window arrived as exactly one `mood` event after deduplication by event_id (no
    window is missing, none arrived under two event ids), in seq order, with the stored values;
    plus exactly one `started`, one `end_event` and one `summary`; every payload (duplicates
    included) validates against its schema. Returns the deduplicated events and the copy counts.
    """
    windows = stored_windows(db, session_id)
    indexes = list(range(len(windows)))
    assert [w["index"] for w in windows] == indexes

    def complete(ms: list[mqtt.MQTTMessage]) -> bool:
        arrived = {e["window_index"] for e in moods_of(ms, session_id)}
        summaries = [e for e in events(ms, "/summary") if e["session_id"] == session_id]
        return arrived >= set(indexes) and bool(summaries)

    if not observer.wait_for(complete, timeout):
        arrived = sorted({e["window_index"] for e in moods_of(observer.messages, session_id)})
        raise AssertionError(f"stored windows {indexes}, arrived {arrived}; "
                             f"summaries {len(events(observer.messages, '/summary'))}")
    with observer.cond:
        raw = [e for e in events(list(observer.messages)) if e.get("session_id") == session_id]
    for payload in raw:
        validate(payload["kind"], payload)
    moods = dedup([e for e in raw if e["kind"] == "mood"])
    assert [m["window_index"] for m in moods] == indexes, "a window arrived under two event ids, or out of order"
    for mood, window in zip(moods, windows, strict=True):
        assert (mood["start_s"], mood["end_s"]) == (pytest.approx(window["start"], abs=1e-3),
                                                   pytest.approx(window["end"], abs=1e-3))
        assert mood["has_mood"] == (window.get("probs") is not None)
        assert mood["dominant"] == (window.get("dominant") if mood["has_mood"] else None)
    sessions = dedup([e for e in raw if e["kind"] == "session"])
    assert [s["event"] for s in sessions] == ["started", end_event], sessions
    summaries = dedup([e for e in raw if e["kind"] == "summary"])
    assert len(summaries) == 1 and summaries[0]["windows"] == len(windows)
    assert sessions[1]["windows"] == len(windows)
    # one stream per session: started, the windows, the end, the summary, in seq order
    stream = [sessions[0], *moods, sessions[1], summaries[0]]
    seqs = [e["seq"] for e in stream]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), seqs
    copies: dict[str, int] = {}
    for payload in raw:
        copies[payload["event_id"]] = copies.get(payload["event_id"], 0) + 1
    return {"moods": moods, "sessions": sessions, "summary": summaries[0], "copies": copies, "windows": windows,
            "figures": {"windows_stored": len(windows), "events_received": len(raw), "events_unique": len(copies),
                        "mood_duplicates": sum(1 for e in raw if e["kind"] == "mood") - len(moods)}}


# ---- availability, info, status ------------------------------------------------------------------------------

def test_availability_will_and_retained_state(tmp_path: Path, av_session, cleanup):
    """`online` (retained) with valid retained `info` and `status` after connecting, again after the broker
    restarts without persistence, and the retained last will `offline` after SIGKILL."""
    broker = start_broker(cleanup, tmp_path / "broker")
    topics = [PREFIX + t for t in ("availability", "info", "status")]
    observer = observe(cleanup, broker.port, topics)
    daemon = start_daemon(cleanup, tmp_path, av_session["path"], hub_config(tmp_path, broker.port))
    assert observer.wait_for(lambda ms: availability(ms) == ["online"], 15), daemon.log()

    def check_retained(port: int) -> None:
        """A late subscriber gets `online`, `info` and a current `status`, all retained and valid."""
        # the status built at connect time, before the daemon was ready, is replaced at once
        assert observer.wait_for(lambda ms: bool(events(ms, "/status")[-1:])
                                 and events(ms, "/status")[-1]["components"] != {}, 10)
        late = observe(cleanup, port, topics)
        assert late.wait_for(lambda ms: {m.topic for m in ms} == set(topics), 10), [m.topic for m in late.messages]
        assert all(m.retain for m in late.messages)
        assert availability(late.messages) == ["online"]
        (info,) = events(late.messages, "/info")
        validate("info", info)
        assert info["device_id"] == DEVICE and info["window_seconds"] == 2.0
        assert info["commands"] == list(COMMANDS) and info["capabilities"] == ["face", "speech"]
        assert {m["name"] for m in info["models"]} == {
            "blazeface_full_range", "affectbox_face_expression", "affectbox_speech_emotion"}
        (status,) = events(late.messages, "/status")
        validate("status", status)
        assert status["state"] == "idle" and status["active_session_id"] is None
        # the retained status tells the truth about the parts the daemon reports healthy
        local = control(daemon.folder)["components"]
        assert {"camera", "microphone", "face", "speech", "store", "hub"} <= set(status["components"])
        for name in ("store", "face", "speech"):
            assert local[name]["state"] == "ok"
            assert status["components"][name]["ok"] is True, (name, status["components"][name])
        late.close()
        cleanup.remove(late)

    check_retained(broker.port)

    # the broker restarts (and, without persistence, forgets every retained message)
    broker.stop()
    assert wait_until(lambda: not hub_state(tmp_path)["connected"], 15)
    broker.start()
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 20), daemon.log()
    # the observer reconnects by itself and sees `online` again (republished, not retained leftovers)
    assert observer.wait_for(lambda ms: availability(ms)[-1:] == ["online"] and len(availability(ms)) >= 2, 15)
    check_retained(broker.port)

    daemon.kill()  # SIGKILL: no clean disconnect, so the broker publishes the will
    assert observer.wait_for(lambda ms: availability(ms)[-1:] == ["offline"], 15), availability(observer.messages)
    late = observe(cleanup, broker.port, [PREFIX + "availability"])
    assert late.wait_for(lambda ms: availability(ms) == ["offline"], 10)
    assert late.messages[0].retain


# ---- no loss -------------------------------------------------------------------------------------------------

def event_topics() -> list[str]:
    return [PREFIX + t for t in EVENT_KINDS]


def test_broker_outage_mid_session_loses_nothing(tmp_path: Path, av_session, cleanup):
    """The broker is down for four windows of a session: every window arrives once, in order."""
    broker = start_broker(cleanup, tmp_path / "broker", persistence=True)
    observer = observe(cleanup, broker.port, event_topics(), persistent=True)
    daemon = start_daemon(cleanup, tmp_path, av_session["path"], hub_config(tmp_path, broker.port))
    db = tmp_path / "state" / "affectbox.db"
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 15), daemon.log()
    session_id = daemon.session("start", "--patient", "p-outage")["session_id"]
    # the link works live first
    assert observer.wait_for(lambda ms: len(moods_of(ms, session_id)) >= 2, 30), daemon.log()

    broker.stop()
    outage_began = time.monotonic()
    assert wait_until(lambda: not hub_state(tmp_path)["connected"], 15)
    before = len(stored_windows(db, session_id))
    # the session goes on for four more windows (about 8 s) while the broker is down
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= before + 4, 30), daemon.log()
    waiting = hub_state(tmp_path)["outbox"]["depth"]
    assert waiting >= 4, waiting  # every window of the outage waits in the outbox
    arrived_during = len(moods_of(observer.messages, session_id))

    outage_s = time.monotonic() - outage_began
    broker.start()
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 20), daemon.log()
    assert observer.wait_for(lambda ms: len(moods_of(ms, session_id)) >= arrived_during + waiting, 20)
    resumed = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= resumed + 1, 20)  # and goes on live
    ended = daemon.session("stop")
    assert ended["state"] == "ended"

    result = check_session_delivery(observer, db, session_id, "ended")
    assert len(result["windows"]) == ended["windows"] >= before + 5
    assert wait_until(lambda: hub_state(tmp_path)["outbox"]["depth"] == 0, 10)
    with Store.open(db, readonly=True) as store:  # and the record knows all of it was handed over
        assert store.unpublished() == []
    report("hub_broker_outage", outage_s=round(outage_s, 1), queued_in_outage=waiting, **result["figures"])
    assert daemon.terminate() == 0


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


KEEPALIVE_S = 5  # hub_config's keepalive


def test_network_cut_mid_session_loses_nothing(tmp_path: Path, av_session, cleanup):
    """The network between device and broker goes silent mid-session: nothing passes either way and
    nothing is closed (a pulled cable, a Wi-Fi drop; tests.mqtt_support.Relay). Windows published
    into the cut wait for a PUBACK that never comes; the daemon's keep-alive notices the dead link
    and reports the hub disconnected, the broker's publishes the will; windows wait in the outbox;
    when the network is back the daemon reconnects by itself and every window arrives exactly once."""
    broker = start_broker(cleanup, tmp_path / "broker", persistence=True)
    relay = Relay(broker.port)
    cleanup.append(relay)
    observer = observe(cleanup, broker.port, [*event_topics(), PREFIX + "availability"], persistent=True)
    daemon = start_daemon(cleanup, tmp_path, av_session["path"], hub_config(tmp_path, relay.port))
    db = tmp_path / "state" / "affectbox.db"
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 15), daemon.log()
    session_id = daemon.session("start", "--patient", "p-cut")["session_id"]
    assert observer.wait_for(lambda ms: len(moods_of(ms, session_id)) >= 2, 30), daemon.log()
    rss_before = rss_mb(daemon.proc.pid)

    relay.cut()
    cut_at = time.monotonic()
    before = len(stored_windows(db, session_id))
    inflight_in_cut = 0  # outbox events handed to the dead connection, waiting for a PUBACK

    def noticed() -> bool:
        nonlocal inflight_in_cut
        hub = hub_state(tmp_path)
        if hub["connected"]:
            inflight_in_cut = max(inflight_in_cut, hub["outbox"]["inflight"])
        return not hub["connected"]

    # paho pings after a keep-alive without input and gives up a keep-alive after that
    assert wait_until(noticed, 2 * KEEPALIVE_S + 3), daemon.log()
    noticed_s = time.monotonic() - cut_at
    assert inflight_in_cut >= 1, "no event was published into the cut"
    hub = hub_state(tmp_path)
    assert hub["state"] == "degraded" and "lost the connection" in hub["detail"], hub
    # the broker gives up too (1.5 keep-alives without a packet) and tells the hub: the last will
    assert observer.wait_for(lambda ms: availability(ms)[-1:] == ["offline"], 15), availability(observer.messages)
    # the session goes on; the network stays cut for five windows or more (about 12 s in all)
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= before + 5, 30), daemon.log()
    waiting = hub_state(tmp_path)["outbox"]["depth"]
    assert waiting >= 5, waiting
    arrived_during = len(moods_of(observer.messages, session_id))
    assert not hub_state(tmp_path)["connected"]

    relay.restore()
    cut_s = time.monotonic() - cut_at
    restored_at = time.monotonic()
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 20), daemon.log()
    reconnect_s = time.monotonic() - restored_at
    assert observer.wait_for(lambda ms: availability(ms)[-1:] == ["online"], 10)
    assert observer.wait_for(lambda ms: len(moods_of(ms, session_id)) >= arrived_during + waiting, 20)
    resumed = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= resumed + 1, 20)  # and goes on live
    ended = daemon.session("stop")
    assert ended["state"] == "ended"

    result = check_session_delivery(observer, db, session_id, "ended")
    assert len(result["windows"]) == ended["windows"] >= before + 6
    assert wait_until(lambda: hub_state(tmp_path)["outbox"]["depth"] == 0, 10)
    with Store.open(db, readonly=True) as store:
        assert store.unpublished() == []
    assert daemon.proc.poll() is None and daemon.notify.lines("READY=1") == ["READY=1"]  # never died
    assert "Traceback" not in daemon.log()
    rss_after = rss_mb(daemon.proc.pid)
    assert rss_after - rss_before < 20, (rss_before, rss_after)
    report("network_cut", cut_s=round(cut_s, 1), noticed_s=round(noticed_s, 1), reconnect_s=round(reconnect_s, 1),
           keepalive_s=KEEPALIVE_S, inflight_in_cut=inflight_in_cut, queued_in_cut=waiting,
           bytes_into_cut={"from_device": relay.held[0], "from_broker": relay.held[1]},
           relay={"links": relay.links, "opened_in_cut": relay.late_links, "reset_at_restore": relay.resets,
                  "carried_on": relay.survived},
           rss_mb=[round(rss_before, 1), round(rss_after, 1)], **result["figures"])
    assert daemon.terminate() == 0


def session_into_outage(cleanup: list[Any], tmp_path: Path, video: Path, patient: str
                        ) -> tuple[Broker, Observer, DaemonProcess, Path, str]:
    """A session runs, the broker goes down, four more windows are stored: the daemon is ready to die."""
    broker = start_broker(cleanup, tmp_path / "broker", persistence=True)
    observer = observe(cleanup, broker.port, event_topics(), persistent=True)
    config = hub_config(tmp_path, broker.port)
    daemon = start_daemon(cleanup, tmp_path, video, config, extra_args=("--patient", patient))
    db = tmp_path / "state" / "affectbox.db"
    session_id = session_id_of(daemon)
    assert observer.wait_for(lambda ms: len(moods_of(ms, session_id)) >= 1, 30), daemon.log()
    broker.stop()
    before = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= before + 4, 30), daemon.log()
    return broker, observer, daemon, db, session_id


def test_daemon_stopped_during_outage_delivers_after_restart(tmp_path: Path, av_session, cleanup):
    """SIGTERM while the broker is down: the session's events wait in the outbox for the next daemon."""
    broker, observer, first, db, session_id = session_into_outage(cleanup, tmp_path, av_session["path"], "p-term")
    assert first.terminate() == 0, first.log()  # SIGTERM: the session ends interrupted; its events wait
    with Store.open(db, readonly=True) as store:
        record = store.session(session_id)
        assert record.state == "interrupted" and "SIGTERM" in (record.end_reason or "")
        assert store.unpublished() == []  # everything reached the outbox
    outbox = tmp_path / "state" / "hub-outbox.db"
    assert outbox_depth(outbox) >= 6  # four windows or more, the end, the summary

    second = start_daemon(cleanup, tmp_path, av_session["path"], first.config)  # no session this time
    assert control(tmp_path)["recovered_sessions"] == [] and control(tmp_path)["state"] == "idle"
    broker.start()
    result = check_session_delivery(observer, db, session_id, "interrupted")
    assert "SIGTERM" in result["sessions"][1]["reason"]
    report("hub_sigterm_in_outage", **result["figures"])
    assert wait_until(lambda: hub_state(tmp_path)["outbox"]["depth"] == 0, 10)
    assert second.terminate() == 0


def test_daemon_killed_during_outage_backfills_after_restart(tmp_path: Path, av_session, cleanup):
    """SIGKILL while the broker is down: the next daemon sends the outbox, then backfills from the record."""
    broker, observer, first, db, session_id = session_into_outage(cleanup, tmp_path, av_session["path"], "p-kill")
    first.kill()  # SIGKILL mid-session, broker down: the session is left `running` in the record
    windows = stored_windows(db, session_id)
    last = len(windows) - 1
    # the crash may land between queueing a window and recording that it was queued; make it so for
    # window 0 (delivered before the outage) and the last one (still in the outbox): the restarted
    # daemon queues them again, under the same event ids
    conn = sqlite3.connect(db)
    try:
        with conn:
            conn.execute("DELETE FROM published WHERE session_id = ? AND item IN (?, ?)",
                         (session_id, "window:0", f"window:{last}"))
    finally:
        conn.close()
    with Store.open(db, readonly=True) as store:
        assert store.session(session_id).state == "running"
        assert store.unpublished() and store.unpublished()[0][1] == ["window:0", f"window:{last}"]

    second = start_daemon(cleanup, tmp_path, av_session["path"], first.config)
    assert control(tmp_path)["recovered_sessions"] == [session_id]
    broker.start()
    result = check_session_delivery(observer, db, session_id, "interrupted")
    assert result["windows"] == windows  # every window stored before the kill, nothing after it
    first_mood = result["moods"][0]
    assert result["copies"][first_mood["event_id"]] >= 2  # before the outage, and again from the backfill
    assert result["summary"]["windows"] == len(windows)
    report("hub_sigkill_in_outage", **result["figures"])
    assert wait_until(lambda: hub_state(tmp_path)["outbox"]["depth"] == 0, 10)
    with Store.open(db, readonly=True) as store:
        assert store.unpublished() == []
    assert second.terminate() == 0


# ---- commands ------------------------------------------------------------------------------------------------

class Commander:
    """A hub-side client that sends commands and collects their results."""

    def __init__(self, cleanup: list[Any], port: int) -> None:
        self.observer = observe(cleanup, port, [PREFIX + "cmd/+/result", "hub/replies/#"])

    def send(self, name: str, body: bytes, properties: Properties | None = None) -> None:
        self.observer.client.publish(PREFIX + "cmd/" + name, body, qos=1, properties=properties).wait_for_publish(5)

    def results(self) -> list[mqtt.MQTTMessage]:
        with self.observer.cond:
            return list(self.observer.messages)

    def request(self, name: str, body: dict[str, Any], timeout: float = 20) -> dict[str, Any]:
        """Send a command with a fresh request id and return its (validated) result."""
        request_id = body["request_id"]
        self.send(name, json.dumps(body).encode())
        found = self.observer.wait_for(lambda ms: any(e.get("request_id") == request_id
                                                      for e in events(ms, f"cmd/{name}/result")), timeout)
        assert found, f"no result for {name} {request_id}"
        (result,) = [e for e in events(self.results(), f"cmd/{name}/result") if e["request_id"] == request_id]
        validate("command_result", result)
        assert result["command"] == name and result["device_id"] == DEVICE
        return result


def test_commands_start_and_stop_a_session(tmp_path: Path, av_session, cleanup):
    """ping, get_status, start_session (with an MQTT 5 response topic) and stop_session from a hub client."""
    broker = start_broker(cleanup, tmp_path / "broker")
    daemon = start_daemon(cleanup, tmp_path, av_session["path"], hub_config(tmp_path, broker.port))
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 15), daemon.log()
    hub = Commander(cleanup, broker.port)
    db = tmp_path / "state" / "affectbox.db"

    pong = hub.request("ping", {"request_id": "r-ping"})
    assert pong["ok"] and pong["result"]["pong"] is True and pong["result"]["uptime_s"] >= 0
    idle = hub.request("get_status", {"request_id": "r-status-1"})
    assert idle["ok"] and idle["result"]["state"] == "idle" and idle["result"]["session"] is None
    assert idle["result"]["device"]["id"] == DEVICE and idle["result"]["hub"]["connected"] is True
    assert idle["result"]["components"]["hub"]["outbox"]["depth"] >= 0

    # start with an MQTT 5 response topic and correlation data: answered there too, data copied
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "hub/replies/7"  # allowed: hub.response_topic_prefix = "hub/replies"
    props.CorrelationData = b"corr-start-7"
    hub.send("start_session", b'{"request_id":"r-start","patient_id":"p-hub-1","max_duration_s":600}', props)
    assert hub.observer.wait_for(lambda ms: len([m for m in ms if b'"r-start"' in m.payload]) == 2, 20)
    replies = [m for m in hub.results() if b'"r-start"' in m.payload]
    assert sorted(m.topic for m in replies) == ["affectbox/test-device/cmd/start_session/result", "hub/replies/7"]
    assert all(m.properties.CorrelationData == b"corr-start-7" for m in replies)
    started = json.loads(replies[0].payload)
    validate("command_result", started)
    assert started["ok"] and started["request_id"] == "r-start", started
    session_id = started["result"]["session_id"]
    status = control(tmp_path)
    assert status["state"] == "running" and status["session"]["session_id"] == session_id
    assert status["session"]["patient_id"] == "p-hub-1" and status["session"]["source"] == "hub"
    assert status["session"]["max_duration_s"] == 600
    running = hub.request("get_status", {"request_id": "r-status-2"})
    assert running["result"]["state"] == "running" and running["result"]["session"]["session_id"] == session_id

    again = hub.request("start_session", {"request_id": "r-start-2", "patient_id": "p-hub-2"})
    assert not again["ok"] and again["error"]["code"] == "refused" and "already running" in again["error"]["message"]
    assert control(tmp_path)["session"]["session_id"] == session_id  # unchanged

    assert wait_until(lambda: len(stored_windows(db, session_id)) >= 1, 30), daemon.log()
    stopped = hub.request("stop_session", {"request_id": "r-stop"})
    assert stopped["ok"] and stopped["result"]["session_id"] == session_id and stopped["result"]["state"] == "ended"
    assert control(tmp_path)["state"] == "idle"
    with Store.open(db, readonly=True) as store:
        record = store.session(session_id)
        assert record.state == "ended" and record.patient_id == "p-hub-1" and "hub" in (record.end_reason or "")
        assert store.summary(session_id) is not None
    nothing = hub.request("stop_session", {"request_id": "r-stop-2"})
    assert not nothing["ok"] and nothing["error"]["code"] == "refused"
    assert daemon.terminate() == 0


# ---- malformed commands (property-based) ---------------------------------------------------------------------

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
FIELDS = {"start_session": ({"patient_id"}, {"max_duration_s"}), "stop_session": (set(), set()),
          "ping": (set(), set()), "get_status": (set(), set())}


def is_valid(name: str, body: bytes) -> bool:
    """docs/MQTT.md's rules for a valid request, written independently of device.uplink.client.parse_command."""
    if name not in FIELDS or len(body) > COMMAND_MAX_BYTES:
        return False
    try:
        request = json.loads(body.decode("utf-8"))
    except (ValueError, RecursionError):
        return False
    if not isinstance(request, dict) or not isinstance(request.get("request_id"), str) \
            or not REQUEST_ID.fullmatch(request["request_id"]):
        return False
    required, optional = FIELDS[name]
    keys = set(request) - {"request_id"}
    if not required <= keys <= required | optional:
        return False
    if name == "start_session":
        patient, duration = request["patient_id"], request.get("max_duration_s")
        if not isinstance(patient, str) or not re.fullmatch(PATIENT_ID_PATTERN, patient):
            return False
        if duration is not None and (isinstance(duration, bool) or not isinstance(duration, int | float)
                                     or not 1 <= duration <= 86400):
            return False
    return True


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # a named function: hypothesis checks by source inspection that `extend` uses its argument
    return st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    json_containers, max_leaves=12)
almost_valid = st.fixed_dictionaries(
    {"request_id": st.one_of(st.text(max_size=70), st.integers(), st.just("r-1"))},
    optional={"patient_id": st.one_of(st.text(max_size=70), st.integers(), st.just("Jane Doe"), st.just("p-1")),
              "max_duration_s": st.one_of(st.floats(), st.integers(), st.text(max_size=5), st.booleans()),
              "extra": json_values})
BAD_IDS = ["", "r 1", "r/1", "x" * 65, "r-1\n", "r\u00e9", 7, None, ["r-1"], {"id": "r-1"}]
BAD_DURATIONS = [0, 0.5, -1, 86401, 1e9, "60", True, [60], {"s": 60}, float("nan"), float("inf")]
DEFECTS = ("no request_id", "bad request_id", "no patient_id", "bad patient_id", "bad duration", "extra field",
           "array", "string", "double encoded", "utf-16", "bom", "trailing", "truncated", "oversized",
           "name")


@st.composite
def one_defect(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid request with exactly one thing wrong with it (a single missed check lets it through)."""
    name = draw(st.sampled_from(["start_session"] * 3 + ["stop_session", "ping", "get_status"]))
    request: dict[str, Any] = {"request_id": draw(st.from_regex(REQUEST_ID, fullmatch=True))}
    if name == "start_session":
        request["patient_id"] = draw(st.from_regex(PATIENT_ID_PATTERN, fullmatch=True))
        if draw(st.booleans()):
            request["max_duration_s"] = draw(st.integers(1, 86400) | st.floats(1, 86400))
    defect = draw(st.sampled_from(DEFECTS))
    if defect == "no request_id":
        del request["request_id"]
    elif defect == "bad request_id":
        request["request_id"] = draw(st.sampled_from(BAD_IDS))
    elif defect == "no patient_id":
        request.pop("patient_id", None)
        if name != "start_session":
            request["patient_id"] = "p-1"  # not a field of this command
    elif defect == "bad patient_id":
        request["patient_id"] = draw(st.sampled_from([*BAD_IDS[:6], "Jane Doe", "p-1;DROP"]))
    elif defect == "bad duration":
        request["max_duration_s"] = draw(st.sampled_from(BAD_DURATIONS))
    elif defect == "extra field":
        request[draw(st.sampled_from(["extra", "patientId", "REQUEST_ID", ""]))] = draw(json_values)
    text = json.dumps(request)
    body = text.encode()
    if defect == "array":
        body = json.dumps([request]).encode()
    elif defect == "string":
        body = json.dumps(text).encode()
    elif defect == "double encoded":
        body = json.dumps({"request_id": request.get("request_id"), "body": text}).encode()
    elif defect == "utf-16":
        body = text.encode("utf-16")
    elif defect == "bom":
        body = b"\xef\xbb\xbf" + body
    elif defect == "trailing":
        body += draw(st.sampled_from([b"}", b",", b" x", b"\x00", b"\xff"]))
    elif defect == "truncated":
        body = body[:draw(st.integers(0, len(body) - 1))]
    elif defect == "oversized":  # valid JSON, only too long
        body = b" " * (COMMAND_MAX_BYTES + 1 - len(body) + draw(st.integers(0, 2000))) + body
    elif defect == "name":
        name = draw(st.sampled_from([name.upper(), name + " ", name.replace("_", "-"), name + "_", "x" + name]))
    return name, body


random_bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    almost_valid.map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
)
# topic levels a publisher can use: no wildcards or separator; no control or non-characters (the broker
# would drop the publisher's connection: MQTT 5 section 1.5.4)
names = st.one_of(st.sampled_from([*COMMANDS, "reboot", "start_session ", "START_SESSION"]),
                  st.text(st.characters(blacklist_categories=("Cc", "Cs", "Cn"), blacklist_characters="/+#"),
                          min_size=1, max_size=40))
requests = st.one_of(one_defect(), st.tuples(names, random_bodies))


def test_malformed_commands_never_crash_or_start_a_session(tmp_path: Path, av_session, cleanup):
    """Invalid requests on random command topics, against one daemon: each gets an error result, the
    daemon stays up and idle, the record holds no session."""
    broker = start_broker(cleanup, tmp_path / "broker")
    daemon = start_daemon(cleanup, tmp_path, av_session["path"], hub_config(tmp_path, broker.port))
    assert wait_until(lambda: hub_state(tmp_path)["connected"], 15), daemon.log()
    hub = Commander(cleanup, broker.port)
    db = tmp_path / "state" / "affectbox.db"
    tried: list[tuple[str, int]] = []

    @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow],
              database=None)
    @given(requests)
    def send_one(request: tuple[str, bytes]) -> None:
        name, body = request
        if is_valid(name, body):
            return  # a valid request is not what this test is about (a valid start would start a session)
        tried.append((name, len(body)))
        answered = len(hub.results())
        hub.send(name, body)
        assert hub.observer.wait_for(lambda ms: len(ms) > answered, 10), f"no answer to {name!r} {body[:60]!r}"
        (message,) = hub.results()[answered:]
        result = json.loads(message.payload)
        validate("command_result", result)
        assert result["ok"] is False and result["error"]["code"] in {
            "malformed", "too_large", "unknown_command", "invalid"}, result
        expected = name if re.fullmatch(r"[a-z][a-z0-9_]{0,31}", name) else "invalid"
        assert message.topic == f"{PREFIX}cmd/{expected}/result"
        assert daemon.proc.poll() is None, daemon.log()
        status = control(tmp_path)
        assert status["state"] == "idle" and status["session"] is None
        assert hub_state(tmp_path)["connected"]

    send_one()
    codes: dict[str, int] = {}
    for message in hub.results():
        code = json.loads(message.payload)["error"]["code"]
        codes[code] = codes.get(code, 0) + 1
    report("hub_malformed_commands", tried=len(tried), answered_by_code=codes)
    assert len(tried) >= 30
    # still alive and answering, over the CLI and over MQTT, and no session was ever started
    assert daemon.status()["state"] == "idle"
    assert hub.request("ping", {"request_id": "r-after"})["ok"]
    with Store.open(db, readonly=True) as store:
        assert store.sessions() == []
    assert daemon.terminate() == 0
