"""Run folders: one pipeline for every entry point, config updates, clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import runs
from celebalib.attributes import ATTRIBUTES
from celebalib.data import load_image
from celebalib.errors import RunError
from celebalib.model import OUTPUT


@pytest.fixture()
def run_copy(tiny_run: runs.Run, tmp_path: Path) -> runs.Run:
    """A private copy of the tiny run's folder without models, for tests that edit its config."""
    target = tmp_path / "copy"
    shutil.copytree(tiny_run.path, target, ignore=shutil.ignore_patterns("*.keras", "logs"))
    return runs.Run(target)


def test_same_image_same_probabilities_through_every_entry_point(tiny_run: runs.Run,
                                                                synthetic_table: pd.DataFrame) -> None:
    rows = synthetic_table[synthetic_table["split"] == "test"].head(5)
    batch = tiny_run.predict(rows, batch_size=2, progress=False)
    assert batch.shape == (5, 40) and np.all((batch >= 0) & (batch <= 1))
    pixels = np.stack([load_image(path, image_size=tiny_run.image_size, crop=tiny_run.crop) for path in rows["path"]])
    np.testing.assert_allclose(tiny_run.predict_images(pixels), batch, atol=1e-5)
    single = tiny_run.predict_images(load_image(rows["path"].iloc[3], image_size=32))
    np.testing.assert_allclose(single[0], batch[3], atol=1e-5)
    # Table order is kept: reversing the rows reverses the predictions.
    np.testing.assert_allclose(tiny_run.predict(rows.iloc[::-1], progress=False), batch[::-1], atol=1e-5)


def test_features_are_the_pooled_vectors(tiny_run: runs.Run, synthetic_table: pd.DataFrame) -> None:
    rows = synthetic_table.head(3)
    features = tiny_run.features(rows, progress=False)
    assert features.shape == (3, 1280) and np.all(features >= 0)  # pooled ReLU6 activations
    # The model's head turns exactly these vectors into the run's predictions for the rows.
    model = tiny_run.model()
    head = model.get_layer(OUTPUT)(model.get_layer("head_bn")(features, training=False))
    np.testing.assert_allclose(np.asarray(head), tiny_run.predict(rows, progress=False, flip=False), atol=1e-5)


def test_model_is_loaded_once(tiny_run: runs.Run) -> None:
    assert tiny_run.model() is tiny_run.model("best")
    with pytest.raises(RunError, match="expected 'best' or 'final'"):
        tiny_run.model("latest")


def test_wrong_image_shape_is_a_run_error(tiny_run: runs.Run) -> None:
    with pytest.raises(RunError, match=r"expected \(N, 32, 32, 3\)"):
        tiny_run.predict_images(np.zeros((1, 64, 64, 3)))


def test_thresholds_default_to_one_half_and_follow_the_config(run_copy: runs.Run) -> None:
    np.testing.assert_array_equal(run_copy.thresholds, np.full(40, 0.5, np.float32))
    tuned = {name: 0.1 + i / 100 for i, name in enumerate(ATTRIBUTES)}
    run_copy.update_config(thresholds={"objective": "balanced_accuracy", "values": tuned})
    reopened = runs.Run(run_copy.path)
    np.testing.assert_allclose(reopened.thresholds, [tuned[name] for name in ATTRIBUTES], rtol=1e-6)
    assert reopened.config["run_id"] == run_copy.run_id
    assert not [p for p in run_copy.path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_open_run_errors_name_the_problem(run_copy: runs.Run, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="run folder not found"):
        runs.open_run(tmp_path / "missing")
    with pytest.raises(RunError, match="unfinished"):
        runs.open_run(run_copy.path)  # the copy has no model.keras
    (run_copy.path / "config.json").write_text('{"run_id": "x",\n "image_size": }')
    with pytest.raises(RunError, match=r"config.json:2: invalid JSON"):
        runs.Run(run_copy.path)
    (run_copy.path / "config.json").write_text(json.dumps({"run_id": "x"}))
    with pytest.raises(RunError, match="missing key 'image_size'"):
        runs.Run(run_copy.path)
    with pytest.raises(RunError, match="model file not found"):
        runs.load_model(run_copy.path / "best.keras")


def test_data_root_prefers_the_override_then_the_training_data_then_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"run_id": "r", "image_size": 32, "crop": "center", "attributes": list(ATTRIBUTES)}
    (tmp_path / "config.json").write_text(json.dumps({**config, "data_root": "/data/celeba"}))
    run = runs.Run(tmp_path)  # data_root needs only config.json, not a finished model
    assert run.data_root("/elsewhere") == Path("/elsewhere")
    assert run.data_root() == Path("/data/celeba")
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("celebalib.data.default_root", lambda: Path("/default"))
    assert runs.Run(tmp_path).data_root() == Path("/default")



def test_flip_averaging_follows_the_config_and_matches_a_manual_mirror(tiny_run: runs.Run,
                                                                        synthetic_table: pd.DataFrame,
                                                                        tmp_path: Path) -> None:
    import keras

    # A run folder whose model reads pixel positions (a dense layer over the flattened image),
    # so a mirror image gets clearly different probabilities.
    shutil.copytree(tiny_run.path, tmp_path / "flip", ignore=shutil.ignore_patterns("*.keras", "logs"))
    size = tiny_run.image_size
    inputs = keras.Input((size, size, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(40, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 0.3, 0))
    runs.save_model(keras.Model(inputs, dense(flat)), tmp_path / "flip" / runs.BEST)
    flipping = runs.Run(tmp_path / "flip")

    rows = synthetic_table[synthetic_table["split"] == "test"].head(4)
    pixels = np.stack([load_image(path, image_size=size, crop=tiny_run.crop) for path in rows["path"]])
    plain, mirrored = (np.asarray(flipping.model()(x, training=False)) for x in (pixels, pixels[:, :, ::-1]))
    assert np.abs(plain - mirrored).max() > 0.05
    assert not flipping.flip_average
    np.testing.assert_allclose(flipping.predict(rows, progress=False), plain, atol=1e-5)
    np.testing.assert_allclose(flipping.predict(rows, progress=False, flip=True), (plain + mirrored) / 2, atol=1e-5)
    flipping.update_config(test_time_flip=True)
    assert flipping.flip_average
    np.testing.assert_allclose(flipping.predict(rows, progress=False), (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(flipping.predict_images(pixels), (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(flipping.predict(rows, progress=False, flip=False), plain, atol=1e-5)
