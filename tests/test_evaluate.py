"""Evaluation: metrics on hand-made arrays, threshold tuning, the run-level files and command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import evaluate
from celebalib.attributes import ATTRIBUTES, NUM_ATTRIBUTES
from celebalib.errors import ConfigError


def hand_example() -> tuple[np.ndarray, np.ndarray]:
    """Four images; columns 0-2 are worked out by hand below, the rest copy column 0."""
    y = np.zeros((4, NUM_ATTRIBUTES), dtype=int)
    p = np.zeros((4, NUM_ATTRIBUTES))
    y[:, 0], p[:, 0] = [1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]  # tp, fn, fp, tn at 0.5
    y[:, 1], p[:, 1] = [1, 0, 0, 0], [0.7, 0.8, 0.2, 0.3]  # tp, fp, tn, tn at 0.5
    y[:, 2], p[:, 2] = [0, 0, 0, 0], [0.1, 0.1, 0.1, 0.1]  # no positive image at all
    y[:, 3:], p[:, 3:] = y[:, :1], p[:, :1]
    return y, p


def test_attribute_table_matches_hand_computed_values() -> None:
    y, p = hand_example()
    table = evaluate.attribute_table(y, p, 0.5, baseline=0.75)
    assert list(table.index) == list(ATTRIBUTES)
    first = table.iloc[0]
    # One of each outcome: every rate is 1/2; AUC counts 3 of 4 positive-negative pairs in order.
    for column in ("accuracy", "balanced_accuracy", "tpr", "tnr", "precision", "recall", "f1"):
        assert first[column] == pytest.approx(0.5)
    assert first["roc_auc"] == pytest.approx(3 / 4)
    assert first["gain"] == pytest.approx(0.5 - 0.75)
    second = table.iloc[1]
    assert second["accuracy"] == pytest.approx(3 / 4)
    assert second["tnr"] == pytest.approx(2 / 3)
    assert second["balanced_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert second["precision"] == pytest.approx(1 / 2)
    assert second["f1"] == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert second["roc_auc"] == pytest.approx(2 / 3)
    assert second["positive_rate"] == pytest.approx(1 / 4)


def test_one_class_attribute_gives_nan_rates_not_an_error() -> None:
    y, p = hand_example()
    third = evaluate.attribute_table(y, p, 0.5, baseline=1.0).iloc[2]
    assert math.isnan(third["tpr"]) and math.isnan(third["roc_auc"])
    assert third["tnr"] == 1.0 and third["balanced_accuracy"] == 1.0  # the rate that exists
    assert third["positive_rate"] == 0.0


def test_per_attribute_thresholds_and_baseline_series_are_used_by_name() -> None:
    y, p = hand_example()
    thresholds = np.full(NUM_ATTRIBUTES, 0.5)
    thresholds[0] = 0.35  # now image 2 (p=0.4) is a true positive as well
    baseline = pd.Series(np.linspace(0.5, 0.9, NUM_ATTRIBUTES), index=ATTRIBUTES)[::-1]
    table = evaluate.attribute_table(y, p, thresholds, baseline)
    assert table.iloc[0]["accuracy"] == pytest.approx(3 / 4)
    assert table.iloc[0]["threshold"] == 0.35 and table.iloc[1]["threshold"] == 0.5
    assert table.iloc[0]["baseline"] == pytest.approx(0.5)  # reordered by name, not position


def test_table_means_skip_nan() -> None:
    y, p = hand_example()
    means = evaluate.table_means(evaluate.attribute_table(y, p, 0.5, baseline=0.75))
    expected_auc = (3 / 4 + 2 / 3 + 3 / 4 * (NUM_ATTRIBUTES - 3)) / (NUM_ATTRIBUTES - 1)
    assert means["roc_auc"] == pytest.approx(expected_auc)


def test_bad_arrays_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="shape"):
        evaluate.attribute_table(np.zeros((3, 5)), np.zeros((3, 5)), 0.5, 0.5)
    with pytest.raises(ConfigError, match="0 and 1"):
        evaluate.attribute_table(-np.ones((2, NUM_ATTRIBUTES)), np.zeros((2, NUM_ATTRIBUTES)), 0.5, 0.5)
    with pytest.raises(ConfigError, match="objective"):
        evaluate.tune_thresholds(np.zeros((2, NUM_ATTRIBUTES)), np.zeros((2, NUM_ATTRIBUTES)), "f2")


def test_tuned_threshold_separates_a_hand_made_column() -> None:
    y, p = hand_example()
    y[:, 0], p[:, 0] = [1, 1, 0, 0], [0.3, 0.4, 0.1, 0.2]  # separable, but all below 0.5
    cuts = evaluate.tune_thresholds(y, p)
    assert 0.2 < cuts[0] <= 0.3
    assert evaluate.attribute_table(y, p, cuts, 0.5).iloc[0]["balanced_accuracy"] == 1.0
    assert cuts[2] == 0.5  # one class only: the default stays


@pytest.mark.parametrize("objective", evaluate.OBJECTIVES)
def test_tuned_thresholds_never_lower_the_metric_they_maximise(objective: str) -> None:
    rng = np.random.default_rng(1)
    rates = rng.uniform(0.02, 0.6, NUM_ATTRIBUTES)
    y = (rng.random((300, NUM_ATTRIBUTES)) < rates).astype(int)
    p = np.clip(0.35 * y + rng.random(y.shape) * 0.6, 0, 1).astype(np.float32)  # float32 as models give
    cuts = evaluate.tune_thresholds(y, p, objective)
    at_half = evaluate.attribute_table(y, p, 0.5, 0.5)[objective]
    tuned = evaluate.attribute_table(y, p, cuts, 0.5)[objective]
    assert (tuned >= at_half).all()
    assert tuned.mean() > at_half.mean()  # and here it does better, since 0.5 is a poor cut


def test_cross_fitted_figures_are_not_fitted_to_themselves() -> None:
    # Pure noise: thresholds tuned on the same images look better than chance; held out they do not.
    rng = np.random.default_rng(2)
    y = (rng.random((200, NUM_ATTRIBUTES)) < 0.3).astype(int)
    p = rng.random(y.shape)
    in_sample = evaluate.attribute_table(y, p, evaluate.tune_thresholds(y, p), 0.7)
    crossed = evaluate.cross_fitted_table(y, p, 0.7, folds=5)
    assert in_sample["balanced_accuracy"].mean() > 0.53
    assert crossed["balanced_accuracy"].mean() < 0.52
    assert crossed["balanced_accuracy"].mean() < in_sample["balanced_accuracy"].mean() - 0.02
    assert crossed["roc_auc"].equals(in_sample["roc_auc"])  # threshold-free, so unchanged


@pytest.fixture(scope="module")
def run_copy(tiny_run, tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the tiny run, since evaluation writes thresholds into config.json."""
    import shutil

    from celebalib.runs import open_run

    target = tmp_path_factory.mktemp("eval") / "run"
    shutil.copytree(tiny_run.path, target)
    return open_run(target)


@pytest.fixture(scope="module")
def val_result(run_copy, synthetic_table):
    """Evaluation of the val split, which tunes and stores the thresholds."""
    return evaluate.evaluate_run(run_copy, synthetic_table, "val", progress=False, folds=3)


def test_val_evaluation_stores_thresholds_that_never_lower_the_val_metric(val_result, run_copy) -> None:
    stored = json.loads((run_copy.path / "config.json").read_text())["thresholds"]
    assert stored["objective"] == "balanced_accuracy" and list(stored["values"]) == list(ATTRIBUTES)
    np.testing.assert_allclose(run_copy.thresholds, val_result.thresholds, rtol=1e-6)
    at_half = val_result.table_default["balanced_accuracy"]
    in_sample = val_result.table_tuned_in_sample["balanced_accuracy"]
    assert (in_sample.dropna() >= at_half.dropna()).all()
    assert "cross-fitted" in val_result.thresholds_source


def test_val_tables_describe_the_val_images(val_result, synthetic_table) -> None:
    val = synthetic_table[synthetic_table["split"] == "val"]
    assert val_result.n_images == len(val) and val_result.image_ids == val["image_id"].tolist()
    rates = val[list(ATTRIBUTES)].mean().to_numpy()
    np.testing.assert_allclose(val_result.table_default["positive_rate"].to_numpy(), rates)
    assert val_result.probabilities.shape == (len(val), NUM_ATTRIBUTES)
    assert list(val_result.means.columns) == ["at_0.5", "tuned"]


def test_test_split_applies_the_stored_thresholds_unchanged(val_result, run_copy, synthetic_table) -> None:
    result = evaluate.evaluate_run(run_copy, synthetic_table, "test", progress=False)
    np.testing.assert_allclose(result.table_tuned["threshold"].to_numpy(), val_result.thresholds, rtol=1e-6)
    assert "config.json" in result.thresholds_source and result.table_tuned_in_sample is None


def test_cli_writes_documented_json_and_csv(val_result, run_copy, synthetic_root: Path, capsys) -> None:
    from celebalib.cli import main

    code = main(["evaluate", "--run", str(run_copy.path), "--data", str(synthetic_root), "--split", "test",
                 "--no-progress"])
    assert code == 0
    data = json.loads((run_copy.path / "eval_test.json").read_text())
    assert set(data) == {"split", "n_images", "data_root", "objective", "thresholds_source", "means", "per_attribute"}
    assert set(data["means"]) == {"at_0.5", "tuned"}
    assert set(data["means"]["tuned"]) == {"accuracy", "balanced_accuracy", "roc_auc", "f1", "baseline"}
    assert [entry["attribute"] for entry in data["per_attribute"]] == list(ATTRIBUTES)
    assert data["split"] == "test" and data["n_images"] > 0
    table = pd.read_csv(run_copy.path / "eval_test.csv", index_col="attribute")
    assert list(table.index) == list(ATTRIBUTES) and "balanced_accuracy_tuned" in table
    out = capsys.readouterr().out
    assert "mean balanced accuracy" in out and "worst" in out


def test_cli_second_evaluation_of_a_split_reuses_its_predictions(tiny_run, synthetic_root: Path, tmp_path: Path,
                                                                 capsys) -> None:
    import shutil

    from celebalib.cli import main

    shutil.copytree(tiny_run.path, tmp_path / "run")
    command = ["evaluate", "--run", str(tmp_path / "run"), "--data", str(synthetic_root), "--split", "val",
               "--no-progress", "--shift", "1"]
    assert main([*command, "--objective", "accuracy"]) == 0
    first = capsys.readouterr().out
    assert "predictions: 5 views averaged (the image and shifts by 1 px left, right, up and down)\n" in first
    first_json = json.loads((tmp_path / "run" / "eval_val.json").read_text())
    assert main(command) == 0
    second = capsys.readouterr().out
    assert "reused from predictions_val.npz" in second and "reused" not in first
    second_json = json.loads((tmp_path / "run" / "eval_val.json").read_text())
    # The same probabilities, so the same threshold-free figures; the thresholds follow the objective.
    assert first_json["means"]["at_0.5"] == second_json["means"]["at_0.5"]
    assert (first_json["objective"], second_json["objective"]) == ("accuracy", "balanced_accuracy")
    assert main([*command[:-1], "0"]) == 0
    assert "predictions: 1 view averaged (the image)\n" in capsys.readouterr().out
    assert main([*command[:-1], "-2"]) == 1
    assert "test-time shift -2: expected a whole number of pixels" in _one_line_error(capsys)


def _one_line_error(capsys) -> str:
    """The single stderr line of a failed command (beside one-line notes, such as missing images)."""
    lines = [line for line in capsys.readouterr().err.strip().splitlines() if ": note: " not in line]
    assert len(lines) == 1, lines
    return lines[0]


def test_cli_missing_run_folder_is_one_line(tmp_path: Path, capsys) -> None:
    from celebalib.cli import main

    assert main(["evaluate", "--run", str(tmp_path / "absent"), "--split", "val"]) == 1
    assert "run folder not found" in _one_line_error(capsys)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("attributes", list(ATTRIBUTES[:39]), "39 attributes"),
    ("image_size", 48, "image_size 48"),
])
def test_cli_mismatched_run_is_one_line(run_copy, synthetic_root: Path, tmp_path: Path, capsys,
                                        key: str, value, message: str) -> None:
    import shutil

    from celebalib.cli import main

    broken = tmp_path / "broken"
    shutil.copytree(run_copy.path, broken)
    config = json.loads((broken / "config.json").read_text())
    part = config if key == "attributes" else config["settings"]
    part[key] = value
    (broken / "config.json").write_text(json.dumps(config))
    assert main(["evaluate", "--run", str(broken), "--data", str(synthetic_root), "--split", "val"]) == 1
    line = _one_line_error(capsys)
    assert message in line and "config.json" in line


def test_cli_empty_split_is_one_line(run_copy, synthetic_root: Path, synthetic_table, tmp_path: Path, capsys) -> None:
    import shutil

    from celebalib.cli import main

    # As in the genuine files beside the project: the test split is listed, its images are not there.
    root = tmp_path / "no-test-images"
    shutil.copytree(synthetic_root, root)
    for name in synthetic_table.loc[synthetic_table["split"] == "test", "image_id"]:
        next(root.rglob(name)).unlink()
    assert main(["evaluate", "--run", str(run_copy.path), "--data", str(root), "--split", "test"]) == 1
    assert "test split has no images" in _one_line_error(capsys)


def test_accuracy_chart_orders_attributes_by_gain(val_result) -> None:
    from celebalib import plots

    table = val_result.table_tuned
    fig = plots.accuracy_vs_baseline(table)
    shown = [label.get_text() for label in fig.axes[0].get_yticklabels()]
    assert shown == list(table["gain"].sort_values(ascending=False).index)
    assert len(fig.axes[0].patches) >= 2 * NUM_ATTRIBUTES  # a model bar and a baseline bar each


def test_rates_chart_orders_by_balanced_accuracy_and_rejects_other_tables(val_result) -> None:
    from celebalib import plots

    table = val_result.table_default
    shown = [label.get_text() for label in plots.rates_per_attribute(table).axes[0].get_yticklabels()]
    assert shown == list(table["balanced_accuracy"].sort_values(ascending=False).index)
    with pytest.raises(ConfigError, match="lacks columns"):
        plots.rates_per_attribute(table.drop(columns="tpr"))


def test_prediction_marks_put_mistakes_first() -> None:
    from celebalib.plots import prediction_marks

    marks = prediction_marks([1, 1, 0, 0], [1, 0, 1, 0], names=["A", "B", "C", "D"])
    assert marks == ["✗ B (missed)", "✗ C (false)", "✓ A"]


def test_prediction_grid_counts_mistakes_per_face(synthetic_table) -> None:
    from celebalib.plots import prediction_grid

    rows = synthetic_table.head(2)
    truth = rows[list(ATTRIBUTES)].to_numpy()
    pred = truth.copy()
    pred[1, :3] = 1 - pred[1, :3]
    fig = prediction_grid(list(rows["path"]), truth, pred, columns=2)
    texts = [text.get_text() for ax in fig.axes for text in ax.texts]
    assert texts[0].startswith("0 wrong of 40") and texts[1].startswith("3 wrong of 40")


def test_training_curves_draw_train_and_val_per_metric(tiny_run) -> None:
    from celebalib.plots import training_curves

    history = tiny_run.history()
    fig = training_curves(tiny_run.path / "history.csv")
    metrics = [c for c in history.select_dtypes("number") if c != "epoch" and not c.startswith("val_")]
    assert len(fig.axes) == len(metrics) and "loss" in metrics
    assert all(len(ax.lines) >= 2 for ax in fig.axes)  # train and val
    two_phases = pd.DataFrame({"epoch": [1, 2, 3], "phase": ["warmup", "fine_tune", "fine_tune"],
                               "loss": [0.9, 0.8, 0.7], "val_loss": [1.0, 0.9, 0.85]})
    ax = training_curves(two_phases).axes[0]
    assert [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [1.5]


def test_heatmap_overlay_checks_sizes() -> None:
    from celebalib.plots import heatmap_overlay

    image = np.full((8, 8, 3), 128.0)
    assert len(heatmap_overlay(image, np.zeros((8, 8))).axes[0].images) == 2
    with pytest.raises(ConfigError, match="equal sizes"):
        heatmap_overlay(image, np.zeros((4, 4)))


@pytest.mark.slow
@pytest.mark.parametrize("split", ["val", "test"])
def test_a_root_holding_only_the_evaluated_splits_images_is_enough(tiny_run, synthetic_root: Path, synthetic_table,
                                                                   tmp_path: Path, capsys, split: str) -> None:
    import shutil

    from celebalib.cli import main

    root = tmp_path / f"{split}-only"
    shutil.copytree(synthetic_root, root)
    for name in synthetic_table.loc[synthetic_table["split"] != split, "image_id"]:
        next(root.rglob(name)).unlink()
    # The reference: each attribute's majority over every train row of the annotations, scored on the split.
    train_rows, rows = (synthetic_table[synthetic_table["split"] == s] for s in ("train", split))
    majority = (train_rows[list(ATTRIBUTES)].mean() > 0.5).astype(int)
    expected = float((rows[list(ATTRIBUTES)] == majority).mean().mean())
    old_run = tmp_path / "old-run"  # a run from before the rates were recorded: they come from the annotations
    for folder in (tmp_path / "run", old_run):
        shutil.copytree(tiny_run.path, folder)
    config = json.loads((old_run / "config.json").read_text())
    config["facts"]["train_label_rates"] = None
    (old_run / "config.json").write_text(json.dumps(config))
    for folder in (tmp_path / "run", old_run):
        assert main(["evaluate", "--run", str(folder), "--data", str(root), "--split", split, "--no-progress"]) == 0
        written = json.loads((folder / f"eval_{split}.json").read_text())
        assert written["n_images"] == len(rows)
        assert written["means"]["at_0.5"]["baseline"] == pytest.approx(expected)
    capsys.readouterr()


@pytest.mark.celeba
def test_genuine_test_split_without_images_is_a_config_error(run_copy, celeba_shared: Path) -> None:
    from celebalib.data import load_celeba
    from celebalib.errors import ConfigError

    table = load_celeba(celeba_shared, images=False)
    table = table[table["split"] != "test"]  # as in a copy without the held-out test images
    with pytest.raises(ConfigError, match="test split has no images"):
        evaluate.evaluate_run(run_copy, table, "test", progress=False)
