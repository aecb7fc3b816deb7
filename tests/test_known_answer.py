"""Known-answer pairs (device/inference/known_answer.py): every model's manifest carries one, this
machine's runtime gives it, a wrong answer is a one-line failure, the daemon refuses to start with
it (no READY=1) and `selftest` shows it in its `answers` row. A wrong answer is made the way it
would look to the check: the recorded output no longer matches what the runtime computes (here by
changing the recorded values in a copy of the models folder, as a miscomputing kernel would)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device.errors import ModelError
from device.inference import known_answer
from device.inference.runtime import MODELS_DIR, ModelSpec, load_model, read_manifest
from tests.daemon_harness import DaemonProcess, write_config
from tests.media import write_av_session

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "models" / "training"))
import record_known_answers  # noqa: E402


@pytest.mark.parametrize("entry", known_answer.manifest_entries(MODELS_DIR), ids=lambda e: e["name"])
def test_every_model_carries_a_known_answer_that_this_runtime_gives(entry: dict):
    pair = entry.get("known_answer")
    assert pair, f"{entry['name']}: record one with models/training/record_known_answers.py"
    assert pair["input"]["seed"] == record_known_answers.seed_for(entry)  # recorded for this very file
    model = known_answer.load_for_check(ModelSpec.from_manifest(entry), MODELS_DIR)
    answer = known_answer.check(model)
    assert answer.status == "pass", answer.detail
    if entry["input"]["dtype"] in ("int8", "uint8"):
        assert pair["tolerance"] == known_answer.QUANTIZED_TOLERANCE_LSB
    # the recorded answer is a real computation, not a constant
    assert any(len(set(o["values"])) > 3 for o in pair["outputs"]), pair["outputs"]


def test_generated_input_is_sha256_in_counter_mode():
    seed = "affectbox known answer/test"
    expected = hashlib.sha256(seed.encode() + (0).to_bytes(8, "big")).digest()
    expected += hashlib.sha256(seed.encode() + (1).to_bytes(8, "big")).digest()
    assert known_answer.generated_bytes(seed, 40) == expected[:40]
    as_int8 = known_answer.generated_input(seed, (1, 5, 8), "int8")
    assert as_int8.dtype == np.int8 and as_int8.shape == (1, 5, 8)
    assert as_int8.reshape(-1).tobytes() == expected[:40]
    as_float = known_answer.generated_input(seed, (40,), "float32")
    assert as_float.dtype == np.float32 and as_float.min() >= -1.0 and as_float.max() <= 1.0
    assert np.array_equal(as_float, (np.frombuffer(expected[:40], np.uint8).astype(np.float32) - 127.5) / 127.5)
    assert not np.array_equal(as_int8, known_answer.generated_input(seed + "!", (1, 5, 8), "int8"))


def _face_model(manifest: dict):
    return load_model(ModelSpec.from_manifest(manifest), MODELS_DIR)


def test_a_wrong_answer_fails_in_one_line_naming_the_model():
    manifest = read_manifest(MODELS_DIR / "face_expression.json")
    values = manifest["known_answer"]["outputs"][0]["values"]
    values[2] += known_answer.QUANTIZED_TOLERANCE_LSB  # within the tolerance: passes, and says by how much
    answer = known_answer.check(_face_model(manifest))
    assert answer.status == "pass" and answer.detail.endswith(f"within {known_answer.QUANTIZED_TOLERANCE_LSB}")
    values[3] += known_answer.QUANTIZED_TOLERANCE_LSB + 1  # one logit just beyond it
    answer = known_answer.check(_face_model(manifest))
    assert answer.status == "fail" and "\n" not in answer.detail
    assert answer.detail.startswith("affectbox_face_expression: wrong known answer: output 0 ")
    assert f"at 1 of 7 values, by up to {known_answer.QUANTIZED_TOLERANCE_LSB + 1} LSB" in answer.detail
    assert [a.status for a in known_answer.check_all([_face_model(manifest)])] == ["fail"]


def test_float_outputs_are_compared_relative_to_their_range():
    entry = read_manifest(MODELS_DIR / "third_party.json")["models"][0]
    model = load_model(ModelSpec.from_manifest(entry), MODELS_DIR)
    scale = entry["known_answer"]["outputs"][0]["max_abs"]
    entry["known_answer"]["outputs"][0]["values"][5] += scale * 5e-4  # under the tolerance
    assert known_answer.check(model).status == "pass"
    entry["known_answer"]["outputs"][0]["values"][5] += scale * 5e-2
    assert known_answer.check(model).status == "fail"


def test_missing_and_malformed_pairs():
    manifest = read_manifest(MODELS_DIR / "face_expression.json")
    pair = manifest.pop("known_answer")
    assert known_answer.check(_face_model(manifest)).status == "missing"
    for broken in ({**pair, "format": 99}, {**pair, "outputs": []}, {**pair, "input": {}},
                   {**pair, "outputs": [{**pair["outputs"][0], "shape": [1, 8]}]}):
        manifest["known_answer"] = broken
        answer = known_answer.check(_face_model(manifest))
        assert answer.status == "fail" and "unusable known answer" in answer.detail, answer.detail


def test_recording_edits_only_the_entrys_line_in_third_party_json():
    text = (MODELS_DIR / "third_party.json").read_text()
    entry = json.loads(text)["models"][0]
    pair = {**entry["known_answer"], "recorded_with": "a test"}
    edited = record_known_answers.set_third_party_pair(text, entry["name"], pair)
    before, after = text.splitlines(), edited.splitlines()
    assert len(before) == len(after) and sum(a != b for a, b in zip(before, after, strict=True)) == 1
    assert json.loads(edited)["models"][0]["known_answer"]["recorded_with"] == "a test"
    stripped = "\n".join(line for line in before if '"known_answer"' not in line) + "\n"
    again = record_known_answers.set_third_party_pair(stripped, entry["name"], pair)
    assert json.loads(again)["models"][0]["known_answer"] == pair


@pytest.fixture
def wrong_models(tmp_path: Path) -> Path:
    """A copy of the models folder whose expression model 'computes' one logit differently."""
    folder = tmp_path / "models"
    shutil.copytree(MODELS_DIR, folder, ignore=shutil.ignore_patterns("training", "*.md"))
    manifest = read_manifest(folder / "face_expression.json")
    manifest["known_answer"]["outputs"][0]["values"][0] -= 40  # as far off as QEMU 7.2's `max` CPU (115 LSB)
    (folder / "face_expression.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def test_every_model_of_the_manifests_is_checked_and_a_wrong_one_raises(wrong_models: Path, tmp_path: Path):
    answers = {a.name: a.status for a in known_answer.check_models_dir(MODELS_DIR)}
    names = {e["name"] for e in known_answer.manifest_entries(MODELS_DIR)}
    assert set(answers) == names and set(answers.values()) == {"pass"}
    with pytest.raises(ModelError, match="affectbox_face_expression: wrong known answer"):
        known_answer.require_known_answers(wrong_models)
    (wrong_models / "speech_emotion_int8.tflite").unlink()  # a file not fetched is reported, not loaded
    statuses = {a.name: a.status for a in known_answer.check_models_dir(wrong_models)}
    assert statuses["affectbox_speech_emotion"] == "missing" and statuses["affectbox_face_expression"] == "fail"


def test_the_daemon_refuses_to_start_on_a_wrong_answer(tmp_path: Path, wrong_models: Path):
    video = tmp_path / "session.mkv"
    write_av_session(video, 2.0, [0.2], [(0.0, 2.0)])
    config = write_config(tmp_path, f'[runtime]\nmodels_dir = "{wrong_models}"\n')
    daemon = DaemonProcess(tmp_path, video, config=config)
    code = daemon.proc.wait(90)
    daemon.close()
    log = daemon.log().strip().splitlines()
    assert code == 2, log
    errors = [line for line in log if line.startswith("affectbox: error:")]
    assert len(errors) == 1 and "affectbox_face_expression: wrong known answer" in errors[0], log
    assert not daemon.notify.lines("READY=1")


def test_selftest_shows_the_answers_row(tmp_path: Path, wrong_models: Path):
    def selftest(models: Path) -> subprocess.CompletedProcess:
        config = tmp_path / f"config-{models.name}.toml"
        config.write_text(f'[device]\nstate_dir = "{tmp_path / "state"}"\n[runtime]\nmodels_dir = "{models}"\n')
        return subprocess.run([sys.executable, "-m", "device", "selftest", "--config", str(config), "--skip",
                               "camera", "--skip", "microphone", "--json"], cwd=REPO, capture_output=True, text=True,
                              timeout=90, check=False)

    good = selftest(MODELS_DIR)
    rows = {row["check"]: row for row in json.loads(good.stdout)["checks"]}
    assert rows["answers"]["status"] == "pass", rows["answers"]
    assert "models give the answers recorded at publishing (" in rows["answers"]["detail"]
    assert "affectbox_face_expression 7 values " in rows["answers"]["detail"]
    bad = selftest(wrong_models)
    assert bad.returncode == 1
    rows = {row["check"]: row for row in json.loads(bad.stdout)["checks"]}
    assert rows["models"]["status"] == "pass"  # sha256 and loading are fine: only the answer is wrong
    assert rows["answers"]["status"] == "fail" and "affectbox_face_expression: wrong" in rows["answers"]["detail"]
