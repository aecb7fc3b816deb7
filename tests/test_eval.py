"""`affectbox eval face DIR` on folders in the FER2013 layout built from packaged face photos."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from device.labels import LABELS

pytestmark = pytest.mark.timeout(120)


def write_folder(root: Path, split: str | None = None, per_class: int = 3) -> int:
    faces = skimage.data.lfw_subset()  # 100 small grayscale face crops, floats in [0, 1]
    n = 0
    for i, label in enumerate(LABELS):
        folder = root / split / label if split else root / label
        folder.mkdir(parents=True)
        for j in range(per_class):
            face = (faces[(i * per_class + j) % len(faces)] * 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"img_{j}.png"), cv2.resize(face, (48, 48)))
            n += 1
    return n


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "eval", "face", *args], capture_output=True,
                          text=True, timeout=100, check=False)


@pytest.mark.parametrize("split", [None, "val"])
def test_json_report(tmp_path: Path, split):
    n = write_folder(tmp_path, split)
    result = run(str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == n == 21
    assert 0.0 <= report["accuracy"] <= 1.0 and 0.0 <= report["macro_f1"] <= 1.0
    cm = np.array(report["confusion_matrix"])
    assert cm.shape == (7, 7) and cm.sum() == n and list(cm.sum(axis=1)) == [3] * 7
    assert report["accuracy"] == pytest.approx(np.trace(cm) / n)
    assert set(report["per_class_recall"]) == set(LABELS)
    calibration = report["calibration"]
    assert calibration["cross_fitted"] is True and calibration["split"] == "seeded shuffle"
    assert [f["n"] for f in calibration["per_fold"]] == [11, 10]
    assert all(0.05 <= f["temperature"] <= 5.1 for f in calibration["per_fold"])
    for key in ("ece_shipped", "ece_before", "ece_after"):
        assert 0.0 <= calibration[key] <= 1.0
    assert calibration["nll_after"] > 0 and calibration["shipped_temperature"] > 0
    assert "PublicTest" in calibration["note"]


def test_text_report(tmp_path: Path):
    write_folder(tmp_path)
    result = run(str(tmp_path))
    assert result.returncode == 0
    assert "accuracy" in result.stdout and "confusion matrix" in result.stdout
    assert "calibration (ECE, 15 bins): shipped temperature" in result.stdout
    assert "held-out ECE" in result.stdout


def test_errors(tmp_path: Path):
    result = run(str(tmp_path / "missing"))
    assert result.returncode == 2 and "not a folder" in result.stderr
    (tmp_path / "cats").mkdir()
    result = run(str(tmp_path))
    assert result.returncode == 2 and "no labelled images found" in result.stderr
    (tmp_path / "happy").mkdir()
    (tmp_path / "happy" / "x.jpg").write_text("not an image")
    result = run(str(tmp_path))
    assert result.returncode == 2 and "x.jpg: not an image" in result.stderr
