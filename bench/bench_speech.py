"""Speech pathway cost: real-time factor and per-utterance latency, CPU time on one core.

    .venv/bin/python bench/bench_speech.py [--minutes 3] [--json-out FILE]

Builds a session-like recording from espeak-ng (Debian package) sentences at two speaking rates
with pauses of 0.5-3 s and background noise at -50 dBFS, then runs the device's own
`SpeechAnalyzer` (WebRTC VAD, log-mel features, int8 speech-emotion model, prosody) over it
block by block, exactly as `affectbox analyze` does. Reported, as CPU time (time.process_time,
process pinned to one core, one interpreter thread):
- real-time factor of the whole pathway (CPU seconds / audio seconds), target <= 0.02;
- the share of that spent in the VAD (blocks without an utterance end) vs per utterance;
- per-utterance CPU ms (model + prosody), mean / median / 90th percentile, and per utterance
  second; also model-only and prosody-only ms per utterance.
Ratios between rows are what to compare on this noisy 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from device.audio.prosody import utterance_prosody
from device.capture.audio_file import AudioFileSource
from device.config import Config
from device.inference.speech import SpeechAnalyzer
from device.observation import SAMPLE_RATE

SENTENCES = [
    "I have not been sleeping well for the last few weeks.",
    "Some days are better than others, I suppose.",
    "My sister came to visit on Sunday and we went for a walk.",
    "I find it hard to concentrate at work lately.",
    "The new medication seems to help a little.",
    "I don't really know what to say about that.",
]


def espeak(text: str, speed: int, folder: Path) -> np.ndarray:
    import soundfile

    path = folder / f"s{abs(hash((text, speed)))}.wav"
    subprocess.run(["espeak-ng", "-s", str(speed), "-w", str(path), text], check=True, capture_output=True)
    pcm, rate = soundfile.read(path, dtype="float32")
    if rate != SAMPLE_RATE:  # espeak-ng writes 22,050 Hz
        positions = np.arange(0, len(pcm) * SAMPLE_RATE / rate) * rate / SAMPLE_RATE
        pcm = np.interp(positions, np.arange(len(pcm)), pcm).astype(np.float32)
    return pcm


def build_session(minutes: float, folder: Path, seed: int = 5) -> Path:
    import soundfile

    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    total = 0
    i = 0
    while total < minutes * 60 * SAMPLE_RATE:
        speech = espeak(SENTENCES[i % len(SENTENCES)], (130, 190)[i % 2], folder)
        pause = np.zeros(int(rng.uniform(0.5, 3.0) * SAMPLE_RATE), dtype=np.float32)
        parts += [speech * 0.5, pause]
        total += len(speech) + len(pause)
        i += 1
    pcm = np.concatenate(parts)
    pcm = pcm + rng.normal(0, 10 ** (-50 / 20), size=len(pcm)).astype(np.float32)
    path = folder / "session.wav"
    soundfile.write(path, pcm, SAMPLE_RATE, subtype="PCM_16")
    return path


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="length of the generated session")
    parser.add_argument("--core", type=int, default=0)
    parser.add_argument("--json-out")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("bench_speech: espeak-ng not found (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.core})
    config = Config()
    analyzer = SpeechAnalyzer.from_config(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = build_session(args.minutes, Path(tmp))
        blocks = list(AudioFileSource(path, config.speech.block_ms))
    audio_seconds = len(blocks) * config.speech.block_ms / 1000
    total_cpu = 0.0
    per_utterance: list[float] = []
    utterance_seconds: list[float] = []
    model_ms: list[float] = []
    prosody_ms: list[float] = []
    quiet_cpu = 0.0
    for block in blocks:
        start = time.process_time()
        utterances = analyzer.segmenter.push(block)
        vad_cpu = time.process_time() - start
        quiet_cpu += vad_cpu
        total_cpu += vad_cpu
        for utterance in utterances:
            t0 = time.process_time()
            analyzer.observe(utterance)
            spent = time.process_time() - t0
            total_cpu += spent
            per_utterance.append(spent * 1000)
            utterance_seconds.append(utterance.duration)
            t1 = time.process_time()
            analyzer.classifier.classify(utterance.pcm)
            model_ms.append((time.process_time() - t1) * 1000)
            t2 = time.process_time()
            utterance_prosody(utterance.pcm, t0=utterance.start)
            prosody_ms.append((time.process_time() - t2) * 1000)
    result = {
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "audio_seconds": round(audio_seconds, 2),
        "utterances": len(per_utterance),
        "real_time_factor": round(total_cpu / audio_seconds, 5),
        "vad_cpu_ms_per_audio_second": round(1000 * quiet_cpu / audio_seconds, 3),
        "utterance_cpu_ms": {"mean": round(float(np.mean(per_utterance)), 3),
                             "median": round(pct(per_utterance, 50), 3), "p90": round(pct(per_utterance, 90), 3)},
        "utterance_cpu_ms_per_utterance_second": round(sum(per_utterance) / sum(utterance_seconds), 3),
        "model_cpu_ms_per_utterance": round(float(np.mean(model_ms)), 3),
        "prosody_cpu_ms_per_utterance": round(float(np.mean(prosody_ms)), 3),
        "mean_utterance_seconds": round(float(np.mean(utterance_seconds)), 3),
    }
    print("| measure | value |\n| --- | ---: |")
    for key, value in result.items():
        if isinstance(value, dict):
            value = " / ".join(f"{k} {v}" for k, v in value.items())
        print(f"| {key} | {value} |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
