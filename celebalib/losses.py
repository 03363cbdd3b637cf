"""Training losses for the 40 sigmoid outputs, chosen by name.

``bce``: binary cross-entropy, the course's loss.
``balanced_bce``: binary cross-entropy with each attribute's positive term weighted by
    negatives/positives on the train split, so rare attributes (Bald: about 2%) count.
``focal``: binary focal cross-entropy (gamma 2), which down-weights easy examples.
``cosine``: Keras's ``CosineSimilarity`` loss, which is the *negative* cosine between the
    label vector and the probability vector: it starts near 0 and falls towards -1 as the
    predictions line up with the labels, so its curve reads "lower is better" like the others
    but is negative. A face with no positive attribute has cosine 0 whatever the prediction.

Label smoothing ``s`` (cross-entropy losses only) trains against ``y * (1 - s) + s / 2``
instead of the 0/1 labels, so no prediction is pushed all the way to 0 or 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from celebalib.attributes import NUM_ATTRIBUTES
from celebalib.errors import ConfigError, check_fraction

LOSSES: tuple[str, ...] = ("bce", "balanced_bce", "focal", "cosine")


@keras.saving.register_keras_serializable(package="celebalib")
class BalancedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with a per-attribute weight on the positive term.

    For probability p, label y and weight w: ``-(w * y * log p + (1 - y) * log(1 - p))``,
    averaged over attributes, as ``tf.nn.weighted_cross_entropy_with_logits`` does for logits.
    """

    def __init__(self, pos_weights: Sequence[float], label_smoothing: float = 0.0, name: str = "balanced_bce",
                 **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.pos_weights = [float(w) for w in pos_weights]
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Return the weighted cross-entropy of each sample."""
        y_true = ops.cast(y_true, y_pred.dtype)
        y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        eps = keras.config.epsilon()
        p = ops.clip(y_pred, eps, 1.0 - eps)
        weights = ops.convert_to_tensor(self.pos_weights, dtype=y_pred.dtype)
        terms = weights * y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p)
        return -ops.mean(terms, axis=-1)

    def get_config(self) -> dict:
        """Return the constructor arguments, so the loss is saved with the model."""
        return {**super().get_config(), "pos_weights": self.pos_weights, "label_smoothing": self.label_smoothing}


def check_pos_weights(pos_weights: Sequence[float] | None) -> list[float]:
    """Return the weights as a list if there are 40 positive finite values, else raise ConfigError."""
    if pos_weights is None:
        raise ConfigError("loss 'balanced_bce' needs pos_weights (negatives/positives per attribute on the train split)")
    values = np.asarray(pos_weights, dtype="float64").ravel()
    if values.size != NUM_ATTRIBUTES or not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ConfigError(f"pos_weights: expected {NUM_ATTRIBUTES} positive finite numbers, got {values.size} values")
    return values.tolist()


def check_label_smoothing(name: str, label_smoothing: float) -> float:
    """Return ``label_smoothing`` if it is a number in [0, 1) that loss ``name`` takes, else raise ConfigError."""
    check_fraction("label_smoothing", label_smoothing)
    if label_smoothing and name == "cosine":
        raise ConfigError("label_smoothing applies to the cross-entropy losses (bce, balanced_bce, focal), not cosine")
    return float(label_smoothing)


def get_loss(name: str, pos_weights: Sequence[float] | None = None, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Return the loss called ``name`` (one of ``LOSSES``); ``balanced_bce`` needs ``pos_weights``."""
    smoothing = check_label_smoothing(name, label_smoothing)
    if name == "bce":
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing, name="bce")
    if name == "balanced_bce":
        return BalancedBinaryCrossentropy(check_pos_weights(pos_weights), label_smoothing=smoothing)
    if name == "focal":
        return keras.losses.BinaryFocalCrossentropy(gamma=2.0, label_smoothing=smoothing, name="focal")
    if name == "cosine":
        return keras.losses.CosineSimilarity(axis=-1, name="cosine")
    raise ConfigError(f"unknown loss {name!r}; expected one of {', '.join(LOSSES)}")
