"""Each loss against values computed by hand with NumPy, and inside model.fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from celebalib.errors import ConfigError
from celebalib.losses import LOSSES, BalancedBinaryCrossentropy, get_loss

RNG = np.random.default_rng(0)
Y = (RNG.random((6, 40)) < 0.3).astype("float32")
P = RNG.uniform(0.02, 0.98, (6, 40)).astype("float32")
W = RNG.uniform(0.5, 20.0, 40)


def bce_by_hand(y: np.ndarray, p: np.ndarray, w: np.ndarray | float = 1.0) -> float:
    """Mean over samples of the mean over attributes of the (weighted) cross-entropy."""
    terms = -(w * y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(terms.mean(axis=1).mean())


def test_bce_matches_hand_computation() -> None:
    assert float(get_loss("bce")(Y, P)) == pytest.approx(bce_by_hand(Y, P), rel=1e-5)


def test_balanced_bce_weights_the_positive_term() -> None:
    loss = float(get_loss("balanced_bce", pos_weights=W)(Y, P))
    assert loss == pytest.approx(bce_by_hand(Y, P, W), rel=1e-5)
    # With all weights 1 it is plain cross-entropy.
    assert float(get_loss("balanced_bce", np.ones(40))(Y, P)) == pytest.approx(bce_by_hand(Y, P), rel=1e-5)


def test_focal_matches_hand_computation() -> None:
    p_t = np.where(Y == 1, P, 1 - P)
    expected = float(((1 - p_t) ** 2 * -np.log(p_t)).mean(axis=1).mean())
    assert float(get_loss("focal")(Y, P)) == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_moves_the_targets_towards_one_half() -> None:
    s = 0.2
    smoothed = Y * (1 - s) + s / 2
    assert float(get_loss("bce", label_smoothing=s)(Y, P)) == pytest.approx(bce_by_hand(smoothed, P), rel=1e-5)
    balanced = float(get_loss("balanced_bce", pos_weights=W, label_smoothing=s)(Y, P))
    assert balanced == pytest.approx(bce_by_hand(smoothed, P, W), rel=1e-5)
    p_t = smoothed * P + (1 - smoothed) * (1 - P)
    focal = ((1 - p_t) ** 2 * -(smoothed * np.log(P) + (1 - smoothed) * np.log(1 - P))).mean(axis=1).mean()
    assert float(get_loss("focal", label_smoothing=s)(Y, P)) == pytest.approx(float(focal), rel=1e-5)
    # The smoothed loss is lowest at the smoothed target: predictions smoothed half or twice as much cost more.
    smoothed_loss = get_loss("bce", label_smoothing=s)
    for other in (Y * (1 - s / 2) + s / 4, Y * (1 - 2 * s) + s):
        assert float(smoothed_loss(Y, smoothed)) < float(smoothed_loss(Y, other))


def test_cosine_is_the_negative_cosine() -> None:
    y, p = Y.copy(), P
    y[:, 0] = 1  # every row has a positive, so each cosine is defined
    cos = (y * p).sum(1) / (np.linalg.norm(y, axis=1) * np.linalg.norm(p, axis=1))
    assert float(get_loss("cosine")(y, p)) == pytest.approx(-cos.mean(), rel=1e-5)
    assert float(get_loss("cosine")(y, y)) == pytest.approx(-1.0, abs=1e-5)


def test_balanced_bce_round_trips_through_config() -> None:
    loss = get_loss("balanced_bce", pos_weights=W, label_smoothing=0.1)
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss), safe_mode=True)
    assert isinstance(clone, BalancedBinaryCrossentropy)
    assert float(clone(Y, P)) == pytest.approx(float(loss(Y, P)), rel=1e-6)
    assert clone.label_smoothing == pytest.approx(0.1)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.slow
def test_every_loss_trains_a_small_model(name: str) -> None:
    x = RNG.normal(size=(64, 8)).astype("float32")
    y = (x[:, :1] @ np.ones((1, 40)) + RNG.normal(size=(64, 40)) > 0).astype("float32")
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(40, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss=get_loss(name, pos_weights=np.full(40, 2.0)))
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0).history["loss"]
    assert history[-1] < history[0]


def test_unknown_loss_and_missing_weights_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown loss 'mse'"):
        get_loss("mse")
    with pytest.raises(ConfigError, match="pos_weights"):
        get_loss("balanced_bce")
    with pytest.raises(ConfigError, match="40 positive"):
        get_loss("balanced_bce", pos_weights=[1.0, 2.0])
    with pytest.raises(ConfigError, match="label_smoothing=-0.1"):
        get_loss("bce", label_smoothing=-0.1)
    with pytest.raises(ConfigError, match="not cosine"):
        get_loss("cosine", label_smoothing=0.1)
