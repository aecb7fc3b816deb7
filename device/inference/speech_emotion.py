"""The speech-emotion classifier: 16 kHz mono speech in, calibrated probabilities out.

The model file and its input contract are described by `models/speech_emotion.json`. The input
is the [256, 40] log-mel patch of `device.audio.features` (2.56 s of speech), quantised to int8
with the scale and zero point of the model's input tensor; the model outputs logits, and the
manifest's calibration temperature turns them into probabilities fit for fusion.

Utterances of any length are accepted. Up to 2.56 s of speech (after the leading/trailing
silence trim) is one window, centre-padded. Longer speech is cut into evenly spaced 2.56 s
windows at most half a window apart (`speech_feature_windows`), each normalised on its own, and
the windows' logits are averaged: this is how the model card's accuracy was measured, and it
keeps the cost linear in the utterance length (at most two model calls per 2.56 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.audio.features import FEATURE_SHAPE, speech_feature_windows
from device.calibration import softmax
from device.errors import ModelError
from device.inference.runtime import LoadedModel, ModelSpec, load_model, read_manifest
from device.labels import LABELS, NUM_LABELS

MANIFEST_NAME = "speech_emotion.json"


def load_speech_manifest(models_dir: Path) -> dict[str, Any]:
    """The speech model's manifest, checked for the shared label set and the features' shape."""
    path = models_dir / MANIFEST_NAME
    manifest = read_manifest(path)
    labels = tuple(manifest.get("output", {}).get("labels", ()))
    if labels != LABELS:
        raise ModelError(f"{path}: labels {list(labels)} are not {list(LABELS)}")
    shape = tuple(manifest.get("input", {}).get("shape", ()))
    if shape != (1, *FEATURE_SHAPE):
        raise ModelError(f"{path}: input shape {list(shape)} does not match the speech features "
                         f"{[1, *FEATURE_SHAPE]} of this software version")
    return manifest


class SpeechEmotionClassifier:
    """Owns one interpreter; `classify(pcm)` returns (probabilities [7], logits [7])."""

    def __init__(self, model: LoadedModel, temperature: float) -> None:
        if not temperature > 0:
            raise ModelError(f"{model.path}: calibration temperature must be positive (got {temperature})")
        self.model = model
        self.temperature = temperature
        self._in_scale, self._in_zero = model.input_quantization
        self._out_scale, self._out_zero = model.output_quantization(0)
        self._dtype = np.dtype(model.input["dtype"])

    @classmethod
    def from_models_dir(cls, models_dir: Path, num_threads: int = 1) -> SpeechEmotionClassifier:
        manifest = load_speech_manifest(models_dir)
        model = load_model(ModelSpec.from_manifest(manifest), models_dir, num_threads)
        try:
            temperature = float(manifest["calibration"]["temperature"])
        except (KeyError, TypeError, ValueError):
            raise ModelError(f"{models_dir / MANIFEST_NAME}: missing calibration temperature") from None
        return cls(model, temperature)

    def _quantize(self, window: np.ndarray) -> np.ndarray:
        if self._dtype == np.float32:
            return window.astype(np.float32)[None]
        info = np.iinfo(self._dtype)
        q = np.round(window / self._in_scale + self._in_zero)
        return np.clip(q, info.min, info.max).astype(self._dtype)[None]

    def window_logits(self, window: np.ndarray) -> np.ndarray:
        """Float logits [7] of one [256, 40] feature window."""
        out = self.model.run(self._quantize(window))[0][0].astype(np.float32)
        if self._out_scale:
            out = (out - self._out_zero) * self._out_scale
        return out

    def logits(self, pcm: np.ndarray) -> np.ndarray:
        """Float logits [7] of one utterance (float32 mono 16 kHz in [-1, 1]), averaged over its windows."""
        windows = speech_feature_windows(pcm)
        total = np.zeros(NUM_LABELS, dtype=np.float32)
        for window in windows:
            total += self.window_logits(window)
        return total / len(windows)

    def classify(self, pcm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities [7], logits [7]) of one utterance."""
        logits = self.logits(pcm)
        return softmax(logits, self.temperature), logits
