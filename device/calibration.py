"""Probability calibration shared by the runtime and the training scripts (numpy only).

`softmax` with a temperature is what the device applies to model logits; `fit_temperature` and
`expected_calibration_error` are how training chooses and checks that temperature on
validation data (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017).
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    p = softmax(logits, temperature)
    return float(-np.mean(np.log(p[np.arange(len(labels)), labels] + 1e-12)))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimising NLL on held-out data: coarse grid, then a fine one around the best."""
    grid = np.linspace(0.3, 5.0, 95)
    best = float(grid[np.argmin([negative_log_likelihood(logits, labels, t) for t in grid])])
    fine = np.linspace(max(0.05, best - 0.05), best + 0.05, 41)
    return float(fine[np.argmin([negative_log_likelihood(logits, labels, t) for t in fine])])


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by bin size."""
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        sel = (conf > lo) & (conf <= hi)
        if sel.any():
            total += sel.mean() * abs(correct[sel].mean() - conf[sel].mean())
    return float(total)
