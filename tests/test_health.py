"""device.health: sd_notify on a real datagram socket, heartbeats on a fake clock, the watchdog
petter on short real intervals, and Pi health from a fake sysfs/procfs tree."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.health import (
    Heartbeats,
    SystemdNotifier,
    WatchdogPetter,
    decode_throttled,
    pi_health,
    read_cpu_temperature_c,
    read_throttled,
    sanitize_status,
    watchdog_interval,
)

pytestmark = pytest.mark.timeout(30)


def recv_all(sock: socket.socket, wait_s: float = 0.3) -> list[str]:
    """Every datagram that arrives within wait_s of the previous one."""
    got: list[str] = []
    sock.settimeout(wait_s)
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            return got


def recv_until(sock: socket.socket, wanted: str, timeout_s: float = 5.0) -> list[str]:
    """Datagrams up to and including the first one containing `wanted`; fails after timeout_s."""
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {wanted!r} within {timeout_s} s; got {got}")
        sock.settimeout(left)
        try:
            msg = sock.recv(4096).decode()
        except TimeoutError:
            continue
        got.append(msg)
        if wanted in msg:
            return got


@pytest.fixture
def listener(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- SystemdNotifier ---------------------------------------------------------------------------


def test_notify_messages_arrive_as_datagrams(listener: socket.socket) -> None:
    notifier = SystemdNotifier()
    assert notifier.enabled
    assert notifier.ready()
    assert notifier.status("loading models\nline two\x07")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notifier.reloading()
    notifier.close()
    got = recv_all(listener)
    assert got[:4] == ["READY=1", "STATUS=loading models line two", "WATCHDOG=1", "STOPPING=1"]
    reload_lines = got[4].split("\n")
    assert reload_lines[0] == "RELOADING=1"
    assert reload_lines[1].startswith("MONOTONIC_USEC=") and int(reload_lines[1].split("=")[1]) > 0
    assert notifier.sent == 5 and notifier.failures == 0


def test_abstract_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"affectbox-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        notifier = SystemdNotifier()
        assert notifier.ready()
        notifier.close()
        assert recv_all(sock) == ["READY=1"]


def test_unset_notify_socket_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog() and not notifier.status("x")
    assert notifier.sent == 0 and notifier.failures == 0


def test_relative_notify_socket_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify.sock")
    notifier = SystemdNotifier()
    assert not notifier.enabled and not notifier.ready()


def test_send_failures_are_counted_and_logged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gone.sock"
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    notifier = SystemdNotifier()
    with caplog.at_level(logging.INFO, logger="affectbox.health"):
        for _ in range(3):
            assert not notifier.watchdog()  # nobody listens: no exception
        assert notifier.failures == 3
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(str(path))
            assert notifier.watchdog()
            assert recv_all(sock) == ["WATCHDOG=1"]
    assert any("after 3 failed sends" in r.getMessage() for r in caplog.records)
    notifier.close()


def test_sanitize_status_is_one_bounded_line() -> None:
    assert sanitize_status("  a\r\nb\tc  ") == "a b c"
    long = sanitize_status("x" * 1000)
    assert len(long) == 200 and long.endswith("...")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "nope"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert watchdog_interval(env) == expected


def test_notifier_watchdog_interval_reads_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert SystemdNotifier("").watchdog_interval() == 2.0
    monkeypatch.delenv("WATCHDOG_USEC")
    assert SystemdNotifier("").watchdog_interval() is None


# --- Heartbeats --------------------------------------------------------------------------------


def test_heartbeats_fresh_stale_and_inactive() -> None:
    clock = FakeClock()
    hb = Heartbeats(clock=clock)
    hb.register("camera", max_age_s=2.0)
    hb.register("face", max_age_s=5.0)
    hb.register("mic", max_age_s=1.0, required=False)
    assert hb.healthy() and hb.stale() == []  # grace period from registration

    clock.advance(1.5)
    hb.beat("camera")
    hb.beat("face")
    hb.beat("mic")
    clock.advance(1.5)
    assert hb.healthy()
    assert hb.stale() == [("mic", 1.5)]  # optional stage: listed, but health unaffected
    assert hb.stale(required_only=True) == []

    clock.advance(1.0)  # camera now 2.5 s old
    assert not hb.healthy()
    assert hb.stale(required_only=True) == [("camera", 2.5)]

    hb.set_active("camera", False)  # no session: the camera does not count
    assert hb.healthy()
    clock.advance(100.0)
    assert [name for name, _ in hb.stale(required_only=True)] == ["face"]
    hb.beat("face")
    assert hb.healthy()

    hb.set_active("camera", True)  # reactivation restarts the grace period
    assert hb.healthy()
    clock.advance(2.1)
    assert hb.stale(required_only=True) == [("camera", pytest.approx(2.1))]
    hb.beat("camera")
    hb.beat("face")
    assert hb.healthy()


def test_heartbeats_snapshot_and_errors() -> None:
    clock = FakeClock()
    hb = Heartbeats(clock=clock)
    hb.register("store", max_age_s=10.0)
    hb.register("camera", max_age_s=2.0, active=False)
    hb.beat("store")
    clock.advance(3.0)
    snap = hb.snapshot()
    assert snap["healthy"] is True
    assert snap["stages"]["store"] == {
        "active": True, "required": True, "max_age_s": 10.0, "last_beat_age_s": 3.0, "stale": False, "beats": 1,
    }
    assert snap["stages"]["camera"]["active"] is False and snap["stages"]["camera"]["last_beat_age_s"] is None
    clock.advance(8.0)
    assert hb.snapshot()["healthy"] is False and hb.snapshot()["stages"]["store"]["stale"] is True
    with pytest.raises(KeyError, match="not registered"):
        hb.beat("nope")
    with pytest.raises(KeyError):
        hb.set_active("nope", True)
    with pytest.raises(ValueError):
        hb.register("bad", max_age_s=0)


def test_heartbeats_ignore_wall_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    hb = Heartbeats()  # default clock: time.monotonic
    hb.register("fusion", max_age_s=5.0)
    hb.beat("fusion")
    monkeypatch.setattr(time, "time", lambda: 0.0)  # an RTC-less Pi jumping its wall clock
    assert hb.healthy()


# --- WatchdogPetter ----------------------------------------------------------------------------


def test_petter_pings_stop_when_stalled_and_resume(
    listener: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    hb = Heartbeats()
    hb.register("camera", max_age_s=0.5)
    hb.register("fusion", max_age_s=60.0)
    notifier = SystemdNotifier()
    petter = WatchdogPetter(notifier, hb, interval_s=0.05)
    with caplog.at_level(logging.INFO, logger="affectbox.health"):
        assert petter.start()
        try:
            # healthy: pings arrive (keep the camera beating while we listen)
            pings = 0
            deadline = time.monotonic() + 5.0
            listener.settimeout(0.2)
            while pings < 3 and time.monotonic() < deadline:
                hb.beat("camera")
                with contextlib.suppress(TimeoutError):
                    pings += listener.recv(4096) == b"WATCHDOG=1"
            assert pings >= 3

            # stall the camera on purpose: a STATUS naming it, then silence
            got = recv_until(listener, "STATUS=stalled")
            assert "camera" in got[-1] and "fusion" not in got[-1]
            assert recv_all(listener, wait_s=0.3) == []
            assert petter.stalled == ["camera"]

            # it beats again: a recovery STATUS, and the pings resume
            hb.beat("camera")
            got = recv_until(listener, "STATUS=all pipeline stages fresh again")
            got = recv_until(listener, "WATCHDOG=1")
            assert petter.stalled == []
        finally:
            t0 = time.monotonic()
            petter.stop()
            assert time.monotonic() - t0 < 1.0
            notifier.close()
    stalled_logs = [r for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalled_logs) == 1 and "camera" in stalled_logs[0].getMessage()
    assert any("recovered" in r.getMessage() for r in caplog.records)


def test_petter_stop_joins_fast_with_long_interval(listener: socket.socket) -> None:
    hb = Heartbeats()
    notifier = SystemdNotifier()
    petter = WatchdogPetter(notifier, hb, interval_s=60.0)
    assert petter.start()
    assert recv_until(listener, "WATCHDOG=1")  # first check runs at once
    t0 = time.monotonic()
    petter.stop()
    assert time.monotonic() - t0 < 1.0
    notifier.close()


def test_petter_without_watchdog_does_not_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    petter = WatchdogPetter(SystemdNotifier(""), Heartbeats())
    assert petter.interval_s is None and not petter.start()
    petter.stop()
    with pytest.raises(ValueError):
        WatchdogPetter(SystemdNotifier(""), Heartbeats(), interval_s=0)


def test_petter_uses_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert WatchdogPetter(SystemdNotifier(""), Heartbeats()).interval_s == 0.1


# --- Pi health ---------------------------------------------------------------------------------


def fake_pi(root: Path, throttled: str = "50005\n") -> Path:
    files = {
        "sys/class/thermal/thermal_zone0/temp": "48300\n",
        "sys/devices/platform/soc/soc:firmware/get_throttled": throttled,
        "proc/device-tree/model": "Raspberry Pi 4 Model B Rev 1.4\0",
        "proc/uptime": "12345.67 23456.78\n",
        "proc/loadavg": "0.52 0.40 0.31 2/345 6789\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


def test_pi_health_from_fake_tree(tmp_path: Path) -> None:
    root = fake_pi(tmp_path)
    assert read_cpu_temperature_c(root) == pytest.approx(48.3)
    health = pi_health(root, vcgencmd=None)
    assert health["cpu_temperature_c"] == pytest.approx(48.3)
    assert health["model"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert health["uptime_s"] == pytest.approx(12345.67)
    assert health["load_average"] == (0.52, 0.40, 0.31)
    assert health["throttled"] == {
        "under_voltage_now": True,
        "frequency_capped_now": False,
        "throttled_now": True,
        "soft_temp_limit_now": False,
        "under_voltage_since_boot": True,
        "frequency_capped_since_boot": False,
        "throttled_since_boot": True,
        "soft_temp_limit_since_boot": False,
        "raw": "0x50005",
        "source": "sysfs",
    }


def test_throttled_bits() -> None:
    flags = decode_throttled(0x8000A)
    assert flags["frequency_capped_now"] and flags["soft_temp_limit_now"] and flags["soft_temp_limit_since_boot"]
    assert not flags["under_voltage_now"] and not flags["throttled_since_boot"]
    assert not any(v for k, v in decode_throttled(0).items() if k not in ("raw", "source"))


def test_throttled_from_vcgencmd_when_sysfs_absent(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "vcgencmd"
    script.parent.mkdir()
    script.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x50005\n')
    script.chmod(0o755)
    flags = read_throttled(tmp_path / "empty", vcgencmd=str(script))
    assert flags is not None and flags["source"] == "vcgencmd" and flags["raw"] == "0x50005"
    assert flags["under_voltage_now"] and flags["throttled_since_boot"]


def test_absent_or_garbled_files_give_none(tmp_path: Path) -> None:
    assert pi_health(tmp_path, vcgencmd=None) == {
        "cpu_temperature_c": None, "throttled": None, "model": None, "uptime_s": None, "load_average": None,
    }
    assert read_throttled(tmp_path, vcgencmd=str(tmp_path / "no-such-vcgencmd")) is None
    root = fake_pi(tmp_path / "pi", throttled="garbage\n")
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("hot\n")
    (root / "proc/loadavg").write_text("\n")
    health = pi_health(root, vcgencmd=None)
    assert health["cpu_temperature_c"] is None and health["throttled"] is None and health["load_average"] is None
