"""MeanBalancedAccuracy against scikit-learn, streamed over batches."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from celebalib.metrics import MeanBalancedAccuracy


def reference(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> float:
    """Mean over attributes of scikit-learn's balanced accuracy."""
    guesses = (p >= threshold).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single-class columns, as the metric's docstring allows
        scores = [balanced_accuracy_score(y[:, j], guesses[:, j]) for j in range(y.shape[1])]
    return float(np.mean(scores))


def test_streamed_counts_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    y = (rng.random((50, 40)) < 0.2).astype("float32")
    p = np.clip(0.6 * y + rng.random((50, 40)) * 0.7, 0, 1).astype("float32")
    metric = MeanBalancedAccuracy()
    for start in range(0, 50, 16):  # uneven batches, as in an epoch
        metric.update_state(y[start:start + 16], p[start:start + 16])
    assert float(metric.result()) == pytest.approx(reference(y, p), abs=1e-6)
    metric.reset_state()
    metric.update_state(y, 1 - y)
    assert float(metric.result()) == pytest.approx(0.0)


def test_majority_guess_scores_one_half() -> None:
    y = np.zeros((10, 40), "float32")
    y[:3] = 1
    metric = MeanBalancedAccuracy()
    metric.update_state(y, np.zeros_like(y))
    assert float(metric.result()) == pytest.approx(0.5)


def test_single_class_attribute_uses_its_one_rate() -> None:
    y = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]], "float32")  # attribute 0 all positive
    p = np.array([[0.9, 0.1], [0.2, 0.7], [0.8, 0.6]], "float32")
    metric = MeanBalancedAccuracy(num_attributes=2)
    metric.update_state(y, p)
    assert float(metric.result()) == pytest.approx(reference(y, p))


def test_round_trips_through_config() -> None:
    metric = MeanBalancedAccuracy(threshold=0.3)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric), safe_mode=True)
    assert isinstance(clone, MeanBalancedAccuracy) and clone.threshold == 0.3
