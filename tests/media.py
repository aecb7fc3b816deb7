"""Test media generated on the spot: a session video (astronaut head + espeak-ng speech).

Shared by the analyze, daemon and hub tests and by the benchmarks; nothing here reads datasets.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable, Sequence
from pathlib import Path

import av
import cv2
import numpy as np
import soundfile
from skimage import data

from device.observation import SAMPLE_RATE

HEAD_BOX = (130, 30, 330, 230)  # x0, y0, x1, y1 of the astronaut's head in the 512x512 image

SENTENCES = (
    "I have not been sleeping well for the last few weeks.",
    "Some days are better than others, I suppose.",
    "My sister came to visit on Sunday and we went for a walk.",
)


def astronaut_head() -> np.ndarray:
    image = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    x0, y0, x1, y1 = HEAD_BOX
    return image[y0:y1, x0:x1]


def espeak(text: str, folder: Path) -> np.ndarray:
    """Speech of `text` by espeak-ng as float32 at SAMPLE_RATE, leading/trailing silence cut."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is required (setup.sh --dev installs it)")
    path = folder / "tmp_espeak.wav"
    subprocess.run(["espeak-ng", "-w", str(path), text], check=True, capture_output=True)
    pcm, rate = soundfile.read(path, dtype="float32")
    path.unlink()
    positions = np.arange(0, len(pcm) * SAMPLE_RATE / rate) * rate / SAMPLE_RATE
    pcm = np.interp(positions, np.arange(len(pcm)), pcm).astype(np.float32)
    loud = np.flatnonzero(np.abs(pcm) > 0.01)
    return pcm[loud[0] : loud[-1] + 1]


def session_audio(folder: Path, duration: float, speech_at: Sequence[float],
                  sentences: Sequence[str] = SENTENCES) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Quiet noise with one sentence starting at each `speech_at`; (pcm, speech spans)."""
    rng = np.random.default_rng(11)
    pcm = rng.normal(0, 10 ** (-55 / 20), size=int(duration * SAMPLE_RATE)).astype(np.float32)
    spans = []
    cache: dict[str, np.ndarray] = {}
    for k, start in enumerate(speech_at):
        text = sentences[k % len(sentences)]
        speech = cache.setdefault(text, espeak(text, folder) * 0.6)
        i = int(start * SAMPLE_RATE)
        piece = speech[: max(0, len(pcm) - i)]
        pcm[i : i + len(piece)] += piece
        spans.append((start, start + len(piece) / SAMPLE_RATE))
    return pcm, spans


def face_frame(t: float, head: np.ndarray, background: np.ndarray, face_spans: Sequence[tuple[float, float]]
               ) -> np.ndarray:
    frame = background.copy()
    if any(a <= t < b for a, b in face_spans):
        height, width = frame.shape[:2]
        side = height // 2
        x = int(width / 2 - side / 2 + width / 8 * np.sin(t))
        y = height // 5
        frame[y : y + side, x : x + side] = cv2.resize(head, (side, side))
    return frame


def write_av_session(path: Path, duration: float, speech_at: Sequence[float],
                     face_spans: Sequence[tuple[float, float]], fps: float = 10, size: tuple[int, int] = (640, 480)
                     ) -> dict[str, object]:
    """A video with an audio track (mpeg4 + flac in Matroska); returns the spans used."""
    pcm, spans = session_audio(path.parent, duration, speech_at)
    head = astronaut_head()
    width, height = size
    background = np.full((height, width, 3), 100, dtype=np.uint8)
    frames = (face_frame(i / fps, head, background, face_spans) for i in range(int(duration * fps)))
    encode_av(path, frames, pcm, fps, size)
    return {"path": path, "pcm": pcm, "speech_spans": spans, "face_spans": list(face_spans), "duration": duration}


def encode_av(path: Path, frames: Iterable[np.ndarray], pcm: np.ndarray | None, fps: float,
              size: tuple[int, int], video_codec: str = "mpeg4", audio_codec: str = "flac") -> None:
    """Write BGR frames (mpeg4) and float PCM at SAMPLE_RATE (flac) into one file (Matroska by
    default; the container follows the suffix, e.g. .mp4 with aac, .flv with flv + aac); no audio
    track when `pcm` is None."""
    width, height = size
    with av.open(str(path), "w") as container:
        video = container.add_stream(video_codec, rate=int(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream(audio_codec, rate=SAMPLE_RATE, layout="mono") if pcm is not None else None
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
        if audio is None or pcm is None:
            return
        samples = (np.clip(pcm, -1, 1) * 32767).astype(np.int16)
        for k in range(0, len(samples), 4096):
            frame = av.AudioFrame.from_ndarray(samples[None, k : k + 4096].copy(), format="s16", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = k
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in audio.encode():
            container.mux(packet)
