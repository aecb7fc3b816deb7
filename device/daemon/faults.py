"""Fault injection for end-to-end tests: stall a stage, stall or unplug a capture source.

Off unless the environment variable `AFFECTBOX_FAULTS` is set, so production never pays for it.
Syntax: faults separated by `;`, each `<what>@<after_s>[+<for_s>]` with times in seconds since
the daemon started (for capture sources: since the source was built):

- `stall:face@5`        the face stage blocks forever 5 s after start (the watchdog must stop)
- `stall:speech@5+3`    the speech stage blocks for 3 s
- `camera-stall@4+6`    camera reads block for 6 s (like a V4L2 read that hangs), then resume
- `camera-gone@4+6`     camera reads and reopens fail for 6 s (unplugged), then work again
- `microphone-stall@...`, `microphone-gone@...` likewise for the microphone
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from dataclasses import dataclass

from device.capture.live import Backend, CaptureError, Sample
from device.errors import AffectboxError

log = logging.getLogger(__name__)

ENV = "AFFECTBOX_FAULTS"
_FAULT_RE = re.compile(r"(stall:(?:face|speech|recorder)|(?:camera|microphone)-(?:stall|gone))"
                       r"@(\d+(?:\.\d+)?)(?:\+(\d+(?:\.\d+)?))?")


class FaultSpecError(AffectboxError):
    """AFFECTBOX_FAULTS does not parse."""


@dataclass(frozen=True)
class Fault:
    what: str
    after_s: float
    for_s: float | None  # None = for ever

    def active(self, elapsed_s: float) -> bool:
        return elapsed_s >= self.after_s and (self.for_s is None or elapsed_s < self.after_s + self.for_s)


def parse_faults(text: str | None) -> list[Fault]:
    """The faults of an AFFECTBOX_FAULTS value; FaultSpecError names the bad part."""
    faults = []
    for part in filter(None, (p.strip() for p in (text or "").split(";"))):
        match = _FAULT_RE.fullmatch(part)
        if not match:
            raise FaultSpecError(f"{ENV}: cannot parse {part!r} (expected e.g. 'stall:face@5' or 'camera-gone@4+6')")
        faults.append(Fault(match[1], float(match[2]), float(match[3]) if match[3] else None))
    return faults


class Faults:
    """The faults in force for this process, with its start time as the origin."""

    def __init__(self, faults: list[Fault], origin: float | None = None) -> None:
        self.faults = faults
        self.origin = time.monotonic() if origin is None else origin

    @classmethod
    def from_environment(cls) -> Faults:
        faults = parse_faults(os.environ.get(ENV))
        if faults:
            log.warning("fault injection is ON (%s=%s): for tests only", ENV, os.environ.get(ENV))
        return cls(faults)

    def __bool__(self) -> bool:
        return bool(self.faults)

    def find(self, what: str) -> Fault | None:
        return next((f for f in self.faults if f.what == what), None)

    def stall_point(self, stage: str) -> None:
        """Called by a stage once per loop: blocks while a `stall:<stage>` fault is active."""
        fault = self.find(f"stall:{stage}")
        while fault is not None and fault.active(time.monotonic() - self.origin):
            time.sleep(0.1)

    def wrap(self, backend: Backend, source: str) -> Backend:
        """The backend, or a FaultyBackend when a fault targets this source ('camera', 'microphone')."""
        stall, gone = self.find(f"{source}-stall"), self.find(f"{source}-gone")
        if stall is None and gone is None:
            return backend
        return FaultyBackend(backend, stall, gone)


class FaultyBackend:
    """A capture backend whose reads hang (stall) or fail like an unplugged device (gone)."""

    def __init__(self, inner: Backend, stall: Fault | None, gone: Fault | None) -> None:
        self.inner = inner
        self.name = f"faulty:{inner.name}"
        self.stall = stall
        self.gone = gone
        self.origin = time.monotonic()
        self._closed = threading.Event()

    def _elapsed(self) -> float:
        return time.monotonic() - self.origin

    def open(self) -> None:
        if self.gone is not None and self.gone.active(self._elapsed()):
            raise CaptureError(f"{self.inner.name}: device not present (injected fault)")
        self._closed.clear()
        self.inner.open()

    def read(self) -> Sample | None:
        if self.gone is not None and self.gone.active(self._elapsed()):
            raise CaptureError(f"{self.inner.name}: device vanished (injected fault)")
        # a hung read: blocks (ignoring close, like a stuck V4L2 read) until the stall is over
        while self.stall is not None and self.stall.active(self._elapsed()):
            time.sleep(0.05)
        return self.inner.read()

    def close(self) -> None:
        self._closed.set()
        self.inner.close()
