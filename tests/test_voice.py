"""Speaker attribution (device/voice): the numpy voice encoder, enrollment and its refusals, the voice
CLI and its privacy, and `affectbox analyze --other-voice` on dialogues of two espeak-ng voices.

Media: tests/voice_media.py.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.config import Config
from device.contract.timestamps import UTC_TIMESTAMP_RE
from device.errors import ModelError
from device.inference.torch_weights import LEGACY_MAGIC, load_checkpoint
from device.voice.enrollment import enroll_pcm
from device.voice.loading import load_encoder
from device.voice.voiceprints import VoiceprintError, VoiceprintStore
from tests.voice_media import CLINICIAN, CLINICIAN_LINES, PATIENT, PATIENT_LINES, say, voice_files

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> dict[str, Path]:
    return voice_files(tmp_path_factory.mktemp("voices"))


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", *args], capture_output=True, text=True, timeout=240,
                          cwd=ROOT, check=False, input=stdin, env={**os.environ, **(env or {})})


# ---- the model --------------------------------------------------------------------------------------------

def test_checkpoint_reader_gives_the_state_dict_without_torch(config):
    encoder = load_encoder(config)
    assert encoder.path is not None
    state = load_checkpoint(encoder.path)["model_state"]
    assert state["lstm.weight_ih_l0"].shape == (1024, 40) and state["linear.weight"].shape == (256, 256)
    assert all(np.isfinite(v).all() for v in state.values())
    assert "torch" not in sys.modules


def test_checkpoint_reader_refuses_code(tmp_path):
    """A pickle that names any other global (here os.system) is refused before anything runs."""

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        for part in (LEGACY_MAGIC, 1001, {"little_endian": True}):
            pickle.dump(part, handle)
        pickle.dump({"model_state": Evil()}, handle)
        pickle.dump([], handle)
    with pytest.raises(ModelError, match="refuses to load"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelError):
        load_checkpoint(tmp_path / "junk.pt")


def test_embeddings_tell_the_two_voices_apart(config, tmp_path):
    encoder = load_encoder(config)
    a1, a2 = (encoder.embed(say(t, CLINICIAN, tmp_path)) for t in CLINICIAN_LINES[:2])
    b1 = encoder.embed(say(PATIENT_LINES[0], PATIENT, tmp_path))
    assert np.linalg.norm(a1) == pytest.approx(1.0, abs=1e-5)
    assert float(a1 @ a2) > config.voice.threshold > float(a1 @ b1)
    again = encoder.embed(say(CLINICIAN_LINES[0], CLINICIAN, tmp_path))
    assert np.allclose(a1, again, atol=1e-6)  # deterministic


# ---- enrollment ---------------------------------------------------------------------------------------------

def read16(path: Path) -> np.ndarray:
    return soundfile.read(path, dtype="int16")[0]


def test_enrollment_refuses_too_little_speech_and_two_voices(config, voices):
    encoder = load_encoder(config)
    kwargs = {"threshold": config.voice.threshold, "min_speech_s": config.voice.min_enroll_speech_s}
    with pytest.raises(VoiceprintError, match=r"short: only \d+\.\d s of speech found"):
        enroll_pcm(read16(voices["short"]), encoder, config.speech, what="short", **kwargs)
    with pytest.raises(VoiceprintError, match="more than one voice"):
        enroll_pcm(read16(voices["two_voices"]), encoder, config.speech, what="two", **kwargs)
    good = enroll_pcm(read16(voices["enroll"]), encoder, config.speech, what="enroll", **kwargs)
    assert good.speech_s >= config.voice.min_enroll_speech_s and good.pieces >= 4


def test_voiceprint_store_is_private_and_checks_names(tmp_path):
    store = VoiceprintStore(tmp_path / "voices")
    vector = np.random.default_rng(0).normal(size=256).astype(np.float32)
    store.save("dr-smith", vector, 22.0, 7)
    path = tmp_path / "voices" / "dr-smith.voiceprint.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "voices").stat().st_mode) == 0o700
    assert [v.name for v in store.load()] == ["dr-smith"]
    listing = store.load()[0].listing()
    assert "embedding" not in listing and UTC_TIMESTAMP_RE.fullmatch(listing["created_utc"])
    old = json.loads(path.read_text())  # a file from before the one format: answered in it
    old["created_utc"] = "2025-01-31T09:15:02Z"
    path.write_text(json.dumps(old))
    assert store.load()[0].listing()["created_utc"] == "2025-01-31T09:15:02.000Z"
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 65):
        with pytest.raises(VoiceprintError, match="not valid"):
            store.save(bad, vector, 1.0, 1)
    with pytest.raises(VoiceprintError, match="already enrolled"):
        store.save("dr-smith", vector, 1.0, 1)
    (tmp_path / "voices" / "broken.voiceprint.json").write_text("{not json")
    assert [v.name for v in store.load()] == ["dr-smith"] and "broken" in store.problems[0]
    store.delete("dr-smith")
    with pytest.raises(VoiceprintError, match="no voice named"):
        store.delete("dr-smith")


# ---- the voice CLI ------------------------------------------------------------------------------------------

def voice_config(folder: Path) -> Path:
    path = folder / "config.toml"
    path.write_text(f'[device]\nstate_dir = "{folder / "state"}"\n')
    return path


def test_voice_cli_enroll_list_delete(voices, tmp_path):
    config = voice_config(tmp_path)
    refused = run_cli("voice", "enroll", "--name", "dr-smith", str(voices["enroll"]), "--config", str(config))
    assert refused.returncode == 2 and "explicit confirmation" in refused.stderr
    declined = run_cli("voice", "enroll", "--name", "dr-smith", str(voices["enroll"]), "--config", str(config),
                       stdin="no\n")
    assert declined.returncode == 2 and not (tmp_path / "state" / "voiceprints").exists()

    enrolled = run_cli("voice", "enroll", "--name", "dr-smith", str(voices["enroll"]), "--yes", "--config",
                       str(config))
    assert enrolled.returncode == 0, enrolled.stderr
    assert "enrolled dr-smith" in enrolled.stdout
    stored = tmp_path / "state" / "voiceprints" / "dr-smith.voiceprint.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    embedding = json.loads(stored.read_text())["embedding"]
    listed = run_cli("voice", "list", "--json", "--config", str(config))
    assert listed.returncode == 0
    assert [v["name"] for v in json.loads(listed.stdout)["voices"]] == ["dr-smith"]
    for output in (enrolled.stdout + enrolled.stderr, listed.stdout + listed.stderr):
        assert f"{embedding[0]}" not in output and f"{embedding[1]}" not in output
    again = run_cli("voice", "enroll", "--name", "dr-smith", str(voices["enroll"]), "--yes", "--config", str(config))
    assert again.returncode == 2 and "already enrolled" in again.stderr
    deleted = run_cli("voice", "delete", "dr-smith", "--config", str(config))
    assert deleted.returncode == 0 and not stored.exists()
    assert "no voices enrolled" in run_cli("voice", "list", "--config", str(config)).stdout


@pytest.mark.parametrize("case", ["short", "two_voices", "not_audio", "missing", "bad_name"])
def test_voice_cli_bad_enrollment_is_one_line(voices, tmp_path, case):
    config = voice_config(tmp_path)
    text = tmp_path / "notes.wav"
    text.write_text("this is not audio\n" * 50)
    source = {"short": str(voices["short"]), "two_voices": str(voices["two_voices"]), "not_audio": str(text),
              "missing": str(tmp_path / "nope.wav"), "bad_name": str(voices["enroll"])}[case]
    name = "../x" if case == "bad_name" else "dr-jones"
    result = run_cli("voice", "enroll", "--name", name, source, "--yes", "--config", str(config))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("affectbox: error: "), result.stderr
    expected = {"short": "of speech found", "two_voices": "more than one voice", "not_audio": "notes.wav",
                "missing": "no such file", "bad_name": "not valid"}[case]
    assert expected in lines[0]
    assert not list((tmp_path / "state").glob("voiceprints/*.json"))


# ---- analyze --other-voice ------------------------------------------------------------------------------------

def overlap(a0: float, a1: float, spans: list, who: str) -> float:
    return sum(max(0.0, min(a1, e) - max(a0, s)) for s, e, w in spans if w == who)


@pytest.fixture(scope="module")
def analysed(voices, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("analysed")
    with_voice = run_cli("analyze", str(voices["dialogue"]), "--other-voice", str(voices["enroll"]), "--out",
                         str(out / "with"), "--quiet")
    assert with_voice.returncode == 0, with_voice.stderr
    assert "s of other voices left out" in with_voice.stdout
    without = run_cli("analyze", str(voices["dialogue"]), "--out", str(out / "without"), "--quiet")
    assert without.returncode == 0, without.stderr
    return {"with": out / "with", "without": out / "without"}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_analyze_marks_the_enrolled_voice_other_and_keeps_it_out(analysed, voices):
    spans = json.loads(voices["turns"].read_text())
    speech = [r for r in rows(analysed["with"] / "timeline.jsonl") if r["modality"] == "speech"]
    assert len(speech) >= 10
    for r in speech:
        clinician = overlap(r["start"], r["end"], spans, "clinician")
        patient = overlap(r["start"], r["end"], spans, "patient")
        assert r["speaker"] == ("other" if clinician > patient else "patient"), r
        assert isinstance(r["similarity"], float)
        if r["speaker"] == "other":  # counted, never analysed
            assert not r["present"] and "probs" not in r and "prosody" not in r
        else:
            assert r["present"] and r["prosody"]
    windows = rows(analysed["with"] / "windows.jsonl")
    other_s = sum(w["speakers"]["other_s"] for w in windows)
    patient_s = sum(w["speakers"]["patient_s"] for w in windows)
    truth = {who: sum(e - s for s, e, w in spans if w == who) for who in ("patient", "clinician")}
    assert other_s == pytest.approx(truth["clinician"], rel=0.35)
    assert patient_s == pytest.approx(truth["patient"], rel=0.35)
    # prosody only from the patient's speech: the window prosody's speech time is the patient's
    assert sum((w["prosody"] or {}).get("speech_s") or 0 for w in windows) <= patient_s + 0.5
    summary = json.loads((analysed["with"] / "summary.json").read_text())
    assert summary["speakers"]["attributed"] is True and summary["speakers"]["enrolled_voices"] == 1
    assert summary["speakers"]["other_s"] == pytest.approx(other_s, abs=0.01)
    assert summary["coverage"]["speech"]["items"] == sum(1 for r in speech if r["speaker"] == "patient")
    assert any(m["name"] == "resemblyzer_voice_encoder" for m in summary["models"])
    report = (analysed["with"] / "report.html").read_text()
    assert "enrolled voices excluded" in report
    header = (analysed["with"] / "windows.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == ["patient_speech_s", "other_speech_s"]


def test_analyze_without_voices_is_as_before_and_says_so(analysed):
    speech = [r for r in rows(analysed["without"] / "timeline.jsonl") if r["modality"] == "speech"]
    assert speech and all("speaker" not in r and r["present"] for r in speech)
    summary = json.loads((analysed["without"] / "summary.json").read_text())
    assert summary["speakers"]["attributed"] is False and summary["speakers"]["other_s"] == 0
    assert "speakers are not told apart" in summary["speakers"]["note"]
    assert "speakers are not told apart" in (analysed["without"] / "report.html").read_text()
    assert summary["coverage"]["speech"]["items"] == len(speech)


def test_analyze_keeps_a_voice_that_is_not_enrolled(voices, tmp_path):
    """The patient's own recording, with the clinician enrolled: nothing is excluded."""
    result = run_cli("analyze", str(voices["patient_only"]), "--other-voice", str(voices["enroll"]), "--out",
                     str(tmp_path / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    speech = [r for r in rows(tmp_path / "out" / "timeline.jsonl") if r["modality"] == "speech"]
    assert speech and all(r["speaker"] == "patient" for r in speech)


def test_analyze_bad_other_voice_is_one_line(voices, tmp_path):
    result = run_cli("analyze", str(voices["dialogue"]), "--other-voice", str(voices["short"]), "--out",
                     str(tmp_path / "out"), "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "of speech found" in result.stderr
    assert not (tmp_path / "out").exists()


def test_config_voice_section_is_validated(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[voice]\nthreshold = 3\n")
    result = run_cli("validate-config", str(path))
    assert result.returncode == 2 and "voice.threshold" in result.stderr
    assert Config().voice.enabled


# ---- the status page ----------------------------------------------------------------------------------------

def test_page_enrolls_at_the_device_lists_and_deletes(voices, tmp_path):
    """The real daemon replays the clinician talking as its microphone; the page records from it."""
    from device.config import config_from_dict
    from device.credentials import hash_password
    from device.daemon.service import Daemon
    from device.health import SystemdNotifier
    from device.web import create_app

    config = config_from_dict({
        "store": {"path": str(tmp_path / "affectbox.db")},
        "device": {"id": "voice-test", "state_dir": str(tmp_path / "state")},
        "control": {"socket": str(tmp_path / "control.sock")},
        "hub": {"enabled": False, "outbox_path": str(tmp_path / "outbox.db")},
        "web": {"enabled": False},
        "session": {"debug_recording_dir": str(tmp_path / "debug")},
        "capture": {"camera": "none"},
    })
    appliance = Daemon(config, replay_audio=voices["enroll"], replay_loop=True, notifier=SystemdNotifier(""))
    appliance.start()
    try:
        client = create_app(appliance, password_hash=hash_password("voice page password")).test_client()
        assert client.get("/api/voices").status_code == 401
        token = client.post("/api/login", json={"password": "voice page password"}).json["csrf_token"]
        headers = {"X-CSRF-Token": token}
        page = client.get("/voices")
        assert page.status_code == 200 and b"No voices enrolled" in page.data
        refused = client.post("/api/voices", json={"name": "dr-smith", "seconds": 15}, headers=headers)
        assert refused.status_code == 400 and "confirm" in refused.json["error"]
        bad = client.post("/api/voices", json={"name": "../x", "confirm": True}, headers=headers)
        assert bad.status_code == 400
        assert client.post("/api/voices", json={"name": "dr-smith", "confirm": True, "seconds": 15}).status_code == 403
        assert client.get("/api/voices").json["voices"] == []

        done = client.post("/api/voices", json={"name": "dr-smith", "confirm": True, "seconds": 15}, headers=headers)
        assert done.status_code == 201, done.json
        assert done.json["name"] == "dr-smith" and "embedding" not in done.json
        listed = client.get("/api/voices").json
        assert [v["name"] for v in listed["voices"]] == ["dr-smith"]
        stored = tmp_path / "state" / "voiceprints" / "dr-smith.voiceprint.json"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert json.loads(stored.read_text())["embedding"][0] is not None
        again = client.post("/api/voices", json={"name": "dr-smith", "confirm": True, "seconds": 15}, headers=headers)
        assert again.status_code == 409

        missing = client.post("/api/voices/nobody/delete", json={}, headers=headers)
        assert missing.status_code == 404
        deleted = client.post("/api/voices/dr-smith/delete", json={}, headers=headers)
        assert deleted.status_code == 200 and not stored.exists()
        assert client.get("/api/voices").json["voices"] == []
    finally:
        appliance.shutdown("test done")


# ---- the contract -------------------------------------------------------------------------------------------

def test_schema_2_carries_speakers_and_version_1_still_validates():
    import copy

    import jsonschema

    from device.aggregate import WindowAggregator
    from device.config import AggregationConfig
    from device.contract import payloads
    from device.observation import Observation

    aggregator = WindowAggregator(AggregationConfig(window_seconds=10.0))
    probs = np.full(7, 1 / 7)
    aggregator.add(Observation(2.0, "speech", probs, 1.0, {"duration": 3.0, "speaker": "patient",
                                                             "similarity": 0.3}))
    aggregator.add(Observation(6.0, "speech", None, 0.0, {"duration": 2.0, "speaker": "other", "similarity": 0.9}))
    (window,) = aggregator.flush(end=10.0)
    assert window.speakers == {"attributed": True, "patient_s": 3.0, "other_s": 2.0, "other_share": 0.4}
    assert window.modalities["speech"]["seconds"] == 3.0 and window.modalities["speech"]["items"] == 1
    mood = payloads.mood_payload("dev-1", "s-1", 1, window)
    assert mood["schema"] == 2 and mood["speakers"]["other_s"] == 2.0
    schema = jsonschema.Draft202012Validator(payloads.load_schema("mood"), format_checker=jsonschema.FormatChecker())
    schema.validate(mood)
    old = copy.deepcopy(mood)
    old["schema"] = 1
    del old["speakers"]
    schema.validate(old)  # a device not yet updated is still accepted
    missing = copy.deepcopy(mood)
    del missing["speakers"]
    assert not schema.is_valid(missing)
    mixed = copy.deepcopy(mood)
    mixed["schema"] = 1
    assert not schema.is_valid(mixed)
    summary_schema = jsonschema.Draft202012Validator(payloads.load_schema("summary"))
    from device.aggregate import summarize

    summary = summarize([window], 10.0, {"speech": {"items": 1, "present": 1, "seconds": 3.0}})
    built = payloads.summary_payload("dev-1", "s-1", 2, summary)
    summary_schema.validate(built)
    assert built["speakers"] == {"attributed": True, "patient_s": 3.0, "other_s": 2.0, "other_share": 0.4}


def test_voice_cli_records_from_the_microphone(voices, tmp_path, monkeypatch, capsys):
    """`--record SECONDS` reads the configured microphone; here the replay backend stands in for it."""
    import device.capture.live as live
    from device.cli import main

    monkeypatch.setattr(live, "microphone_from_config",
                        lambda capture, block_ms: live.ReplayMicrophone(voices["enroll"], block_ms))
    config = voice_config(tmp_path)
    assert main(["voice", "enroll", "--name", "dr-mic", "--record", "15", "--yes", "--config", str(config)]) == 0
    assert "enrolled dr-mic" in capsys.readouterr().out
    assert (tmp_path / "state" / "voiceprints" / "dr-mic.voiceprint.json").is_file()
    assert main(["voice", "enroll", "--name", "dr-x", str(voices["enroll"]), "--record", "15", "--yes",
                 "--config", str(config)]) == 2
    assert "one source" in capsys.readouterr().err


def test_root_enrollment_hands_the_voiceprint_to_the_state_owner(tmp_path):
    """`sudo affectbox voice enroll` must leave a file the service user (owner of state_dir) can read."""
    if os.geteuid() != 0:
        pytest.skip("needs root to change owners")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4242, 4242)
    store = VoiceprintStore(state / "voiceprints")
    store.save("dr-owner", np.ones(256, np.float32), 12.0, 3)
    path = state / "voiceprints" / "dr-owner.voiceprint.json"
    assert (path.stat().st_uid, (state / "voiceprints").stat().st_uid) == (4242, 4242)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_checkpoint_reader_reads_the_zip_format(tmp_path, monkeypatch):
    """PyTorch >= 1.6 writes zip archives (data.pkl + one file per storage): written here with stand-in
    `torch` modules (no PyTorch), read back into the same numbers, strides and offsets."""
    import io
    import types
    import zipfile

    def rebuild(*args):  # stands in for torch._utils._rebuild_tensor_v2 while pickling
        raise AssertionError("never called")

    class FloatStorage:  # stands in for torch.FloatStorage
        pass

    torch_module, utils_module = types.ModuleType("torch"), types.ModuleType("torch._utils")
    rebuild.__module__, rebuild.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"
    utils_module._rebuild_tensor_v2, torch_module.FloatStorage = rebuild, FloatStorage
    monkeypatch.setitem(sys.modules, "torch", torch_module)
    monkeypatch.setitem(sys.modules, "torch._utils", utils_module)

    class Tensor:
        def __init__(self, key, offset, size, stride):
            self.args = (key, offset, size, stride)

        def __reduce__(self):
            key, offset, size, stride = self.args
            return rebuild, (("storage", key), offset, size, stride, False, {})

    class Writer(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj[:1] == ("storage",):
                return ("storage", FloatStorage, obj[1], "cpu", 12)
            return None

    data = np.arange(12, dtype="<f4")
    buffer = io.BytesIO()
    Writer(buffer, protocol=2).dump({"model_state": {"w": Tensor("0", 0, (3, 4), (4, 1)),
                                                     "t": Tensor("0", 1, (2, 2), (1, 4))}})
    path = tmp_path / "zip.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/data/0", data.tobytes())
    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.delitem(sys.modules, "torch._utils")
    state = load_checkpoint(path)["model_state"]
    assert np.array_equal(state["w"], data.reshape(3, 4))
    assert np.array_equal(state["t"], np.array([[1, 5], [2, 6]], dtype=np.float32))
    with zipfile.ZipFile(path, "w") as archive:  # a storage smaller than its tensors claim
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/data/0", data[:5].tobytes())
    with pytest.raises(ModelError):
        load_checkpoint(path)
