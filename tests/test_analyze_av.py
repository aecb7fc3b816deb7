"""`affectbox analyze` with a voice: a video with an audio track, a video plus a separate audio
file, and an audio file alone, all generated here (astronaut photo + espeak-ng speech)."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile

from device.observation import SAMPLE_RATE
from tests.conftest import HEAD_BOX, under_emulation
from tests.media import encode_av, session_audio

pytestmark = pytest.mark.timeout(300)

SENTENCES = [
    "I have not been sleeping well for the last few weeks.",
    "Some days are better than others, I suppose.",
    "My sister came to visit on Sunday and we went for a walk.",
]
SPEECH_AT = [1.0, 6.0, 12.5]  # seconds: where each sentence starts
DURATION = 18.0
FACE_SPANS = [(0.0, 9.0), (12.0, 18.0)]


def face_frame(t: float, head: np.ndarray, background: np.ndarray) -> np.ndarray:
    frame = background.copy()
    if any(a <= t < b for a, b in FACE_SPANS):
        x = int(120 + 60 * np.sin(t))
        frame[100:340, x : x + 240] = cv2.resize(head, (240, 240))
    return frame


@pytest.fixture(scope="module")
def av_media(tmp_path_factory, astronaut_bgr) -> dict:
    folder = tmp_path_factory.mktemp("av")
    pcm, spans = session_audio(folder, DURATION, SPEECH_AT, SENTENCES)
    x0, y0, x1, y1 = HEAD_BOX
    head = astronaut_bgr[y0:y1, x0:x1]
    background = np.full((480, 640, 3), 100, dtype=np.uint8)
    video_path = folder / "session.mkv"
    silent_path = folder / "silent.avi"
    audio_path = folder / "voice.flac"
    soundfile.write(audio_path, pcm, SAMPLE_RATE)
    fps = 10
    encode_av(video_path, (face_frame(i / fps, head, background) for i in range(int(DURATION * fps))), pcm, fps,
              (640, 480))
    writer = cv2.VideoWriter(str(silent_path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    for i in range(int(DURATION * fps)):
        writer.write(face_frame(i / fps, head, background))
    writer.release()
    return {"video": video_path, "silent": silent_path, "audio": audio_path, "spans": spans, "folder": folder}


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "device", "analyze", *args, "--quiet"], capture_output=True,
                          text=True, timeout=250, check=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_speech(out: Path, spans: list[tuple[float, float]]) -> None:
    rows = [r for r in read_jsonl(out / "timeline.jsonl") if r["modality"] == "speech"]
    assert len(rows) == len(spans), rows
    for row, (start, end) in zip(rows, spans, strict=True):
        assert abs(row["start"] - start) < 0.5 and abs(row["end"] - end) < 0.6, (row, start, end)
        assert sum(row["probs"].values()) == pytest.approx(1.0, abs=1e-3)
        prosody = row["prosody"]
        assert 70 < prosody["f0_mean_hz"] < 250  # espeak's default voice
        assert 0 <= prosody["pause_ratio"] < 0.6 and 1.0 < prosody["speaking_rate"] < 8.0
        assert 0 < row["quality"] <= 1


def test_video_with_audio_track(av_media, tmp_path):
    out = tmp_path / "out"
    result = analyze(str(av_media["video"]), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["coverage"]) == {"face", "speech"}
    assert summary["coverage"]["face"]["share"] == pytest.approx(15 / 18, abs=0.06)
    assert summary["analysis"]["utterances"] == 3
    assert summary["prosody"]["speech_s"] > 4
    assert {m["name"] for m in summary["models"]} == {
        "blazeface_full_range", "affectbox_face_expression", "affectbox_speech_emotion"}
    check_speech(out, av_media["spans"])
    windows = read_jsonl(out / "windows.jsonl")
    assert len(windows) == 2
    for window in windows:
        assert window["has_mood"] and set(window["modalities"]) == {"face", "speech"}
        assert window["fusion_weights"]["face"] > 0 and window["fusion_weights"]["speech"] > 0
        assert window["prosody"]["n_utterances"] >= 1
    html = (out / "report.html").read_text()
    assert "prosody" in html.lower() and "does not diagnose" in html


def test_video_plus_separate_audio_matches_the_muxed_file(av_media, tmp_path):
    out = tmp_path / "out"
    result = analyze(str(av_media["silent"]), "--audio", str(av_media["audio"]), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["source"]["audio_file"] == "voice.flac"
    check_speech(out, av_media["spans"])


def test_audio_only(av_media, tmp_path):
    out = tmp_path / "out"
    result = analyze(str(av_media["audio"]), "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary["coverage"]) == {"speech"} and summary["dominant"] is not None
    assert summary["source"]["fps"] is None
    check_speech(out, av_media["spans"])
    if not under_emulation():  # a CPU budget: meaningless under an emulator
        assert summary["analysis"]["speech_real_time_factor"] < 0.2  # generous: CI machines are noisy


def test_silent_audio_is_a_warning(av_media, tmp_path):
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(SAMPLE_RATE * 3, dtype=np.float32), SAMPLE_RATE)
    result = analyze(str(silence), "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    assert "no speech" in result.stderr


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [("missing.wav", None, "no such file"), ("empty.wav", b"", "empty file"),
     ("text.wav", b"not audio at all " * 40, "can be decoded")],
)
def test_bad_separate_audio(av_media, tmp_path, name, content, fragment):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    result = analyze(str(av_media["silent"]), "--audio", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and fragment in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_audio_argument_without_audio_track(av_media, tmp_path):
    result = analyze(str(av_media["silent"]), "--audio", str(av_media["silent"]), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "has no audio track" in result.stderr
