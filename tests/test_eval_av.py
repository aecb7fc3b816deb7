"""`affectbox eval av`: generated clips (the astronaut's face + espeak-ng speech) named as in
RAVDESS (01- audio-visual; 02- video only paired with the 03- audio of the same take) and CREMA-D."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from device.config import Config
from device.errors import MediaError
from device.evaluate_av import evaluate_av, find_av_clips, format_av_report
from device.observation import SAMPLE_RATE
from tests.media import astronaut_head, encode_av, face_frame, session_audio

REPO = Path(__file__).resolve().parent.parent
DURATION = 3.0


def _frames(face: bool):
    head = astronaut_head()
    background = np.full((480, 640, 3), 100, np.uint8)
    spans = [(0.0, DURATION)] if face else []
    return (face_frame(i / 10, head, background, spans) for i in range(int(DURATION * 10)))


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("av-clips")
    pcm, _ = session_audio(root, DURATION, [0.3])
    actor = root / "Actor_01"
    actor.mkdir()
    # RAVDESS: an audio-visual clip (happy), a video-only clip (sad) and the audio of that take
    encode_av(actor / "01-01-03-01-01-01-01.mp4", _frames(True), pcm, 10, (640, 480), audio_codec="aac")
    encode_av(actor / "02-01-04-01-01-01-01.mp4", _frames(True), None, 10, (640, 480))
    soundfile.write(actor / "03-01-04-01-01-01-01.wav", (pcm * 32767).astype(np.int16), SAMPLE_RATE)
    # a video-only take without its audio: the voice has nothing to say about it
    encode_av(actor / "02-01-05-01-02-01-01.mp4", _frames(False), None, 10, (640, 480))
    # CREMA-D: Flash video with its own sound
    encode_av(root / "1001_DFA_ANG_XX.flv", _frames(True), pcm, 10, (640, 480), video_codec="flv",
              audio_codec="aac")
    (root / "notes.mp4").write_bytes(b"not a clip")  # a name of no corpus: counted, not read
    return root


def test_clips_are_found_and_paired(clips):
    found, unknown = find_av_clips(clips)
    by_name = {c.video.name: c for c in found}
    assert set(by_name) == {"01-01-03-01-01-01-01.mp4", "02-01-04-01-01-01-01.mp4", "02-01-05-01-02-01-01.mp4",
                            "1001_DFA_ANG_XX.flv"}
    assert unknown == 1
    assert by_name["02-01-04-01-01-01-01.mp4"].audio.name == "03-01-04-01-01-01-01.wav"
    assert by_name["01-01-03-01-01-01-01.mp4"].audio is None  # its own sound track
    assert by_name["02-01-05-01-02-01-01.mp4"].audio is None
    assert [by_name[n].label for n in sorted(by_name)] == ["happy", "sad", "angry", "angry"]


def test_report_counts_faces_speech_and_predictions(clips):
    report = evaluate_av(clips, Config())
    assert report["n_clips"] == 4 and report["n_paired_audio"] == 1 and report["n_failed"] == 0
    assert report["corpora"] == ["crema-d", "ravdess"]
    # three clips show the face throughout, one shows none
    assert 0.7 <= report["face_frame_share"] <= 0.76
    assert report["speech_clip_share"] == pytest.approx(0.75)  # every clip but the unpaired video-only one
    modes = report["modes"]
    assert modes["face"]["n"] == 3 and modes["face"]["n_without"] == 1
    assert modes["voice"]["n"] == 3 and modes["voice"]["n_without"] == 1
    assert modes["fused"]["n"] == 3  # the clip with neither a face nor a voice has no mood
    for mode in modes.values():
        assert np.asarray(mode["confusion_matrix"]).sum() == mode["n"]
        assert 0.0 <= mode["accuracy"] <= 1.0 and 0.0 <= mode["macro_f1"] <= 1.0
    text = format_av_report(report)
    assert "face (clips without a prediction: 1)" in text and "macro-F1" in text


def test_cli_json_and_one_line_error(clips, tmp_path):
    result = subprocess.run([sys.executable, "-m", "device", "eval", "av", str(clips), "--json", "--quiet"],
                            cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["n_clips"] == 4
    empty = subprocess.run([sys.executable, "-m", "device", "eval", "av", str(tmp_path), "--quiet"],
                           cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert empty.returncode != 0
    assert len(empty.stderr.strip().splitlines()) == 1 and "no labelled audio-visual clips" in empty.stderr
    with pytest.raises(MediaError, match="not a folder"):
        find_av_clips(tmp_path / "missing")
