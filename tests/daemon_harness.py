"""Run the real daemon (`affectbox run --replay`) as a subprocess, with a test sd_notify socket.

Shared by the daemon, hub and status-page tests: a `DaemonProcess` starts `python -m device run`
with its own config, state folder, control socket and `NOTIFY_SOCKET`, records every sd_notify
datagram with its arrival time, and talks to the daemon through the real CLI.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[1]


class NotifySocket:
    """A datagram socket standing in for systemd's notify socket; records (time, message)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.messages: list[tuple[float, str]] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(path))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.decode("utf-8", "replace").splitlines():
                self.messages.append((time.monotonic(), line))

    def lines(self, prefix: str = "") -> list[str]:
        return [m for _, m in list(self.messages) if m.startswith(prefix)]

    def times(self, message: str) -> list[float]:
        return [t for t, m in list(self.messages) if m == message]

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(1)


def write_config(folder: Path, extra: str = "", window_seconds: float = 2.0) -> Path:
    """A config whose every path is under `folder` (state, store, socket); the page is off unless `extra` says."""
    state = folder / "state"
    text = f"""
[device]
id = "test-device"
state_dir = "{state}"
[store]
path = "{state / 'affectbox.db'}"
[control]
socket = "{folder / 'control.sock'}"
[aggregation]
window_seconds = {window_seconds}
[capture]
stale_after_s = 1.5
[session]
debug_recording_dir = "{state / 'debug'}"
"""
    if "[web]" not in extra:
        text += "[web]\nenabled = false\n"
    path = folder / "config.toml"
    path.write_text(text + extra)
    return path


class DaemonProcess:
    """`affectbox run --replay VIDEO` in a subprocess with a recording notify socket.

    `speed` is passed as `--speed`: the replay plays that many times faster than real time. Item
    times are compressed alike, so windows, session limits, faults and the watchdog still run on
    the wall clock; a faster replay only packs more media into each second (more frames to analyse).
    """

    def __init__(self, folder: Path, video: Path, *, config: Path | None = None, loop: bool = False,
                 watchdog_usec: int | None = 1_000_000, faults: str | None = None,
                 env: dict[str, str] | None = None, extra_args: tuple[str, ...] = (), speed: float = 1.0) -> None:
        self.folder = folder
        self.config = config or write_config(folder)
        self.video = video
        self.notify = NotifySocket(folder / f"notify-{time.monotonic_ns()}.sock")
        self.log_path = folder / f"daemon-{time.monotonic_ns()}.log"
        environment = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "WATCHDOG_PID",
                                                                        "NOTIFY_SOCKET", "AFFECTBOX_FAULTS")}
        environment["NOTIFY_SOCKET"] = str(self.notify.path)
        environment["PYTHONUNBUFFERED"] = "1"
        if watchdog_usec is not None:
            environment["WATCHDOG_USEC"] = str(watchdog_usec)
        if faults:
            environment["AFFECTBOX_FAULTS"] = faults
        environment.update(env or {})
        args = [sys.executable, "-m", "device", "run", "--config", str(self.config), "--replay", str(video),
                *(("--loop",) if loop else ()), *(("--speed", f"{speed:g}") if speed != 1.0 else ()), *extra_args]
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        if not wait_until(lambda: self.notify.lines("READY=1") or self.proc.poll() is not None, timeout):
            raise AssertionError(f"no READY=1 within {timeout} s; log:\n{self.log()}")
        if not self.notify.lines("READY=1"):
            raise AssertionError(f"the daemon exited with {self.proc.returncode}; log:\n{self.log()}")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([sys.executable, "-m", "device", *args, "--config", str(self.config)], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"affectbox {' '.join(args)} failed: {result.stderr}\nlog:\n{self.log()}")
        return result

    def session(self, *args: str, check: bool = True) -> dict[str, Any]:
        result = self.cli("session", *args, "--json", check=check)
        return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr.strip()}

    def status(self) -> dict[str, Any]:
        return self.session("status")

    def terminate(self, timeout: float = 15.0, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def close(self) -> None:
        self.notify.close()
        self._log.close()
