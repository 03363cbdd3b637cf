"""Grad-CAM: which region of a face drove one attribute's prediction.

The heat map weights the channels of a feature map inside the backbone (by default its
last convolutional block, the MobileNetV2 output before pooling) by the mean gradient of
the chosen attribute's logit with respect to them (Selvaraju et al., 2017). At small
inputs the last block is only a few cells wide (2x2 at 64 px), so an earlier, larger map
can be chosen by name; :func:`feature_layer` finds the deepest one of a given size.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from celebalib.attributes import attribute_index
from celebalib.errors import ConfigError
from celebalib.model import OUTPUT, backbone_of


def _split_at_backbone(model: keras.Model) -> tuple[list, keras.Model, list]:
    """Return the layers before the backbone, the backbone, and the layers after it."""
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    backbone = backbone_of(model)
    # The attribute model is a chain (augment, scale, backbone, pool, head), so walking its
    # layers in order reproduces it; the backbone is nested, so its inner tensors cannot
    # be outputs of a new keras.Model over the outer input.
    position = next(i for i, layer in enumerate(chain) if layer is backbone)
    return chain[:position], backbone, chain[position + 1:]


# backbone -> {layer name: a copy of the backbone that also returns that layer's output}.
_EXPLAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def feature_layer(model: keras.Model, min_cells: int) -> str:
    """Name of the deepest activation (ReLU or Add) in the backbone whose map is at least min_cells wide."""
    backbone = backbone_of(model)
    found = [layer.name for layer in backbone.layers if isinstance(layer, (keras.layers.ReLU, keras.layers.Add))
             and min(layer.output.shape[1:3]) >= min_cells]
    if not found:
        raise ConfigError(f"no feature map of {min_cells}x{min_cells} cells or more in the backbone; "
                          f"expected min_cells at most {min(backbone.input_shape[1:3]) // 2}")
    return found[-1]


def _explainer(backbone: keras.Model, layer: str) -> keras.Model:
    """The backbone with ``layer``'s output as a second output, holding the backbone's current weights."""
    cache = _EXPLAINERS.setdefault(backbone, {})
    if layer not in cache:
        try:
            backbone.get_layer(layer)
        except ValueError:
            raise ConfigError(f"layer {layer!r} is not in the backbone; expected a name such as "
                              f"'block_6_expand_relu' (see gradcam.feature_layer)") from None
        # A copy, because the layers of a model built in this process may also belong to
        # another graph (model.with_fast_layers reuses them), whose tensors are no outputs here.
        copy = keras.models.clone_model(backbone)
        cache[layer] = keras.Model(copy.input, [copy.get_layer(layer).output, copy.output])
    explainer = cache[layer]
    explainer.set_weights(backbone.get_weights())
    return explainer


def grad_cam(model: keras.Model, image: np.ndarray, attribute: str | int, layer: str | None = None) -> np.ndarray:
    """Heat map (H, W) in [0, 1] of the regions that raised ``attribute``'s probability.

    Args:
        model: an attribute model from ``celebalib.model.build_model`` (or ``Run.model()``).
        image: one (H, W, 3) image, float in [0, 255], at the model's input size
            (``celebalib.data.load_image`` gives that).
        attribute: a CelebA attribute name or its column index.
        layer: the backbone layer whose feature map is weighted; None for the last one.
    """
    image = np.asarray(image, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if image.shape != expected:
        raise ConfigError(f"image of shape {image.shape}: expected {expected}, the model's input size")
    return grad_cams(model, image[None], attribute, layer)[0]


def grad_cams(model: keras.Model, images: np.ndarray, attribute: str | int, layer: str | None = None) -> np.ndarray:
    """Heat maps (N, H, W) in [0, 1], one per image of a batch (N, H, W, 3): ``grad_cam`` of each.

    The model runs in inference mode, where no image affects another, so the gradient of the
    batch's summed score holds each image's own gradient.
    """
    column = attribute_index(attribute) if isinstance(attribute, str) else int(attribute)
    images = np.asarray(images, dtype=np.float32)
    expected = tuple(model.input_shape[1:])
    if images.ndim != 4 or images.shape[1:] != expected:
        raise ConfigError(f"images of shape {images.shape}: expected (N, {', '.join(map(str, expected))}), "
                          "the model's input size")
    if not 0 <= column < model.output_shape[-1]:
        raise ConfigError(f"attribute column {column}: expected 0 to {model.output_shape[-1] - 1}")
    before, backbone, after = _split_at_backbone(model)
    if not after or after[-1].name != OUTPUT:
        raise ConfigError(f"model {model.name!r} does not end in the {OUTPUT!r} layer; expected one from build_model")
    explainer = _explainer(backbone, layer) if layer is not None else None
    x = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        for step in before:
            x = step(x, training=False)
        if explainer is None:
            activations = y = backbone(x, training=False)
        else:
            activations, y = explainer(x, training=False)
        tape.watch(activations)
        for step in after[:-1]:
            y = step(y, training=False)
        # The attribute's logit, before the sigmoid (the paper's pre-softmax score): a confident
        # prediction saturates the sigmoid, whose gradient then vanishes, and the map with it.
        head = after[-1]
        score = tf.reduce_sum((keras.ops.matmul(y, head.kernel) + head.bias)[:, column])
    gradients = tape.gradient(score, activations)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1)).numpy()
    return np.stack([_normalise_and_resize(cam, images.shape[1:3]) for cam in cams])


def _normalise_and_resize(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale a coarse map to [0, 1] and resize it bilinearly to ``size``."""
    peak = float(cam.max())
    cam = cam / peak if peak > 0 else np.zeros_like(cam)
    resized = tf.image.resize(cam[..., None], size, method="bilinear").numpy()[..., 0]
    return np.clip(resized, 0.0, 1.0).astype(np.float32)
