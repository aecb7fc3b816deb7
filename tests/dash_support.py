"""A patient history for the dashboard's tests and bench, stored the way the collector stores it.

`History(engine)` builds sessions with the device contract's own builders (info, session, mood,
summary; derived event ids) and stores them through the hub's real `Writer` (intake, JSON
Schema, derive), with the device clock (`ts`) and the hub's receive time set to the session's
moment, so years of weekly sessions can be made in seconds. Nothing here touches the network.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine

from device.aggregate import NOT_A_DIAGNOSIS
from device.contract import payloads
from device.contract.timestamps import utc_timestamp
from device.labels import LABELS, VALENCE_AROUSAL
from hub.config import config_from_dict
from hub.writer import Delivery, Writer


def window(index: int, valence: float, rng: random.Random, seconds: float = 10.0, mood: bool = True) -> dict[str, Any]:
    """A window whose fused distribution leans to labels near `valence`."""
    weights = [math.exp(-4 * abs(VALENCE_AROUSAL[label][0] - valence)) + 0.05 * rng.random() for label in LABELS]
    total = sum(weights)
    probs = [w / total for w in weights]
    v = sum(p * VALENCE_AROUSAL[label][0] for p, label in zip(probs, LABELS, strict=True))
    a = sum(p * VALENCE_AROUSAL[label][1] for p, label in zip(probs, LABELS, strict=True))
    return {"index": index, "start": index * seconds, "end": (index + 1) * seconds,
            "probs": probs if mood else None, "dominant": LABELS[probs.index(max(probs))], "valence": v,
            "arousal": a, "fusion_weights": {"face": 0.6, "speech": 0.4},
            "modalities": {"face": {"items": 50, "present": 45, "share": 0.9},
                           "speech": {"items": 10, "present": 6, "share": 0.6, "seconds": 6.0}},
            "prosody": {"n_utterances": 2, "speech_s": 6.0, "speech_share": 0.6,
                        "pause_ratio": 0.3 + 0.1 * rng.random(), "speaking_rate": 3.5 + rng.random(),
                        "f0_sd_st": 2.0 + rng.random(), "f0_mean_hz": 180.0}}


class History:
    """Stores sessions for patients on devices at chosen moments."""

    def __init__(self, engine: Engine, seed: int = 7) -> None:
        self.engine = engine
        self.writer = Writer(engine, config_from_dict({"admission": {"require_approval": False}}))
        self.rng = random.Random(seed)
        self.seq: dict[tuple[str, str | None], int] = {}
        self.versions: dict[str, str] = {}

    def _seq(self, device_id: str, session_id: str | None) -> int:
        key = (device_id, session_id)
        self.seq[key] = self.seq.get(key, -1) + 1
        return self.seq[key]

    def _store(self, device_id: str, items: list[tuple[str, dict[str, Any]]], at: datetime) -> None:
        batch = [Delivery(f"affectbox/{device_id}/{kind}", payloads.encode(p), received_at=utc_timestamp(at))
                 for kind, p in items]
        totals = self.writer.store(batch)
        # "duplicate" too: on PostgreSQL the writer sees rowcount -1 for stored rows (see bench_dashboard.py)
        assert set(totals.counts) <= {"stored", "duplicate"}, totals.counts

    def info(self, device_id: str, at: datetime, model_version: str = "1.0", software: str = "0.9.0") -> None:
        self.versions[device_id] = model_version
        payload = payloads.info_payload(device_id, self._seq(device_id, None), software_version=software,
                                        models=[{"name": "face", "version": model_version, "sha256": "ab" * 32},
                                                {"name": "speech", "version": "1.0", "sha256": "cd" * 32}],
                                        commands=["start_session", "stop_session"], window_seconds=10.0, now=at)
        self._store(device_id, [("info", payload)], at)

    def status(self, device_id: str, at: datetime, *, camera_ok: bool = True, temperature: float = 52.0,
               throttled: bool = False, depth: int = 0, availability: str = "online") -> None:
        payload = payloads.status_payload(
            device_id, self._seq(device_id, None), state="idle", temperature_c=temperature, throttled=throttled,
            components={"camera": {"ok": camera_ok, "detail": None if camera_ok else "no frames for 30 s"},
                        "microphone": {"ok": True}}, outbox={"depth": depth}, uptime_s=100, now=at)
        batch = [Delivery(f"affectbox/{device_id}/status", payloads.encode(payload), received_at=utc_timestamp(at)),
                 Delivery(f"affectbox/{device_id}/availability", availability.encode(), received_at=utc_timestamp(at))]
        self.writer.store(batch)

    def session(self, device_id: str, patient: str, at: datetime, valence: float, *, windows: int = 12,
                noise: float = 0.1, mood_share: float = 1.0, interrupted: bool = False) -> str:
        """One session whose windows centre on `valence`; returns its session id."""
        if device_id not in self.versions:
            self.info(device_id, at - timedelta(days=1))
        sid = f"s-{at.strftime('%Y%m%d%H%M%S')}-{self.rng.randrange(10**6):06d}"

        def with_id(p: dict[str, Any], key: str) -> dict[str, Any]:
            p["event_id"] = payloads.derived_event_id(device_id, sid, p["kind"], key)
            return p

        items = [("session", with_id(payloads.session_payload(device_id, sid, self._seq(device_id, sid), "started",
                                                               patient_id=patient, now=at), "started"))]
        ws = []
        for i in range(windows):
            mood = (i + 0.5) / windows <= mood_share
            w = window(i, max(-1.0, min(1.0, valence + self.rng.gauss(0, noise))), self.rng, mood=mood)
            ws.append(w)
            items.append(("mood", with_id(payloads.mood_payload(device_id, sid, self._seq(device_id, sid), w,
                                                                now=at + timedelta(seconds=10 * (i + 1))),
                                          f"window:{i}")))
        end = at + timedelta(seconds=10 * windows)
        items.append(("session", with_id(payloads.session_payload(
            device_id, sid, self._seq(device_id, sid), "interrupted" if interrupted else "ended", patient_id=patient,
            duration_s=10.0 * windows, windows=windows, now=end), "ended")))
        moods = [w for w in ws if w["probs"] is not None]
        if moods:
            probs = [sum(w["probs"][k] for w in moods) / len(moods) for k in range(len(LABELS))]
            vs, ars = [w["valence"] for w in moods], [w["arousal"] for w in moods]
            mean_v = sum(vs) / len(vs)
            sd_v = (sum((v - mean_v) ** 2 for v in vs) / max(1, len(vs) - 1)) ** 0.5
            dominant_windows: dict[str, int] = {}
            for w in moods:
                dominant_windows[w["dominant"]] = dominant_windows.get(w["dominant"], 0) + 1
            summary = {"probs": probs, "dominant": max(dominant_windows, key=dominant_windows.get),
                       "valence": mean_v, "arousal": sum(ars) / len(ars), "valence_sd": sd_v, "arousal_sd": 0.1,
                       "dominant_windows": dominant_windows}
        else:
            summary = {"probs": None, "dominant": None, "valence": None, "arousal": None}
        summary.update({"duration_s": 10.0 * windows, "windows": windows, "windows_with_mood": len(moods),
                        "coverage": {"face": {"items": 500, "present": 450, "share": 0.9},
                                     "speech": {"items": 100, "present": 60, "share": 0.6}},
                        "prosody": {"speech_s": 60.0, "f0_sd_st": 2.5, "speaking_rate": 4.0, "pause_ratio": 0.3,
                                    "f0_mean_hz": 180.0, "mean_pause_s": 0.5},
                        "notice": NOT_A_DIAGNOSIS})
        items.append(("summary", with_id(payloads.summary_payload(device_id, sid, self._seq(device_id, sid), summary,
                                                                  patient_id=patient, now=end), "summary")))
        self._store(device_id, items, at)
        return sid
