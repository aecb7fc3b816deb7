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

from device.config import FusionConfig
from device.labels import NUM_LABELS

EPS = 1e-6


@dataclass(frozen=True)
class ModalityEstimate:
    probs: np.ndarray
    coverage: float
    quality: float


def confidence(probs: np.ndarray) -> float:
    """1 - normalised entropy: 0 for a flat distribution, 1 for a certain one."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    p = p / p.sum()
    return float(1.0 - (-(p * np.log(p)).sum()) / math.log(NUM_LABELS))


def modality_weight(modality: str, estimate: ModalityEstimate, config: FusionConfig, min_face_share: float
                    ) -> float:
    """prior x quality x coverage (saturating at full coverage); 0 below the minimum coverage."""
    if modality == "face":
        prior, full, minimum = config.face_weight, config.face_full_coverage, min_face_share
    elif modality == "speech":
        prior, full, minimum = config.speech_weight, config.speech_full_coverage, config.speech_min_coverage
    else:
        prior, full, minimum = 1.0, 1.0, 0.0
    if estimate.coverage <= 0 or estimate.coverage < minimum:
        return 0.0
    coverage = min(1.0, estimate.coverage / full)
    return max(0.0, prior * max(estimate.quality, EPS) * coverage)


def fuse(estimates: dict[str, ModalityEstimate], config: FusionConfig, min_face_share: float = 0.0
         ) -> tuple[np.ndarray | None, dict[str, float]]:
    """Fused distribution (None when no modality qualifies) and the normalised weight of each modality."""
    raw = {m: modality_weight(m, e, config, min_face_share) for m, e in estimates.items()}
    used = {m: w for m, w in raw.items() if w > 0}
    if not used:
        return None, dict.fromkeys(estimates, 0.0)
    if len(used) == 1:  # one modality: its own (calibrated) distribution, untouched
        (only,) = used
        return np.asarray(estimates[only].probs, dtype=np.float64), {m: float(m == only) for m in estimates}
    if config.method == "linear":
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
