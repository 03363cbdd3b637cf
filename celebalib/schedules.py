"""Learning-rate schedules that saved models refer to (``runs.load_model`` imports this module)."""

from __future__ import annotations

import math
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="celebalib")
class CosineSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay from ``initial_learning_rate`` to 0 over ``decay_steps`` (Keras's CosineDecay, alpha 0).

    ``decay_steps`` is a variable, so ``TimeBudget`` can shorten the schedule while training
    and the learning rate still reaches zero at the new end.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int) -> None:
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = keras.Variable(float(decay_steps), dtype="float32", trainable=False, name="decay_steps")

    def __call__(self, step):
        ops = keras.ops
        progress = ops.minimum(ops.cast(step, "float32") / self.decay_steps, 1.0)
        return self.initial_learning_rate * 0.5 * (1.0 + ops.cos(math.pi * progress))

    def get_config(self) -> dict[str, Any]:
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": int(self.decay_steps.numpy())}
