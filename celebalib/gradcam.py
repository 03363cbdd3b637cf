"""Grad-CAM: which region of a face drove one attribute's prediction.

The heat map weights the channels of the backbone's last convolutional block (the
MobileNetV2 output before pooling) by the mean gradient of the chosen attribute's
output with respect to them (Selvaraju et al., 2017).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from celebalib.attributes import attribute_index
from celebalib.errors import ConfigError
from celebalib.model import backbone_of


def _split_at_backbone(model: keras.Model) -> tuple[list, keras.Model, list]:
    """Return the layers before the backbone, the backbone, and the layers after it."""
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    backbone = backbone_of(model)
    # The attribute model is a chain (augment, scale, backbone, pool, head), so walking its
    # layers in order reproduces it; the backbone is nested, so its inner tensors cannot
    # be outputs of a new keras.Model over the outer input.
    position = next(i for i, layer in enumerate(chain) if layer is backbone)
    return chain[:position], backbone, chain[position + 1:]


def grad_cam(model: keras.Model, image: np.ndarray, attribute: str | int) -> np.ndarray:
    """Heat map (H, W) in [0, 1] of the regions that raised ``attribute``'s probability.

    Args:
        model: an attribute model from ``celebalib.model.build_model`` (or ``Run.model()``).
        image: one (H, W, 3) image, float in [0, 255], at the model's input size
            (``celebalib.data.load_image`` gives that).
        attribute: a CelebA attribute name or its column index.
    """
    column = attribute_index(attribute) if isinstance(attribute, str) else int(attribute)
    image = np.asarray(image, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if image.shape != expected:
        raise ConfigError(f"image of shape {image.shape}: expected {expected}, the model's input size")
    if not 0 <= column < model.output_shape[-1]:
        raise ConfigError(f"attribute column {column}: expected 0 to {model.output_shape[-1] - 1}")
    before, backbone, after = _split_at_backbone(model)
    x = tf.convert_to_tensor(image[None])
    with tf.GradientTape() as tape:
        for layer in before:
            x = layer(x, training=False)
        activations = backbone(x, training=False)
        tape.watch(activations)
        y = activations
        for layer in after:
            y = layer(y, training=False)
        score = y[:, column]
    gradients = tape.gradient(score, activations)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1))[0]
    return _normalise_and_resize(cam.numpy(), image.shape[:2])


def _normalise_and_resize(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale a coarse map to [0, 1] and resize it bilinearly to ``size``."""
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    resized = tf.image.resize(cam[..., None], size, method="bilinear").numpy()[..., 0]
    return np.clip(resized, 0.0, 1.0).astype(np.float32)
