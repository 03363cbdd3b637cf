"""The attribute model: augmentation and scaling, a MobileNetV2 backbone, pooling, a 40-way sigmoid head.

The model takes raw RGB images (float32 in [0, 255], as ``celebalib.data`` produces them)
and does its own scaling, so every caller feeds it the same thing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import keras
from keras import layers

from celebalib.attributes import NUM_ATTRIBUTES
from celebalib.data import check_image_size as data_check_image_size
from celebalib.data import image_shape
from celebalib.errors import ConfigError

MIN_IMAGE_SIZE = 32
# The sizes Keras publishes ImageNet weights for; other sizes load the 224 px weights.
IMAGENET_SIZES = (96, 128, 160, 192, 224)
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# Keras's MobileNetV2 uses momentum 0.999. Trained from scratch, the moving statistics then
# lag far behind the weights: on 19,999 genuine CelebA training images (alpha 0.35, 128 px,
# Adam) validation binary accuracy stayed at the majority baseline (0.806-0.808) for four
# epochs while training accuracy rose to 0.866; with 0.9 validation reached 0.832, 0.848,
# 0.855 and 0.869 after epochs 1-4.
SCRATCH_BN_MOMENTUM = 0.9
BACKBONE = "backbone"
AUGMENT = "augment"
POOLED = "pooled"
OUTPUT = "attributes"
# How the backbone's last feature map becomes one vector: "average" (global average pooling)
# or "depthwise" (a global depthwise convolution: one learned weight per channel and position,
# started at the average, so the head can tell the mouth's row from the hair's on an aligned face).
HEADS = ("average", "depthwise")


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Build layers under Keras's dtype policy ``name`` (e.g. "mixed_float16"), then restore the previous one."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def check_image_size(image_size: int) -> int:
    """Return ``image_size`` if MobileNetV2 accepts it (``data.check_image_size`` from MIN_IMAGE_SIZE), else raise ConfigError."""
    return data_check_image_size(image_size, MIN_IMAGE_SIZE)


def imagenet_weights_file(alpha: float, image_size: int, height: int | None = None) -> Path:
    """Return where Keras caches the no-top ImageNet weights for ``alpha`` and ``image_size``
    (the width; ``height`` if the images are not square)."""
    square = height is None or height == image_size
    rows = image_size if square and image_size in IMAGENET_SIZES else 224
    name = f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_{rows}_no_top.h5"
    home = Path(os.environ.get("KERAS_HOME") or "~/.keras").expanduser()
    return home / "models" / name


def build_backbone(image_size: int, alpha: float, weights: str | None,
                   fast_layers: bool | Iterable[str] = True, height: int | None = None) -> keras.Model:
    """Return MobileNetV2 without its top, with weights None, "imagenet" or a local file.

    ``image_size`` is the input's width, and its height unless ``height`` is given.
    ``fast_layers`` swaps Keras's layers for this module's faster subclasses of them (see
    ``FAST_LAYERS``): True all kinds, False none, or the names of some.
    """
    shape = (height or image_size, image_size, 3)
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ConfigError(f"weights file {weights} not found; expected None, 'imagenet' or a local .h5/.weights.h5 file")
    if weights == "imagenet" and alpha not in IMAGENET_ALPHAS:
        raise ConfigError(f"alpha {alpha}: ImageNet weights exist only for alpha in {IMAGENET_ALPHAS}")
    try:
        backbone = keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=weights, name=BACKBONE
        )
    except Exception as error:  # Keras's get_file raises a bare Exception when offline.
        if weights != "imagenet":
            raise
        target = imagenet_weights_file(alpha, image_size, height)
        raise ConfigError(
            f"could not download the ImageNet weights ({error}); place {target.name} by hand in "
            f"{target.parent}/, where Keras looks for it (~/.keras/models/ unless KERAS_HOME is set)"
        ) from None
    return with_fast_layers(backbone, fast_layers)


# The smallest epsilon the fused batch norm takes on every device: cuDNN's GPU kernel refuses less
# than its CUDNN_BN_MIN_EPSILON (1e-5), and tf.keras 2 left the fused path below 1.001e-5 for that.
# Smaller epsilons run Keras's own code everywhere, so a model computes the same on a CPU and a GPU.
FUSED_MIN_EPSILON = 1.001e-5


@keras.saving.register_keras_serializable(package="celebalib")
class BatchNormalization(layers.BatchNormalization):
    """Keras's BatchNormalization, trained with TensorFlow's fused kernel on 4-D channels-last input.

    Keras 3 normalises a training batch with separate moments and arithmetic ops (its BN
    is a known slow spot, keras-team/keras-core#225); TensorFlow's one fused op does the same
    sums in a single pass and is faster on a CPU (``benchmarks/bench_fast_layers.py``). Outputs,
    gradients and moving statistics are Keras's; inference, other shapes and other backends
    run Keras's own code, as does an epsilon below ``FUSED_MIN_EPSILON``, which the fused op
    refuses. The class keeps Keras's name because Keras names a layer's entries in weight files
    after its class, so .weights.h5 files load into either kind of layer.
    """

    def call(self, inputs, training=None, mask=None):
        dtype = keras.backend.standardize_dtype(inputs.dtype)
        fused = (training and self.trainable and mask is None and not self.renorm and not self.synchronized
                 and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4
                 and self.axis in (-1, 3) and dtype in ("float16", "bfloat16", "float32")
                 and self.epsilon >= FUSED_MIN_EPSILON)
        if not fused:
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        # float32 even under mixed precision, where the layer would be handed float16 copies.
        scale = keras.ops.cast(self.gamma, "float32") if self.scale else keras.ops.ones(channels)
        offset = keras.ops.cast(self.beta, "float32") if self.center else keras.ops.zeros(channels)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=self.epsilon, is_training=True)
        # The op returns the unbiased variance; Keras keeps the biased one it normalised with.
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
        variance = variance * (count - 1.0) / count
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return keras.ops.cast(outputs, self.compute_dtype)


@keras.saving.register_keras_serializable(package="celebalib")
class Conv2D(layers.Conv2D):
    """Keras's Conv2D, computing a 1x1 convolution as one matrix product on TensorFlow.

    A pointwise convolution (1x1 kernel, stride 1, one group, channels last) multiplies each
    pixel's channel vector by the same matrix. TensorFlow's CPU kernels give the same forward
    result either way but take much longer over the convolution's gradients than over a
    matrix product's (``benchmarks/bench_fast_layers.py``). Other kernels and backends run
    Keras's own code; the class keeps Keras's name for the weight files, as ``BatchNormalization``.
    """

    def is_pointwise(self) -> bool:
        """Whether this layer's convolution is a per-pixel matrix product."""
        return (self.kernel_size == (1, 1) and self.strides == (1, 1) and self.dilation_rate == (1, 1)
                and self.groups == 1 and self.data_format == "channels_last")

    def convolution_op(self, inputs, kernel):
        if not (self.is_pointwise() and keras.backend.backend() == "tensorflow" and len(inputs.shape) == 4):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        dynamic = tf.shape(inputs)
        # Static sizes where known, so Keras still sees the output's height and width.
        shape = [size if size is not None else dynamic[i] for i, size in enumerate(inputs.shape[:-1])]
        pixels = tf.reshape(inputs, [-1, inputs.shape[-1]])
        return tf.reshape(tf.matmul(pixels, kernel[0, 0]), [*shape, self.filters])


# The layers ``with_fast_layers`` can swap: name -> (Keras's class, what replaces it). "padding"
# folds each explicit ZeroPadding2D in front of a "valid" strided depthwise convolution into the
# convolution's own "same" padding where the two pad alike (always, in MobileNetV2): the same
# numbers without a padded copy of the feature map, and a faster gradient on TensorFlow's CPU kernels.
FAST_LAYERS = {"batch_norm": (layers.BatchNormalization, BatchNormalization),
               "pointwise": (layers.Conv2D, Conv2D),
               "padding": (layers.ZeroPadding2D, layers.Identity)}


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """The (before, after) zeros TensorFlow's "same" padding adds along one axis of ``size``."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def consumers(model: keras.Model) -> dict[int, list[layers.Layer]]:
    """{id of a tensor inside ``model``: the layers of ``model`` that take it as an input}.

    Read from each layer's public ``input``, the inputs of its first call, which for the layers of a
    freshly built functional model are their calls in that model.
    """
    found: dict[int, list[layers.Layer]] = {}
    for layer in model.layers:
        if isinstance(layer, layers.InputLayer):
            continue
        for tensor in keras.tree.flatten(layer.input):
            found.setdefault(id(tensor), []).append(layer)
    return found


def foldable_padding(model: keras.Model) -> dict[layers.Layer, layers.Layer]:
    """{ZeroPadding2D: the DepthwiseConv2D it alone feeds} for pads equal to that convolution's "same" padding."""
    pairs, fed = {}, consumers(model)
    for layer in model.layers:
        users = fed.get(id(layer.output), []) if type(layer) is layers.ZeroPadding2D else []
        if len(users) != 1:
            continue
        (conv,) = users
        if not (type(conv) is layers.DepthwiseConv2D and conv.padding == "valid" and conv.dilation_rate == (1, 1)
                and conv.data_format == "channels_last" and layer.data_format == "channels_last"):
            continue
        height, width = layer.input.shape[1:3]
        if height is None or width is None:
            continue
        same = (same_padding(height, conv.kernel_size[0], conv.strides[0]),
                same_padding(width, conv.kernel_size[1], conv.strides[1]))
        if tuple(map(tuple, layer.padding)) == same:
            pairs[layer] = conv
    return pairs


def fast_layer_kinds(fast_layers: bool | Iterable[str]) -> tuple[str, ...]:
    """The ``FAST_LAYERS`` names ``fast_layers`` selects; raise ConfigError for unknown ones."""
    if isinstance(fast_layers, bool):
        return tuple(FAST_LAYERS) if fast_layers else ()
    kinds = tuple(fast_layers)
    unknown = [kind for kind in kinds if kind not in FAST_LAYERS]
    if unknown:
        raise ConfigError(f"fast_layers={kinds!r}: expected names among {', '.join(FAST_LAYERS)}")
    return kinds


def with_fast_layers(model: keras.Model, fast_layers: bool | Iterable[str] = True) -> keras.Model:
    """``model`` rewired with this module's subclasses for the Keras layers chosen, same weights.

    Only the layers the subclass speeds up are swapped (every batch norm; convolutions that
    are pointwise; zero padding that a strided depthwise convolution can do itself, see
    ``FAST_LAYERS``). Every other layer is reused rather than copied, and the new layers are
    made without drawing from Python's random state (see ``_rebuilt``), so the random initial
    weights of layers made later stay those a seed gives without the swap.
    """
    kinds = fast_layer_kinds(fast_layers)
    swaps = dict(FAST_LAYERS[kind] for kind in kinds if kind != "padding")
    folded = foldable_padding(model) if "padding" in kinds else {}
    if not swaps and not folded:
        return model
    convolutions = set(folded.values())

    def clone(layer: layers.Layer) -> layers.Layer:
        if layer in folded:
            return layers.Identity(name=layer.name)
        if layer in convolutions:
            return _rebuilt(layers.DepthwiseConv2D, layer, padding="same")
        mine = swaps.get(type(layer))
        if mine is None or (mine is Conv2D and not Conv2D.is_pointwise(layer)):
            return layer
        return _rebuilt(mine, layer)

    fast = keras.models.clone_model(model, clone_function=clone)
    fast.set_weights(model.get_weights())
    return fast


def _rebuilt(kind: type[layers.Layer], layer: layers.Layer, **changes) -> layers.Layer:
    """A new ``kind`` layer with ``layer``'s configuration (and ``changes``), whose weights are to be copied.

    Keras gives an initialiser without a seed one drawn from Python's global random state; these
    initialisers get seed 0 instead, since the copied weights replace what they would draw.
    """
    config = {**layer.get_config(), **changes}
    for key, value in config.items():
        if key.endswith("_initializer") and isinstance(value, dict) and value.get("config", {}).get("seed", 0) is None:
            config[key] = {**value, "config": {**value["config"], "seed": 0}}
    return kind.from_config(config)


# This module's layers and the Keras layers they subclass, for models saved without celebalib.
KERAS_LAYERS = {BatchNormalization: layers.BatchNormalization, Conv2D: layers.Conv2D}


def with_keras_layers(model: keras.Model) -> keras.Model:
    """``model`` rebuilt with Keras's own layers where it has this module's (nested models too), same weights.

    The folded padding stays folded: its Identity and "same"-padded DepthwiseConv2D are Keras's layers.
    """
    def clone(layer: layers.Layer) -> layers.Layer:
        theirs = KERAS_LAYERS.get(type(layer))
        return layer if theirs is None else _rebuilt(theirs, layer)

    plain = keras.models.clone_model(model, clone_function=clone, recursive=True)
    plain.set_weights(model.get_weights())
    return plain


def export_keras_layers(model: keras.Model, path: str | Path) -> Path:
    """Save ``model`` atomically with Keras's own layers, so ``keras.models.load_model`` loads it without celebalib."""
    from celebalib.io import atomic_path

    with atomic_path(path) as tmp:
        with_keras_layers(model).save(tmp)
    return Path(path)


AUGMENTATIONS = ("full", "shift", "flip", "none")


def augmentation_mode(augment: bool | str) -> str:
    """Normalise ``augment``: True means "full", False "none"; raise ConfigError for others."""
    mode = ("full" if augment else "none") if isinstance(augment, bool) else augment
    if mode not in AUGMENTATIONS:
        raise ConfigError(f"augment={augment!r}: expected one of {', '.join(AUGMENTATIONS)}")
    return mode


def augmentation(seed: int | None = None, mode: str = "full") -> keras.Sequential:
    """Random horizontal flip, plus zoom and shift for "full" or whole-pixel shifts for "shift".

    "full" resamples every image (bilinear), which softens fine detail at small sizes; "shift"
    moves by whole pixels (nearest neighbour), so each pixel it shows is one of the image's own.
    Keras applies them only while training.
    """
    steps = [layers.RandomFlip("horizontal", seed=seed)]
    if mode == "full":
        steps += [layers.RandomZoom(0.1, seed=seed), layers.RandomTranslation(0.08, 0.08, seed=seed)]
    elif mode == "shift":
        steps += [layers.RandomTranslation(0.08, 0.08, interpolation="nearest", seed=seed)]
    return keras.Sequential(steps, name=AUGMENT)


def layers_of_kind(model: keras.Model, kind: type[layers.Layer]) -> list[layers.Layer]:
    """Every layer inside ``model`` that is a ``kind`` (subclasses too), nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, kind):
            found.append(layer)
        if isinstance(layer, keras.Model):
            found += layers_of_kind(layer, kind)
    return found


def batch_norm_layers(model: keras.Model) -> list[layers.BatchNormalization]:
    """Every batch-normalisation layer inside ``model``, nested models included."""
    return layers_of_kind(model, layers.BatchNormalization)


def set_bn_momentum(model: keras.Model, momentum: float) -> None:
    """Set the momentum of every batch-normalisation layer inside ``model``."""
    for layer in batch_norm_layers(model):
        layer.momentum = momentum


def freeze_batch_norm(model: keras.Model) -> None:
    """Keep every batch-norm layer of ``model`` in inference mode, also while training.

    Pretrained statistics must survive fine-tuning (Keras's transfer-learning guide). In
    Keras 3 a frozen BatchNormalization layer runs in inference mode; calling the backbone
    with ``training=False`` would not be enough, since ``fit`` passes ``training=True``
    down to every nested layer and overrides it.
    """
    for layer in batch_norm_layers(model):
        layer.trainable = False


def set_backbone_trainable(model: keras.Model, trainable: bool, *, pretrained: bool) -> None:
    """Freeze or unfreeze the backbone; a pretrained one keeps its batch norm frozen."""
    backbone = backbone_of(model)
    backbone.trainable = trainable
    if pretrained:
        freeze_batch_norm(backbone)


def build_model(
    *,
    image_size: int,
    crop: str = "center",
    alpha: float = 0.35,
    weights: str | None = None,
    dropout_rate: float = 0.2,
    augment: bool | str = True,
    bn_momentum: float | None = None,
    head: str = "average",
    num_attributes: int = NUM_ATTRIBUTES,
    fast_layers: bool | Iterable[str] = True,
) -> keras.Model:
    """Build the attribute model: raw RGB [0, 255] in, ``num_attributes`` probabilities out.

    Args:
        image_size, crop: the input is ``data.image_shape(image_size, crop)`` (S x S, or taller
            for the "portrait" crop).
        weights: None (from scratch), "imagenet" (Keras's download and cache) or a local file.
        augment: "full" (or True) flips, zooms and shifts; "shift" flips and shifts by whole
            pixels; "flip" flips only; "none" (or False) none of them.
        bn_momentum: batch-norm momentum; None means 0.9 from scratch and Keras's own when
            pretrained (see ``SCRATCH_BN_MOMENTUM``).
        head: "average" or "depthwise" pooling of the last feature map (see ``HEADS``).
        fast_layers: swap the backbone's batch norm and 1x1 convolutions for this module's
            faster subclasses (the same figures; see ``FAST_LAYERS``); False keeps Keras's
            layers, names of ``FAST_LAYERS`` swap only those.
    """
    check_image_size(image_size)
    height, width = image_shape(image_size, crop)
    check_head(head)
    mode = augmentation_mode(augment)
    inputs = keras.Input(shape=(height, width, 3), name="image")
    x = augmentation(mode=mode)(inputs) if mode != "none" else inputs
    # The same scaling as mobilenet_v2.preprocess_input: [0, 255] -> [-1, 1].
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale")(x)
    backbone = build_backbone(width, alpha, weights, fast_layers, height)
    if weights is not None:
        freeze_batch_norm(backbone)
    x = backbone(x)
    for layer in pooling(head, backbone.output_shape[1:3]):
        x = layer(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.Dropout(dropout_rate, name="dropout")(x)
    outputs = layers.Dense(num_attributes, activation="sigmoid", dtype="float32", name=OUTPUT)(x)
    size = f"{width}" if height == width else f"{width}x{height}"
    model = keras.Model(inputs, outputs, name=f"mobilenetv2_{alpha:g}_{size}px_attributes")
    momentum = bn_momentum if bn_momentum is not None else (SCRATCH_BN_MOMENTUM if weights is None else None)
    if momentum is not None:
        set_bn_momentum(model, momentum)
    return model


def check_head(head: str) -> str:
    """Return ``head`` if it is one of ``HEADS``, else raise ConfigError."""
    if head not in HEADS:
        raise ConfigError(f"head={head!r}: expected one of {', '.join(HEADS)}")
    return head


def pooling(head: str, feature_size: tuple[int, int]) -> list[layers.Layer]:
    """The layers that turn an (H, W, C) feature map into the C-vector named ``POOLED``."""
    if head == "average":
        return [layers.GlobalAveragePooling2D(name=POOLED)]
    # Started at 1 / (H * W) at every position, it is global average pooling at first.
    return [layers.DepthwiseConv2D(feature_size, use_bias=False, name="spatial_weights",
                                   depthwise_initializer=keras.initializers.Constant(1.0 / (feature_size[0] * feature_size[1]))),
            layers.Flatten(name=POOLED)]


def backbone_of(model: keras.Model) -> keras.Model:
    """Return the MobileNetV2 backbone inside an attribute model."""
    return model.get_layer(BACKBONE)


def inference_model(model: keras.Model) -> keras.Model:
    """``model`` without its augmentation layers, sharing its weights: what an export holds.

    The augmentation passes images through unchanged at inference, but its random ops stay in a
    traced graph, and ONNX has no equivalent for some of them.
    """
    def clone(layer: layers.Layer) -> layers.Layer:
        return keras.Sequential([layers.Identity()], name=AUGMENT) if layer.name == AUGMENT else layer

    return keras.models.clone_model(model, clone_function=clone)


def feature_extractor(model: keras.Model) -> keras.Model:
    """Return a model sharing ``model``'s weights that outputs the pooled feature vector."""
    return keras.Model(model.input, model.get_layer(POOLED).output, name="features")
