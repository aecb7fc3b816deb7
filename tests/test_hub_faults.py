"""The collector under faults with a real Mosquitto and a real PostgreSQL, fed by simulated devices.

Simulated devices (tests.hub_support.SimDevice) publish sessions built with the contract's own
builders and derived event ids, fast and under exact control; the daemon end-to-end tests are in
test_hub_daemon.py. After each fault the hub holds exactly the windows that were sent, each once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import ROOT
from tests.hub_support import (
    HubProcess,
    Postgres,
    SimDevice,
    count,
    hub_config,
    hub_windows,
    needs_postgres,
    rejected_rows,
)
from tests.mqtt_support import Broker, needs_broker
from tests.support import wait_until

pytestmark = [pytest.mark.timeout(300), needs_broker]


@pytest.fixture
def parts() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        thing.close() if isinstance(thing, Postgres) else thing.stop()


@pytest.fixture
def postgres(parts) -> Postgres:
    server = Postgres()
    parts.append(server)
    return server


def start(parts: list[Any], thing: Any) -> Any:
    parts.append(thing)
    return thing


def broker_for(parts: list[Any], tmp_path: Path) -> Broker:
    broker = start(parts, Broker(tmp_path / "broker", persistence=True))
    broker.start()
    return broker


def sent_windows(events: list[tuple[str, dict]]) -> list[tuple[str, int, str]]:
    return sorted((p["session_id"], p["window_index"], p["event_id"]) for _, p in events if p["kind"] == "mood")


def publish_in_background(sim: SimDevice, events: list[tuple[str, Any]], pace_s: float) -> threading.Thread:
    thread = threading.Thread(target=sim.publish, args=(events,), kwargs={"pace_s": pace_s}, daemon=True)
    thread.start()
    return thread


@needs_postgres
def test_postgresql_stopped_for_a_while_loses_nothing(tmp_path: Path, parts, postgres):
    broker = broker_for(parts, tmp_path)
    hub = start(parts, HubProcess(tmp_path, hub_config(tmp_path, broker.port, postgres.url))).wait_ready()
    hub.wait_connected()
    sim = start(parts, SimDevice(broker.port))
    _, first = sim.session_events(40)
    sim.publish(first)
    assert wait_until(lambda: len(hub_windows(postgres.url)) == 40, 30), hub.log()

    postgres.stop()  # the database goes away: nothing may be acked meanwhile
    _, second = sim.session_events(60)
    sim.publish(second)  # the broker has them (PUBACK to the device); the hub cannot store them
    assert wait_until(lambda: "database error" in hub.log(), 20), hub.log()
    time.sleep(3)  # several retries with backoff
    postgres.start()
    want = sent_windows(first + second)
    assert wait_until(lambda: hub_windows(postgres.url) == want, 60), hub.log()
    assert count(postgres.url, "events_raw") == len(first) + len(second)
    assert "database works again" in hub.log()
    assert hub.terminate() == 0


@needs_postgres
def test_two_collectors_on_a_shared_subscription_one_killed(tmp_path: Path, parts, postgres):
    broker = broker_for(parts, tmp_path)
    configs = [hub_config(tmp_path, broker.port, postgres.url, client_id=f"affectbox-hub-{n}", share_group="hubs")
               for n in (1, 2)]
    hubs = [start(parts, HubProcess(tmp_path, c)).wait_ready().wait_connected() for c in configs]
    time.sleep(1)
    sims = [start(parts, SimDevice(broker.port, f"sim-{n}")) for n in range(3)]
    events = []
    for sim in sims:
        for _ in range(2):
            events.append(sim.session_events(100)[1])
    threads = [publish_in_background(sim, events[2 * i] + events[2 * i + 1], 0.002) for i, sim in enumerate(sims)]
    assert wait_until(lambda: len(hub_windows(postgres.url)) >= 100, 60), hubs[0].log()
    hubs[0].kill()  # one member dies mid-stream; what it had not acked waits in its session
    everything = [e for session in events for e in session]
    want = sent_windows(everything)
    # the survivor goes on storing its share; Mosquitto 2.0 keeps queueing the killed member's share
    # (and its unacked messages) in that member's persistent session, delivered when it is back
    at_kill = len(hub_windows(postgres.url))
    assert wait_until(lambda: len(hub_windows(postgres.url)) >= at_kill + 100, 60), hubs[1].log()
    for thread in threads:
        thread.join(60)
    hubs[0] = start(parts, HubProcess(tmp_path, configs[0])).wait_ready().wait_connected()
    assert wait_until(lambda: hub_windows(postgres.url) == want, 60), (len(hub_windows(postgres.url)), len(want))
    assert count(postgres.url, "events_raw") == len(everything)
    assert rejected_rows(postgres.url) == []
    for hub in hubs:
        assert hub.terminate() == 0


def test_poison_messages_do_not_stall_the_stream(tmp_path: Path, parts):
    """Poison interleaved with valid events, with an in-flight window of 5: every valid event is stored,
    every poison message is rejected with its reason and acked (the broker keeps nothing for the hub)."""
    broker = broker_for(parts, tmp_path)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = hub_config(tmp_path, broker.port, url, extra="")
    config.write_text(config.read_text().replace("[ingest]\n", "[ingest]\nbatch_max = 5\n").replace(
        "[mqtt]\n", "[mqtt]\nreceive_maximum = 5\n"))
    hub = start(parts, HubProcess(tmp_path, config)).wait_ready().wait_connected()
    sim = start(parts, SimDevice(broker.port))
    other = start(parts, SimDevice(broker.port, "sim-2"))
    _, events = sim.session_events(30)
    _, foreign = other.session_events(1)
    poison: list[tuple[str, Any]] = [
        ("affectbox/sim-1/mood", b"{not json"), ("affectbox/sim-1/mood", b"\xff" * 10),
        ("affectbox/sim-1/mood", b"x" * 300_000), ("affectbox/sim-1/summary", b"[]"),
        ("affectbox/sim-1/mood", json.dumps({**events[1][1], "schema": 99}).encode()),
        ("affectbox/sim-1/mood", json.dumps({**events[1][1], "valence": "high"}).encode()),
        ("affectbox/sim-1/mood", json.dumps(foreign[1][1]).encode()),  # sim-2's event under sim-1's topic
    ] * 3
    mixed: list[tuple[str, Any]] = []
    for i, event in enumerate(events):
        mixed.append(event)
        if i < len(poison):
            mixed.append(poison[i])
    mixed += events[:10]  # and duplicates at the end
    sim.publish(mixed)
    want = sent_windows(events)
    assert wait_until(lambda: hub_windows(url) == want, 30), hub.log()
    assert wait_until(lambda: count(url, "rejected") == len(poison), 30)
    codes = sorted({code for _, code, _ in rejected_rows(url)})
    assert codes == ["invalid", "malformed", "schema_version", "too_large", "wrong_device"], codes
    assert count(url, "events_raw") == len(events)
    assert hub.terminate() == 0
    listed = subprocess.run([sys.executable, "-m", "hub", "rejected", "--json", "--config", str(config)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert sorted({r["code"] for r in json.loads(listed.stdout)}) == codes
    sessions = subprocess.run([sys.executable, "-m", "hub", "sessions", "--json", "--config", str(config)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)
    (session,) = json.loads(sessions.stdout)
    assert session["windows_held"] == 30 and session["missing_windows"] == [] and session["seq_gaps"] == []


def test_broker_acl_refuses_a_device_publishing_under_another_id(tmp_path: Path, parts):
    """With the ACL `affectbox-hub device approve` writes, the broker drops what pi-b publishes under pi-a."""
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    acl, passwd = tmp_path / "acl", tmp_path / "passwd"
    admission = (f'[admission]\nrequire_approval = true\nacl_file = "{acl}"\n'
                 f'broker_password_file = "{passwd}"\n')
    hub_toml = hub_config(tmp_path, 1, url, approval=True)
    hub_toml.write_text(hub_toml.read_text().replace("[admission]\nrequire_approval = true\n", admission))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hub", *args, "--config", str(hub_toml)], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    for device in ("pi-a", "pi-b", "affectbox-hub"):
        result = cli("device", "approve", device, "--password-out", str(tmp_path / f"{device}.pw"))
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "pi-a.pw").stat().st_mode & 0o777 == 0o600
    broker = start(parts, Broker(tmp_path / "broker", persistence=True, extra=(
        "allow_anonymous false", f"password_file {passwd}", f"acl_file {acl}")))
    broker.start()
    login = f'username = "affectbox-hub"\npassword_file = "{tmp_path}/affectbox-hub.pw"\n'
    hub_toml.write_text(hub_toml.read_text().replace("port = 1\n", f"port = {broker.port}\n{login}"))
    hub = start(parts, HubProcess(tmp_path, hub_toml)).wait_ready().wait_connected()
    a = start(parts, SimDevice(broker.port, "pi-a", auth=("pi-a", (tmp_path / "pi-a.pw").read_text().strip())))
    b = start(parts, SimDevice(broker.port, "pi-b", auth=("pi-b", (tmp_path / "pi-b.pw").read_text().strip())))
    _, own = a.session_events(3)
    a.publish(own)
    _, forged = a.session_events(2)  # built as pi-a, sent by pi-b on pi-a's topics
    b.publish(forged, wait=False)
    _, mine = b.session_events(2)
    b.publish(mine)
    assert wait_until(lambda: len(hub_windows(url)) == 5, 20), hub.log()
    assert {w[2] for w in hub_windows(url)} == {p["event_id"] for _, p in own + mine if p["kind"] == "mood"}
    listed = json.loads(cli("device", "list", "--json").stdout)
    assert {(d["device_id"], d["admission"], d["credential"]) for d in listed} == {
        ("pi-a", "approved", "password"), ("pi-b", "approved", "password"), ("affectbox-hub", "approved", "password")}
    revoked = cli("device", "revoke", "pi-b")
    assert revoked.returncode == 0, revoked.stderr
    assert "pi-b" not in acl.read_text() and "pi-b:" not in passwd.read_text()
    bad = cli("device", "approve", "bad/id")
    assert bad.returncode == 2 and bad.stderr.startswith("affectbox-hub: error: ") and bad.stderr.count("\n") == 1
    assert hub.terminate() == 0


def test_mqtt311_collector_keeps_its_session_across_a_kill(tmp_path: Path, parts):
    """MQTT 3.1.1 (clean session off): what is published while the collector is dead arrives after its restart."""
    broker = broker_for(parts, tmp_path)
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = hub_config(tmp_path, broker.port, url)
    config.write_text(config.read_text().replace("[mqtt]\n", '[mqtt]\nprotocol = "mqtt311"\n'))
    hub = start(parts, HubProcess(tmp_path, config)).wait_ready().wait_connected()
    sim = start(parts, SimDevice(broker.port))
    _, first = sim.session_events(10)
    sim.publish(first)
    assert wait_until(lambda: len(hub_windows(url)) == 10, 20), hub.log()
    hub.kill()
    parts.remove(hub)
    _, second = sim.session_events(25)
    sim.publish(second)
    hub = start(parts, HubProcess(tmp_path, config)).wait_ready().wait_connected()
    assert wait_until(lambda: hub_windows(url) == sent_windows(first + second), 30), hub.log()
    assert "session present: True" in hub.log()
    assert hub.terminate() == 0
