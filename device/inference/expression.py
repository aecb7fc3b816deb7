"""The facial-expression classifier: 48x48 grayscale face in, calibrated probabilities out.

The model file and its input contract are described by `models/face_expression.json`; the
model outputs logits, and the manifest's calibration temperature turns them into probabilities
fit for fusion. With `flip_average`, the logits of the crop and its mirror image are averaged,
exactly as the accuracy in the model card was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from device.calibration import softmax
from device.errors import ModelError
from device.inference.runtime import LoadedModel, ModelSpec, load_model, read_manifest
from device.labels import LABELS

MANIFEST_NAME = "face_expression.json"


def load_expression_manifest(models_dir: Path) -> dict[str, Any]:
    manifest = read_manifest(models_dir / MANIFEST_NAME)
    labels = tuple(manifest.get("output", {}).get("labels", ()))
    if labels != LABELS:
        raise ModelError(f"{models_dir / MANIFEST_NAME}: labels {list(labels)} are not {list(LABELS)}")
    return manifest


class ExpressionClassifier:
    """Owns one interpreter; `classify(face48)` returns (probabilities [7], logits [7])."""

    def __init__(self, model: LoadedModel, temperature: float, flip_average: bool = True) -> None:
        self.model = model
        self.temperature = temperature
        self.flip_average = flip_average
        self._in_scale, self._in_zero = model.input_quantization
        self._out_scale, self._out_zero = model.output_quantization(0)
        self._dtype = np.dtype(model.input["dtype"])

    @classmethod
    def from_models_dir(cls, models_dir: Path, num_threads: int = 1, flip_average: bool = True
                        ) -> ExpressionClassifier:
        manifest = load_expression_manifest(models_dir)
        model = load_model(ModelSpec.from_manifest(manifest), models_dir, num_threads)
        return cls(model, float(manifest["calibration"]["temperature"]), flip_average)

    def _quantize(self, face: np.ndarray) -> np.ndarray:
        if self._dtype == np.float32:
            return face.astype(np.float32)[None, :, :, None]
        info = np.iinfo(self._dtype)
        q = np.round(face.astype(np.float32) / self._in_scale + self._in_zero)
        return np.clip(q, info.min, info.max).astype(self._dtype)[None, :, :, None]

    def logits(self, face: np.ndarray) -> np.ndarray:
        """Float logits [7] of one 48x48 uint8 face (flip-averaged when configured)."""
        out = self.model.run(self._quantize(face))[0][0].astype(np.float32)
        if self.flip_average:
            out = out + self.model.run(self._quantize(face[:, ::-1]))[0][0].astype(np.float32)
            out = out / 2
        if self._out_scale:
            out = (out - self._out_zero) * self._out_scale
        return out

    def classify(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits = self.logits(face)
        return softmax(logits, self.temperature), logits
