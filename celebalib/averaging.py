"""Weight averaging over the last epochs, with batch-norm statistics recomputed for the average.

Averaging the weights a run passed through near its end (stochastic weight averaging,
Izmailov et al., 2018) lands nearer the middle of a wide minimum than any single epoch.
Batch normalisation's moving statistics cannot be averaged with the weights: they belong
to the weights that produced them. So only the trainable weights are averaged, and the
statistics are measured again by running training images through the averaged network.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import keras
import numpy as np

from celebalib.errors import RunError
from celebalib.model import batch_norm_layers

# Training images an averaged model's batch-norm statistics are measured on.
BN_IMAGES = 6_400


def average_epochs(model: keras.Model, files: Sequence[str | Path], batches: Iterable, batch_size: int) -> int:
    """Average the weights in ``files`` into ``model``, then measure batch norm on ``BN_IMAGES`` images.

    ``batches`` yields training batches of ``batch_size``; returns how many were used.
    """
    average_weights(model, files)
    return recompute_batch_norm(model, batches, math.ceil(BN_IMAGES / batch_size))


def average_weights(model: keras.Model, files: Sequence[str | Path]) -> None:
    """Set ``model``'s trainable weights to their mean over weight files saved from it.

    Each file is one ``model.save_weights`` (``.weights.h5``) of the same architecture.
    The non-trainable weights (batch-norm statistics) are left as the last file had them;
    ``recompute_batch_norm`` measures them again.
    """
    if not files:
        raise RunError("no weight files to average")
    total = None
    for path in files:
        if not Path(path).is_file():
            raise RunError(f"{path}: weights file not found")
        model.load_weights(str(path))
        values = [np.asarray(w, dtype=np.float64) for w in model.trainable_weights]
        total = values if total is None else [t + v for t, v in zip(total, values)]
    for weight, summed in zip(model.trainable_weights, total):
        weight.assign((summed / len(files)).astype(weight.dtype))


def recompute_batch_norm(model: keras.Model, batches: Iterable, max_batches: int | None = None) -> int:
    """Replace every batch-norm layer's moving mean and variance by their average over ``batches``.

    ``batches`` yields images or (images, labels). Each batch runs through the model in
    training mode, where batch norm normalises by the batch's own statistics, so no layer's
    input depends on the statistics being measured; the moving averages then become plain
    means over the batches (momentum k/(k+1) for batch k), as PyTorch's ``update_bn`` does.
    Returns how many batches were used.
    """
    # Frozen layers (a pretrained backbone's) run in inference mode and keep their statistics.
    layers = [layer for layer in batch_norm_layers(model) if layer.trainable]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, dtype=layer.moving_mean.dtype))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, dtype=layer.moving_variance.dtype))
    count = 0
    try:
        for batch in batches:
            if max_batches is not None and count >= max_batches:
                break
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = count / (count + 1)
            model(images, training=True)  # eager, so each call reads the momentum just set
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    if count == 0:
        raise RunError("no batches to measure batch-norm statistics on")
    return count
