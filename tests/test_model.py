"""The attribute model: shapes, augmentation only in training, weights, batch-norm handling, fast layers."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from celebalib.errors import ConfigError
from celebalib.model import (
    SCRATCH_BN_MOMENTUM, BatchNormalization, Conv2D, augmentation, backbone_of, batch_norm_layers, build_backbone,
    FUSED_MIN_EPSILON, build_model, dtype_policy, export_keras_layers, feature_extractor, foldable_padding,
    imagenet_weights_file, inference_model, layers_of_kind, with_fast_layers, with_keras_layers,
)

SIZE = 32


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """A from-scratch 32 px model (building one takes a few seconds, so it is shared)."""
    keras.utils.set_random_seed(0)
    return build_model(image_size=SIZE)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """Four random RGB images in [0, 255]."""
    return np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")


def moving_means(model: keras.Model) -> np.ndarray:
    """The moving means of every batch-norm layer of the backbone, concatenated."""
    return np.concatenate([np.asarray(layer.moving_mean) for layer in batch_norm_layers(backbone_of(model))])


def test_outputs_are_40_probabilities(model: keras.Model, images: np.ndarray) -> None:
    probs = np.asarray(model(images, training=False))
    assert probs.shape == (4, 40) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    assert model.get_layer("attributes").dtype_policy.compute_dtype == "float32"


def test_flip_mode_only_mirrors_and_shift_and_full_modes_also_move(images: np.ndarray) -> None:
    keras.utils.set_random_seed(1)
    flipped = np.asarray(augmentation(mode="flip")(images, training=True))
    for original, seen in zip(images, flipped):  # each image is itself or its exact mirror image
        assert np.array_equal(seen, original) or np.array_equal(seen, original[:, ::-1])
    assert not np.array_equal(flipped, images)
    moved = np.asarray(augmentation(mode="full")(images, training=True))
    assert not any(np.array_equal(seen, o) or np.array_equal(seen, o[:, ::-1]) for o, seen in zip(images, moved))
    shifted = np.asarray(augmentation(mode="shift")(images, training=True))
    # a draw under half a pixel both ways leaves an image in place, so not every one need move
    assert not all(np.array_equal(seen, o) or np.array_equal(seen, o[:, ::-1]) for o, seen in zip(images, shifted))
    for original, seen in zip(images, shifted):  # whole-pixel shifts show only the image's own values
        assert np.isin(seen, original).all()
    assert not all(np.isin(seen, o).all() for o, seen in zip(images, moved))  # "full" resamples
    flip_model = build_model(image_size=SIZE, augment="flip")
    assert [type(layer) for layer in flip_model.get_layer("augment").layers] == [keras.layers.RandomFlip]
    assert "augment" not in [layer.name for layer in build_model(image_size=SIZE, augment="none").layers]
    with pytest.raises(ConfigError, match="augment='rotate'"):
        build_model(image_size=SIZE, augment="rotate")


def test_depthwise_head_starts_as_average_pooling_and_learns_one_weight_per_position() -> None:
    keras.utils.set_random_seed(0)
    model = build_model(image_size=64, augment="none", head="depthwise")
    faces = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    feature_map = np.asarray(backbone_of(model)(model.get_layer("scale")(faces), training=False))
    assert feature_map.shape[1:3] == (2, 2)
    features = np.asarray(feature_extractor(model)(faces, training=False))
    np.testing.assert_allclose(features, feature_map.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    spatial = model.get_layer("spatial_weights")
    kernel = np.zeros_like(np.asarray(spatial.kernel))
    kernel[1, 0] = 1.0  # every channel looks only at the bottom-left position
    spatial.kernel.assign(kernel)
    features = np.asarray(feature_extractor(model)(faces, training=False))
    np.testing.assert_allclose(features, feature_map[:, 1, 0], rtol=1e-5, atol=1e-6)
    assert "spatial_weights" not in [layer.name for layer in build_model(image_size=SIZE).layers]
    with pytest.raises(ConfigError, match="head='attention'"):
        build_model(image_size=SIZE, head="attention")


def test_portrait_crop_makes_a_taller_input_and_head() -> None:
    model = build_model(image_size=64, crop="portrait", augment="shift", head="depthwise")
    assert model.input_shape == (None, 72, 64, 3) and "64x72px" in model.name
    # 72 rows and 64 columns make a 3x2 feature map: the head keeps one weight per position of it.
    assert backbone_of(model).output_shape[1:3] == (3, 2)
    assert tuple(model.get_layer("spatial_weights").kernel.shape[:2]) == (3, 2)
    faces = np.random.default_rng(2).uniform(0, 255, (2, 72, 64, 3)).astype("float32")
    assert np.asarray(model(faces, training=True)).shape == (2, 40)
    with pytest.raises(ConfigError, match="crop='oval'"):
        build_model(image_size=64, crop="oval")


def test_augmentation_acts_only_in_training(model: keras.Model, images: np.ndarray) -> None:
    augment = model.get_layer("augment")
    np.testing.assert_array_equal(np.asarray(augment(images, training=False)), images)
    assert not np.allclose(np.asarray(augment(images, training=True)), images)
    first = np.asarray(model(images, training=False))
    np.testing.assert_array_equal(first, np.asarray(model(images, training=False)))


def test_scaling_maps_pixels_to_minus_one_one(model: keras.Model) -> None:
    scale = model.get_layer("scale")
    values = np.asarray(scale(np.array([[[[0.0, 127.5, 255.0]]]], "float32"))).ravel()
    np.testing.assert_allclose(values, keras.applications.mobilenet_v2.preprocess_input(
        np.array([0.0, 127.5, 255.0])), atol=1e-6)


def test_the_inference_model_has_no_random_layer_and_shares_the_weights(model: keras.Model,
                                                                        images: np.ndarray) -> None:
    plain = inference_model(model)
    random_layers = (keras.layers.RandomFlip, keras.layers.RandomZoom, keras.layers.RandomTranslation)
    assert layers_of_kind(model, random_layers) and not layers_of_kind(plain, random_layers)
    np.testing.assert_allclose(np.asarray(plain(images)), np.asarray(model(images, training=False)), atol=1e-6)
    assert plain.get_layer("attributes").kernel is model.get_layer("attributes").kernel


def test_feature_extractor_shares_weights(model: keras.Model, images: np.ndarray) -> None:
    features = np.asarray(feature_extractor(model)(images, training=False))
    assert features.shape == (4, 1280)
    # The head is a function of the pooled vector alone.
    head = [model.get_layer(name) for name in ("head_bn", "dropout", "attributes")]
    x = features
    for layer in head:
        x = layer(x, training=False)
    np.testing.assert_allclose(np.asarray(x), np.asarray(model(images, training=False)), atol=1e-5)


def test_from_scratch_uses_fast_batch_norm(model: keras.Model) -> None:
    momenta = {layer.momentum for layer in batch_norm_layers(backbone_of(model))}
    assert momenta == {SCRATCH_BN_MOMENTUM}


def test_local_weights_file_is_loaded_and_batch_norm_frozen(tmp_path: Path, images: np.ndarray) -> None:
    source = build_backbone(SIZE, 0.35, None)
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model = build_model(image_size=SIZE, weights=str(path), augment=False)
    for mine, theirs in zip(backbone_of(model).weights, source.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    # Pretrained: Keras's momentum stays, and training steps leave the backbone statistics alone.
    assert {layer.momentum for layer in batch_norm_layers(backbone_of(model))} == {0.999}
    before = moving_means(model)
    model(images, training=True)
    np.testing.assert_array_equal(before, moving_means(model))


def test_scratch_training_updates_batch_norm(model: keras.Model, images: np.ndarray) -> None:
    clone = keras.models.clone_model(model)
    before = moving_means(clone)
    clone(images, training=True)
    assert not np.allclose(before, moving_means(clone))


def train_twice(layer: keras.layers.BatchNormalization, x: np.ndarray) -> list[np.ndarray]:
    """Two training calls of ``layer`` on ``x``: outputs, gradients, moving statistics, then inference outputs."""
    import tensorflow as tf

    layer(x, training=True)
    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        outputs = layer(inputs, training=True)
        loss = tf.reduce_sum(tf.sin(outputs) * tf.range(1.0, x.shape[-1] + 1.0))  # gradients away from zero
    grads = tape.gradient(loss, [inputs, layer.gamma.value, layer.beta.value])
    return [np.asarray(outputs), *(np.asarray(g) for g in grads),
            np.asarray(layer.moving_mean), np.asarray(layer.moving_variance), np.asarray(layer(x, training=False))]


@pytest.mark.parametrize("shape", [(6, 5, 5, 8), (6, 8)])
def test_fused_batch_norm_trains_as_keras_batch_norm_does(shape: tuple[int, ...]) -> None:
    # 4-D inputs take the fused op, 2-D ones Keras's own code; either way nothing may change.
    x = np.random.default_rng(1).normal(3.0, 2.0, shape).astype("float32")
    keras_bn, fused_bn = keras.layers.BatchNormalization(momentum=0.9), BatchNormalization(momentum=0.9)
    for layer in (keras_bn, fused_bn):
        layer.build(shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, shape[-1]).astype("float32"))
        layer.beta.assign(np.linspace(-1.0, 1.0, shape[-1]).astype("float32"))
    expected, got = train_twice(keras_bn, x), train_twice(fused_bn, x)
    assert not np.allclose(expected[4], 0.0)  # the moving mean moved towards the batch mean of about 3
    for name, want, have in zip(["outputs", "d inputs", "d gamma", "d beta", "moving mean", "moving variance",
                                 "inference outputs"], expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4, err_msg=name)


def train_step_of(layer: keras.layers.Conv2D, x: np.ndarray) -> list[np.ndarray]:
    """One training call of ``layer`` on ``x``: outputs and the gradients for inputs, kernel and bias."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        outputs = layer(inputs, training=True)
        loss = tf.reduce_sum(tf.sin(outputs) * tf.range(1.0, outputs.shape[-1] + 1.0))
    grads = tape.gradient(loss, [inputs, layer.kernel.value, layer.bias.value])
    return [np.asarray(outputs), *(np.asarray(g) for g in grads)]


@pytest.mark.parametrize("kernel, strides", [(1, 1), (3, 1), (1, 2)])
def test_pointwise_conv_trains_as_keras_conv_does(kernel: int, strides: int) -> None:
    # 1x1 stride 1 takes the matrix product, the others Keras's convolution; nothing may change.
    x = np.random.default_rng(2).normal(0.0, 1.0, (3, 5, 6, 7)).astype("float32")
    keras_conv = keras.layers.Conv2D(4, kernel, strides=strides, padding="same", activation="relu6")
    mine = Conv2D(4, kernel, strides=strides, padding="same", activation="relu6")
    for layer in (keras_conv, mine):
        layer.build(x.shape)
    mine.set_weights([np.asarray(w) + 0.1 for w in keras_conv.get_weights()])  # a non-zero bias too
    keras_conv.set_weights(mine.get_weights())
    expected, got = train_step_of(keras_conv, x), train_step_of(mine, x)
    assert got[0].shape == (3, -(-5 // strides), -(-6 // strides), 4)
    for name, want, have in zip(["outputs", "d inputs", "d kernel", "d bias"], expected, got):
        np.testing.assert_allclose(have, want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_pointwise_conv_is_a_matrix_product_in_the_graph() -> None:
    import tensorflow as tf

    def op_types(layer: keras.layers.Layer) -> set[str]:
        layer.build((None, 6, 6, 8))
        graph = tf.function(layer).get_concrete_function(tf.TensorSpec((None, 6, 6, 8))).graph
        return {op.type for op in graph.get_operations()}

    assert "MatMul" in op_types(Conv2D(4, 1)) and "Conv2D" not in op_types(Conv2D(4, 1))
    assert "Conv2D" in op_types(Conv2D(4, 3)) and "Conv2D" in op_types(keras.layers.Conv2D(4, 1))


def test_pointwise_conv_follows_the_mixed_precision_policy() -> None:
    x = np.random.default_rng(3).normal(0.0, 1.0, (2, 4, 4, 8)).astype("float32")
    with dtype_policy("mixed_float16"):
        keras_conv, mine = keras.layers.Conv2D(4, 1), Conv2D(4, 1)
        for layer in (keras_conv, mine):
            layer.build(x.shape)
        mine.set_weights(keras_conv.get_weights())
        want, have = keras_conv(x), mine(x)
    assert keras.config.dtype_policy().name == "float32"
    assert have.dtype == want.dtype == "float16" and mine.kernel.dtype == "float32"
    np.testing.assert_allclose(np.asarray(have, "float32"), np.asarray(want, "float32"), rtol=1e-2, atol=1e-2)


def test_backbone_fast_layers_are_swapped_in_and_keep_their_weights(tmp_path: Path) -> None:
    source = build_backbone(SIZE, 0.35, None, fast_layers=False)
    assert {type(layer) for layer in batch_norm_layers(source)} == {keras.layers.BatchNormalization}
    assert {type(layer) for layer in layers_of_kind(source, keras.layers.Conv2D)} == {keras.layers.Conv2D}
    path = tmp_path / "plain.weights.h5"
    source.save_weights(path)
    backbone = build_backbone(SIZE, 0.35, str(path))
    assert {type(layer) for layer in batch_norm_layers(backbone)} == {BatchNormalization} and backbone.name == "backbone"
    # The 34 pointwise convolutions are swapped; the 3x3 stride-2 stem stays Keras's.
    kinds = {layer.name: type(layer) for layer in layers_of_kind(backbone, keras.layers.Conv2D)}
    assert kinds.pop("Conv1") is keras.layers.Conv2D
    assert len(kinds) == 34 and set(kinds.values()) == {Conv2D}
    for mine, theirs in zip(backbone.weights, source.weights):
        np.testing.assert_array_equal(np.asarray(mine), np.asarray(theirs))
    # And back: a fast backbone's weight file loads into Keras's own layers.
    backbone.layers[2].gamma.assign(np.full(backbone.layers[2].gamma.shape, 2.0, "float32"))
    pointwise = backbone.get_layer("Conv_1")
    pointwise.kernel.assign(np.full(pointwise.kernel.shape, 3.0, "float32"))
    backbone.save_weights(tmp_path / "fast.weights.h5")
    source.load_weights(tmp_path / "fast.weights.h5")
    np.testing.assert_array_equal(np.asarray(source.layers[2].gamma), 2.0)
    np.testing.assert_array_equal(np.asarray(source.get_layer("Conv_1").kernel), 3.0)


@pytest.mark.parametrize("fast_layers", [("batch_norm",), ("pointwise",), ("padding",)])
def test_each_swap_alone_leaves_the_other_layers_keras_s(fast_layers: tuple[str, ...]) -> None:
    backbone = build_backbone(SIZE, 0.35, None, fast_layers=fast_layers)
    batch_norm_kinds = {type(layer) for layer in batch_norm_layers(backbone)}
    conv_kinds = {type(layer) for layer in layers_of_kind(backbone, keras.layers.Conv2D)}
    pads = [layer.name for layer in layers_of_kind(backbone, keras.layers.ZeroPadding2D)]
    keras_bn, keras_conv = {keras.layers.BatchNormalization}, {keras.layers.Conv2D}
    if fast_layers == ("batch_norm",):
        assert batch_norm_kinds == {BatchNormalization} and conv_kinds == keras_conv and len(pads) == 4
    elif fast_layers == ("pointwise",):
        assert batch_norm_kinds == keras_bn and conv_kinds == {keras.layers.Conv2D, Conv2D} and len(pads) == 4
    else:
        assert batch_norm_kinds == keras_bn and conv_kinds == keras_conv and pads == []
        identities = [layer.name for layer in layers_of_kind(backbone, keras.layers.Identity)]
        assert identities == ["block_1_pad", "block_3_pad", "block_6_pad", "block_13_pad"]
        strided = [layer for layer in layers_of_kind(backbone, keras.layers.DepthwiseConv2D) if layer.strides == (2, 2)]
        assert len(strided) == 4 and {layer.padding for layer in strided} == {"same"}


@pytest.mark.parametrize("shape", [(64, 64), (97, 75)])
def test_folded_padding_trains_as_keras_padding_does(shape: tuple[int, int]) -> None:
    # Even and odd sides pad differently before a strided convolution; the fold matches both.
    keras.utils.set_random_seed(5)
    source = build_backbone(shape[1], 0.35, None, fast_layers=False, height=shape[0])
    folded = with_fast_layers(source, ("padding",))
    assert len([layer for layer in folded.layers if isinstance(layer, keras.layers.Identity)]) == 4
    x = tf.constant(np.random.default_rng(6).normal(0.0, 1.0, (2, *shape, 3)).astype("float32"))
    results = []
    for model in (source, folded):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x, training=True)
            loss = tf.reduce_sum(y * tf.cos(y))
        results.append([y, *tape.gradient(loss, [x, *model.trainable_weights])])
    for want, have in zip(*results):
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=1e-4, atol=1e-5)
    # The folded network pads inside its convolutions: its traced step has no Pad op left.
    def pad_ops(model: keras.Model) -> int:
        graph = tf.function(lambda images: model(images, training=True)).get_concrete_function(x).graph
        return sum(op.type in ("Pad", "PadV2") for op in graph.get_operations())
    assert pad_ops(source) == 4 and pad_ops(folded) == 0


def test_padding_that_differs_from_same_padding_is_not_folded() -> None:
    inputs = keras.Input((8, 8, 4))
    padded = keras.layers.ZeroPadding2D(((1, 1), (1, 1)))(inputs)  # "same" would pad (0, 1) here
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, strides=2)(padded))
    assert foldable_padding(model) == {}
    inputs = keras.Input((8, 8, 4))
    padded = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inputs)
    model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3, strides=2)(padded))
    assert list(foldable_padding(model)) == [model.layers[1]]


def test_the_swap_leaves_a_seed_s_initial_weights_alone() -> None:
    weights = []
    for fast in (False, True):
        keras.utils.set_random_seed(3)
        weights.append(build_model(image_size=SIZE, fast_layers=fast).get_weights())
    assert len(weights[0]) == len(weights[1])
    for plain, swapped in zip(*weights):
        np.testing.assert_array_equal(swapped, plain)


def test_save_and_safe_load_give_the_same_outputs(model: keras.Model, images: np.ndarray, tmp_path: Path) -> None:
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)),
                               np.asarray(model(images, training=False)), atol=1e-6)


def test_bad_arguments_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least 32"):
        build_model(image_size=31)
    with pytest.raises(ConfigError, match="not found"):
        build_model(image_size=SIZE, weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ConfigError, match="alpha 0.3"):
        build_model(image_size=SIZE, weights="imagenet", alpha=0.3)
    with pytest.raises(ConfigError, match="expected names among batch_norm, pointwise"):
        build_model(image_size=SIZE, fast_layers=("depthwise",))


def test_failed_download_names_the_file_and_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure: no network")  # what Keras raises when offline

    monkeypatch.setattr(file_utils, "get_file", offline)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    expected = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_96_no_top.h5"
    assert imagenet_weights_file(0.35, 96).name == expected
    with pytest.raises(ConfigError) as error:
        build_model(image_size=96, weights="imagenet")
    message = str(error.value)
    assert expected in message and str(tmp_path / "models") in message and "\n" not in message


def fused_ops(layer: keras.layers.Layer, x: np.ndarray) -> int:
    """How many fused batch-norm ops a traced training call of ``layer`` on ``x`` holds."""
    graph = tf.function(lambda inputs: layer(inputs, training=True)).get_concrete_function(tf.constant(x)).graph
    return sum(op.type.startswith("FusedBatchNorm") for op in graph.get_operations())


def test_an_epsilon_too_small_for_the_fused_op_takes_keras_s_path() -> None:
    x = np.random.default_rng(7).normal(3.0, 2.0, (6, 5, 5, 8)).astype("float32")
    assert fused_ops(BatchNormalization(), x) == 1
    small = BatchNormalization(epsilon=FUSED_MIN_EPSILON / 10, momentum=0.9)
    assert fused_ops(small, x) == 0
    small = BatchNormalization(epsilon=FUSED_MIN_EPSILON / 10, momentum=0.9)
    keras_bn = keras.layers.BatchNormalization(epsilon=FUSED_MIN_EPSILON / 10, momentum=0.9)
    for want, have in zip(train_twice(keras_bn, x), train_twice(small, x)):
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-4)


def test_fused_batch_norm_under_mixed_float16_matches_keras_s() -> None:
    # float16 keeps about three significant digits: outputs and gradients of order one agree to 1e-2.
    x = np.random.default_rng(8).normal(3.0, 2.0, (6, 5, 5, 8)).astype("float32")
    with dtype_policy("mixed_float16"):
        keras_bn, fused_bn = keras.layers.BatchNormalization(momentum=0.9), BatchNormalization(momentum=0.9)
    results = []
    for layer in (keras_bn, fused_bn):
        layer.build(x.shape)
        layer.gamma.assign(np.linspace(0.5, 1.5, 8).astype("float32"))
        layer.beta.assign(np.linspace(-1.0, 1.0, 8).astype("float32"))
        with tf.GradientTape() as tape:
            inputs = tf.cast(tf.constant(x), "float16")
            tape.watch(inputs)
            outputs = layer(inputs, training=True)
            loss = tf.reduce_sum(tf.sin(tf.cast(outputs, "float32")) * tf.range(1.0, 9.0))
        assert outputs.dtype == tf.float16
        grads = tape.gradient(loss, [inputs, layer.gamma.value, layer.beta.value])
        results.append([outputs, *grads, layer.moving_mean, layer.moving_variance])
    assert fused_ops(fused_bn, x.astype("float16")) == 1
    for name, want, have in zip(["outputs", "d inputs", "d gamma", "d beta", "moving mean", "moving variance"], *results):
        np.testing.assert_allclose(np.asarray(have, "float32"), np.asarray(want, "float32"), rtol=1e-2, atol=1e-2,
                                   err_msg=name)


def test_the_whole_model_with_every_swap_trains_as_keras_s_layers_do() -> None:
    # All three swaps at once against Keras's own layers, same weights, one training step on 64 px
    # images. Tolerances: probabilities to 1e-4; moving statistics to 1e-5; each gradient to 2% of
    # the model's largest, since rounding differences compound through 52 training-mode batch norms
    # (each alone matches Keras's to a relative 1e-4, test_fused_batch_norm_trains_as_keras_batch_norm_does).
    keras.utils.set_random_seed(4)
    images = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    kwargs = {"image_size": 64, "augment": "none", "dropout_rate": 0.0}
    plain, fast = build_model(fast_layers=False, **kwargs), build_model(fast_layers=True, **kwargs)
    assert len(layers_of_kind(fast, BatchNormalization)) == 52 and layers_of_kind(plain, BatchNormalization) == []
    fast.set_weights(plain.get_weights())
    results = []
    for model in (plain, fast):
        with tf.GradientTape() as tape:
            outputs = model(tf.constant(images), training=True)
            loss = tf.reduce_sum(outputs * tf.cos(3.0 * outputs))
        grads = tape.gradient(loss, model.trainable_weights)
        assert len(grads) == len(model.trainable_weights) > 100 and all(g is not None for g in grads)
        results.append((outputs, [np.asarray(g) for g in grads], model.non_trainable_weights))
    (want_out, want_grads, want_stats), (have_out, have_grads, have_stats) = results
    np.testing.assert_allclose(np.asarray(have_out), np.asarray(want_out), atol=1e-4)
    largest = max(float(np.abs(g).max()) for g in want_grads)
    for want, have, weight in zip(want_grads, have_grads, plain.trainable_weights):
        np.testing.assert_allclose(have, want, rtol=0, atol=2e-2 * largest, err_msg=weight.path)
    for want, have in zip(want_stats, have_stats):
        np.testing.assert_allclose(np.asarray(have), np.asarray(want), rtol=0, atol=1e-5)


def test_the_swap_leaves_python_s_random_state_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    source = build_backbone(SIZE, 0.35, None, fast_layers=False)

    def refuse(state: object) -> None:
        raise AssertionError("random.setstate called")

    monkeypatch.setattr(random, "setstate", refuse)
    before = random.getstate()
    fast = with_fast_layers(source)
    assert random.getstate() == before
    assert len(layers_of_kind(fast, BatchNormalization)) == 52


def test_padding_that_feeds_two_layers_is_not_folded() -> None:
    inputs = keras.Input((8, 8, 4))
    padded = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(inputs)
    outputs = keras.layers.Add()([keras.layers.DepthwiseConv2D(3, strides=2)(padded),
                                  keras.layers.MaxPooling2D(3, strides=2)(padded)])
    assert foldable_padding(keras.Model(inputs, outputs)) == {}


def test_layers_of_kind_finds_layers_of_nested_models(model: keras.Model) -> None:
    # Walked through the public ``layers`` of each nested model: the backbone's 52 and the head's one.
    assert len(batch_norm_layers(model)) == 53
    assert len(layers_of_kind(model, keras.layers.RandomFlip)) == 1  # inside the augmentation Sequential


EXPORTED = """
import sys
import keras
import numpy as np
model = keras.models.load_model(sys.argv[1])
assert not [name for name in sys.modules if name.split(".")[0] == "celebalib"], "celebalib was imported"
np.save(sys.argv[3], model.predict(np.load(sys.argv[2]), verbose=0))
"""


@pytest.mark.slow
def test_an_exported_model_loads_without_celebalib_and_predicts_the_same(images: np.ndarray, tmp_path: Path) -> None:
    keras.utils.set_random_seed(6)
    model = build_model(image_size=SIZE, head="depthwise")
    model(images, training=True)  # moves the batch-norm statistics away from their start
    plain = with_keras_layers(model)
    assert layers_of_kind(plain, BatchNormalization) == [] and layers_of_kind(plain, Conv2D) == []
    path = export_keras_layers(model, tmp_path / "portable.keras")
    np.save(tmp_path / "images.npy", images)
    # A fresh interpreter that never imports celebalib: Keras alone must know every layer.
    subprocess.run([sys.executable, "-c", EXPORTED, str(path), str(tmp_path / "images.npy"), str(tmp_path / "out.npy")],
                   check=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"})
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), np.asarray(model(images, training=False)), atol=1e-6)
