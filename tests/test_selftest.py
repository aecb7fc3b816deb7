"""`affectbox selftest`: the pass/fail/skip table and exit code, run as a user would (a subprocess),
with replayed media instead of the camera and microphone (a generated session: the astronaut's
head and espeak-ng speech; a blank video and digital silence for the failures), the hub check
against a real Mosquitto broker, and the host checks (clock, power, disk, device listing) on
fake /run, /sys and /dev trees."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from device.config import Config, DeviceConfig
from device.provision import config_skeleton, set_config_values
from device.selftest import SelftestOptions, check_clock, check_disk, check_power, list_v4l2
from tests.media import write_av_session
from tests.mqtt_support import Broker, free_port, needs_broker

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def session_media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 s: a face throughout, a sentence at 0.5 s (video with its audio track)."""
    path = tmp_path_factory.mktemp("selftest-media") / "session.mkv"
    write_av_session(path, 6.0, [0.5], [(0.0, 6.0)])
    return path


@pytest.fixture(scope="module")
def empty_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A grey video without a face and a WAV file of digital silence."""
    folder = tmp_path_factory.mktemp("selftest-empty")
    video = folder / "empty.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (320, 240))
    for _ in range(30):
        writer.write(np.full((240, 320, 3), 90, np.uint8))
    writer.release()
    audio = folder / "silence.wav"
    soundfile.write(audio, np.zeros(16000 * 3, np.int16), 16000)
    return video, audio


def write_config(folder: Path, values: dict | None = None) -> Path:
    path = folder / "config.toml"
    path.write_text(set_config_values(config_skeleton(), {"device": {"state_dir": str(folder / "state")},
                                                          **(values or {})}))
    return path


def selftest(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "selftest", *args], cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout, check=False)


def rows(result: subprocess.CompletedProcess) -> dict[str, dict]:
    body = json.loads(result.stdout)
    return {row["check"]: row for row in body["checks"]}


def test_replayed_session_passes(session_media: Path, tmp_path: Path):
    config = write_config(tmp_path)
    result = selftest("--config", str(config), "--camera-file", str(session_media), "--microphone-file",
                      str(session_media), "--seconds", "6", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = rows(result)
    assert list(checks) == ["devices", "models", "answers", "camera", "face", "microphone", "speech", "hub", "disk",
                            "clock", "power"]
    for name in ("models", "answers", "camera", "face", "microphone", "speech", "disk"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["hub"]["status"] == "skip"
    assert checks["camera"]["data"]["frames"] == 60 and checks["camera"]["data"]["width"] == 640
    assert checks["face"]["data"]["frames_with_face"] >= 55
    assert checks["face"]["data"]["face_px"] > 80
    assert checks["speech"]["data"]["utterances"] >= 1
    assert -40 < checks["microphone"]["data"]["level_dbfs"] < -10
    assert "sha256" in json.dumps(checks["models"]["data"])
    assert json.loads(result.stdout)["ok"] is True


def test_table_output(session_media: Path, tmp_path: Path):
    config = write_config(tmp_path)
    result = selftest("--config", str(config), "--camera-file", str(session_media), "--microphone-file",
                      str(session_media), "--seconds", "2", "--skip", "speech")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("affectbox selftest: device ab-") and "(not stored yet)" in lines[0]
    assert lines[1].split() == ["check", "result", "detail"]
    table = {line.split()[0]: line.split()[1] for line in lines[2:13]}
    assert table["camera"] == "pass" and table["speech"] == "skip" and table["hub"] == "skip"
    assert table["answers"] == "pass"
    assert "all checks passed" in lines[-2] and "does not diagnose" in lines[-1]
    assert result.stderr == ""


def test_no_face_and_silence_fail_with_advice(empty_media: tuple[Path, Path], tmp_path: Path):
    video, audio = empty_media
    config = write_config(tmp_path)
    result = selftest("--config", str(config), "--camera-file", str(video), "--microphone-file", str(audio), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    checks = rows(result)
    assert checks["camera"]["status"] == "pass"
    assert checks["face"]["status"] == "fail" and "eye level" in checks["face"]["detail"]
    assert checks["microphone"]["status"] == "fail" and "muted" in checks["microphone"]["detail"]
    assert json.loads(result.stdout)["ok"] is False

    table = selftest("--config", str(config), "--camera-file", str(video), "--microphone-file", str(audio))
    assert table.returncode == 1
    assert "checks failed: face, microphone, speech" in table.stdout


def test_skip_and_configured_none(tmp_path: Path):
    config = write_config(tmp_path, {"capture": {"camera": "none", "microphone": "none"}})
    result = selftest("--config", str(config), "--json", "--skip", "models")
    assert result.returncode == 0, result.stdout + result.stderr
    checks = rows(result)
    assert checks["models"]["status"] == "skip"
    for name in ("camera", "face", "microphone", "speech"):
        assert checks[name]["status"] == "skip" and "none" in checks[name]["detail"], checks[name]


def test_broken_models_fail(session_media: Path, tmp_path: Path):
    empty = tmp_path / "no-models"
    empty.mkdir()
    (empty / "third_party.json").write_text(json.dumps({"models": []}))
    config = write_config(tmp_path, {"runtime": {"models_dir": str(empty)}})
    result = selftest("--config", str(config), "--camera-file", str(session_media), "--skip", "microphone", "--json")
    assert result.returncode == 1
    checks = rows(result)
    assert checks["models"]["status"] == "fail" and "no-models" in checks["models"]["detail"]
    assert checks["answers"]["status"] == "skip" and "no model" in checks["answers"]["detail"]
    assert checks["face"]["status"] == "fail"


@needs_broker
def test_hub_check_is_part_of_it(tmp_path: Path):
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        hub = {"hub": {"enabled": True, "host": "127.0.0.1", "port": broker.port, "tls": "off"}}
        config = write_config(tmp_path, hub)
        ok = selftest("--config", str(config), "--json", "--skip", "camera", "--skip", "microphone",
                      "--skip", "models")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert rows(ok)["hub"]["status"] == "pass"
    finally:
        broker.stop()
    down = selftest("--config", str(write_config(tmp_path, {"hub": {**hub["hub"], "port": free_port()}})), "--json",
                    "--skip", "camera", "--skip", "microphone", "--skip", "models", "--timeout", "2")
    assert down.returncode == 1
    assert rows(down)["hub"]["status"] == "fail" and ": TCP: " in rows(down)["hub"]["detail"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--camera-file", "/nonexistent/video.mp4"], "no such file"),
    (["--config", "/nonexistent/config.toml"], "config file not found"),
])
def test_bad_input_is_one_line(args: list[str], fragment: str):
    result = selftest(*args)
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert "\n" not in err and fragment in err and err.startswith("affectbox: error:"), err


def test_clock(tmp_path: Path):
    options = SelftestOptions(root=str(tmp_path))
    assert check_clock(options).status == "skip"
    flag = tmp_path / "run/systemd/timesync/synchronized"
    flag.parent.mkdir(parents=True)
    flag.touch()
    result = check_clock(options)
    assert result.status == "pass" and "timesyncd" in result.detail


@pytest.mark.parametrize(("raw", "status", "fragment"), [
    ("0x0", "pass", "no throttling now"),
    ("0x50000", "pass", "since boot: under_voltage, throttled"),
    ("0x50005", "fail", "now: under_voltage, throttled"),
])
def test_power(tmp_path: Path, raw: str, status: str, fragment: str):
    options = SelftestOptions(root=str(tmp_path))
    assert check_power(options).status == "skip"
    path = tmp_path / "sys/devices/platform/soc/soc:firmware/get_throttled"
    path.parent.mkdir(parents=True)
    path.write_text(raw + "\n")
    zone = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    zone.parent.mkdir(parents=True)
    zone.write_text("61234\n")
    result = check_power(options)
    assert result.status == status and fragment in result.detail and "61 °C" in result.detail, result


def test_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = Config(device=DeviceConfig(state_dir="/state"))
    options = SelftestOptions(root=str(tmp_path))
    assert check_disk(config, options).status == "pass"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr("device.selftest.shutil.disk_usage", lambda path: usage(32e9, 31.9e9, 100e6))
    result = check_disk(config, options)
    assert result.status == "fail" and "too little room" in result.detail


def test_v4l2_listing(tmp_path: Path):
    for n, name in ((0, "USB Camera"), (10, "")):
        (tmp_path / "dev").mkdir(exist_ok=True)
        (tmp_path / f"dev/video{n}").touch()
        if name:
            sys_name = tmp_path / f"sys/class/video4linux/video{n}/name"
            sys_name.parent.mkdir(parents=True)
            sys_name.write_text(name + "\n")
    assert list_v4l2(str(tmp_path)) == [{"device": "/dev/video0", "name": "USB Camera"},
                                        {"device": "/dev/video10", "name": ""}]


def _far_face_video(folder: Path, face_px: float) -> Path:
    from tests import far_faces

    source = far_faces.face_sources()[0]
    background = far_faces.backgrounds()[0]
    video = folder / f"far-{face_px:g}.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (640, 480))
    for i in range(30):
        frame, _ = far_faces.paste_face(background, source[1], source[2], face_px, (0.45 + 0.002 * i, 0.45))
        writer.write(frame)
    writer.release()
    return video


@pytest.mark.parametrize(("face_px", "status", "metres"), [(34.0, "warn", 2.2), (60.0, "pass", 1.25)])
def test_face_row_reports_width_distance_and_warns_below_the_floor(tmp_path: Path, face_px, status, metres):
    config = write_config(tmp_path)
    video = _far_face_video(tmp_path, face_px)
    result = selftest("--config", str(config), "--camera-file", str(video), "--seconds", "3", "--json",
                      "--skip", "microphone", "--skip", "hub")
    assert result.returncode == 0, result.stdout + result.stderr  # a warning is not a failure
    face = rows(result)["face"]
    assert face["status"] == status, face
    assert face["data"]["face_px"] == pytest.approx(face_px, rel=0.2)
    assert face["data"]["distance_m"] == pytest.approx(metres, rel=0.2)
    shown = re.search(r"about ([0-9.]+) m away", face["detail"])
    assert shown and float(shown.group(1)) == pytest.approx(face["data"]["distance_m"], abs=0.051)
    assert ("reliable floor" in face["detail"]) == (status == "warn")


def test_implied_distance_follows_the_pinhole_model():
    from device.selftest import implied_distance_m

    assert implied_distance_m(74.0, 640, 66.0) == pytest.approx(1.0, abs=0.01)
    assert implied_distance_m(37.0, 640, 66.0) == pytest.approx(2.0, abs=0.02)
    assert implied_distance_m(74.0, 1280, 66.0) == pytest.approx(2.0, abs=0.02)  # twice the pixels across
