"""Liveness and health for the appliance: sd_notify, stage heartbeats, the watchdog, Pi sensors.

- `SystemdNotifier` speaks the sd_notify protocol directly on the datagram socket named by
  `$NOTIFY_SOCKET` (an absolute path, or an abstract address written `@name`): no dependency, a
  no-op when the variable is unset, and a send that fails is counted and logged, never raised.
- `Heartbeats` is the registry each pipeline stage beats into (time of last progress, monotonic
  clock only: a Pi without RTC may jump its wall clock at boot when NTP arrives).
- `WatchdogPetter` sends `WATCHDOG=1` every interval only while every active required stage is
  fresh; a stuck stage stops the petting, so systemd's `WatchdogSec=` restarts the service.
- `pi_health()` reads CPU temperature, throttling/under-voltage flags, model, uptime and load from
  sysfs/procfs (`root` lets tests point at a fake tree); anything absent is None.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("affectbox.health")

STATUS_MAX_CHARS = 200


def sanitize_status(text: object) -> str:
    """One printable line, at most STATUS_MAX_CHARS characters (a newline would end the assignment)."""
    cleaned = "".join(ch if ch.isprintable() else " " for ch in str(text))
    line = " ".join(cleaned.split())
    if len(line) > STATUS_MAX_CHARS:
        line = line[: STATUS_MAX_CHARS - 3] + "..."
    return line


def _socket_address(value: str) -> str | None:
    """`$NOTIFY_SOCKET` as an AF_UNIX address: absolute path, or `@name` for the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None


def watchdog_interval(environ: dict[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings: half of `$WATCHDOG_USEC`, or None when the watchdog is off.

    As sd_watchdog_enabled(): `$WATCHDOG_USEC` must be a positive integer, and `$WATCHDOG_PID`,
    when set, must name this process (otherwise the watchdog belongs to someone else).
    """
    env = os.environ if environ is None else environ
    usec_text = env.get("WATCHDOG_USEC")
    if not usec_text:
        return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid_text = env.get("WATCHDOG_PID")
    if pid_text:
        try:
            if int(pid_text) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000


class SystemdNotifier:
    """sd_notify on `$NOTIFY_SOCKET` (read at construction); every method is a no-op when it is unset.

    Sends never raise: failures are counted in `failures`, the first one is logged as a warning and
    a later successful send logs how many were lost. Safe to call from several threads.
    """

    SEND_TIMEOUT_S = 1.0

    def __init__(self, notify_socket: str | None = None) -> None:
        raw = os.environ.get("NOTIFY_SOCKET") if notify_socket is None else notify_socket
        self.failures = 0
        self.sent = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._failing = False
        self._address: str | None = None
        if raw:
            self._address = _socket_address(raw)
            if self._address is None:
                log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor @abstract: sd_notify disabled", raw)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` assignments as one datagram; True when it was delivered to the socket."""
        if self._address is None or not assignments:
            return False
        data = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                    self._sock.settimeout(self.SEND_TIMEOUT_S)
                self._sock.sendto(data, self._address)
            except OSError as exc:
                self.failures += 1
                if not self._failing:
                    self._failing = True
                    log.warning("sd_notify to %s failed (%s); further failures are counted, not logged",
                                self._printable_address(), exc.strerror or exc)
                if self._sock is not None:  # start afresh next time (the listener may come back)
                    self._sock.close()
                    self._sock = None
                return False
            self.sent += 1
            if self._failing:
                self._failing = False
                log.info("sd_notify works again after %d failed sends in total", self.failures)
            return True

    def ready(self) -> bool:
        return self.notify("READY=1")

    def status(self, text: object) -> bool:
        return self.notify(f"STATUS={sanitize_status(text)}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def reloading(self) -> bool:
        # systemd >= 253 expects MONOTONIC_USEC with RELOADING=1 (Type=notify-reload); older ones ignore it
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def watchdog_interval(self) -> float | None:
        return watchdog_interval()

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def _printable_address(self) -> str:
        addr = self._address or ""
        return "@" + addr[1:] if addr.startswith("\0") else addr


@dataclass
class _Stage:
    max_age_s: float
    required: bool
    active: bool
    since: float  # registration or last activation: a grace start before the first beat
    last_beat: float | None = None
    beats: int = 0


class Heartbeats:
    """Thread-safe registry of pipeline stages and the monotonic time of their last progress.

    A stage is stale when it is active and neither beat nor was (re)activated within `max_age_s`.
    Inactive stages (the camera while no session runs) never count. Only required stages decide
    `healthy()`; optional ones (a modality the daemon can run without) are still listed by `stale()`.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._stages: dict[str, _Stage] = {}

    def register(self, stage: str, max_age_s: float, required: bool = True, active: bool = True) -> None:
        """Add a stage, or change its limits (its last beat is kept)."""
        if not (max_age_s > 0 and math.isfinite(max_age_s)):
            raise ValueError(f"max_age_s for stage {stage!r} must be a positive number, not {max_age_s!r}")
        with self._lock:
            now = self._clock()
            old = self._stages.get(stage)
            if old is None:
                self._stages[stage] = _Stage(float(max_age_s), required, active, now)
            else:
                old.max_age_s, old.required = float(max_age_s), required
                if active and not old.active:
                    old.since = now
                old.active = active

    def beat(self, stage: str) -> None:
        with self._lock:
            entry = self._get(stage)
            entry.last_beat = self._clock()
            entry.beats += 1

    def set_active(self, stage: str, active: bool) -> None:
        """Count the stage (True) or ignore it (False); activation restarts its grace period."""
        with self._lock:
            entry = self._get(stage)
            if active and not entry.active:
                entry.since = self._clock()
            entry.active = active

    def stale(self, required_only: bool = False) -> list[tuple[str, float]]:
        """Active stages past their max age, as (stage, seconds since last progress), oldest first."""
        with self._lock:
            now = self._clock()
            found = [
                (name, self._age(entry, now))
                for name, entry in self._stages.items()
                if entry.active and (entry.required or not required_only) and self._age(entry, now) > entry.max_age_s
            ]
        return sorted(found, key=lambda item: -item[1])

    def healthy(self) -> bool:
        return not self.stale(required_only=True)

    def snapshot(self) -> dict[str, Any]:
        """For the status page: overall health and, per stage, its limits, age and beat count."""
        with self._lock:
            now = self._clock()
            stages: dict[str, dict[str, Any]] = {}
            healthy = True
            for name, entry in self._stages.items():
                age = self._age(entry, now)
                is_stale = entry.active and age > entry.max_age_s
                healthy = healthy and not (is_stale and entry.required)
                stages[name] = {
                    "active": entry.active,
                    "required": entry.required,
                    "max_age_s": entry.max_age_s,
                    "last_beat_age_s": None if entry.last_beat is None else round(now - entry.last_beat, 3),
                    "stale": is_stale,
                    "beats": entry.beats,
                }
        return {"healthy": healthy, "stages": stages}

    def _get(self, stage: str) -> _Stage:
        try:
            return self._stages[stage]
        except KeyError:
            raise KeyError(f"heartbeat stage {stage!r} is not registered") from None

    @staticmethod
    def _age(entry: _Stage, now: float) -> float:
        start = entry.since if entry.last_beat is None else max(entry.last_beat, entry.since)
        return max(0.0, now - start)


class WatchdogPetter:
    """A daemon thread that pets the systemd watchdog every `interval_s` while the pipeline is healthy.

    `interval_s` defaults to half of `$WATCHDOG_USEC`; without one `start()` does nothing and returns
    False. When a required stage goes stale the petting stops (systemd restarts the service), the
    stage is logged once and a `STATUS=` line names it; petting resumes if the stage recovers.
    """

    def __init__(self, notifier: SystemdNotifier, heartbeats: Heartbeats, interval_s: float | None = None) -> None:
        if interval_s is None:
            interval_s = notifier.watchdog_interval()
        if interval_s is not None and not (interval_s > 0 and math.isfinite(interval_s)):
            raise ValueError(f"watchdog interval must be a positive number of seconds, not {interval_s!r}")
        self.notifier = notifier
        self.heartbeats = heartbeats
        self.interval_s = interval_s
        self.pings = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stalled: set[str] = set()

    @property
    def stalled(self) -> list[str]:
        """Required stages that stopped the petting at the last check (empty while healthy)."""
        return sorted(self._stalled)

    def start(self) -> bool:
        if self.interval_s is None:
            log.info("systemd watchdog not enabled (no WATCHDOG_USEC for this process): not petting")
            return False
        if self._thread is not None and self._thread.is_alive():
            return True
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="watchdog-petter", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout_s: float = 1.0) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self._thread = None

    def check(self) -> bool:
        """One tick: pet when healthy, report a stall or a recovery; True when it petted."""
        try:
            stale = self.heartbeats.stale(required_only=True)
        except Exception:  # a broken health check must not keep the watchdog happy
            log.exception("heartbeat check failed: not petting the watchdog")
            return False
        names = {name for name, _ in stale}
        if names:
            new = names - self._stalled
            if new:
                detail = ", ".join(f"{name} ({age:.1f} s without progress)" for name, age in stale if name in new)
                log.error("pipeline stage stalled: %s; watchdog petting stopped", detail)
            if names != self._stalled:
                listing = ", ".join(f"{name} {age:.0f} s" for name, age in stale)
                self.notifier.status(f"stalled: {listing}; watchdog not petted")
            self._stalled = names
            return False
        if self._stalled:
            log.warning("pipeline stages recovered (%s); watchdog petting resumed", ", ".join(sorted(self._stalled)))
            self.notifier.status("all pipeline stages fresh again")
            self._stalled = set()
        if self.notifier.watchdog():
            self.pings += 1
        return True

    def _run(self) -> None:
        assert self.interval_s is not None
        while True:
            self.check()
            if self._stop.wait(self.interval_s):
                return


# --- Raspberry Pi health -------------------------------------------------------------------------

THERMAL_ZONE = "sys/class/thermal/thermal_zone0/temp"
GET_THROTTLED = "sys/devices/platform/soc/soc:firmware/get_throttled"
VCGENCMD_TIMEOUT_S = 2.0

# Bit meanings of `vcgencmd get_throttled` (Raspberry Pi documentation, "get_throttled").
THROTTLE_BITS: dict[str, int] = {
    "under_voltage_now": 0,
    "frequency_capped_now": 1,
    "throttled_now": 2,
    "soft_temp_limit_now": 3,
    "under_voltage_since_boot": 16,
    "frequency_capped_since_boot": 17,
    "throttled_since_boot": 18,
    "soft_temp_limit_since_boot": 19,
}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def read_cpu_temperature_c(root: str | os.PathLike[str] = "/") -> float | None:
    """CPU temperature in degrees Celsius from thermal zone 0 (millidegrees), None where absent."""
    text = _read_text(Path(root) / THERMAL_ZONE)
    if text is None:
        return None
    try:
        return int(text.strip()) / 1000
    except ValueError:
        return None


def decode_throttled(value: int, source: str = "") -> dict[str, Any]:
    """The get_throttled bitmask as named flags, with the raw value in hex."""
    flags: dict[str, Any] = {name: bool(value >> bit & 1) for name, bit in THROTTLE_BITS.items()}
    flags["raw"] = hex(value)
    flags["source"] = source
    return flags


def _parse_hex(text: str) -> int | None:
    text = text.strip().removeprefix("throttled=")
    try:
        return int(text, 16)  # int() accepts an optional 0x prefix in base 16
    except ValueError:
        return None


def read_throttled(root: str | os.PathLike[str] = "/", vcgencmd: str | None = "vcgencmd") -> dict[str, Any] | None:
    """Throttling and under-voltage flags: firmware sysfs file, else `vcgencmd get_throttled`, else None."""
    text = _read_text(Path(root) / GET_THROTTLED)
    if text is not None:
        value = _parse_hex(text)
        return None if value is None else decode_throttled(value, "sysfs")
    exe = shutil.which(vcgencmd) if vcgencmd else None
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "get_throttled"], capture_output=True, text=True,
                              timeout=VCGENCMD_TIMEOUT_S, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("vcgencmd get_throttled failed: %s", exc)
        return None
    if done.returncode != 0:
        return None
    value = _parse_hex(done.stdout)
    return None if value is None else decode_throttled(value, "vcgencmd")


def read_model(root: str | os.PathLike[str] = "/") -> str | None:
    text = _read_text(Path(root) / "proc/device-tree/model")
    if text is None:
        return None
    return text.replace("\0", "").strip() or None


def read_uptime_s(root: str | os.PathLike[str] = "/") -> float | None:
    text = _read_text(Path(root) / "proc/uptime")
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


def read_load_average(root: str | os.PathLike[str] = "/") -> tuple[float, float, float] | None:
    text = _read_text(Path(root) / "proc/loadavg")
    try:
        parts = text.split() if text else []
        return (float(parts[0]), float(parts[1]), float(parts[2])) if len(parts) >= 3 else None
    except ValueError:
        return None


def pi_health(root: str | os.PathLike[str] = "/", vcgencmd: str | None = "vcgencmd") -> dict[str, Any]:
    """Everything the status page shows about the board; each value is None where unavailable."""
    return {
        "cpu_temperature_c": read_cpu_temperature_c(root),
        "throttled": read_throttled(root, vcgencmd),
        "model": read_model(root),
        "uptime_s": read_uptime_s(root),
        "load_average": read_load_average(root),
    }
