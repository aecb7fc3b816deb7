"""Bad input to the command line: a clear one-line message and a non-zero exit, nothing overwritten."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = pytest.mark.timeout(120)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True,
                          timeout=100, check=False)


def assert_one_line_error(result: subprocess.CompletedProcess, fragment: str) -> None:
    assert result.returncode == 2, result
    err = result.stderr.strip()
    assert err.startswith("affectbox: error:"), err
    assert "Traceback" not in err and err.count("\n") == 0, err
    assert fragment in err, err


def test_missing_file(tmp_path: Path):
    assert_one_line_error(run("analyze", str(tmp_path / "nope.mp4"), "--out", str(tmp_path / "o")),
                          "nope.mp4: no such file")


def test_folder_instead_of_video(tmp_path: Path):
    assert_one_line_error(run("analyze", str(tmp_path), "--out", str(tmp_path / "o")), "not a file")


def test_not_a_video(tmp_path: Path):
    fake = tmp_path / "notes.mp4"
    fake.write_text("these are clinical notes, not a video\n" * 50)
    assert_one_line_error(run("analyze", str(fake), "--out", str(tmp_path / "o")), "notes.mp4: not a video")


def test_truncated_video(tmp_path: Path, face_video):
    broken = tmp_path / "broken.avi"
    broken.write_bytes(face_video.path.read_bytes()[:2000])
    result = run("analyze", str(broken), "--out", str(tmp_path / "o"), "--quiet")
    # a truncated file either decodes its first frames or is refused; it never crashes
    if result.returncode != 0:
        assert_one_line_error(result, "broken.avi")


def test_zero_frames(tmp_path: Path):
    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    writer.release()
    result = run("analyze", str(empty), "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "empty.avi")


def test_no_face_is_a_warning_not_a_failure(tmp_path: Path):
    video = tmp_path / "wall.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (160, 120))
    for i in range(30):
        writer.write(np.full((120, 160, 3), 40 + i, dtype=np.uint8))
    writer.release()
    out = tmp_path / "o"
    result = run("analyze", str(video), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "warning" in result.stderr and "no face" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dominant"] is None and summary["warnings"]
    assert "no face" in (out / "report.html").read_text().lower()


def test_bad_config_leaves_previous_outputs(tmp_path: Path, face_video):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text('{"earlier": true}')
    config = tmp_path / "c.toml"
    config.write_text("[face]\ndetect_every = -1\n")
    assert_one_line_error(run("analyze", str(face_video.path), "--out", str(out), "--config", str(config)),
                          "face.detect_every")
    assert json.loads((out / "summary.json").read_text()) == {"earlier": True}


def test_out_is_a_file(tmp_path: Path, face_video):
    target = tmp_path / "taken"
    target.write_text("keep me")
    assert_one_line_error(run("analyze", str(face_video.path), "--out", str(target)), "not a folder")
    assert target.read_text() == "keep me"


def test_unknown_subcommand():
    result = run("frobnicate")
    assert result.returncode == 2 and "invalid choice" in result.stderr
