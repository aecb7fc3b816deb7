"""Classification metrics over the shared label set: accuracy, macro-F1, per-class recall, confusion."""

from __future__ import annotations

from typing import Any

import numpy as np

from device.labels import LABELS, NUM_LABELS


def confusion_matrix(truth: np.ndarray, pred: np.ndarray, k: int = NUM_LABELS) -> np.ndarray:
    """Rows: true label, columns: predicted label."""
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (np.asarray(truth, dtype=int), np.asarray(pred, dtype=int)), 1)
    return cm


def classification_report(truth: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    cm = confusion_matrix(truth, pred)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    recall = np.divide(cm.diagonal(), support, out=np.zeros(NUM_LABELS), where=support > 0)
    precision = np.divide(cm.diagonal(), predicted, out=np.zeros(NUM_LABELS), where=predicted > 0)
    denom = recall + precision
    f1 = np.divide(2 * recall * precision, denom, out=np.zeros(NUM_LABELS), where=denom > 0)
    present = support > 0  # macro averages over the labels that occur in the data
    n = int(cm.sum())
    return {
        "n": n,
        "accuracy": float(cm.diagonal().sum() / n) if n else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "per_class_recall": {lab: float(r) for lab, r, p in zip(LABELS, recall, present, strict=True) if p},
        "per_class_f1": {lab: float(v) for lab, v, p in zip(LABELS, f1, present, strict=True) if p},
        "support": {lab: int(s) for lab, s in zip(LABELS, support, strict=True)},
        "labels": list(LABELS),
        "confusion_matrix": cm.tolist(),
    }


def format_report(report: dict[str, Any]) -> str:
    """Human-readable text: headline figures, per-class recall and the confusion matrix."""
    lines = [
        f"n = {report['n']}   accuracy = {report['accuracy']:.4f}   macro-F1 = {report['macro_f1']:.4f}"
        f"   macro recall = {report['macro_recall']:.4f}",
        "",
        "per-class recall: " + ", ".join(f"{k} {v:.3f}" for k, v in report["per_class_recall"].items()),
        "",
        "confusion matrix (rows = truth, columns = prediction):",
        "          " + " ".join(f"{lab[:8]:>8}" for lab in LABELS),
    ]
    for lab, row in zip(LABELS, report["confusion_matrix"], strict=True):
        lines.append(f"{lab[:8]:>8}  " + " ".join(f"{v:>8d}" for v in row))
    return "\n".join(lines)
