"""Late fusion of the face and speech estimates of one window into one mood distribution.

Each modality arrives as a `ModalityEstimate`: its window-mean calibrated probabilities, its
coverage (share of the window in which it saw something) and its mean observation quality
(face: detection score and face size; speech: utterance length and signal-to-noise ratio).
A modality that saw nothing, or too little (below its minimum coverage), drops out; with one
modality left, the fused estimate is that modality's own.

Weight of modality m:  w_m = prior_m * quality_m * min(1, coverage_m / full_coverage_m)
Two pooling rules (fusion.method), both standard for combining calibrated classifiers:
- "log_linear" (default): p(y) ∝ Π_m p_m(y)^(w_m / max_w). With calibrated, conditionally
  independent modalities the product is the Bayes combination; the exponents soften a modality
  with less evidence. A flat (unsure) distribution contributes nothing by itself, so no explicit
  confidence term is needed.
- "linear": p(y) = Σ_m c_m w_m p_m(y) / Σ_m c_m w_m, with c_m = 1 - H(p_m)/log(7) the
  calibrated confidence; more robust when one modality is confidently wrong.
bench/bench_fusion.py measures both against each modality alone; docs/DESIGN.md records why the
defaults are what they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from device.labels import NUM_LABELS

EPS = 1e-6


@dataclass(frozen=True)
class ModalityEstimate:
    probs: np.ndarray
    coverage: float
    quality: float


@dataclass(frozen=True)
class FusionWeights:
    """Per-modality priors and the coverage at which a modality counts fully."""

    method: str = "log_linear"
    face_weight: float = 1.0
    speech_weight: float = 1.0
    face_full_coverage: float = 0.5
    speech_full_coverage: float = 0.3
    face_min_coverage: float = 0.2
    speech_min_coverage: float = 0.05

    def prior(self, modality: str) -> float:
        return {"face": self.face_weight, "speech": self.speech_weight}.get(modality, 1.0)

    def full_coverage(self, modality: str) -> float:
        return {"face": self.face_full_coverage, "speech": self.speech_full_coverage}.get(modality, 1.0)

    def min_coverage(self, modality: str) -> float:
        return {"face": self.face_min_coverage, "speech": self.speech_min_coverage}.get(modality, 0.0)


def confidence(probs: np.ndarray) -> float:
    """1 - normalised entropy: 0 for a flat distribution, 1 for a certain one."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    p = p / p.sum()
    return float(1.0 - (-(p * np.log(p)).sum()) / math.log(NUM_LABELS))


def modality_weight(modality: str, estimate: ModalityEstimate, weights: FusionWeights) -> float:
    if estimate.coverage < weights.min_coverage(modality):
        return 0.0
    coverage = min(1.0, estimate.coverage / max(weights.full_coverage(modality), EPS))
    return max(0.0, weights.prior(modality) * max(estimate.quality, EPS) * coverage)


def fuse(estimates: dict[str, ModalityEstimate], weights: FusionWeights
         ) -> tuple[np.ndarray | None, dict[str, float]]:
    """Fused distribution (None when no modality qualifies) and the normalised weight of each modality."""
    raw = {m: modality_weight(m, e, weights) for m, e in estimates.items()}
    used = {m: w for m, w in raw.items() if w > 0}
    if not used:
        return None, {m: 0.0 for m in estimates}
    if weights.method == "linear":
        effective = {m: w * max(confidence(estimates[m].probs), EPS) for m, w in used.items()}
        total = sum(effective.values())
        fused = sum(effective[m] * np.asarray(estimates[m].probs, dtype=np.float64) for m in used) / total
        share = {m: effective.get(m, 0.0) / total for m in estimates}
    else:
        top = max(used.values())
        log_p = sum((w / top) * np.log(np.clip(np.asarray(estimates[m].probs, dtype=np.float64), EPS, 1.0))
                    for m, w in used.items())
        log_p = log_p - log_p.max()
        fused = np.exp(log_p)
        fused = fused / fused.sum()
        total = sum(used.values())
        share = {m: used.get(m, 0.0) / total for m in estimates}
    return fused, share
