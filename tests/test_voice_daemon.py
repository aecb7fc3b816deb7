"""Speaker attribution in the live daemon, replaying a two-voice dialogue, with a real Mosquitto broker.

The clinician's voice is enrolled with `affectbox voice enroll` into the daemon's state folder;
the daemon replays the dialogue (audio only) at real-time pace. Checked: stored windows and the
summary count the clinician's speech as `other` and the patient's as the patient's; the `mood`
and `summary` events (schema 2) carry those seconds and validate; the voiceprint (its numbers,
its file) appears in no MQTT payload, no log line and no export.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from device.store import Store
from tests.daemon_harness import DaemonProcess
from tests.mqtt_support import Broker, Observer, events, needs_broker, validate
from tests.support import wait_until
from tests.test_daemon_hub import hub_config
from tests.voice_media import voice_files

pytestmark = [pytest.mark.timeout(300), needs_broker]


def test_daemon_counts_the_enrolled_voice_and_never_sends_it(tmp_path: Path):
    (tmp_path / "media").mkdir()
    media = voice_files(tmp_path / "media")
    spans = json.loads(media["turns"].read_text())
    broker = Broker(tmp_path / "broker")
    broker.start()
    observer = Observer(broker.port, ["affectbox/#"])
    config = hub_config(tmp_path, broker.port)
    daemon = None
    try:
        enrolled = subprocess.run([sys.executable, "-m", "device", "voice", "enroll", "--name", "dr-smith",
                                   str(media["enroll"]), "--yes", "--config", str(config)],
                                  capture_output=True, text=True, timeout=120, check=False)
        assert enrolled.returncode == 0, enrolled.stderr
        voiceprint = json.loads((tmp_path / "state" / "voiceprints" / "dr-smith.voiceprint.json").read_text())
        # distinctive numbers of the voiceprint (the ReLU leaves many zeros; those say nothing)
        numbers = [f"{x}" for x in voiceprint["embedding"] if len(f"{x}") >= 7][:12]
        assert len(numbers) >= 8

        daemon = DaemonProcess(tmp_path, media["dialogue"], extra_args=("--patient", "p-voice"), config=config)
        daemon.wait_ready()
        session_id = wait_until(lambda: (daemon.status().get("session") or {}).get("session_id"), 30)
        assert session_id, daemon.log()
        length = spans[-1][1] + 1.5
        wait_until(lambda: (daemon.status().get("session") or {}).get("elapsed_s", 0) > length, length + 30)
        assert "session_id" in daemon.session("stop"), daemon.log()

        def arrived(ms) -> bool:
            return any(e["session_id"] == session_id for e in events(ms, "/summary"))

        assert observer.wait_for(arrived, 45), daemon.log()
        with Store.open(tmp_path / "state" / "affectbox.db", readonly=True) as store:
            windows = store.windows(session_id)
        other_s = sum(w["speakers"]["other_s"] for w in windows)
        patient_s = sum(w["speakers"]["patient_s"] for w in windows)
        truth = {who: sum(e - s for s, e, w in spans if w == who) for who in ("patient", "clinician")}
        assert other_s == pytest.approx(truth["clinician"], rel=0.35), windows
        assert patient_s == pytest.approx(truth["patient"], rel=0.35), windows
        assert all(w["speakers"]["attributed"] for w in windows if w["speakers"]["other_s"] > 0)
        # the window's speech coverage and prosody hold the patient's speech only
        speech_s = sum((w["modalities"].get("speech") or {}).get("seconds", 0.0) for w in windows)
        assert speech_s == pytest.approx(patient_s, abs=0.05)

        with observer.cond:
            raw = [m for m in observer.messages if m.topic.startswith("affectbox/")]
        mine = [e for e in events(raw) if e.get("session_id") == session_id]
        for payload in mine:
            validate(payload["kind"], payload)
            assert payload["schema"] == 2
        moods = [e for e in mine if e["kind"] == "mood"]
        summary = next(e for e in mine if e["kind"] == "summary")
        assert sum(m["speakers"]["other_s"] for m in moods) >= other_s - 0.01  # duplicates may add
        assert summary["speakers"]["attributed"] is True
        assert summary["speakers"]["other_s"] == pytest.approx(other_s, abs=0.01)

        export = daemon.cli("export", "--session", session_id, "--format", "jsonl")
        daemon.terminate()
        daemon = None
        log = tmp_path.glob("daemon-*.log")
        texts = {"mqtt": b"".join(m.payload for m in raw).decode("utf-8", "replace"),
                 "log": "".join(p.read_text(errors="replace") for p in log),
                 "export": export.stdout}
        for where, text in texts.items():
            assert where == "log" or "dr-smith" not in text, f"the voice's name appears in the {where}"
            for number in numbers:
                assert number not in text, f"a voiceprint number appears in the {where}"
    finally:
        if daemon is not None:
            daemon.kill()
        observer.close()
        broker.stop()
