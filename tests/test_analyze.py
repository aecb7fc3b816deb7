"""`affectbox analyze` end to end on a generated video: detections where the face is, valid outputs."""

import csv
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from device.labels import LABELS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def analysis(face_video, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("analysis") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "device", "analyze", str(face_video.path), "--out", str(out), "--quiet"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    return out, result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_command_succeeds(analysis):
    out, result = analysis
    assert result.returncode == 0, result.stderr
    assert "does not diagnose" in result.stdout
    for name in ("timeline.jsonl", "windows.jsonl", "windows.csv", "summary.json", "report.html"):
        assert (out / name).stat().st_size > 0
    assert not list(out.glob(".*.tmp")), "temporary files left behind"


def test_detections_follow_the_face(analysis, face_video):
    out, _ = analysis
    rows = read_jsonl(out / "timeline.jsonl")
    assert len(rows) == 100  # 10 s sampled at the default 10 analysed frames per second
    assert [r["t"] for r in rows] == sorted(r["t"] for r in rows)
    hits = misses = false_alarms = 0
    for row in rows:
        truth = face_video.box_at(row["t"])
        if truth is None:
            false_alarms += row["present"]
            continue
        if not row["present"]:
            misses += 1
            continue
        hits += 1
        x0, y0, x1, y1 = row["box"]
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        # the detected face lies inside the pasted head
        assert truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3], (row, truth)
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        assert row["label"] in LABELS
    assert false_alarms == 0
    assert hits >= 0.9 * (hits + misses)
    assert any(r.get("tracked") for r in rows) and any(r["present"] and not r["tracked"] for r in rows)


def test_windows_and_summary(analysis):
    out, _ = analysis
    windows = read_jsonl(out / "windows.jsonl")
    assert len(windows) == 1  # one 10 s window by default
    window = windows[0]
    assert window["has_mood"] and window["dominant"] in LABELS
    assert -1 <= window["valence"] <= 1 and -1 <= window["arousal"] <= 1
    assert window["modalities"]["face"]["share"] == pytest.approx(0.5, abs=0.06)  # 5 of 10 s show the face
    summary = json.loads((out / "summary.json").read_text())
    assert summary["coverage"]["face"]["items"] == 100
    assert summary["source"]["file"] == "session.avi" and summary["source"]["fps"] == 15.0
    assert summary["warnings"] == []
    assert {m["name"] for m in summary["models"]} == {"blazeface_full_range", "affectbox_face_expression"}
    assert all(len(m["sha256"]) == 64 for m in summary["models"])
    with (out / "windows.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and rows[0]["dominant"] == window["dominant"]


def test_report_is_self_contained_html(analysis):
    out, _ = analysis
    html = (out / "report.html").read_text()
    HTMLParser().feed(html)
    assert "<svg" in html and "does not diagnose" in html
    assert "https://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_window_length_from_config(face_video, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text("[aggregation]\nwindow_seconds = 2.0\n[face]\nanalysis_fps = 4\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "device", "analyze", str(face_video.path), "--out", str(out), "--quiet",
         "--config", str(config), "--json"],
        capture_output=True, text=True, timeout=240, check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["windows"] == 5
    # the first 2 s hold no face; 2-4 s are all face
    windows = read_jsonl(out / "windows.jsonl")
    assert not windows[0]["has_mood"] and windows[1]["has_mood"]
    assert len(read_jsonl(out / "timeline.jsonl")) == 40
