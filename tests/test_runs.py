"""Run folders: one pipeline for every entry point, config updates, clear errors."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import runs
from celebalib.attributes import ATTRIBUTES
from celebalib.data import load_celeba, load_image
from celebalib.errors import ConfigError, RunError
from celebalib.model import OUTPUT


@pytest.fixture()
def run_copy(tiny_run: runs.Run, tmp_path: Path) -> runs.Run:
    """A private copy of the tiny run's folder without models, for tests that edit its config."""
    target = tmp_path / "copy"
    shutil.copytree(tiny_run.path, target, ignore=shutil.ignore_patterns("*.keras", "logs"))
    return runs.Run(target)


@pytest.mark.slow
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


@pytest.mark.slow
def test_features_are_the_pooled_vectors(tiny_run: runs.Run, synthetic_table: pd.DataFrame) -> None:
    rows = synthetic_table.head(3)
    features = tiny_run.features(rows, progress=False)
    assert features.shape == (3, 1280) and np.all(features >= 0)  # pooled ReLU6 activations
    # The model's head turns exactly these vectors into the run's predictions for the rows.
    model = tiny_run.model()
    head = model.get_layer(OUTPUT)(model.get_layer("head_bn")(features, training=False))
    np.testing.assert_allclose(np.asarray(head), tiny_run.predict(rows, progress=False, flip=False), atol=1e-5)


@pytest.mark.slow
def test_model_is_loaded_once(tiny_run: runs.Run) -> None:
    assert tiny_run.model() is tiny_run.model("best")
    with pytest.raises(RunError, match="expected 'best' or 'final'"):
        tiny_run.model("latest")


@pytest.mark.slow
def test_wrong_image_shape_is_a_run_error(tiny_run: runs.Run) -> None:
    with pytest.raises(RunError, match=r"expected \(N, 32, 32, 3\)"):
        tiny_run.predict_images(np.zeros((1, 64, 64, 3)))


@pytest.mark.slow
def test_thresholds_default_to_one_half_and_follow_the_config(run_copy: runs.Run) -> None:
    np.testing.assert_array_equal(run_copy.thresholds, np.full(40, 0.5, np.float32))
    tuned = {name: 0.1 + i / 100 for i, name in enumerate(ATTRIBUTES)}
    run_copy.record_thresholds("balanced_accuracy", tuned)
    reopened = runs.Run(run_copy.path)
    np.testing.assert_allclose(reopened.thresholds, [tuned[name] for name in ATTRIBUTES], rtol=1e-6)
    assert reopened.config["run_id"] == run_copy.run_id
    assert not [p for p in run_copy.path.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.slow
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
    config = {"run_id": "r", "image_size": 32, "crop": "center", "attributes": list(ATTRIBUTES), "epochs": 1,
              "batch_size": 32}  # a config.json of before schema_version
    (tmp_path / "config.json").write_text(json.dumps({**config, "data_root": "/data/celeba"}))
    run = runs.Run(tmp_path)  # data_root needs only config.json, not a finished model
    assert run.data_root("/elsewhere") == Path("/elsewhere")
    assert run.data_root() == Path("/data/celeba")
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("celebalib.data.default_root", lambda: Path("/default"))
    assert runs.Run(tmp_path).data_root() == Path("/default")



@pytest.fixture()
def position_run(tiny_run: runs.Run, tmp_path: Path) -> runs.Run:
    """A run folder whose model reads pixel positions (a dense layer over the flattened image),
    so a mirrored or shifted view gets clearly different probabilities."""
    import keras

    shutil.copytree(tiny_run.path, tmp_path / "position", ignore=shutil.ignore_patterns("*.keras", "logs"))
    size = tiny_run.image_size
    inputs = keras.Input((size, size, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(40, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 0.3, 0))
    runs.save_model(keras.Model(inputs, dense(flat)), runs.RunFiles(tmp_path / "position").best)
    return runs.Run(tmp_path / "position")


@pytest.mark.slow
def test_flip_averaging_follows_the_config_and_matches_a_manual_mirror(position_run: runs.Run,
                                                                        synthetic_table: pd.DataFrame) -> None:
    flipping, size = position_run, position_run.image_size
    rows = synthetic_table[synthetic_table["split"] == "test"].head(4)
    pixels = np.stack([load_image(path, image_size=size, crop=flipping.crop) for path in rows["path"]])
    plain, mirrored = (np.asarray(flipping.model()(x, training=False)) for x in (pixels, pixels[:, :, ::-1]))
    assert np.abs(plain - mirrored).max() > 0.05
    assert not flipping.flip_average
    np.testing.assert_allclose(flipping.predict(rows, progress=False), plain, atol=1e-5)
    np.testing.assert_allclose(flipping.predict(rows, progress=False, flip=True), (plain + mirrored) / 2, atol=1e-5)
    flipping.record_views(flip=True, shift=0)
    assert flipping.flip_average
    np.testing.assert_allclose(flipping.predict(rows, progress=False), (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(flipping.predict_images(pixels), (plain + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(flipping.predict(rows, progress=False, flip=False), plain, atol=1e-5)


@pytest.mark.slow
def test_a_run_records_its_settings_and_its_train_label_rates(tiny_run: runs.Run,
                                                              synthetic_table: pd.DataFrame) -> None:
    from celebalib.recipes import TrainConfig

    # The settings conftest's tiny_run passes to fit, and fit's defaults for the rest.
    assert tiny_run.train_config == TrainConfig(epochs=2, image_size=32, batch_size=32, alpha=0.35, optimizer="adam",
                                                learning_rate=1e-3, seed=0, run_eagerly=True)
    train_rows = synthetic_table[synthetic_table["split"] == "train"]
    assert tiny_run.record.facts.train_label_rates == pytest.approx(
        {name: float(train_rows[name].mean()) for name in ATTRIBUTES})
    assert tiny_run.label_rates(synthetic_table.head(0)).index.tolist() == list(ATTRIBUTES)  # recorded: no table needed


def test_train_label_rates_count_every_train_row_of_the_annotations(synthetic_root: Path, synthetic_table: pd.DataFrame,
                                                                   tmp_path: Path) -> None:
    from celebalib.data import load_celeba

    # A partial download: the annotations list every image, the folder holds only the val split's.
    root = tmp_path / "val-only"
    shutil.copytree(synthetic_root, root)
    for name in synthetic_table.loc[synthetic_table["split"] != "val", "image_id"]:
        next(root.rglob(name)).unlink()
    with pytest.warns(UserWarning):
        table = load_celeba(root)
    assert set(table["split"]) == {"val"}
    train_rows = synthetic_table[synthetic_table["split"] == "train"]
    expected = {name: float(train_rows[name].mean()) for name in ATTRIBUTES}
    assert runs.train_label_rates(table) == pytest.approx(expected)


def test_prediction_views_list_the_image_its_shifts_and_their_mirror_images() -> None:
    assert runs.prediction_views(flip=False, shift=0) == [(0, 0, False)]
    assert runs.prediction_views(flip=True, shift=0) == [(0, 0, False), (0, 0, True)]
    shifted = runs.prediction_views(flip=True, shift=3)
    assert len(shifted) == len(set(shifted)) == 10 and shifted[:2] == [(0, 0, False), (0, 0, True)]
    assert {(dx, dy) for dx, dy, _ in shifted} == {(0, 0), (-3, 0), (3, 0), (0, -3), (0, 3)}
    assert len(runs.prediction_views(flip=False, shift=2)) == 5
    assert runs.describe_views(shifted) == "the image and shifts by 3 px left, right, up and down, each also mirrored"
    assert runs.describe_views(runs.prediction_views(True, 0)) == "the image and its mirror image"
    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="expected a whole number of pixels"):
            runs.prediction_views(flip=False, shift=bad)


def test_a_view_moves_the_image_by_whole_pixels_and_mirrors_the_edge_in() -> None:
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (2, 6, 6, 3)).astype(np.float32)
    right = np.asarray(runs.view_of(images, 2, 0, False))
    np.testing.assert_array_equal(right[:, :, 2:], images[:, :, :-2])
    np.testing.assert_array_equal(right[:, :, :2], images[:, :, 1::-1])  # columns 1, 0 mirrored in
    up = np.asarray(runs.view_of(images, 0, -1, True))
    np.testing.assert_array_equal(up[:, :-1], images[:, 1:, ::-1])
    np.testing.assert_array_equal(up[:, -1], images[:, -1, ::-1])
    np.testing.assert_array_equal(np.asarray(runs.view_of(images, 0, 0, False)), images)


@pytest.mark.slow
def test_shifted_views_average_as_a_manual_loop_does(position_run: runs.Run, synthetic_table: pd.DataFrame) -> None:
    rows = synthetic_table[synthetic_table["split"] == "test"].head(5)
    size = position_run.image_size
    pixels = np.stack([load_image(path, image_size=size, crop=position_run.crop) for path in rows["path"]])
    model = position_run.model()

    def manual(dx: int, dy: int, mirrored: bool) -> np.ndarray:
        """The model on one view built with numpy (shift right by dx, down by dy, edge mirrored in)."""
        pad = max(abs(dx), abs(dy))
        padded = np.pad(pixels, [(0, 0), (pad, pad), (pad, pad), (0, 0)], mode="symmetric")
        view = padded[:, pad - dy:pad - dy + size, pad - dx:pad - dx + size]
        return np.asarray(model(view[:, :, ::-1] if mirrored else view, training=False))

    views = runs.prediction_views(flip=True, shift=2)
    expected = np.mean([manual(*view) for view in views], axis=0)
    assert np.abs(expected - manual(0, 0, False)).max() > 0.02  # the views change the answer
    # Batches of 2 over 5 rows: the model sees 10 views of 2, 10 of 2 and 10 of 1, regrouped here.
    np.testing.assert_allclose(position_run.predict(rows, batch_size=2, progress=False, flip=True, shift=2),
                               expected, atol=1e-5)
    assert position_run.views() == [(0, 0, False)]
    position_run.record_views(flip=True, shift=2)
    assert position_run.shift_pixels == 2 and position_run.views() == views
    np.testing.assert_allclose(position_run.predict(rows, batch_size=3, progress=False), expected, atol=1e-5)
    np.testing.assert_allclose(position_run.predict_images(pixels), expected, atol=1e-5)
    with pytest.raises(ConfigError, match="fewer pixels than the image size, 32"):
        position_run.predict(rows, progress=False, shift=32)


@pytest.mark.slow
def test_stored_predictions_are_reused_only_for_the_same_model_views_and_images(
        position_run: runs.Run, synthetic_table: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = synthetic_table[synthetic_table["split"] == "test"].head(4)
    first, reused = position_run.predict_stored(rows, "test", progress=False, flip=True)
    assert not reused and (position_run.path / "predictions_test.npz").is_file()
    calls = []
    predict = position_run.predict
    monkeypatch.setattr(position_run, "predict", lambda *args, **kwargs: calls.append(kwargs) or predict(*args, **kwargs))
    again, reused = position_run.predict_stored(rows, "test", progress=False, flip=True)
    assert reused and not calls
    np.testing.assert_array_equal(again, first)
    # Other views, other images or a rewritten model file: predicted again.
    _, reused = position_run.predict_stored(rows, "test", progress=False, flip=True, shift=1)
    assert not reused and len(calls) == 1
    _, reused = position_run.predict_stored(rows.head(3), "test", progress=False, flip=True, shift=1)
    assert not reused and len(calls) == 2
    runs.save_model(position_run.model(), position_run.files.best)
    _, reused = position_run.predict_stored(rows.head(3), "test", progress=False, flip=True, shift=1)
    assert not reused and len(calls) == 3
    _, reused = position_run.predict_stored(rows.head(3), "test", progress=False, flip=True, shift=1)
    assert reused and len(calls) == 3
    # Stored predictions are best.keras's: another model name is an error, not a reuse of them.
    with pytest.raises(RunError, match="expected 'best' or 'final'"):
        position_run.predict_stored(rows.head(3), "test", progress=False, flip=True, shift=1, which="latest")


# --- the record: schema 2, and config.json files of schema 1 and of none ----------------------------------

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


@pytest.mark.parametrize("name", ["celeba-cpu-adam", "course"])
def test_a_schema_1_record_migrates_on_read(name: str) -> None:
    stored = json.loads((RESULTS / name / "config.json").read_text())
    assert stored["schema_version"] == 1  # the committed copies predate schema 2
    record = runs.load_record(RESULTS / name / "config.json")
    # The time budget's end was written over ``epochs``, with the epochs asked for in ``planned_epochs``.
    asked = stored.get("planned_epochs", stored["epochs"])
    assert record.settings.epochs == asked and record.end_epoch == stored["epochs"]
    assert record.progress.budget_end == (stored["epochs"] if "planned_epochs" in stored else None)
    assert record.progress.seconds == stored.get("budget_seconds", 0.0)
    assert record.progress.finished == stored["finished"] and record.progress.epochs_done == stored["epochs"]
    assert (record.run_id, record.attributes) == (stored["run_id"], tuple(ATTRIBUTES))
    assert record.facts.train_label_rates == stored["train_label_rates"]
    assert record.facts.learning_rate == stored["learning_rate"] == record.settings.learning_rate
    assert record.thresholds.objective == stored["thresholds"]["objective"]
    assert record.thresholds.values == stored["thresholds"]["values"]
    # Written back, it is schema 2 and reads as the same record.
    again = runs.RunRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert again == record and record.to_json()["schema_version"] == 2


def test_a_record_without_schema_takes_the_defaults_of_its_time() -> None:
    old = {"run_id": "tiny-20261204T100000", "created": "2026-12-04T10:00:00+00:00", "attributes": list(ATTRIBUTES),
           "epochs": 2, "image_size": 32, "batch_size": 32, "optimizer": "adam", "learning_rate": 0.001,
           "data_root": "/data", "mixed_precision": True, "thresholds": None}
    record = runs.RunRecord.from_json(old)
    assert (record.settings.epochs, record.settings.augment, record.settings.precision) == (2, "full", "mixed_float16")
    assert record.facts.data_root == "/data" and record.progress.finished is None and record.thresholds is None
    with pytest.raises(RunError, match="runs/x/config.json: missing key 'crop'"):
        runs.RunRecord.from_json({k: v for k, v in old.items() if k != "crop"} | {"schema_version": 1},
                                 "runs/x/config.json")
    with pytest.raises(RunError, match="schema_version 3; this celebalib reads 1 and 2"):
        runs.RunRecord.from_json({**old, "schema_version": 3})


def test_run_files_name_every_artefact(tmp_path: Path) -> None:
    files = runs.RunFiles(tmp_path)
    assert [p.name for p in (files.config, files.best, files.final, files.history, files.logs, files.backup)] == [
        "config.json", "best.keras", "model.keras", "history.csv", "logs", "backup"]
    assert (files.predictions("val").name, files.index("test").name, files.retrieval("val").name) == (
        "predictions_val.npz", "index_test.npz", "retrieval_val.json")
    assert (files.evaluation("test").name, files.evaluation("test", ".csv").name) == ("eval_test.json", "eval_test.csv")
    assert files.model("final") == files.final and files.epoch_weights(3) == files.averaging / "epoch-03.weights.h5"
    for epoch in (2, 10):
        files.epoch_weights(epoch).parent.mkdir(exist_ok=True)
        files.epoch_weights(epoch).write_bytes(b"")
    assert files.kept_epochs() == [2, 10]


@pytest.mark.slow
def test_named_writes_change_their_part_only_and_leave_no_temp_file(run_copy: runs.Run) -> None:
    before = runs.read_record(run_copy.path)
    run_copy.record_results("val", {"n_images": 3})
    run_copy.record_budget_end(1)
    after = runs.read_record(run_copy.path)
    assert after.results == {"val": {"n_images": 3}} and after.progress.budget_end == 1
    assert (after.settings, after.facts, after.thresholds) == (before.settings, before.facts, before.thresholds)
    assert after.progress.epochs_done == before.progress.epochs_done and run_copy.record == after
    assert not [p for p in run_copy.path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
@pytest.mark.parametrize("schema", [1, None])
def test_an_old_run_folder_opens_evaluates_and_predicts(tiny_run: runs.Run, synthetic_root: Path, tmp_path: Path,
                                                        schema: int | None, capsys) -> None:
    from celebalib.cli import main

    old = tmp_path / "old"
    shutil.copytree(tiny_run.path, old)
    flat = tiny_run.config  # the record as schema 1 held it: one flat dict
    if schema is None:  # as written before schema_version, head and precision existed
        for key in ("head", "precision", "cache"):
            del flat[key]
    else:
        flat["schema_version"] = schema
    (old / "config.json").write_text(json.dumps(flat))
    run = runs.open_run(old)
    assert run.train_config.replace(precision="float32") == tiny_run.train_config.replace(
        learning_rate=1e-3, precision="float32")
    assert main(["evaluate", "--run", str(old), "--data", str(synthetic_root), "--split", "val", "--quiet"]) == 0
    evaluated = runs.open_run(old)
    assert evaluated.record.thresholds.objective == "balanced_accuracy" and "val" in evaluated.record.results
    assert json.loads((old / "config.json").read_text())["schema_version"] == runs.SCHEMA_VERSION  # written as 2
    rows = load_celeba(synthetic_root).query("split == 'test'").head(2)
    np.testing.assert_allclose(evaluated.predict(rows, progress=False), tiny_run.predict(rows, progress=False),
                               atol=1e-6)
    capsys.readouterr()


def test_a_malformed_schema_1_record_is_one_line(tmp_path: Path) -> None:
    """An old record whose budget_seconds is not a number is a RunError naming the file, not a traceback."""
    record = json.loads((Path(__file__).resolve().parents[1] / "docs" / "results" / "celeba-cpu-adam" / "config.json")
                        .read_text(encoding="utf-8"))
    (tmp_path / "config.json").write_text(json.dumps({**record, "budget_seconds": "soon"}), encoding="utf-8")
    with pytest.raises(RunError, match=r"config\.json: a schema 1 record with a malformed value"):
        runs.read_record(tmp_path)


def test_a_record_leaving_the_machine_keeps_no_path_of_its_data() -> None:
    record = runs.load_record(RESULTS / "celeba-cpu" / "config.json")
    here = dataclasses.replace(record, results={"val": {**record.results["val"], "data_root": "/home/me/celeba"}})
    here = here.with_data_root("/home/me/celeba")
    assert here.facts.data_root == here.results["val"]["data_root"] == "/home/me/celeba"
    leaving = here.with_data_root(None)
    assert leaving.facts.data_root is None and leaving.results["val"]["data_root"] is None
    assert leaving.results["val"]["means"] == record.results["val"]["means"] and leaving.settings == record.settings


def test_a_celeba_run_that_does_not_say_where_its_data_is_asks_for_it(tiny_run, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle's record keeps no data path: evaluating it must not fall back to the synthetic faces."""
    folder = tmp_path / "shared"
    shutil.copytree(tiny_run.path, folder, ignore=shutil.ignore_patterns("logs"))
    record = runs.read_record(folder).with_data_root(None)
    runs.write_record(folder, dataclasses.replace(record, facts=dataclasses.replace(record.facts, data_kind="celeba")))
    monkeypatch.delenv("CELEBA_ROOT", raising=False)
    with pytest.raises(RunError, match="trained on CelebA and does not say where it is; expected --data ROOT"):
        runs.Run(folder).data_root()
    assert runs.Run(folder).data_root(tmp_path / "celeba") == tmp_path / "celeba"
    monkeypatch.setenv("CELEBA_ROOT", str(tmp_path / "mine"))
    assert runs.Run(folder).data_root() == (tmp_path / "mine").resolve()
