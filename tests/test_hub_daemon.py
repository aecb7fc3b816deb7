"""The hub against real replaying device daemons and a real Mosquitto: exactly once under faults.

A daemon (`affectbox run --replay`, the 24-s av_session looped, 2-s windows, `--speed 3`) runs a
session while the hub (`python -m hub run`, SQLite) collects it; meanwhile the hub is SIGKILLed
and restarted and the broker is restarted with events in flight; in the resend test the broker
is SIGKILLed while it queues events for the absent hub, so events the device already handed over
are lost at the broker and the hub completes the session through `cmd/resend`. After each, the
hub's windows are exactly the device's stored windows (its local record, read read-only), each
once, under the event id the device derived for it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from device.contract.payloads import derived_event_id
from tests.daemon_harness import DaemonProcess
from tests.hub_support import HubProcess, count, hub_config, hub_windows, rejected_rows
from tests.mqtt_support import Broker, needs_broker
from tests.support import wait_until
from tests.test_daemon_hub import control, hub_state, stored_windows
from tests.test_daemon_hub import hub_config as device_config

pytestmark = [pytest.mark.timeout(420), needs_broker]
DEVICE = "test-device"
SPEED = 3.0  # the replay only; windows and faults stay on the wall clock


@pytest.fixture
def parts() -> Iterator[list[Any]]:
    things: list[Any] = []
    yield things
    for thing in reversed(things):
        if isinstance(thing, DaemonProcess):
            thing.kill()
        else:
            thing.stop()


def device(tmp_path: Path, port: int) -> Path:
    (tmp_path / "dev").mkdir(exist_ok=True)
    return device_config(tmp_path / "dev", port)


def start_daemon(parts: list[Any], tmp_path: Path, video: Path, port: int) -> DaemonProcess:
    daemon = start(parts, DaemonProcess(tmp_path / "dev", video, config=device(tmp_path, port), loop=True,
                                        speed=SPEED))
    daemon.wait_ready()
    return daemon


def start(parts: list[Any], thing: Any) -> Any:
    parts.append(thing)
    return thing


def expected(db: Path, session_id: str) -> list[tuple[str, int, str]]:
    return [(session_id, w["index"], derived_event_id(DEVICE, session_id, "mood", f"window:{w['index']}"))
            for w in stored_windows(db, session_id)]


def finish_session(daemon: DaemonProcess) -> dict[str, Any]:
    ended = daemon.session("stop")
    assert ended["state"] == "ended", ended
    return ended


def test_hub_killed_and_broker_restarted_mid_stream(tmp_path: Path, av_session, parts):
    broker = start(parts, Broker(tmp_path / "broker", persistence=True))
    broker.start()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = hub_config(tmp_path / "hub", broker.port, url)
    hub = start(parts, HubProcess(tmp_path / "hub", config)).wait_ready().wait_connected()
    daemon = start_daemon(parts, tmp_path, av_session["path"], broker.port)
    db = tmp_path / "dev" / "state" / "affectbox.db"
    assert wait_until(lambda: hub_state(tmp_path / "dev")["connected"], 20), daemon.log()
    session_id = daemon.session("start", "--patient", "p-hub")["session_id"]
    assert wait_until(lambda: len(hub_windows(url)) >= 3, 60), hub.log()

    hub.kill()  # SIGKILL mid-stream: whatever it had not acked is redelivered to the next one
    parts.remove(hub)
    held = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= held + 3, 60)  # queued for the hub meanwhile
    hub = start(parts, HubProcess(tmp_path / "hub", config)).wait_ready().wait_connected()
    assert wait_until(lambda: len(hub_windows(url)) >= held + 2, 60), hub.log()

    broker.stop()  # with events in flight both ways; persistence keeps the hub's session
    time.sleep(2)
    broker.start()
    assert wait_until(lambda: hub_state(tmp_path / "dev")["connected"], 30), daemon.log()
    now = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= now + 2, 60)
    ended = finish_session(daemon)

    want = expected(db, session_id)
    assert len(want) == ended["windows"] >= 8
    assert wait_until(lambda: hub_windows(url, DEVICE) == want, 60), (len(hub_windows(url)), len(want), hub.log())
    assert wait_until(lambda: count(url, "summaries") == 1, 30)
    # none twice: one raw event per event id, and exactly the session's stream
    assert count(url, "events_raw", "WHERE kind = 'mood'") == len(want)
    assert count(url, "events_raw", "WHERE kind = 'session'") == 2
    assert rejected_rows(url) == []
    assert hub.terminate() == 0
    assert daemon.terminate() == 0


def test_events_lost_at_the_broker_are_completed_through_resend(tmp_path: Path, av_session, parts):
    broker = start(parts, Broker(tmp_path / "broker", persistence=True))
    broker.start()
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = hub_config(tmp_path / "hub", broker.port, url,
                        completeness="enabled = true\ncheck_every_s = 1\nquiet_s = 3\nretry_after_s = 8\n")
    hub = start(parts, HubProcess(tmp_path / "hub", config)).wait_ready().wait_connected()
    daemon = start_daemon(parts, tmp_path, av_session["path"], broker.port)
    db = tmp_path / "dev" / "state" / "affectbox.db"
    assert wait_until(lambda: hub_state(tmp_path / "dev")["connected"], 20), daemon.log()
    session_id = daemon.session("start", "--patient", "p-resend")["session_id"]
    assert wait_until(lambda: len(hub_windows(url)) >= 2, 60), hub.log()

    hub.terminate()  # the hub is away: the broker queues the session's events for its session ...
    parts.remove(hub)
    held = len(stored_windows(db, session_id))
    assert wait_until(lambda: len(stored_windows(db, session_id)) >= held + 4, 60)
    assert wait_until(lambda: hub_state(tmp_path / "dev")["outbox"]["depth"] == 0, 20)  # ... and acked them
    broker.proc.kill()  # ... and crashes before saving them: the device has deleted them from its outbox
    broker.proc.wait(10)
    broker.proc = None
    broker.start()
    hub = start(parts, HubProcess(tmp_path / "hub", config)).wait_ready().wait_connected()
    assert wait_until(lambda: hub_state(tmp_path / "dev")["connected"], 30), daemon.log()
    ended = finish_session(daemon)
    want = expected(db, session_id)
    assert len(want) == ended["windows"]
    assert wait_until(lambda: hub_windows(url, DEVICE) == want, 90), (
        sorted({i for _, i, _ in want} - {i for _, i, _ in hub_windows(url)}), hub.log()[-3000:])
    assert count(url, "resend_requests") >= 1
    assert count(url, "command_results", "WHERE command = 'resend' AND ok") >= 1
    assert count(url, "events_raw", "WHERE kind = 'mood'") == len(want)
    assert wait_until(lambda: count(url, "sessions", "WHERE complete") == 1, 30), hub.log()[-2000:]
    assert control(tmp_path / "dev")["components"]["hub"]["connected"]
    assert hub.terminate() == 0
    assert daemon.terminate() == 0
