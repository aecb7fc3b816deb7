"""Temperature scaling checked on held-out items: `cross_fitted_calibration` on synthetic logits."""

import numpy as np
import pytest

from device.calibration import (
    _fold_of,
    cross_fitted_calibration,
    eval_calibration,
    expected_calibration_error,
    softmax,
)


def calibrated(n: int, k: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits): calibrated at T=1 by construction."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=1.5, size=(n, k))
    cumulative = softmax(logits).cumsum(axis=1)
    labels = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return logits, np.minimum(labels, k - 1)


def test_over_confident_logits_get_temperature_near_3():
    logits, labels = calibrated(4000)
    report = cross_fitted_calibration(3 * logits, labels, shipped_temperature=3.0)
    assert report["n"] == 4000 and report["folds"] == 2 and report["split"] == "seeded shuffle"
    assert [f["n"] for f in report["per_fold"]] == [2000, 2000]
    for fold in report["per_fold"]:
        assert fold["temperature"] == pytest.approx(3.0, abs=0.3)
    assert report["ece_before"] > 0.1
    assert report["ece_after"] < 0.03 < report["ece_before"] / 4
    assert report["nll_after"] < report["nll_before"]
    # T=1 on the pooled held-out items is T=1 on all of them; the true temperature is as good as the fitted one.
    assert report["ece_before"] == pytest.approx(expected_calibration_error(softmax(3 * logits), labels), abs=1e-4)
    assert report["ece_shipped"] == pytest.approx(report["ece_after"], abs=0.02)


def test_calibrated_logits_stay_near_1_and_the_result_is_seeded():
    logits, labels = calibrated(3000, seed=1)
    report = cross_fitted_calibration(logits, labels, folds=3, seed=5)
    assert len(report["per_fold"]) == 3
    assert all(f["temperature"] == pytest.approx(1.0, abs=0.15) for f in report["per_fold"])
    assert report == cross_fitted_calibration(logits, labels, folds=3, seed=5)
    assert "shipped_temperature" not in report


def test_groups_never_split_across_folds():
    rng = np.random.default_rng(2)
    groups = np.array([f"actor-{g:02d}" for g in rng.integers(0, 9, 600)])
    for folds in (2, 3, 4):
        fold = _fold_of(len(groups), groups, folds, seed=0)
        for name in set(groups):
            assert len(set(fold[groups == name])) == 1, name
        assert set(fold) == set(range(folds))
    logits, labels = calibrated(600, seed=3)
    report = cross_fitted_calibration(2 * logits, labels, groups=list(groups), folds=3)
    assert report["split"] == "by group" and report["n_groups"] == 9
    assert sum(f["n"] for f in report["per_fold"]) == 600


def test_bad_input_is_a_clear_value_error():
    logits, labels = calibrated(20)
    with pytest.raises(ValueError, match="shapes"):
        cross_fitted_calibration(logits, labels[:-1])
    with pytest.raises(ValueError, match="shapes"):
        cross_fitted_calibration(logits[0], labels)
    with pytest.raises(ValueError, match="too few"):
        cross_fitted_calibration(logits[:3], labels[:3])
    with pytest.raises(ValueError, match="at least 2"):
        cross_fitted_calibration(logits, labels, folds=1)
    with pytest.raises(ValueError, match="integers in"):
        cross_fitted_calibration(logits, labels + 7)
    with pytest.raises(ValueError, match="groups must be"):
        cross_fitted_calibration(logits, labels, groups=["a"] * 19)
    with pytest.raises(ValueError, match="1 groups cannot fill 2 folds"):
        cross_fitted_calibration(logits, labels, groups=["a"] * 20)


def test_eval_block_falls_back_to_the_shipped_figure_on_few_items():
    logits, labels = calibrated(3)
    block = eval_calibration(logits, labels, 1.2, note="why")
    assert block["cross_fitted"] is False and "too few" in block["note"] and block["note"].endswith("why")
    assert 0.0 <= block["ece_shipped"] <= 1.0 and block["shipped_temperature"] == 1.2
    logits, labels = calibrated(100)
    block = eval_calibration(logits, labels, 1.2, note="why")
    assert block["cross_fitted"] is True and block["note"] == "why" and "ece_after" in block
