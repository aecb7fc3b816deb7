"""The real daemon end to end: `affectbox run --replay` as a subprocess on generated media.

systemd is replaced only by a test notify socket: READY, STATUS, WATCHDOG and STOPPING arrive
as they would under `Type=notify`. Sessions are driven through the real CLI and control socket,
and the local record is read back with the store, read-only.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from device.store import Store
from tests.daemon_harness import DaemonProcess, write_config
from tests.support import wait_until

pytestmark = pytest.mark.timeout(240)


def stored(db: Path) -> Store:
    return Store.open(db, readonly=True)


def window_count(db: Path, session_id: str) -> int:
    if not db.exists():
        return 0
    with stored(db) as store:
        return store.session(session_id).windows


def test_session_from_the_cli_is_stored_with_a_summary(tmp_path: Path, av_session):
    daemon = DaemonProcess(tmp_path, av_session["path"], loop=True)
    try:
        daemon.wait_ready()
        status = daemon.status()
        assert status["state"] == "idle" and status["device"]["id"] == "test-device"
        assert {m["name"] for m in status["models"]} == {
            "blazeface_full_range", "affectbox_face_expression", "affectbox_speech_emotion"}
        # the watchdog is petted while every stage is fresh (WATCHDOG_USEC = 1 s: a ping every 0.5 s)
        assert wait_until(lambda: len(daemon.notify.times("WATCHDOG=1")) >= 3, 10)

        started = daemon.session("start", "--patient", "p-0042", "--consent")
        assert started["patient_id"] == "p-0042"
        refused = daemon.cli("session", "start", "--patient", "p-0043", check=False)
        assert refused.returncode != 0 and "already running" in refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
        db = tmp_path / "state" / "affectbox.db"
        assert wait_until(lambda: window_count(db, started["session_id"]) >= 5, 60), daemon.log()
        live = daemon.status()
        assert live["state"] == "running" and live["session"]["session_id"] == started["session_id"]
        assert live["components"]["face"]["analysed"] > 0 and live["components"]["speech"]["analysed"] > 0
        ended = daemon.session("stop")
        assert ended["state"] == "ended" and ended["windows"] >= 5
        assert daemon.status()["state"] == "idle"
        assert any(line.startswith("STATUS=") for line in daemon.notify.lines())
    finally:
        code = daemon.terminate()
    assert code == 0, daemon.log()
    assert daemon.notify.lines("STOPPING=1")
    with stored(db) as store:
        record = store.session(started["session_id"])
        assert record.state == "ended" and record.consent and record.windows == ended["windows"]
        summary = store.summary(record.id)
        assert summary is not None and summary.summary["windows"] == record.windows
        windows = store.windows(record.id)
        assert [w["index"] for w in windows] == list(range(len(windows)))
        assert any(w.get("dominant") for w in windows)
        assert any("speech" in w["modalities"] for w in windows) and any("face" in w["modalities"] for w in windows)
        assert store.integrity_check()
    # privacy: nothing but the SQLite files (and the device id) in the state folder
    names = {p.name for p in (tmp_path / "state").rglob("*") if p.is_file()}
    assert names <= {"affectbox.db", "affectbox.db-wal", "affectbox.db-shm", "device-id"}, names


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_ends_a_running_session_as_interrupted(tmp_path: Path, av_session, signum: signal.Signals):
    daemon = DaemonProcess(tmp_path, av_session["path"], loop=True, extra_args=("--patient", "p-7"))
    db = tmp_path / "state" / "affectbox.db"
    daemon.wait_ready()
    session_id = wait_until(lambda: (daemon.status().get("session") or {}).get("session_id"), 30)
    assert session_id
    assert wait_until(lambda: window_count(db, session_id) >= 2, 60), daemon.log()
    began = time.monotonic()
    code = daemon.terminate(signum=signum)
    assert code == 0 and time.monotonic() - began < 8, daemon.log()
    assert f"stopping: the service was stopped ({signum.name})" in daemon.log(), daemon.log()
    with stored(db) as store:
        record = store.session(session_id)
        assert record.state == "interrupted" and signum.name in (record.end_reason or "")
        assert record.windows >= 2 and store.summary(session_id) is not None


def test_watchdog_stops_when_a_stage_is_stuck(tmp_path: Path, av_session):
    daemon = DaemonProcess(tmp_path, av_session["path"], loop=True, faults="stall:face@6")
    try:
        daemon.wait_ready()
        assert wait_until(lambda: len(daemon.notify.times("WATCHDOG=1")) >= 2, 10)
        # the face stage stops beating at 6 s; 5 s later it is stale and the petting stops
        assert wait_until(lambda: any("stalled: face" in m for m in daemon.notify.lines("STATUS=")), 30), \
            daemon.notify.lines()
        stalled_at = time.monotonic()
        time.sleep(3)
        assert [t for t in daemon.notify.times("WATCHDOG=1") if t > stalled_at + 0.2] == []
        status = daemon.status()
        assert status["components"]["face"]["state"] == "failed" and status["watchdog"]["stalled"] == ["face"]
    finally:
        daemon.kill()


def test_kill_9_mid_session_keeps_every_stored_window(tmp_path: Path, av_session):
    config = write_config(tmp_path)
    db = tmp_path / "state" / "affectbox.db"
    first = DaemonProcess(tmp_path, av_session["path"], config=config, loop=True, extra_args=("--patient", "p-9"))
    first.wait_ready()
    session_id = wait_until(lambda: (first.status().get("session") or {}).get("session_id"), 30)
    assert wait_until(lambda: window_count(db, session_id) >= 3, 60), first.log()
    first.kill()
    with stored(db) as store:
        before = store.windows(session_id)
        assert store.session(session_id).state == "running" and len(before) >= 3

    second = DaemonProcess(tmp_path, av_session["path"], config=config, loop=True)
    try:
        second.wait_ready()
        status = second.status()
        assert status["recovered_sessions"] == [session_id] and status["state"] == "idle"
    finally:
        assert second.terminate() == 0
    with stored(db) as store:
        assert store.integrity_check()
        record = store.session(session_id)
        assert record.state == "interrupted"
        assert store.windows(session_id) == before
        summary = store.summary(session_id)
        assert summary is not None and summary.summary.get("recovered") is True


@pytest.mark.parametrize("fault", ["camera-gone", "camera-stall"])
def test_camera_loss_degrades_to_audio_and_recovers(tmp_path: Path, av_session, fault: str):
    daemon = DaemonProcess(tmp_path, av_session["path"], loop=True, faults=f"{fault}@14+6",
                           extra_args=("--patient", "p-cam"))
    try:
        daemon.wait_ready()
        degraded = wait_until(lambda: (s := daemon.status())["components"]["camera"]["state"] == "degraded" and s, 30)
        assert degraded, daemon.log()
        assert degraded["state"] == "running" and degraded["health"] == "degraded"
        assert degraded["components"]["microphone"]["state"] == "ok"
        speech_before = degraded["components"]["speech"]["analysed"]
        faces_before = degraded["components"]["face"]["analysed"]
        time.sleep(2)
        during = daemon.status()
        assert during["components"]["speech"]["analysed"] > speech_before  # audio goes on
        if during["components"]["camera"]["state"] == "degraded":  # still out: no frame was analysed
            assert during["components"]["face"]["analysed"] <= faces_before + 1
        recovered = wait_until(lambda: (s := daemon.status())["components"]["camera"]["state"] == "ok" and s, 30)
        assert recovered, daemon.log()
        assert recovered["components"]["camera"]["reopens"] >= 1 and recovered["state"] == "running"
        frames = recovered["components"]["face"]["analysed"]
        assert wait_until(lambda: daemon.status()["components"]["face"]["analysed"] > frames + 5, 10)
        ended = daemon.session("stop")
    finally:
        assert daemon.terminate() == 0
    # the session went on through the outage and kept storing windows with both modalities around it
    with stored(tmp_path / "state" / "affectbox.db") as store:
        windows = store.windows(ended["session_id"])
    indexes = [w["index"] for w in windows]  # windows with no observation at all are not stored
    assert indexes == sorted(set(indexes)) and len(indexes) >= 5
    assert any("face" in w["modalities"] for w in windows) and any("speech" in w["modalities"] for w in windows)


@pytest.fixture(scope="module")
def blank_video(tmp_path_factory) -> Path:
    """12 s of an empty grey room at 10 fps, no audio track: no face, no speech."""
    import cv2
    import numpy as np

    path = tmp_path_factory.mktemp("blank") / "blank.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(120):
        writer.write(np.full((240, 320, 3), 90, dtype=np.uint8))
    writer.release()
    return path


def test_session_limits_stop_a_session_by_themselves(tmp_path: Path, av_session, blank_video):
    # maximum duration, asked for at start (0.1 min = 6 s)
    daemon = DaemonProcess(tmp_path / "a", av_session["path"], config=write_config(mkdir(tmp_path / "a")), loop=True)
    try:
        daemon.wait_ready()
        started = daemon.session("start", "--patient", "p-max", "--max-minutes", "0.1")
        assert started["max_duration_s"] == pytest.approx(6.0)
        assert wait_until(lambda: daemon.status()["state"] == "idle", 30)
    finally:
        assert daemon.terminate() == 0
    with stored(tmp_path / "a" / "state" / "affectbox.db") as store:
        record = store.session(started["session_id"])
    assert record.state == "ended" and "maximum duration" in record.end_reason
    assert 5.5 <= record.duration_s <= 9.0

    # auto-stop after 0.05 min (3 s) with neither a face nor speech; camera only (no audio track)
    folder = mkdir(tmp_path / "b")
    config = write_config(folder)
    config.write_text(config.read_text().replace("[session]\n", "[session]\nauto_stop_minutes = 0.05\n"))
    daemon = DaemonProcess(folder, blank_video, config=config, loop=True, extra_args=("--patient", "p-auto"))
    try:
        daemon.wait_ready()
        status = daemon.status()
        assert status["components"]["microphone"]["state"] == "off"
        assert wait_until(lambda: daemon.status()["state"] == "idle", 30)
    finally:
        assert daemon.terminate() == 0
    with stored(folder / "state" / "affectbox.db") as store:
        (record,) = store.sessions()
    assert record.state == "ended" and "no face or speech" in record.end_reason


def test_consent_required_and_bad_requests_get_one_line_errors(tmp_path: Path, av_session):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace("[session]\n", "[session]\nconsent_required = true\n"))
    daemon = DaemonProcess(tmp_path, av_session["path"], config=config, loop=True)
    try:
        daemon.wait_ready()
        for args, message in ((("start", "--patient", "p-1"), "consent"),
                              (("start", "--patient", "../etc/passwd", "--consent"), "patient id"),
                              (("stop",), "no session is running")):
            result = daemon.cli("session", *args, check=False)
            assert result.returncode != 0 and message in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
        bad = daemon.cli("session", "start", "--patient", "p-1", "--consent", "--max-minutes", "abc", check=False)
        assert bad.returncode == 2 and "minutes" in bad.stderr
        assert daemon.status()["state"] == "idle"
    finally:
        assert daemon.terminate() == 0
    assert not (tmp_path / "state" / "affectbox.db").exists() or _no_sessions(tmp_path / "state" / "affectbox.db")


def test_debug_recording_writes_private_files_only_when_enabled(tmp_path: Path, av_session):
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(
        "[session]\n", "[session]\ndebug_recording = true\ndebug_recording_max_minutes = 0.5\n"))
    daemon = DaemonProcess(tmp_path, av_session["path"], config=config, loop=True)
    try:
        daemon.wait_ready()
        started = daemon.session("start", "--patient", "p-dbg")
        time.sleep(4)
        daemon.session("stop")
    finally:
        assert daemon.terminate() == 0
    assert "debug recording" in daemon.log().lower()
    folder = tmp_path / "state" / "debug"
    files = sorted(p.name for p in folder.iterdir())
    assert files == [f"{started['session_id']}-audio.wav", f"{started['session_id']}-video.avi"]
    assert oct(folder.stat().st_mode & 0o777) == "0o700"
    for name in files:
        path = folder / name
        assert path.stat().st_mode & 0o077 == 0 and path.stat().st_size > 1000


def mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _no_sessions(db: Path) -> bool:
    with stored(db) as store:
        return store.sessions() == []


def test_bad_replay_file_and_truncated_model_refuse_to_start_in_one_line(tmp_path: Path, av_session):
    import shutil
    import subprocess
    import sys

    from tests.daemon_harness import ROOT

    text = tmp_path / "notes.mkv"
    text.write_text("this is not a video\n")
    config = write_config(tmp_path)
    result = subprocess.run([sys.executable, "-m", "device", "run", "--config", str(config), "--replay", str(text)],
                            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and str(text) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr

    models = tmp_path / "models"
    shutil.copytree(ROOT / "models", models, ignore=shutil.ignore_patterns("training"))
    model = models / "face_expression_int8.tflite"
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    config.write_text(config.read_text() + f'[runtime]\nmodels_dir = "{models}"\n')
    result = subprocess.run([sys.executable, "-m", "device", "run", "--config", str(config), "--replay",
                             str(av_session["path"])], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode != 0 and "face_expression_int8.tflite" in result.stderr, result.stderr
    assert "sha256" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state" / "affectbox.db").exists()  # refused before touching the record
