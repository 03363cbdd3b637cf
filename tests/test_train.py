"""Training: a complete run folder, resuming after an interruption, presets, bad arguments."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from celebalib import cli, recipes, runs, train
from celebalib.errors import ConfigError, RunError
from celebalib.data import load_celeba, make_dataset
from celebalib.model import OUTPUT, backbone_of, build_model

CONTRACT_KEYS = {"run_id", "created", "attributes", "image_size", "crop", "alpha", "weights", "loss", "optimizer",
                 "learning_rate", "batch_size", "epochs", "data_root", "thresholds", "versions"}


class Interrupt(Exception):
    """Stands in for Ctrl-C or a killed process."""


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """Raise once the first epoch is over (and backed up)."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch == 0:
            raise Interrupt


class EpochRecorder(keras.callbacks.Callback):
    """Remember which epochs ran (0-based)."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(epoch)


@pytest.mark.slow
def test_two_epochs_lower_the_loss_and_write_a_complete_run(tiny_run: runs.Run) -> None:
    files = {path.name for path in tiny_run.path.iterdir()}
    assert {"model.keras", "best.keras", "config.json", "history.csv", "logs"} <= files
    assert "backup" not in files and not [name for name in files if name.startswith(".")]
    assert any((tiny_run.path / "logs").rglob("events.out.tfevents.*"))
    stored = json.loads((tiny_run.path / "config.json").read_text())
    assert stored["schema_version"] == runs.SCHEMA_VERSION and {"settings", "facts", "progress", "thresholds",
                                                                "results"} <= set(stored)
    assert stored["progress"]["epochs_done"] == 2 and stored["progress"]["finished"]
    config = tiny_run.config  # the record read as one flat dict
    assert CONTRACT_KEYS <= set(config) and config["image_size"] == 32 and config["thresholds"] is None
    history = tiny_run.history()
    assert history["epoch"].tolist() == [1, 2]
    assert history["loss"].iloc[1] < history["loss"].iloc[0]
    assert {"binary_accuracy", "mean_balanced_accuracy", "val_mean_balanced_accuracy"} <= set(history)


def test_best_checkpoint_saves_only_improvements_and_remembers_them(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    best, history = tmp_path / "best.keras", tmp_path / "history.csv"
    callback = train.BestCheckpoint(best, history)
    callback.set_model(model)
    callback.on_train_begin()
    saved = []
    for epoch, score in enumerate([0.5, 0.4, 0.6]):
        model.layers[0].bias.assign([float(epoch)])
        callback.on_epoch_end(epoch, {train.MONITOR: score})
        saved.append(float(runs.load_model(best).layers[0].bias.numpy()[0]))
    assert saved == [0.0, 0.0, 2.0]
    # A resumed run starts from the best figure in history.csv, not from scratch.
    pd.DataFrame({"epoch": [1, 2, 3], train.MONITOR: [0.5, 0.4, 0.6]}).to_csv(history, index=False)
    resumed = train.BestCheckpoint(best, history)
    resumed.on_train_begin()
    assert resumed.best == pytest.approx(0.6)


def test_history_replaces_a_repeated_epoch(tmp_path: Path) -> None:
    path = tmp_path / "history.csv"
    writer = train.HistoryWriter(path, "train")
    for epoch, loss in [(0, 0.9), (1, 0.8), (1, 0.7)]:  # epoch 2 repeated after a crash
        writer.on_epoch_end(epoch, {"loss": loss})
    table = pd.read_csv(path)
    assert table["epoch"].tolist() == [1, 2] and table["loss"].tolist() == [0.9, 0.7]


@pytest.mark.slow
def test_interrupted_run_resumes_at_the_next_epoch(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    options = dict(data_root=synthetic_root, epochs=2, image_size=32, batch_size=32, limit=64,
                   optimizer="adam", progress=False, run_eagerly=True)
    with pytest.raises(Interrupt):
        train.fit(out, callbacks=[StopAfterFirstEpoch()], **options)
    assert (out / "backup").is_dir() and not (out / "model.keras").exists()
    with pytest.raises(RunError, match="unfinished"):
        runs.open_run(out)
    recorder = EpochRecorder()
    run = train.fit(out, callbacks=[recorder], **options)
    assert recorder.epochs == [1]
    assert run.history()["epoch"].tolist() == [1, 2]
    assert not (out / "backup").exists() and (out / "model.keras").is_file()
    with pytest.raises(RunError, match="finished run"):
        train.fit(out, **options)


@pytest.mark.slow
def test_best_checkpoint_can_follow_the_val_auc(synthetic_root: Path, tmp_path: Path) -> None:
    random.seed(5), np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5), np.random.seed(5)
    run = train.fit(tmp_path / "auc", data_root=synthetic_root, epochs=2, image_size=32, batch_size=32, limit=64,
                    optimizer="adam", checkpoint_metric="auc", progress=False, run_eagerly=True)
    # fit seeds what training needs, and leaves the caller's Python and NumPy generators where they were.
    assert (random.random(), np.random.rand()) == expected
    history = run.history().set_index("epoch")
    val = make_dataset(load_celeba(synthetic_root), "val", training=False, image_size=32, batch_size=32, limit=64)
    model = runs.load_model(run.files.best)
    model.compile(loss="binary_crossentropy")
    # best.keras reproduces the val loss logged for the epoch with the highest val mean AUC.
    logged = history.loc[history["val_mean_auc"].idxmax(), "val_loss"]
    assert model.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(logged, rel=1e-4)
    assert run.config["checkpoint_metric"] == "auc"


@pytest.mark.slow
def test_a_resumed_run_must_keep_its_settings(tiny_run: runs.Run, tmp_path: Path) -> None:
    out = tmp_path / "changed"
    out.mkdir()
    (out / "backup").mkdir()
    (out / "config.json").write_text((tiny_run.path / "config.json").read_text())
    with pytest.raises(RunError, match="image_size is 32"):
        train.fit(out, data_root=tiny_run.config["data_root"], epochs=2, image_size=64, batch_size=32,
                  optimizer="adam", progress=False)
    config = tiny_run.config  # the record as the flat dict config.json was before schema 2
    del config["head"]  # a run from before schema_version and head existed pooled by averaging
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunError, match="head is 'average'"):
        train.fit(out, data_root=tiny_run.config["data_root"], epochs=2, image_size=32, batch_size=32,
                  optimizer="adam", head="depthwise", progress=False)
    # The same for label smoothing, which changes the loss: a run from before it trained without.
    with pytest.raises(RunError, match="label_smoothing is 0.0"):
        train.fit(out, data_root=tiny_run.config["data_root"], epochs=2, image_size=32, batch_size=32,
                  optimizer="adam", label_smoothing=0.1, progress=False)


@pytest.mark.parametrize(("change", "message"), [
    ({"loss": "hinge"}, "loss='hinge': expected one of bce, balanced_bce, focal, cosine"),
    ({"image_size": 31}, "at least 32"),
    ({"optimizer": "sgd"}, "optimizer='sgd'"),
    ({"strategy": "tpu"}, "strategy='tpu'"),
    ({"epoch": 3}, "unknown training setting 'epoch'"),
    ({"precision": "float16"}, "precision='float16'"),
    ({"epochs": 0}, "epochs=0"),
    ({"checkpoint_metric": "loss"}, "checkpoint_metric='loss'"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"dropout_rate": 1.0}, "dropout_rate=1.0"),
    ({"head": "max"}, "head='max'"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
    ({"loss": "cosine", "label_smoothing": 0.1}, "not cosine"),
    ({"epoch_images": 0}, "epoch_images=0"),
    ({"val_images": 2.5}, "val_images=2.5"),
    ({"time_budget": -5}, "time_budget=-5"),
    ({"average_epochs": -1}, "average_epochs=-1"),
    ({"test_time_shift": -1}, "test-time shift -1"),
    ({"identity_targets": "Male,Nose"}, "unknown attribute 'Nose'"),
    ({"test_time_shift": 32}, "test-time shift 32: expected fewer pixels than the image size, 32"),
])
def test_bad_arguments_fail_before_any_work(tmp_path: Path, change: dict, message: str) -> None:
    options = {"epochs": 1, "image_size": 32, "batch_size": 8, **change}
    with pytest.raises(ConfigError, match=message):
        train.fit(tmp_path / "run", data_root=tmp_path / "nowhere", **options)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["--data", "{tmp}/nowhere", "--image-size", "32"], "data root {tmp}/nowhere not found"),
    (["--label-smoothing", "1"], "label_smoothing=1.0"),
    (["--image-size", "16"], "image size 16"),
    (["--augment", "none", "--image-size", "16"], "image size 16"),
    (["--image-size", "32", "--test-time-shift", "32"], "test-time shift 32"),
])
def test_cli_prints_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture, argv: list, message: str) -> None:
    argv = [arg.format(tmp=tmp_path) for arg in argv]
    assert cli.main(["train", "--out", str(tmp_path / "run"), *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message.format(tmp=tmp_path) in err


def test_cli_rejects_unknown_choices_as_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for argv in (["--loss", "hinge"], ["--preset", "celeba-tpu"], ["--head", "max"]):
        try:
            code = cli.main(["train", "--out", str(tmp_path / "run"), *argv])
        except SystemExit as stop:  # argparse's way of ending on a usage error
            code = stop.code
        assert code == 2 and "invalid choice" in capsys.readouterr().err


def resolve_options(args) -> dict:
    """The settings a parsed ``train`` command line trains with."""
    from celebalib.train_cli import resolve_from_args

    return resolve_from_args(args)[0].config.to_dict()


def test_explicit_flags_override_the_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELEBALIB_EPOCHS", "3")
    monkeypatch.delenv("CELEBALIB_FAST", raising=False)  # fast mode would shrink the recipe
    monkeypatch.delenv("CELEBA_ROOT", raising=False)
    parse = cli.build_parser("train").parse_args
    options = resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu", "--epochs", "5"]))
    assert options["epochs"] == 5 and options["image_size"] == 96 and options["optimizer"] == "adadelta"
    assert options["crop"] == "portrait"
    assert options["lr_schedule"] == "cosine" and options["bn_momentum"] == 0.9 and options["augment"] == "shift"
    assert options["test_time_flip"] is True and options["test_time_shift"] == 3 and options["weights"] is None
    assert options["checkpoint_metric"] == "auc" and options["alpha"] == 1.0 and options["batch_size"] == 32
    assert options["epoch_images"] == 20_000 and options["val_images"] == 5_000 and options["time_budget"] == 80
    budget = resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu", "--time-budget", "30",
                                          "--epoch-images", "1000", "--val-images", "500"]))
    assert (budget["time_budget"], budget["epoch_images"], budget["val_images"]) == (30.0, 1000, 500)
    changed = resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu", "--augment", "flip",
                                           "--test-time-flip", "off", "--test-time-shift", "0", "--alpha", "0.35",
                                           "--checkpoint-metric", "balanced_accuracy"]))
    assert changed["augment"] == "flip" and changed["test_time_flip"] is False and changed["alpha"] == 0.35
    assert changed["test_time_shift"] == 0
    assert changed["checkpoint_metric"] == "balanced_accuracy"
    assert resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu", "--crop", "center"]))["crop"] == "center"
    regularised = resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu",
                                               "--weight-decay", "0.05", "--dropout-rate", "0.3",
                                               "--label-smoothing", "0.1"]))
    assert regularised["weight_decay"] == 0.05 and regularised["dropout_rate"] == 0.3
    assert regularised["label_smoothing"] == 0.1
    assert regularised["head"] == "depthwise"
    assert resolve_options(parse(["train", "--out", "x", "--preset", "celeba-cpu", "--head", "average"]))["head"] == "average"
    gpu = resolve_options(parse(["train", "--out", "x", "--preset", "celeba-gpu"]))
    assert gpu["weights"] == "imagenet" and gpu["image_size"] == 224 and gpu["warmup_epochs"] == 2
    plain = resolve_options(parse(["train", "--out", "x", "--weights", "none", "--no-augment"]))
    assert plain["epochs"] == 3 and plain["weights"] is None and plain["augment"] == "none"
    assert plain["head"] == "average" and plain["loss"] == "balanced_bce"  # the course recipe, for the synthetic set
    cleared = resolve_options(parse(["train", "--out", "x", "--recipe", "celeba-cpu", "--time-budget", "none"]))
    assert cleared["time_budget"] is None and cleared["epoch_images"] == 20_000


def test_optimizers_default_to_their_paper_learning_rates() -> None:
    assert float(train.make_optimizer("adadelta").learning_rate) == pytest.approx(1.0)
    assert float(train.make_optimizer("adam").learning_rate) == pytest.approx(1e-3)
    schedule = train.CosineSchedule(0.01, 10)
    optimizer = train.make_optimizer("adam", schedule)
    assert float(optimizer.learning_rate) == pytest.approx(0.01)  # the schedule at step 0
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-7)


def test_cosine_schedule_is_keras_cosine_decay_and_can_be_shortened() -> None:
    schedule, keras_decay = train.CosineSchedule(0.01, 100), keras.optimizers.schedules.CosineDecay(0.01, 100)
    for step in (0, 1, 37, 99, 100, 150):
        assert float(schedule(step)) == pytest.approx(float(keras_decay(step)), rel=1e-5, abs=1e-9)
    schedule.decay_steps.assign(40.0)
    assert float(schedule(40)) == pytest.approx(0.0, abs=1e-9) and float(schedule(20)) == pytest.approx(0.005)
    restored = train.CosineSchedule.from_config(schedule.get_config())
    assert float(restored(20)) == pytest.approx(0.005)


class TickingClock:
    """A clock that moves on each time it is read: by ``tick`` seconds, or by the next of a list of them."""

    def __init__(self, tick: float | list[float]) -> None:
        self.now = 0.0
        self.ticks = iter(tick) if isinstance(tick, list) else itertools.repeat(tick)

    def __call__(self) -> float:
        self.now += next(self.ticks)
        return self.now


def fit_with_budget(minutes: float, epochs: int, tick: float | list[float] = 10.0):
    """Fit a one-layer model for ``epochs`` epochs of 4 steps under a TimeBudget on a ticking clock."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    schedule = train.CosineSchedule(0.01, 4 * epochs)
    optimizer = train.make_optimizer("adam", schedule)
    model.compile(optimizer=optimizer, loss="mse")
    ends: list[int] = []
    budget = train.TimeBudget(minutes, 0.0, epochs, schedule, (4, 0), ends.append, clock=TickingClock(tick))
    history = model.fit(np.ones((16, 3)), np.ones(16), batch_size=4, epochs=epochs, callbacks=[budget], verbose=0)
    return len(history.history["loss"]), ends, optimizer, schedule


def test_time_budget_shortens_the_schedule_to_fit() -> None:
    # Each epoch takes 10 s; after the second, at 30 s, 30 s of the minute are left: three more epochs.
    trained, ends, optimizer, schedule = fit_with_budget(1.0, epochs=20)
    assert (trained, ends) == (5, [5])
    assert float(schedule.decay_steps.numpy()) == 20.0  # 5 epochs of 4 steps
    assert int(optimizer.iterations.numpy()) == 20 and float(optimizer.learning_rate) == pytest.approx(0.0, abs=1e-9)


def test_time_budget_is_not_shortened_by_one_slow_epoch() -> None:
    # Nine planned epochs of 10 s in 100 s, the fifth taking 20: the last epoch's time alone
    # would predict 20 s per epoch at 60 s and end the run after 7; the median of the last three
    # (10, 10, 20) keeps all nine, which end at 100 s.
    trained, ends, _, _ = fit_with_budget(100 / 60, epochs=9, tick=[0, 10, 10, 10, 10, 20, 10, 10, 10, 10])
    assert (trained, ends) == (9, [])


def test_time_budget_is_shortened_by_two_slow_epochs_in_a_row() -> None:
    # The same run with the fifth and sixth epochs at 20 s: at 80 s the median is 20 and one more fits.
    trained, ends, _, schedule = fit_with_budget(100 / 60, epochs=9, tick=[0, 10, 10, 10, 10, 20, 20, 10])
    assert (trained, ends) == (7, [7]) and float(schedule.decay_steps.numpy()) == 28.0


def test_time_budget_leaves_a_run_that_fits_alone() -> None:
    trained, ends, _, schedule = fit_with_budget(10.0, epochs=6)
    assert (trained, ends) == (6, []) and float(schedule.decay_steps.numpy()) == 24.0


def test_time_budget_stops_after_the_first_epoch_when_no_second_fits() -> None:
    trained, ends, _, _ = fit_with_budget(0.25, epochs=6)  # 15 s: the first epoch ends at 20 s
    assert (trained, ends) == (1, [1])


def test_time_budget_reports_the_time_spent_after_each_epoch() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    spent: list[float] = []
    # Started 100 s before this process's clock began: an earlier process's finished epochs.
    budget = train.TimeBudget(10.0, -100.0, 3, None, (4, 0), lambda end: None, clock=TickingClock(10.0),
                              on_epoch=spent.append)
    model.fit(np.ones((16, 3)), np.ones(16), batch_size=4, epochs=3, callbacks=[budget], verbose=0)
    assert spent == [120.0, 130.0, 140.0]  # the clock ticks once at train begin and once per epoch


def test_epoch_line_prints_one_line_per_epoch(capsys: pytest.CaptureFixture) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse", metrics=[keras.metrics.MeanAbsoluteError(name="mae")])
    x, y = np.ones((16, 3)), np.ones(16)
    history = model.fit(x, y, batch_size=4, epochs=2, validation_data=(x, y), verbose=0,
                        callbacks=[train.EpochLine(2, "val_mae")])
    lines = capsys.readouterr().out.strip().split("\n")
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2 (")
    logged = history.history
    assert lines[1].endswith(f"loss {logged['loss'][1]:.4f}, val_loss {logged['val_loss'][1]:.4f}, "
                             f"mae {logged['mae'][1]:.4f}, val_mae {logged['val_mae'][1]:.4f}")


@pytest.mark.slow
def test_a_resumed_run_counts_the_budget_its_finished_epochs_spent(synthetic_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "resumed-budget"
    options = dict(data_root=synthetic_root, epochs=3, image_size=32, batch_size=32, limit=32, time_budget=60,
                   optimizer="adam", lr_schedule="cosine", progress=False, run_eagerly=True)
    with pytest.raises(Interrupt):
        train.fit(out, callbacks=[StopAfterFirstEpoch()], **options)
    record = runs.read_record(out)
    assert 0 < record.progress.seconds < 3600 and record.settings.epochs == 3 and record.progress.epochs_done == 1
    # Pretend the first process's epoch took all but a moment of the hour: the resumed run must
    # end after the epoch it trains instead of starting a whole new hour.
    runs.write_record(out, dataclasses.replace(record, progress=dataclasses.replace(record.progress,
                                                                                   seconds=3600 - 1e-3)))
    run = train.fit(out, **options)
    assert run.history()["epoch"].tolist() == [1, 2]
    # The budget ended it after epoch 2; the settings keep the 3 epochs asked for.
    assert run.record.progress.budget_end == 2 and run.config["epochs"] == 3


class OptimizerAtEnd(keras.callbacks.Callback):
    """Keep the model's optimiser (as compile left it) when training ends."""

    def on_train_end(self, logs: dict | None = None) -> None:
        self.optimizer = self.model.optimizer


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_with_a_time_budget_ends_the_schedule_at_the_new_end(
        policy: str, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each clock read moves 10 s: fit starts at 10, training at 20, epochs end at 30 and 40. With
    # 35 s, after the second epoch no third fits, so the run ends there instead of after four.
    monkeypatch.setattr(train, "monotonic", TickingClock(10.0))
    seen = OptimizerAtEnd()
    run = train.fit(tmp_path / policy, data_root=synthetic_root, epochs=4, image_size=32, batch_size=32, limit=32,
                    alpha=0.35, optimizer="adam", lr_schedule="cosine", time_budget=35 / 60, precision=policy,
                    progress=False, run_eagerly=True, callbacks=[seen])
    assert run.history()["epoch"].tolist() == [1, 2]
    assert (run.record.progress.budget_end, run.config["epochs"], run.config["dtype_policy"]) == (2, 4, policy)
    # Under mixed float16 compile wraps the optimiser in a LossScaleOptimizer; the schedule is the inner one's.
    assert isinstance(seen.optimizer, keras.optimizers.LossScaleOptimizer) == (policy == "mixed_float16")
    inner = getattr(seen.optimizer, "inner_optimizer", seen.optimizer)
    schedule = keras.optimizers.schedules.deserialize(inner.get_config()["learning_rate"])
    # One step per epoch: the cosine schedule, planned over 4 steps, now reaches zero at step 2.
    assert schedule.get_config()["decay_steps"] == 2
    assert float(schedule(1)) == pytest.approx(0.0005) and float(schedule(2)) == pytest.approx(0.0, abs=1e-9)
    assert keras.config.dtype_policy().name == "float32"  # fit gave the caller's policy back
    model = runs.load_model(run.files.best)
    assert model.get_layer(OUTPUT).compute_dtype == "float32"
    assert backbone_of(model).layers[-1].compute_dtype == policy.removeprefix("mixed_")
    images = make_dataset(load_celeba(synthetic_root), "test", training=False, image_size=32, batch_size=4, limit=4)
    predictions = model.predict(images, verbose=0)
    assert predictions.dtype == np.float32 and predictions.shape == (4, 40)
    assert np.all((predictions >= 0) & (predictions <= 1))


class BatchCounter(keras.callbacks.Callback):
    """Count training and validation batches per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.train: list[int] = []
        self.val: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.train.append(0)
        self.val.append(0)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.train[-1] += 1

    def on_test_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.val[-1] += 1


@pytest.mark.slow
def test_epochs_of_a_fixed_number_of_images_and_a_capped_val(synthetic_root: Path, tmp_path: Path) -> None:
    counter = BatchCounter()
    # 80 training images in batches of 16: an epoch of 100 images is 7 batches, the second
    # going on from where the first stopped; 20 val images make 2 batches.
    run = train.fit(tmp_path / "images", data_root=synthetic_root, epochs=2, image_size=32, batch_size=16, limit=80,
                    epoch_images=100, val_images=20, optimizer="adam", progress=False, run_eagerly=True,
                    callbacks=[counter])
    assert counter.train == [7, 7] and counter.val == [2, 2]
    assert run.config["epoch_images"] == 100 and run.config["val_images"] == 20


@pytest.mark.slow
def test_weight_averaging_makes_best_keras_the_mean_of_the_last_epochs(synthetic_root: Path, tmp_path: Path) -> None:
    run = train.fit(tmp_path / "averaged", data_root=synthetic_root, epochs=3, image_size=32, batch_size=32,
                    limit=64, optimizer="adam", average_epochs=2, progress=False, run_eagerly=True)
    files = sorted(run.files.averaging.glob("*.h5"))
    assert [f.name for f in files] == ["epoch-02.weights.h5", "epoch-03.weights.h5"]
    assert run.config["averaged"]["epochs"] == [2, 3] and 0 <= run.config["averaged"]["val_mean_auc"] <= 1
    best, final = runs.load_model(run.files.best), runs.load_model(run.files.final)
    epoch_kernels = []
    for file in files:
        final.load_weights(str(file))
        epoch_kernels.append(final.get_layer(OUTPUT).kernel.numpy())
    assert not np.allclose(epoch_kernels[0], epoch_kernels[1])
    np.testing.assert_allclose(best.get_layer(OUTPUT).kernel.numpy(), np.mean(epoch_kernels, axis=0), rtol=1e-5,
                               atol=1e-7)
    # model.keras stays the last epoch's, statistics and all.
    np.testing.assert_allclose(runs.load_model(run.files.final).get_layer(OUTPUT).kernel.numpy(),
                               epoch_kernels[1])


@pytest.mark.slow
def test_a_run_over_its_time_budget_records_the_shortened_end(synthetic_root: Path, tmp_path: Path) -> None:
    run = train.fit(tmp_path / "budget", data_root=synthetic_root, epochs=3, image_size=32, batch_size=32, limit=32,
                    time_budget=1e-6, optimizer="adam", lr_schedule="cosine", average_epochs=1, progress=False,
                    run_eagerly=True)
    assert len(run.history()) == 1 and (run.files.final).is_file()
    assert run.record.progress.budget_end == 1 and run.config["epochs"] == 3 and run.record.progress.epochs_done == 1
    # Weight averaging heard the new end in time to keep the epoch that became the last.
    assert run.config["averaged"]["epochs"] == [1, 1]
    # Its saved optimiser names CosineSchedule: a process that never imported train must still load it.
    code = "import sys; from celebalib.runs import load_model; print(load_model(sys.argv[1]).optimizer.learning_rate)"
    loaded = subprocess.run([sys.executable, "-c", code, str(run.files.best)], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr[-500:]


def test_weight_decay_shrinks_kernels_but_not_batch_norm_or_biases() -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2), keras.layers.BatchNormalization()])
    before = {v.path: v.numpy().copy() for v in model.trainable_weights}
    optimizer = train.make_optimizer("adam", 0.1, weight_decay=0.5)
    # Zero gradients: Adam moves nothing, so any change is the decay alone.
    optimizer.apply_gradients([(tf.zeros_like(v), v) for v in model.trainable_weights])
    for v in model.trainable_weights:
        expected = before[v.path] * (1 - 0.5 * 0.1) if v.name == "kernel" else before[v.path]
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-6, err_msg=v.path)
    assert {v.name for v in model.trainable_weights} == {"kernel", "bias", "gamma", "beta"}
    assert train.make_optimizer("adam").weight_decay is None


def test_pretrained_runs_warm_up_with_a_frozen_backbone() -> None:
    config = train.TrainConfig(epochs=5, weights="local.weights.h5", warmup_epochs=2)
    assert train._phases(config) == [("warmup", 0, 2), ("finetune", 2, 5)]
    assert train._phases(config.replace(weights=None)) == [("train", 0, 5)]


def test_mirrored_strategy_scope_on_one_device() -> None:
    strategy = train.get_strategy("mirrored")
    assert strategy.num_replicas_in_sync >= 1
    with strategy.scope():
        model = build_model(image_size=32, augment=False)
        model.compile(optimizer=train.make_optimizer("adam"), loss="binary_crossentropy")
    assert all(isinstance(v.value, tf.distribute.DistributedValues) for v in backbone_of(model).trainable_weights)


def test_decoded_images_are_cached_only_when_they_fit() -> None:
    assert train.should_cache("auto", 1200, 64)
    assert train.should_cache("auto", 24_534, 128)  # 1.2 GB of uint8 pixels
    assert not train.should_cache("auto", 182_637, 128)  # 9 GB: the full train + val splits
    assert train.should_cache(True, 19_999, 128) and not train.should_cache(False, 10, 32)


def test_identity_targets_reach_the_training_labels(synthetic_table: pd.DataFrame, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from celebalib import data

    class Captured(Exception):
        """Raised once the training table is seen: its labels are what this test is about."""

    seen = {}

    def capture(table, split, **kwargs):
        seen[split] = table
        raise Captured

    monkeypatch.setattr(data, "make_dataset", capture)
    with pytest.raises(Captured):
        train.fit(tmp_path / "run", table=synthetic_table, epochs=1, image_size=32, batch_size=8,
                  identity_targets="person", progress=False)
    labels, rows = seen["train"], synthetic_table["split"] == "train"
    # Attractive is a person attribute that the synthetic faces draw afresh for every image.
    means = synthetic_table[rows].groupby("identity")["Attractive"].transform("mean")
    assert not np.array_equal(means, synthetic_table.loc[rows, "Attractive"])
    np.testing.assert_allclose(labels.loc[rows, "Attractive"], means, rtol=1e-6)
    np.testing.assert_array_equal(labels["Smiling"], synthetic_table["Smiling"])
    np.testing.assert_array_equal(labels.loc[~rows, "Attractive"], synthetic_table.loc[~rows, "Attractive"])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["settings"]["identity_targets"] == "person"


@pytest.mark.slow
def test_a_portrait_run_takes_taller_images_through_every_entry_point(synthetic_root: Path, tmp_path: Path) -> None:
    from celebalib.data import load_image
    from celebalib.evaluate import check_run_matches

    run = train.fit(tmp_path / "portrait", data_root=synthetic_root, epochs=1, image_size=32, batch_size=32,
                    limit=64, crop="portrait", head="depthwise", test_time_shift=2, progress=False,
                    run_eagerly=True)
    assert run.config["crop"] == "portrait" and run.image_shape == (40, 32)
    assert run.model().input_shape == (None, 40, 32, 3)
    check_run_matches(run)
    rows = load_celeba(synthetic_root).query("split == 'test'").head(3)
    pixels = np.stack([load_image(path, image_size=32, crop="portrait") for path in rows["path"]])
    np.testing.assert_allclose(run.predict_images(pixels), run.predict(rows, batch_size=2, progress=False),
                               atol=1e-5)
    with pytest.raises(RunError, match=r"expected \(N, 40, 32, 3\)"):
        run.predict_images(load_image(rows["path"].iloc[0], image_size=32))
    # A config that no longer matches the model's input is named, with both shapes.
    runs.write_record(run.path, dataclasses.replace(run.record, settings=run.train_config.replace(crop="center")))
    with pytest.raises(RunError, match="image_size 32 and crop 'center' make 32x32 images but the model takes 32x40"):
        check_run_matches(runs.Run(run.path))


@pytest.mark.slow
def test_fit_or_reuse_opens_a_finished_run_and_retrains_on_a_changed_setting(synthetic_root: Path,
                                                                            tmp_path: Path) -> None:
    config = recipes.TrainConfig(epochs=1, image_size=32, batch_size=32, optimizer="adam", run_eagerly=True)
    out = tmp_path / "reuse"
    train.fit_or_reuse(out, config, data_root=synthetic_root, progress=False)
    (out / "marker").write_text("kept while the run is reused")
    train.fit_or_reuse(out, config, data_root=synthetic_root, progress=False)
    assert (out / "marker").is_file()  # opened, not trained again
    stored = runs.read_record(out)
    runs.write_record(out, dataclasses.replace(  # as a time budget ends a run of 3 epochs after the first
        stored, settings=stored.settings.replace(epochs=3), progress=dataclasses.replace(stored.progress, budget_end=1)))
    train.fit_or_reuse(out, config.replace(epochs=3), data_root=synthetic_root, progress=False)
    assert (out / "marker").is_file()  # ended early by its budget: still the run asked for
    runs.write_record(out, stored)
    longer = train.fit_or_reuse(out, config.replace(epochs=2), data_root=synthetic_root, progress=False)
    assert not (out / "marker").exists() and longer.config["epochs"] == 2  # a shorter run is not reused
    (out / "marker").write_text("kept while the run is reused")
    changed = train.fit_or_reuse(out, config.replace(seed=1), data_root=synthetic_root, progress=False)
    assert not (out / "marker").exists() and changed.config["seed"] == 1
    (out / "marker").write_text("gone once retrain is asked for")
    train.fit_or_reuse(out, config.replace(seed=1), data_root=synthetic_root, retrain=True, progress=False)
    assert not (out / "marker").exists()


def test_train_config_trains_a_saved_runs_settings_with_flags_on_top(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("CELEBALIB_FAST", "1")  # neither fast mode nor the environment changes a saved run
    monkeypatch.setenv("CELEBALIB_EPOCHS", "3")
    saved = Path(__file__).resolve().parent.parent / "docs" / "results" / "celeba-cpu" / "config.json"
    asked = runs.load_record(saved).settings
    parse = cli.build_parser("train").parse_args
    assert resolve_options(parse(["train", "--out", "x", "--config", str(saved)])) == asked.to_dict()
    assert resolve_options(parse(["train", "--out", "x", "--config", str(saved.parent)])) == asked.to_dict()
    given = resolve_options(parse(["train", "--out", "x", "--config", str(saved), "--seed", "7", "--epochs", "2",
                                   "--time-budget", "none"]))
    assert given == asked.replace(seed=7, epochs=2, time_budget=None).to_dict()
    assert asked.alpha == 1.0 and asked.epochs == 28  # the recipe as the run asked for it, not its budget's end
    assert cli.main(["train", "--out", str(tmp_path / "x"), "--config", str(tmp_path / "missing.json")]) == 1
    assert "missing.json: cannot read" in capsys.readouterr().err
    assert cli.main(["train", "--out", "x", "--config", str(saved), "--recipe", "course"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.slow
def test_train_config_reproduces_a_trained_run(tiny_run: runs.Run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "again"
    code = cli.main(["train", "--config", str(tiny_run.files.config), "--data", tiny_run.config["data_root"],
                     "--out", str(out), "--epochs", "1", "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert f"Recipe from {tiny_run.files.config}, with epochs given:" in capsys.readouterr().out
    again = runs.open_run(out)
    assert again.train_config == tiny_run.train_config.replace(epochs=1)
    assert again.record.facts.data_root == tiny_run.record.facts.data_root and len(again.history()) == 1
