"""A stand-in for the daemon behind the status page: `ApplianceControl` over a real Store, windows on demand.

Used by the API tests (and by the browser test of the pages while device.daemon.service does not
exist yet). Sessions, windows and summaries go through the real `Store` and the real
`WindowAggregator`; only capture and the models are replaced: `feed(n)` makes `n` windows whose
dominant mood cycles through the labels, so the live indicator visibly changes.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from device.aggregate import WindowAggregator
from device.config import Config
from device.errors import AffectboxError
from device.labels import LABELS
from device.observation import Observation
from device.store import SessionStateError, Store

DEVICE_ID = "test-device"


class ConsentError(AffectboxError):
    """The double's refusal when consent is required and not given (as the daemon refuses)."""


def peaked(label: str, peak: float = 0.7) -> np.ndarray:
    probs = np.full(len(LABELS), (1.0 - peak) / (len(LABELS) - 1))
    probs[LABELS.index(label)] = peak
    return probs


class ApplianceDouble:
    """Implements device.web.control.ApplianceControl; `calls` records every start and stop."""

    def __init__(self, config: Config, store_path: Path, *, auto_feed_s: float | None = None,
                 cycle: tuple[str, ...] = ("happy", "sad", "neutral", "surprise")) -> None:
        self.config = config
        self.store_path = Path(store_path)
        self.store = Store.open(self.store_path, baseline_min_sessions=config.store.baseline_min_sessions)
        self.cycle = cycle
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.RLock()
        self._session: dict[str, Any] | None = None
        self._started_mono = 0.0
        self._boot = time.monotonic()
        self._aggregator: WindowAggregator | None = None
        self._windows: list[dict[str, Any]] = []
        self._fed = 0
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        if auto_feed_s is not None:
            self._feeder = threading.Thread(target=self._auto_feed, args=(auto_feed_s,), daemon=True)
            self._feeder.start()

    def close(self) -> None:
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(5)
        self.store.close()

    # ---- ApplianceControl ------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._lock:
            session = self._session_json()
            state = "running" if session else "idle"
        ok = {"state": "ok", "detail": "replay", "frames": 150 * self._fed, "dropped": 3}
        return {
            "state": state, "software_version": "0.1.0", "uptime_s": round(time.monotonic() - self._boot, 1),
            "device": {"id": DEVICE_ID, "site": "Test clinic", "room": "Room 1"},
            "session": session,
            "components": {
                "camera": ok, "microphone": {"state": "ok", "detail": "replay", "frames": 9000, "dropped": 0},
                "face": {"state": "ok", "detail": "", "frames": 1200}, "speech": {"state": "ok", "detail": ""},
                "store": {"state": "ok", "detail": str(self.store_path)},
                "hub": {"state": "off", "detail": "hub disabled", "connected": False,
                        "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": None}},
            },
            "models": [{"name": "face_expression", "version": "1", "sha256": "ab" * 32},
                       {"name": "speech_emotion", "version": "1", "sha256": "cd" * 32}],
            "pi": {"temperature_c": None, "throttled": None, "model": None, "load_average": [0.1, 0.2, 0.3]},
        }

    def live(self) -> dict[str, Any]:
        with self._lock:
            session = self._session_json()
            windows = [dict(w) for w in self._windows[-60:]] if session else []
            label = windows[-1]["dominant"] if windows else None
            return {"session": session, "windows": windows,
                    "now": {"face_present": bool(self._fed % 2) if session else None,
                            "speech_active": bool(self._fed % 3 == 1) if session else None,
                            "face_label": label}}

    def start_session(self, patient_id: str, *, consent: bool = False, max_duration_s: float | None = None,
                      source: str = "web") -> dict[str, Any]:
        with self._lock:
            self.calls.append(("start", {"patient_id": patient_id, "consent": consent,
                                         "max_duration_s": max_duration_s, "source": source}))
            if self.config.session.consent_required and not consent:
                raise ConsentError("consent is required before a session starts on this device")
            session_id = self.store.start_session(patient_id, DEVICE_ID, consent, {"source": source})
            record = self.store.session(session_id)
            limit = max_duration_s if max_duration_s is not None else self.config.session.max_duration_minutes * 60
            self._session = {"session_id": session_id, "patient_id": patient_id, "started_utc": record.started_utc,
                             "max_duration_s": limit}
            self._started_mono = time.monotonic()
            self._aggregator = WindowAggregator(self.config.aggregation, self.config.fusion)
            self._windows = []
            self._fed = 0
            return {**self._session, "state": "running", "source": source}

    def stop_session(self, *, source: str = "web") -> dict[str, Any]:
        with self._lock:
            self.calls.append(("stop", {"source": source}))
            if self._session is None or self._aggregator is None:
                raise SessionStateError("no session is running")
            session_id = self._session["session_id"]
            for window in self._aggregator.flush():
                self.store.add_window(session_id, window.to_json())
            stored = self.store.end_session(session_id, reason=f"stopped from {source}")
            self._session = None
            self._aggregator = None
            return {"session_id": session_id, "state": "ended", "summary": stored.summary}

    # ---- test controls ---------------------------------------------------------------------------

    def feed(self, n: int = 1) -> list[dict[str, Any]]:
        """Make `n` more windows of the running session (face every 0.1 s, one utterance each)."""
        made = []
        with self._lock:
            if self._session is None or self._aggregator is None:
                raise SessionStateError("no session is running")
            length = self.config.aggregation.window_seconds
            for _ in range(n):
                k = self._fed
                label = self.cycle[k % len(self.cycle)]
                t0 = k * length
                closed = []
                for i in range(int(length * 10)):
                    closed += self._aggregator.add(Observation(t0 + i / 10, "face", peaked(label), 0.9))
                closed += self._aggregator.add(Observation(t0 + 1.0, "speech", peaked(label, 0.6), 0.8,
                                                           {"duration": 3.0}))
                self._fed += 1
                # close this window now: the next window's first item moves the watermark past it
                closed += self._aggregator.add(Observation(t0 + length, "face", None, 0.0))
                for window in closed:
                    row = window.to_json()
                    self.store.add_window(self._session["session_id"], row)
                    self._windows.append(row)
                    made.append(row)
        return made

    def _session_json(self) -> dict[str, Any] | None:
        if self._session is None:
            return None
        return {**self._session, "elapsed_s": round(time.monotonic() - self._started_mono, 1)}

    def _auto_feed(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with self._lock:
                if self._session is not None:
                    self.feed(1)
