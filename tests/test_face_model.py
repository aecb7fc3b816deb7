"""The committed expression model: matches its manifest and gives the recorded answers."""

import json
from pathlib import Path

import numpy as np
import pytest

from device.config import Config
from device.inference.expression import MANIFEST_NAME
from device.inference.face import FaceAnalyzer
from device.inference.runtime import read_manifest, sha256_file
from device.labels import LABELS

EXPECTED = Path(__file__).parent / "data" / "face_expected.json"


@pytest.fixture(scope="module")
def analyzer() -> FaceAnalyzer:
    return FaceAnalyzer.from_config(Config())


def test_manifest_describes_the_file(models_dir: Path):
    manifest = read_manifest(models_dir / MANIFEST_NAME)
    path = models_dir / manifest["file"]
    assert sha256_file(path) == manifest["sha256"]
    assert path.stat().st_size == manifest["size_bytes"] <= 1_000_000
    assert manifest["output"]["labels"] == list(LABELS)
    assert manifest["input"]["shape"] == [1, 48, 48, 1] and manifest["input"]["dtype"] == "int8"
    assert 0.2 < manifest["calibration"]["temperature"] < 5.0
    assert "non-commercial" in manifest["training"]["licence"]
    assert (models_dir / manifest["model_card"]).is_file()


def test_predictions_match_the_recording(analyzer: FaceAnalyzer):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models" / "training"))
    from record_face_expectation import packaged_faces

    expected = json.loads(EXPECTED.read_text())
    assert expected["model_sha256"] == analyzer.classifier.model.spec.sha256, (
        "the model changed: run models/training/record_face_expectation.py and review the new answers"
    )
    faces = packaged_faces(analyzer)
    for record in expected["records"]:
        probs, _ = analyzer.classifier.classify(faces[record["input"]])
        assert LABELS[int(np.argmax(probs))] == record["label"], record["input"]
        assert probs == pytest.approx(record["probs"], abs=2e-3), record["input"]
