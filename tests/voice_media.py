"""Test media for speaker attribution: two espeak-ng voices, enrollment recordings and dialogues.

The voices: a low male espeak-ng voice ("clinician", enrolled) and a higher female one ("patient"),
speaking different sentences; GE2E tells them apart (cosine about 0.6 between them, about 0.87
within one voice).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import soundfile

from device.observation import SAMPLE_RATE

CLINICIAN = ("en-us+m3", 40)
PATIENT = ("en+f3", 60)
CLINICIAN_LINES = [
    "How have you been feeling since our last appointment?", "Tell me more about what happened at work.",
    "Let us talk about your sleep for a moment.", "Did you take the tablets every morning?",
    "What would you like to focus on today?", "That sounds like a difficult week for you.",
]
PATIENT_LINES = [
    "I have not been sleeping well for the last few weeks.", "Some days are better than others, I suppose.",
    "My sister came to visit on Sunday and we went for a walk.", "I find it hard to concentrate at work lately.",
    "The new medication seems to help a little.", "I don't really know what to say about that.",
]
ENROLL_LINES = [
    "Good morning, I am the clinician who will see you today.", "Please take a seat and make yourself comfortable.",
    "We will start with a few questions about the past week.", "There are no right or wrong answers here.",
    "Take your time, and tell me whenever you need a break.", "Let me write down a few notes as we go along.",
    "We can look at your sleep diary together afterwards.",
]


def say(text: str, voice: tuple[str, int], folder: Path) -> np.ndarray:
    path = folder / "say.wav"
    subprocess.run(["espeak-ng", "-v", voice[0], "-p", str(voice[1]), "-w", str(path), text], check=True,
                   capture_output=True)
    pcm, rate = soundfile.read(path, dtype="float32")
    positions = np.arange(0, len(pcm) * SAMPLE_RATE / rate) * rate / SAMPLE_RATE
    return np.interp(positions, np.arange(len(pcm)), pcm).astype(np.float32) * 0.5


def write_wav(path: Path, pieces: list[np.ndarray], gap_s: float = 0.8, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    gap = np.zeros(int(gap_s * SAMPLE_RATE), np.float32)
    pcm = np.concatenate([np.concatenate([gap, p]) for p in pieces] + [gap])
    pcm = pcm + rng.normal(0, 10 ** (-60 / 20), len(pcm)).astype(np.float32)
    soundfile.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    return path


def voice_files(folder: Path) -> dict[str, Path]:
    """The enrollment recordings, a two-voice dialogue (and its turns as JSON), and the bad inputs."""
    clinician = [say(t, CLINICIAN, folder) for t in ENROLL_LINES]
    files = {"enroll": write_wav(folder / "clinician_enroll.wav", clinician, 0.5)}
    turns, spans, t = [], [], 0.0
    for p_line, c_line in zip(PATIENT_LINES, CLINICIAN_LINES, strict=True):
        for who, line, voice in (("patient", p_line, PATIENT), ("clinician", c_line, CLINICIAN)):
            pcm = say(line, voice, folder)
            t += 0.8
            spans.append((t, t + len(pcm) / SAMPLE_RATE, who))
            t += len(pcm) / SAMPLE_RATE
            turns.append(pcm)
    files["dialogue"] = write_wav(folder / "dialogue.wav", turns)
    (folder / "turns.json").write_text(json.dumps(spans))
    files["turns"] = folder / "turns.json"
    files["short"] = write_wav(folder / "short.wav", clinician[:2], 0.5)
    patient_talk = [say(t, PATIENT, folder) for t in PATIENT_LINES]
    mixed = [piece for pair in zip(clinician[:6], patient_talk, strict=True) for piece in pair]
    files["two_voices"] = write_wav(folder / "two_voices.wav", mixed, 0.5)
    files["patient_only"] = write_wav(folder / "patient_only.wav", patient_talk)
    return files


