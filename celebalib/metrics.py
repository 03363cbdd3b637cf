"""Streaming metrics for 40 binary attributes.

Mean accuracy alone flatters a CelebA model: always predicting each attribute's majority
label already scores about 0.80. Balanced accuracy, the mean of the true positive and true
negative rates, is 0.5 for that baseline, so it is shown beside binary accuracy.
"""

from __future__ import annotations

import keras
from keras import ops

from celebalib.attributes import NUM_ATTRIBUTES


@keras.saving.register_keras_serializable(package="celebalib")
class MeanBalancedAccuracy(keras.metrics.Metric):
    """Balanced accuracy per attribute, averaged over attributes, from streamed TP/FP/TN/FN counts.

    An attribute whose labels seen so far are all one class contributes the rate of that
    class alone (as ``sklearn.metrics.balanced_accuracy_score`` does); one with no labels
    at all is left out of the mean.
    """

    def __init__(
        self,
        num_attributes: int = NUM_ATTRIBUTES,
        threshold: float = 0.5,
        name: str = "mean_balanced_accuracy",
        **kwargs,
    ) -> None:
        super().__init__(name=name, **kwargs)
        self.num_attributes = int(num_attributes)
        self.threshold = float(threshold)
        shape = (self.num_attributes,)
        self.tp, self.fp, self.tn, self.fn = (
            self.add_variable(shape=shape, initializer="zeros", name=part) for part in ("tp", "fp", "tn", "fn")
        )

    def update_state(self, y_true, y_pred, sample_weight=None) -> None:
        """Add this batch's counts, per attribute."""
        truth = ops.cast(ops.greater(ops.cast(y_true, "float32"), 0.5), "float32")
        guess = ops.cast(ops.greater_equal(ops.cast(y_pred, "float32"), self.threshold), "float32")
        weight = 1.0 if sample_weight is None else ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        self.tp.assign_add(ops.sum(weight * truth * guess, axis=0))
        self.fp.assign_add(ops.sum(weight * (1.0 - truth) * guess, axis=0))
        self.tn.assign_add(ops.sum(weight * (1.0 - truth) * (1.0 - guess), axis=0))
        self.fn.assign_add(ops.sum(weight * truth * (1.0 - guess), axis=0))

    def result(self):
        """Return the mean over attributes of (TPR + TNR) / 2, each rate only where defined."""
        positives = self.tp + self.fn
        negatives = self.tn + self.fp
        has_pos = ops.cast(positives > 0, "float32")
        has_neg = ops.cast(negatives > 0, "float32")
        tpr = ops.divide_no_nan(self.tp, positives)
        tnr = ops.divide_no_nan(self.tn, negatives)
        rates = has_pos + has_neg
        balanced = ops.divide_no_nan(tpr * has_pos + tnr * has_neg, rates)
        seen = ops.cast(rates > 0, "float32")
        return ops.divide_no_nan(ops.sum(balanced * seen), ops.sum(seen))

    def reset_state(self) -> None:
        """Zero the counts."""
        for variable in (self.tp, self.fp, self.tn, self.fn):
            variable.assign(ops.zeros_like(variable))

    def get_config(self) -> dict:
        """Return the constructor arguments, so the metric is saved with the model."""
        return {**super().get_config(), "num_attributes": self.num_attributes, "threshold": self.threshold}
