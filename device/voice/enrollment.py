"""Enrollment audio to one voiceprint, refusing audio that cannot make a good one.

The audio (a file through the normal decoders, or seconds from the configured microphone) goes
through the same VAD segmenter as a session. Then:
- too little speech (under `min_speech_s`, 10 s by default) is refused: a voiceprint from a few
  words matches poorly;
- the speech is cut into pieces of at most PIECE_SECONDS, each embedded (all partials); if the
  pieces fall into two groups (2-means on the unit sphere) that each hold at least
  MIN_GROUP_SHARE of the speech and whose centroids are less similar than the attribution
  threshold, the recording holds several voices and is refused;
- otherwise the voiceprint is the normalised, duration-weighted mean of the pieces' embeddings.
Every refusal is one line naming the file and what was wrong.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from device.audio.vad import SpeechSegmenter, Utterance
from device.config import SpeechConfig
from device.inference.voice_encoder import SAMPLE_RATE, VoiceEncoder
from device.observation import AudioBlock
from device.voice.voiceprints import VoiceprintError

PIECE_SECONDS = 3.0
MIN_PIECE_SECONDS = 1.0
MIN_GROUP_SHARE = 0.2


@dataclass(frozen=True)
class Enrollment:
    embedding: np.ndarray
    speech_s: float
    utterances: int
    pieces: int


def blocks_of(pcm: np.ndarray, block_ms: int) -> Iterable[AudioBlock]:
    """int16 PCM as the segmenter's fixed-length blocks (the last zero-padded)."""
    n = SAMPLE_RATE * block_ms // 1000
    for i in range(0, len(pcm), n):
        chunk = pcm[i:i + n]
        if len(chunk) < n:
            yield AudioBlock(i / SAMPLE_RATE, np.pad(chunk, (0, n - len(chunk))).astype(np.int16), valid=len(chunk))
        else:
            yield AudioBlock(i / SAMPLE_RATE, chunk)


def speech_utterances(blocks: Iterable[AudioBlock], config: SpeechConfig) -> list[Utterance]:
    segmenter = SpeechSegmenter(config)
    found: list[Utterance] = []
    for block in blocks:
        found.extend(segmenter.push(block))
    found.extend(segmenter.flush())
    return found


def _pieces(utterances: list[Utterance]) -> list[np.ndarray]:
    step = int(PIECE_SECONDS * SAMPLE_RATE)
    out = []
    for u in utterances:
        for i in range(0, len(u.pcm), step):
            piece = u.pcm[i:i + step]
            if len(piece) >= MIN_PIECE_SECONDS * SAMPLE_RATE or (i == 0 and not out):
                out.append(piece)
    return out


def two_groups(embeddings: np.ndarray, weights: np.ndarray, rounds: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """2-means on unit vectors from the two least similar ones: (labels, [2, dim] unit centroids)."""
    sims = embeddings @ embeddings.T
    a, b = np.unravel_index(int(np.argmin(sims)), sims.shape)
    centroids = embeddings[[a, b]].copy()
    labels = np.zeros(len(embeddings), int)
    for _ in range(rounds):
        labels = np.argmax(embeddings @ centroids.T, axis=1)
        for k in (0, 1):
            members = labels == k
            if members.any():
                mean = (embeddings[members] * weights[members, None]).sum(axis=0)
                centroids[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return labels, centroids


def enroll_pcm(pcm: np.ndarray, encoder: VoiceEncoder, config: SpeechConfig, *, what: str, threshold: float,
               min_speech_s: float) -> Enrollment:
    """A voiceprint from int16 16 kHz mono PCM; VoiceprintError (one line, naming `what`) if unfit."""
    utterances = speech_utterances(blocks_of(np.asarray(pcm, np.int16), config.block_ms), config)
    speech_s = sum(u.duration for u in utterances)
    if speech_s < min_speech_s:
        raise VoiceprintError(f"{what}: only {speech_s:.1f} s of speech found, enrollment needs at least "
                              f"{min_speech_s:g} s (record 20-30 s of the one person talking)")
    pieces = _pieces(utterances)
    embeddings = np.stack([encoder.embed(p) for p in pieces])
    weights = np.array([len(p) / SAMPLE_RATE for p in pieces])
    if len(pieces) >= 4:
        labels, centroids = two_groups(embeddings, weights)
        shares = [weights[labels == k].sum() / weights.sum() for k in (0, 1)]
        if min(shares) >= MIN_GROUP_SHARE and float(centroids[0] @ centroids[1]) < threshold:
            raise VoiceprintError(f"{what}: seems to hold more than one voice ({min(shares):.0%} of the speech "
                                  "does not match the rest); record the one person alone")
    mean = (embeddings * weights[:, None]).sum(axis=0)
    return Enrollment((mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32), speech_s,
                      len(utterances), len(pieces))
