"""Probability calibration shared by the runtime and the training scripts (numpy only).

`softmax` with a temperature is what the device applies to model logits; `fit_temperature` and
`expected_calibration_error` are how training chooses and checks that temperature on
validation data (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017);
`cross_fitted_calibration` is how `affectbox eval` reports that check on items the temperature
was not fitted on.
"""

from __future__ import annotations

from typing import Any

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


def _fold_of(n: int, groups: np.ndarray | None, folds: int, seed: int) -> np.ndarray:
    """Fold index [n] of each item: whole groups per fold when given, else a seeded shuffle."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.permutation(np.arange(n) % folds)
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    if len(names) < folds:
        raise ValueError(f"{len(names)} groups cannot fill {folds} folds: need at least one group per fold")
    # Largest groups first (ties in seeded random order), each into the emptiest fold so far:
    # folds of similar size without ever splitting a group, so no speaker is on both sides.
    order = sorted(rng.permutation(len(names)), key=lambda g: -sizes[g])
    group_fold = np.empty(len(names), dtype=int)
    filled = np.zeros(folds, dtype=int)
    for g in order:
        f = int(np.argmin(filled))
        group_fold[g] = f
        filled[f] += sizes[g]
    return group_fold[inverse]


def _pooled(log_probs: np.ndarray, labels: np.ndarray, bins: int) -> dict[str, float]:
    probs = np.exp(log_probs)
    return {
        "ece": expected_calibration_error(probs, labels, bins),
        "nll": float(-np.mean(log_probs[np.arange(len(labels)), labels])),
    }


def cross_fitted_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | list[str] | None = None,
    folds: int = 2,
    seed: int = 0,
    shipped_temperature: float | None = None,
    bins: int = 15,
) -> dict[str, Any]:
    """Temperature scaling measured on data the temperature was not fitted on.

    Fitting T and measuring ECE on the same items flatters the "after" figure. Here the items
    are split into `folds` parts (whole groups per part when `groups` is given, e.g. speakers,
    so that no speaker is both fitted on and measured); for each part, T is fitted on the
    others and applied to it. ECE (`bins` bins) and NLL are then computed on the pooled
    held-out predictions, before (T=1) and after. With `shipped_temperature`, the same figures
    for that fixed temperature are added for reference (held out only if it was fitted elsewhere).
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels)
    if z.ndim != 2 or y.ndim != 1 or len(z) != len(y):
        raise ValueError(f"logits must be [n, k] and labels [n]: got shapes {z.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or (len(y) and (y.min() < 0 or y.max() >= z.shape[1])):
        raise ValueError(f"labels must be integers in [0, {z.shape[1]})")
    if folds < 2:
        raise ValueError(f"folds must be at least 2 (got {folds})")
    if len(y) < 2 * folds:
        raise ValueError(f"{len(y)} items are too few for {folds} folds (need at least {2 * folds})")
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != y.shape:
            raise ValueError(f"groups must be [n] like labels: got shape {g.shape} for {len(y)} items")
    fold = _fold_of(len(y), g, folds, seed)

    log_after = np.empty_like(z)
    per_fold: list[dict[str, float | int]] = []
    for f in range(folds):
        test = fold == f
        t = fit_temperature(z[~test], y[~test])
        log_after[test] = np.log(softmax(z[test], t) + 1e-12)
        per_fold.append({"n": int(test.sum()), "temperature": round(t, 4)})
    before = _pooled(np.log(softmax(z) + 1e-12), y, bins)
    after = _pooled(log_after, y, bins)
    report: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "split": "by group" if g is not None else "seeded shuffle",
        "n": len(y),
        "per_fold": per_fold,
        "ece_before": round(before["ece"], 4),
        "ece_after": round(after["ece"], 4),
        "nll_before": round(before["nll"], 4),
        "nll_after": round(after["nll"], 4),
    }
    if g is not None:
        report["n_groups"] = len(np.unique(g))
    if shipped_temperature is not None:
        shipped = _pooled(np.log(softmax(z, shipped_temperature) + 1e-12), y, bins)
        report.update({
            "shipped_temperature": shipped_temperature,
            "ece_shipped": round(shipped["ece"], 4),
            "nll_shipped": round(shipped["nll"], 4),
        })
    return report


def eval_calibration(
    logits: np.ndarray,
    labels: np.ndarray,
    shipped_temperature: float,
    groups: np.ndarray | list[str] | None = None,
    note: str = "",
) -> dict[str, Any]:
    """The `calibration` block of an `affectbox eval` report: cross-fitted over 2 folds when the
    items allow, else the shipped temperature's figures alone and why (an eval of a handful of
    files should still report its accuracy)."""
    try:
        block = cross_fitted_calibration(logits, labels, groups, folds=2, seed=0,
                                         shipped_temperature=shipped_temperature)
    except ValueError as exc:
        probs = softmax(logits, shipped_temperature)
        block = {
            "shipped_temperature": shipped_temperature,
            "ece_shipped": round(expected_calibration_error(probs, np.asarray(labels)), 4),
            "cross_fitted": False,
        }
        note = f"no cross-fitted check: {exc}" + (f"; {note}" if note else "")
    else:
        block["cross_fitted"] = True
    block["note"] = note
    return block
