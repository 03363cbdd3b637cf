"""Evaluation: metrics on hand-made arrays, threshold tuning, the run-level files and command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import evaluate
from celebalib.attributes import ATTRIBUTES, NUM_ATTRIBUTES
from celebalib.errors import ConfigError


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    """Four images; columns 0-2 are worked out by hand below, the rest copy column 0."""
    y = np.zeros((4, NUM_ATTRIBUTES), dtype=int)
    p = np.zeros((4, NUM_ATTRIBUTES))
    y[:, 0], p[:, 0] = [1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]  # tp, fn, fp, tn at 0.5
    y[:, 1], p[:, 1] = [1, 0, 0, 0], [0.7, 0.8, 0.2, 0.3]  # tp, fp, tn, tn at 0.5
    y[:, 2], p[:, 2] = [0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1]  # no positive image at all
    y[:, 3:], p[:, 3:] = y[:, :1], p[:, :1]
    return y, p


def test_attribute_table_matches_hand_computed_values() -> None:
    y, p = hand_example()
    table = evaluate.attribute_table(y, p, 0.5, baseline=0.75)
    assert list(table.index) == list(ATTRIBUTES)
    first = table.iloc[0]
    # One of each outcome: every rate is 1/2; AUC counts 3 of 4 positive-negative pairs in order.
    for column in ("accuracy", "balanced_accuracy", "tpr", "tnr", "precision", "recall", "f1"):
        assert first[column] == pytest.approx(0.5)
    assert first["roc_auc"] == pytest.approx(3 / 4)
    assert first["gain"] == pytest.approx(0.5 - 0.75)
    second = table.iloc[1]
    assert second["accuracy"] == pytest.approx(3 / 4)
    assert second["tnr"] == pytest.approx(2 / 3)
    assert second["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert second["precision"] == pytest.approx(1 / 2)
    assert second["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert second["roc_auc"] == pytest.approx(2 / 3)
    assert second["positive_rate"] == pytest.approx(1 / 4)


def test_one_class_attribute_gives_nan_rates_not_an_error() -> None:
    y, p = hand_example()
    third = evaluate.attribute_table(y, p, 0.5, baseline=1.0).iloc[2]
    assert math.isnan(third["tpr"]) and math.isnan(third["roc_auc"])
    assert third["tnr"] == 1.0 and third["balanced_accuracy"] == 1.0  # the rate that exists
    assert third["positive_rate"] == 0.0


def test_per_attribute_thresholds_and_baseline_series_are_used_by_name() -> None:
    y, p = hand_example()
    thresholds = np.full(NUM_ATTRIBUTES, 0.5)
    thresholds[0] = 0.35  # now image 2 (p=0.4) is a true positive as well
    baseline = pd.Series(np.linspace(0.5, 0.9, NUM_ATTRIBUTES), index=ATTRIBUTES)[::-1]
    table = evaluate.attribute_table(y, p, thresholds, baseline)
    assert table.iloc[0]["accuracy"] == pytest.approx(3 / 4)
    assert table.iloc[0]["threshold"] == 0.35 and table.iloc[1]["threshold"] == 0.5
    assert table.iloc[0]["baseline"] == pytest.approx(0.5)  # reordered by name, not position


def test_table_means_skip_nan() -> None:
    y, p = hand_example()
    means = evaluate.table_means(evaluate.attribute_table(y, p, 0.5, baseline=0.75))
    expected_auc = (3 / 4 + 2 / 3 + 3 / 4 * (NUM_ATTRIBUTES - 3)) / (NUM_ATTRIBUTES - 1)
    assert means["roc_auc"] == pytest.approx(expected_auc)


def test_bad_arrays_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="shape"):
        evaluate.attribute_table(np.zeros((3, 5)), np.zeros((3, 5)), 0.5, 0.5)
    with pytest.raises(ConfigError, match="0 and 1"):
        evaluate.attribute_table(-np.ones((2, NUM_ATTRIBUTES)), np.zeros((2, NUM_ATTRIBUTES)), 0.5, 0.5)
    with pytest.raises(ConfigError, match="objective"):
        evaluate.tune_thresholds(np.zeros((2, NUM_ATTRIBUTES)), np.zeros((2, NUM_ATTRIBUTES)), "f2")


def test_tuned_threshold_separates_a_hand_made_column() -> None:
    y, p = hand_example()
    y[:, 0], p[:, 0] = [1, 1, 0, 0], [0.3, 0.4, 0.1, 0.2]  # separable, but all below 0.5
    cuts = evaluate.tune_thresholds(y, p)
    assert 0.2 < cuts[0] <= 0.3
    assert evaluate.attribute_table(y, p, cuts, 0.5).iloc[0]["balanced_accuracy"] == 1.0
    assert cuts[2] == 0.5  # one class only: the default stays


@pytest.mark.parametrize("objective", evaluate.OBJECTIVES)
def test_tuned_thresholds_never_lower_the_metric_they_maximise(objective: str) -> None:
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.02, 0.6, NUM_ATTRIBUTES)
    y = (rng.random((300, NUM_ATTRIBUTES)) < rates).astype(int)
    p = np.clip(0.35 * y + rng.random(y.shape) * 0.6, 0, 1).astype(np.float32)  # float32 as models give
    cuts = evaluate.tune_thresholds(y, p, objective)
    at_half = evaluate.attribute_table(y, p, 0.5, 0.5)[objective]
    tuned = evaluate.attribute_table(y, p, cuts, 0.5)[objective]
    assert (tuned >= at_half).all()
    assert tuned.mean() > at_half.mean()  # and here it does better, since 0.5 is a poor cut


def test_cross_fitted_figures_are_not_fitted_to_themselves() -> None:
    # Pure noise: thresholds tuned on the same images look better than chance; held out they do not.
    rng = np.random.default_rng(2)
    y = (rng.random((200, NUM_ATTRIBUTES)) < 0.3).astype(int)
    p = rng.random(y.shape)
    in_sample = evaluate.attribute_table(y, p, evaluate.tune_thresholds(y, p), 0.7)
    crossed = evaluate.cross_fitted_table(y, p, 0.7, folds=5)
    assert in_sample["balanced_accuracy"].mean() > 0.53
    assert crossed["balanced_accuracy"].mean() < 0.52
    assert crossed["balanced_accuracy"].mean() < in_sample["balanced_accuracy"].mean() - 0.02
    assert crossed["roc_auc"].equals(in_sample["roc_auc"])  # threshold-free, so unchanged
