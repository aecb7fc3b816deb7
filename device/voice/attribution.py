"""Speaker attribution of one utterance: `patient`, or `other` when it matches an enrolled voice.

The utterance's embedding (`VoiceEncoder.embed`, `max_partials` partials: one costs about 14 ms of
CPU here) is compared by cosine similarity with every enrolled voice of the device (or only the
ones chosen for the session). At or above `threshold` (chosen from the equal-error-rate bench,
bench/bench_speaker.py) the utterance is someone else's: it is counted, never analysed. Below, it
is the patient's. An attributor with no voices attributes nothing: every voice is the patient's,
as without this module.

With `adaptive` on, the session also learns the patient's voice as it goes: utterances clearly
below the threshold (by CONFIDENT_MARGIN) are averaged, weighted by their length, into a session
voiceprint of the patient; once it holds PATIENT_MODEL_SECONDS of speech, an utterance is
`other` when it is closer to an enrolled voice than to the patient by at least `margin` and
still within FLOOR_BELOW of the threshold. A relative decision between the two voices in the
room separates them better than one fixed threshold for everyone (bench/bench_speaker.py
measures both). Nothing of the session voiceprint is stored: it lives as long as the session.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from device.inference.voice_encoder import VoiceEncoder

PATIENT = "patient"
OTHER = "other"
CONFIDENT_MARGIN = 0.05
PATIENT_MODEL_SECONDS = 6.0
FLOOR_BELOW = 0.15


@dataclass(frozen=True)
class Attribution:
    speaker: str
    similarity: float  # highest cosine similarity with an enrolled voice


class SpeakerAttributor:
    def __init__(self, encoder: VoiceEncoder | None, voices: Mapping[str, np.ndarray], threshold: float,
                 max_partials: int | None = 1, adaptive: bool = False, margin: float = 0.0) -> None:
        self.encoder = encoder
        self.names = sorted(voices)
        self.matrix = (np.stack([np.asarray(voices[n], np.float32) for n in self.names])
                       if self.names else np.zeros((0, 0), np.float32))
        self.threshold = float(threshold)
        self.max_partials = max_partials
        self.adaptive = adaptive
        self.margin = float(margin)
        self._patient_sum = np.zeros(self.matrix.shape[1] if self.names else 0, np.float64)
        self._patient_s = 0.0

    def fresh(self) -> SpeakerAttributor:
        """The same voices and settings, with no session state (one per session)."""
        return SpeakerAttributor(self.encoder, dict(zip(self.names, self.matrix, strict=True)), self.threshold,
                                 self.max_partials, self.adaptive, self.margin)

    @property
    def active(self) -> bool:
        return self.encoder is not None and bool(self.names)

    def only(self, names: Iterable[str]) -> SpeakerAttributor:
        """The same attributor restricted to some enrolled voices (the clinician chosen for a session)."""
        wanted = set(names)
        voices = {n: row for n, row in zip(self.names, self.matrix, strict=True) if n in wanted}
        return SpeakerAttributor(self.encoder, voices, self.threshold, self.max_partials, self.adaptive, self.margin)

    def similarity(self, embedding: np.ndarray) -> float:
        return float(np.max(self.matrix @ embedding)) if self.names else -1.0

    def attribute(self, pcm: np.ndarray) -> Attribution | None:
        """None when there is nothing to compare with (attribution off)."""
        if not self.active:
            return None
        assert self.encoder is not None
        embedding = self.encoder.embed(pcm, self.max_partials)
        score = self.similarity(embedding)
        other = score >= self.threshold
        if self.adaptive and self._patient_s >= PATIENT_MODEL_SECONDS:
            patient = self._patient_sum / max(float(np.linalg.norm(self._patient_sum)), 1e-12)
            other = score - float(patient @ embedding) >= self.margin and score >= self.threshold - FLOOR_BELOW
        if self.adaptive and score < self.threshold - CONFIDENT_MARGIN:
            seconds = len(pcm) / 16000
            self._patient_sum += seconds * embedding
            self._patient_s += seconds
        return Attribution(OTHER if other else PATIENT, score)
