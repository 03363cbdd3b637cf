"""Weight averaging and the batch-norm statistics measured again for the average."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from celebalib.averaging import average_weights, recompute_batch_norm
from celebalib.errors import RunError
from celebalib.model import batch_norm_layers


def small_model() -> keras.Model:
    """Dense -> batch norm -> a nested model holding a second batch norm."""
    inner = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(momentum=0.9, name="inner_bn")])
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, name="dense")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.9, name="outer_bn")(x)
    return keras.Model(inputs, inner(x))


def test_average_weights_is_the_mean_of_the_files(tmp_path: Path) -> None:
    model = small_model()
    files, kernels = [], []
    for i in range(3):
        kernel = np.full((3, 4), float(i * i), dtype="float32")  # 0, 1, 4: mean 5/3
        model.get_layer("dense").kernel.assign(kernel)
        kernels.append(kernel)
        files.append(tmp_path / f"epoch-{i}.weights.h5")
        model.save_weights(str(files[-1]))
    model.get_layer("dense").kernel.assign(np.zeros((3, 4), "float32"))
    average_weights(model, files)
    np.testing.assert_allclose(model.get_layer("dense").kernel.numpy(), np.mean(kernels, axis=0), rtol=1e-6)


def test_average_weights_refuses_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no weight files"):
        average_weights(small_model(), [])
    with pytest.raises(RunError, match=r"epoch-9\.weights\.h5: weights file not found"):
        average_weights(small_model(), [tmp_path / "epoch-9.weights.h5"])


def test_recompute_batch_norm_gives_the_mean_of_batch_statistics() -> None:
    rng = np.random.default_rng(0)
    model = small_model()
    model.get_layer("dense").kernel.assign(np.eye(3, 4, dtype="float32"))
    batches = [rng.normal(loc=i, scale=1 + i, size=(16, 3)).astype("float32") for i in range(4)]
    used = recompute_batch_norm(model, [(b, np.zeros(16)) for b in batches] + [(batches[0], None)], max_batches=4)
    assert used == 4
    outer = model.get_layer("outer_bn")
    features = [np.concatenate([b, np.zeros((16, 1), "float32")], axis=1) for b in batches]  # eye(3, 4) @ x
    np.testing.assert_allclose(outer.moving_mean.numpy(), np.mean([f.mean(axis=0) for f in features], axis=0),
                               atol=1e-5)
    np.testing.assert_allclose(outer.moving_variance.numpy(), np.mean([f.var(axis=0) for f in features], axis=0),
                               rtol=1e-4, atol=1e-5)
    # The nested layer's input is the outer layer's batch-normalised output: mean 0 in every batch.
    inner = batch_norm_layers(model)[-1]
    assert inner.name == "inner_bn"
    np.testing.assert_allclose(inner.moving_mean.numpy(), 0.0, atol=1e-5)
    # Training keeps its momentum afterwards.
    assert outer.momentum == inner.momentum == 0.9


def test_recompute_batch_norm_leaves_frozen_layers_alone() -> None:
    model = small_model()
    frozen = model.get_layer("outer_bn")
    frozen.trainable = False
    frozen.moving_mean.assign(np.full(4, 7.0, "float32"))
    recompute_batch_norm(model, [np.ones((8, 3), "float32")])
    np.testing.assert_allclose(frozen.moving_mean.numpy(), 7.0)


def test_recompute_batch_norm_needs_a_batch() -> None:
    with pytest.raises(RunError, match="no batches"):
        recompute_batch_norm(small_model(), [])
