"""The speech-emotion model as shipped: manifest, features, classifier, `eval speech` file naming, bad audio.

Test audio is generated here: espeak-ng speech when /usr/bin/espeak-ng exists, numpy tones and
noise otherwise (never ../shared).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from device.audio import features as feat
from device.calibration import softmax
from device.capture.audio_file import read_audio
from device.config import Config
from device.errors import MediaError, ModelError
from device.evaluate_speech import evaluate_speech, find_speech_files, parse_speech_name
from device.inference.runtime import sha256_file
from device.inference.speech_emotion import MANIFEST_NAME, SpeechEmotionClassifier
from device.labels import LABELS

ESPEAK = Path("/usr/bin/espeak-ng")
SR = feat.SAMPLE_RATE


def tone(seconds: float, freq: float = 220.0, rate: int = SR, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A crude vowel: harmonics of a wobbling F0 under a syllable-rate envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f0 = 140 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * x * envelope + 0.005 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def manifest(models_dir: Path) -> dict:
    return json.loads((models_dir / MANIFEST_NAME).read_text())


@pytest.fixture(scope="module")
def classifier(models_dir: Path) -> SpeechEmotionClassifier:
    return SpeechEmotionClassifier.from_models_dir(models_dir)


# ---------------------------------------------------------------- model file and manifest

def test_manifest_matches_file(models_dir: Path, manifest: dict) -> None:
    path = models_dir / manifest["file"]
    assert manifest["name"] == "affectbox_speech_emotion"
    assert sha256_file(path) == manifest["sha256"]
    assert path.stat().st_size == manifest["size_bytes"] <= 500 * 1024
    assert manifest["input"]["shape"] == [1, *feat.FEATURE_SHAPE]
    assert manifest["input"]["dtype"] == "int8"
    assert manifest["output"]["kind"] == "logits"
    assert manifest["output"]["labels"] == list(LABELS)
    assert manifest["calibration"]["temperature"] > 0
    assert "CC BY-NC-SA 4.0" in manifest["training"]["licence"]
    assert len(manifest["metrics_val"]["per_fold"]) == 6
    assert (models_dir / manifest["model_card"]).is_file()


def test_tampered_model_file_is_refused(models_dir: Path, manifest: dict, tmp_path: Path) -> None:
    shutil.copy(models_dir / MANIFEST_NAME, tmp_path / MANIFEST_NAME)
    data = bytearray((models_dir / manifest["file"]).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / manifest["file"]).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="wrong or damaged"):
        SpeechEmotionClassifier.from_models_dir(tmp_path)


# ---------------------------------------------------------------- features

@pytest.mark.parametrize(
    "name, pcm",
    [
        ("tone", tone(2.0)),
        ("noise", np.random.default_rng(1).uniform(-0.5, 0.5, 2 * SR).astype(np.float32)),
        ("voice", voice_like(1.5)),
        ("silence", np.zeros(2 * SR, dtype=np.float32)),
        ("very short", tone(0.004)),
        ("empty", np.zeros(0, dtype=np.float32)),
        ("very long", voice_like(30.0)),
        ("clipped", np.clip(tone(1.0, amplitude=3.0), -1, 1)),
    ],
)
def test_speech_features_shape_and_dtype(name: str, pcm: np.ndarray) -> None:
    x = feat.speech_features(pcm)
    assert x.shape == feat.FEATURE_SHAPE == (256, 40)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    assert np.abs(x).max() <= feat.CLIP
    windows = feat.speech_feature_windows(pcm)
    assert windows.dtype == np.float32 and windows.shape[1:] == feat.FEATURE_SHAPE
    if name == "silence" or name == "empty":
        assert not x.any()
    if name == "very long":
        assert len(windows) >= 30 // 2.56
    else:
        assert len(windows) == 1
        np.testing.assert_array_equal(windows[0], x)


def test_features_ignore_gain_and_leading_silence() -> None:
    voice = voice_like(1.2, seed=3)
    np.testing.assert_allclose(feat.speech_features(0.1 * voice), feat.speech_features(voice), atol=1e-2)
    padded = np.concatenate([np.zeros(SR // 2, np.float32), voice, np.zeros(SR // 3, np.float32)])
    kept = feat.trimmed_log_mel(padded)
    assert abs(len(kept) - len(feat.trimmed_log_mel(voice))) <= 5  # silence gone, up to edge frames


def test_window_starts_cover_everything() -> None:
    for n in (257, 300, 512, 1000, 4097):
        starts = feat.window_starts(n)
        assert starts[0] == 0 and starts[-1] == n - feat.N_FRAMES
        assert max(np.diff(starts)) <= feat.N_FRAMES // 2


# ---------------------------------------------------------------- classifier

@pytest.mark.timeout(120)
def test_classifier_returns_a_distribution(classifier: SpeechEmotionClassifier) -> None:
    for pcm in (voice_like(2.0), tone(0.3), np.zeros(SR, np.float32), voice_like(12.0, seed=5)):
        probs, logits = classifier.classify(pcm)
        assert probs.shape == logits.shape == (len(LABELS),)
        assert np.isfinite(logits).all()
        assert (probs >= 0).all() and abs(probs.sum() - 1) < 1e-6
        np.testing.assert_allclose(probs, softmax(logits, classifier.temperature), rtol=1e-6)


def test_long_utterance_logits_are_the_window_average(classifier: SpeechEmotionClassifier) -> None:
    pcm = voice_like(7.0, seed=2)
    windows = feat.speech_feature_windows(pcm)
    assert len(windows) > 1
    expected = np.mean([classifier.window_logits(w) for w in windows], axis=0)
    np.testing.assert_allclose(classifier.logits(pcm), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- eval speech: naming, reading, exclusions

CORPUS_FILES = {
    # RAVDESS speech and song, calm -> neutral
    "Actor_01/03-01-05-01-01-01-01.wav": "angry",
    "Actor_02/03-01-02-02-02-01-02.wav": "neutral",
    "Actor_02/03-02-06-01-01-02-02.flac": "fear",
    "Actor_03/03-01-08-01-01-01-03.flac": "surprise",
    # TESS, pleasant surprise in both spellings
    "OAF_back_ps.wav": "surprise",
    "YAF_dog_pleasant_surprise.flac": "surprise",
    "YAF_germ_disgust.wav": "disgust",
    # EMO-DB (6th character), L = boredom is excluded
    "emodb/03a01Fa.wav": "happy",
    "emodb/16b10Tb.wav": "sad",
    "emodb/03a04La.wav": None,
    # CREMA-D
    "crema/1001_DFA_ANG_XX.wav": "angry",
    "crema/1091_IEO_HAP_HI.wav": "happy",
    "crema/1012_TIE_NEU_XX.wav": "neutral",
}


def test_parse_speech_names() -> None:
    for name, label in CORPUS_FILES.items():
        item = parse_speech_name(Path(name).name)
        assert item is not None, name
        assert item.label == label, name
    assert parse_speech_name("03a04La.wav").excluded_reason.startswith("EMO-DB boredom")
    assert parse_speech_name("03-01-05-01-01-01-12.flac").speaker == "ravdess-12"
    assert parse_speech_name("1001_DFA_FEA_XX.wav").label == "fear"
    assert parse_speech_name("10a07Wa.wav").label == "angry"
    assert parse_speech_name("10a07Ea.wav").label == "disgust"
    assert parse_speech_name("10a07Aa.wav").label == "fear"
    assert parse_speech_name("10a07Na.wav").label == "neutral"
    assert parse_speech_name("YAF_beg_Fear.wav").label == "fear"
    for unknown in ("hello.wav", "03-01-09-01-01-01-01.wav", "1001_DFA_XXX_XX.wav", "recording_2024.flac"):
        assert parse_speech_name(unknown) is None, unknown


def _speech_samples(tmp: Path, index: int) -> tuple[np.ndarray, int]:
    """A short utterance: espeak-ng when installed (22.05 kHz), otherwise a voice-like tone."""
    if ESPEAK.exists():
        out = tmp / f"espeak{index}.wav"
        text = ["kids are talking by the door", "dogs are sitting by the door", "say the word back"][index % 3]
        subprocess.run([str(ESPEAK), "-s", str(150 + 10 * index), "-w", str(out), text], check=True, timeout=30)
        data, rate = sf.read(str(out), dtype="float32")
        out.unlink()
        return data, rate
    return voice_like(1.0 + 0.1 * index, seed=index), SR


@pytest.mark.timeout(120)
def test_eval_speech_on_generated_corpora(tmp_path: Path, models_dir: Path) -> None:
    root = tmp_path / "corpora"
    for i, name in enumerate(CORPUS_FILES):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data, rate = _speech_samples(tmp_path, i)
        if i % 4 == 0:  # a 48 kHz stereo original: resampled and downmixed on reading
            upsampled = np.interp(np.arange(len(data) * 48000 // rate) * rate / 48000, np.arange(len(data)), data)
            data = np.stack([upsampled] * 2, axis=1)
            rate = 48000
        sf.write(str(path), data, rate)
    (root / "notes.wav").write_bytes(b"")  # unknown name: skipped and counted
    (root / "OAF_beg_angry.wav").write_text("not audio at all\n")  # known name, unreadable: counted
    (root / "README.txt").write_text("ignored: not .wav/.flac")
    inventory = find_speech_files(root)
    assert inventory.n_skipped_unknown == 1
    assert sum(inventory.excluded.values()) == 1
    config = Config(runtime=type(Config().runtime)(models_dir=str(models_dir)))
    seen: list[int] = []
    report = evaluate_speech(root, config, progress=lambda done, total: seen.append(done))
    labelled = [label for label in CORPUS_FILES.values() if label is not None]
    assert report["n"] == len(labelled)
    assert report["n_excluded"] == 1
    assert "boredom" in report["note"]
    assert report["n_skipped_unknown"] == 1
    assert report["n_unreadable"] == 1 and "OAF_beg_angry.wav" in report["unreadable"][0]
    for label in LABELS:
        assert report["support"][label] == labelled.count(label)
    assert set(report["per_corpus"]) == {"ravdess", "tess", "emo-db", "crema-d"}
    assert seen[-1] == len(labelled) + 1
    assert 0.0 <= report["accuracy"] <= 1.0
    assert np.array(report["confusion_matrix"]).sum() == len(labelled)
    calibration = report["calibration"]  # cross-fitted by speaker; in-sample on RAVDESS, and says so
    assert calibration["cross_fitted"] is True and calibration["split"] == "by group"
    assert calibration["n"] == len(labelled) and calibration["n_groups"] == len({
        parse_speech_name(Path(name).name).speaker for name, label in CORPUS_FILES.items() if label is not None
    })
    assert calibration["in_sample_corpora"] == ["ravdess"] and "in-sample on RAVDESS" in calibration["note"]
    assert 0.0 <= calibration["ece_shipped"] <= 1.0 and 0.0 <= calibration["ece_after"] <= 1.0


def test_eval_speech_without_labelled_files(tmp_path: Path, config: Config) -> None:
    sf.write(str(tmp_path / "session.wav"), tone(0.5), SR)
    with pytest.raises(MediaError, match="no labelled speech files"):
        evaluate_speech(tmp_path, config)
    with pytest.raises(MediaError, match="not a folder"):
        evaluate_speech(tmp_path / "missing", config)


# ---------------------------------------------------------------- bad audio

@pytest.mark.parametrize(
    "name, content",
    [("empty.wav", b""), ("text.wav", b"this is not audio\n" * 10), ("junk.flac", bytes(range(256)) * 4)],
)
def test_bad_audio_is_a_one_line_media_error(tmp_path: Path, name: str, content: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MediaError) as info:
        read_audio(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(path))


def test_missing_and_zero_length_audio(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match="no such file"):
        read_audio(tmp_path / "absent.wav")
    sf.write(str(tmp_path / "zero.wav"), np.zeros(0, np.float32), SR)
    with pytest.raises(MediaError, match=r"zero length|empty"):
        read_audio(tmp_path / "zero.wav")


def test_speech_path_never_imports_tensorflow() -> None:
    code = (
        "import sys, device.inference.speech_emotion, device.evaluate_speech, device.audio.features; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras') or m.startswith('models')]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
