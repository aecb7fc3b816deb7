"""Model loading: a missing, truncated or swapped file is a one-line error naming file and expectation."""

import json
import shutil
from pathlib import Path

import pytest

from device.cli import main
from device.errors import ModelError
from device.inference.expression import MANIFEST_NAME, ExpressionClassifier
from device.inference.runtime import ModelSpec, load_model, read_manifest, runtime_name, sha256_file


@pytest.fixture
def model_copy(tmp_path: Path, models_dir: Path) -> Path:
    """A private copy of the models folder that a test may damage."""
    target = tmp_path / "models"
    shutil.copytree(models_dir, target, ignore=shutil.ignore_patterns("training", "*.md"))
    return target


def test_runtime_prefers_litert():
    assert runtime_name() == "ai-edge-litert"


def test_manifest_sha256_matches_committed_model(models_dir: Path):
    manifest = read_manifest(models_dir / MANIFEST_NAME)
    assert sha256_file(models_dir / manifest["file"]) == manifest["sha256"]
    assert (models_dir / manifest["file"]).stat().st_size == manifest["size_bytes"] <= 1_000_000


def test_loads_and_reports_contract(model_copy: Path):
    classifier = ExpressionClassifier.from_models_dir(model_copy)
    assert classifier.model.spec.input_shape == (1, 48, 48, 1)
    assert classifier.model.input_quantization[1] == -128


def test_missing_file(model_copy: Path):
    (model_copy / "face_expression_int8.tflite").unlink()
    with pytest.raises(ModelError, match=r"face_expression_int8.tflite: model file .* missing") as err:
        ExpressionClassifier.from_models_dir(model_copy)
    assert "\n" not in str(err.value)


def test_truncated_file(model_copy: Path):
    path = model_copy / "face_expression_int8.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError) as err:
        ExpressionClassifier.from_models_dir(model_copy)
    message = str(err.value)
    assert "wrong or damaged model file" in message and "1000 bytes" in message
    assert "expected sha256" in message and "int8[1, 48, 48, 1]" in message


def test_swapped_file(model_copy: Path):
    # the detector's file where the expression model should be
    shutil.copyfile(model_copy / "third_party" / "face_detection_short_range.tflite",
                    model_copy / "face_expression_int8.tflite")
    with pytest.raises(ModelError, match="wrong or damaged model file"):
        ExpressionClassifier.from_models_dir(model_copy)


def test_input_contract_checked_even_with_matching_hash(model_copy: Path):
    # a manifest that lies about the input shape is caught at load
    manifest = json.loads((model_copy / MANIFEST_NAME).read_text())
    spec = ModelSpec.from_manifest({**manifest, "input": {**manifest["input"], "shape": [1, 64, 64, 1]}})
    with pytest.raises(ModelError, match=r"input is int8\[1, 48, 48, 1\], expected int8\[1, 64, 64, 1\]"):
        load_model(spec, model_copy)


def test_wrong_labels_in_manifest(model_copy: Path):
    path = model_copy / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    manifest["output"]["labels"] = list(reversed(manifest["output"]["labels"]))
    path.write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="labels"):
        ExpressionClassifier.from_models_dir(model_copy)


def test_cli_reports_model_error_in_one_line(model_copy: Path, tmp_path: Path, face_video,
                                             capsys: pytest.CaptureFixture[str]):
    (model_copy / "face_expression_int8.tflite").write_bytes(b"not a model")
    config = tmp_path / "c.toml"
    config.write_text(f'[runtime]\nmodels_dir = "{model_copy}"\n')
    code = main(["analyze", str(face_video.path), "--out", str(tmp_path / "out"), "--config", str(config)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("affectbox: error:") and "face_expression_int8.tflite" in err
    assert "Traceback" not in err and err.count("\n") == 0
