"""Grad-CAM: heat maps through the nested MobileNetV2 backbone."""

from __future__ import annotations

import numpy as np
import pytest

from celebalib.errors import ConfigError


@pytest.fixture(scope="module", params=["average", "depthwise"])
def model_96(request):
    """An untrained 96 px attribute model with each head: its last conv block is 3x3, so maps have structure."""
    from celebalib.config import seed_everything
    from celebalib.model import build_model

    seed_everything(0)
    return build_model(image_size=96, augment=False, head=request.param)


@pytest.fixture(scope="module")
def face_96() -> np.ndarray:
    """A random-noise image in [0, 255]."""
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (96, 96, 3)).astype(np.float32)


def test_walking_the_chain_reproduces_the_model(model_96, face_96) -> None:
    from celebalib.gradcam import _split_at_backbone

    before, backbone, after = _split_at_backbone(model_96)
    x = face_96[None]
    for layer in [*before, backbone, *after]:
        x = layer(x, training=False)
    np.testing.assert_allclose(np.asarray(x), model_96.predict(face_96[None], verbose=0), rtol=1e-5, atol=1e-6)


def test_heat_map_has_the_image_shape_and_unit_range(model_96, face_96) -> None:
    from celebalib.attributes import attribute_index
    from celebalib.gradcam import grad_cam
    from celebalib.model import OUTPUT

    # An untrained model may lower the attribute everywhere, and its map is then all zero.
    # Negating the attribute's output unit flips every gradient, so of the two maps at
    # least one peaks at 1, and each either peaks at 1 or is zero.
    head, column = model_96.get_layer(OUTPUT), attribute_index("Eyeglasses")
    kernel, bias = (np.array(w) for w in head.get_weights())
    heats = [grad_cam(model_96, face_96, "Eyeglasses")]
    try:
        kernel[:, column], bias[column] = -kernel[:, column], -bias[column]
        head.set_weights([kernel, bias])
        heats.append(grad_cam(model_96, face_96, "Eyeglasses"))
    finally:
        kernel[:, column], bias[column] = -kernel[:, column], -bias[column]
        head.set_weights([kernel, bias])
    for heat in heats:
        assert heat.shape == (96, 96) and heat.min() >= 0.0
        assert heat.max() == pytest.approx(1.0, abs=0.02) or heat.max() == 0.0
    assert max(heat.max() for heat in heats) == pytest.approx(1.0, abs=0.02)


def test_heat_map_changes_with_the_attribute(model_96, face_96) -> None:
    from celebalib.gradcam import grad_cam

    glasses, smile = grad_cam(model_96, face_96, "Eyeglasses"), grad_cam(model_96, face_96, 31)
    assert np.abs(glasses - smile).max() > 0.1


def test_wrong_image_size_or_attribute_raises(model_96, face_96) -> None:
    from celebalib.gradcam import grad_cam

    with pytest.raises(ConfigError, match="input size"):
        grad_cam(model_96, face_96[:64, :64], "Smiling")
    with pytest.raises(ConfigError, match="unknown attribute"):
        grad_cam(model_96, face_96, "Sunglasses")


def test_heat_map_of_a_trained_run(tiny_run, synthetic_table) -> None:
    from celebalib.data import load_image
    from celebalib.gradcam import grad_cam

    image = load_image(synthetic_table["path"].iloc[0], image_size=tiny_run.image_size)
    heat = grad_cam(tiny_run.model(), image, "Smiling")
    assert heat.shape == image.shape[:2] and 0.0 <= heat.min() <= heat.max() <= 1.0


def test_an_earlier_layer_gives_a_finer_map_of_the_same_prediction(model_96, face_96) -> None:
    import keras
    import tensorflow as tf

    from celebalib.gradcam import _explainer, feature_layer, grad_cam
    from celebalib.model import backbone_of

    backbone = backbone_of(model_96)
    name = feature_layer(model_96, 6)
    assert min(backbone.get_layer(name).output.shape[1:3]) >= 6
    assert feature_layer(model_96, 3) != name  # a deeper map when fewer cells will do
    # The copy's second output is the backbone's own output, so the score is the model's.
    scaled = keras.layers.Rescaling(1 / 127.5, offset=-1)(face_96[None])
    inner, outer = _explainer(backbone, name)(scaled, training=False)
    np.testing.assert_allclose(np.asarray(outer), np.asarray(backbone(scaled, training=False)), atol=1e-5)
    assert inner.shape[1:3] == backbone.get_layer(name).output.shape[1:3]
    # A fine map varies within a cell of the 3x3 last block, which a bilinear 3x3 map cannot do as sharply.
    heat = grad_cam(model_96, face_96, "Smiling", layer=name)
    assert heat.shape == (96, 96) and 0.0 <= heat.min() and heat.max() <= 1.0
    coarse = tf.image.resize(heat[..., None], (3, 3), method="area").numpy()[..., 0]
    detail = heat - tf.image.resize(coarse[..., None], (96, 96), method="bilinear").numpy()[..., 0]
    assert np.abs(detail).max() > 0.05 or heat.max() == 0.0
    with pytest.raises(ConfigError, match="not in the backbone"):
        grad_cam(model_96, face_96, "Smiling", layer="no_such_layer")
    with pytest.raises(ConfigError, match="no feature map"):
        feature_layer(model_96, 200)


def test_explainer_follows_the_backbone_weights(model_96) -> None:
    from celebalib.gradcam import _explainer
    from celebalib.model import backbone_of

    backbone = backbone_of(model_96)
    first = _explainer(backbone, "out_relu")
    weights = backbone.get_weights()
    try:
        backbone.set_weights([w * 0.5 for w in weights])
        again = _explainer(backbone, "out_relu")
        assert again is first  # built once, refreshed with the current weights
        np.testing.assert_allclose(again.get_weights()[0], weights[0] * 0.5)
    finally:
        backbone.set_weights(weights)


def test_a_saturated_prediction_still_has_a_map(model_96, face_96) -> None:
    """The map follows the logit, so a probability of exactly 1.0 does not blank it."""
    from celebalib.attributes import attribute_index
    from celebalib.gradcam import grad_cam
    from celebalib.model import OUTPUT

    head, column = model_96.get_layer(OUTPUT), attribute_index("Black_Hair")
    kernel, bias = (np.array(w) for w in head.get_weights())
    heats = []
    try:
        for sign in (1, -1):  # one of the two signs raises the logit somewhere
            saturated_kernel, saturated_bias = kernel.copy(), bias.copy()
            saturated_kernel[:, column] *= sign
            saturated_bias[column] = 60.0
            head.set_weights([saturated_kernel, saturated_bias])
            assert model_96.predict(face_96[None], verbose=0)[0, column] == 1.0
            heats.append(grad_cam(model_96, face_96, "Black_Hair"))
    finally:
        head.set_weights([kernel, bias])
    assert max(heat.max() for heat in heats) == pytest.approx(1.0, abs=0.02)
