"""TrainConfig (validation, JSON, old run folders), the recipes, and the generated ``train`` command line."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from celebalib import cli, recipes, runs, train_cli
from celebalib.errors import ConfigError, RunError
from celebalib.recipes import RECIPES, TrainConfig

# A config.json as celebalib wrote it before schema_version (4 December 2026): only the
# settings that existed then, and ``mixed_precision`` instead of ``precision``.
V0_CONFIG = {
    "run_id": "tiny-20261204T100000", "created": "2026-12-04T10:00:00+00:00", "attributes": [],
    "epochs": 2, "image_size": 32, "batch_size": 32, "alpha": 0.35, "weights": None, "loss": "bce",
    "optimizer": "adam", "learning_rate": 0.001, "lr_schedule": None, "limit": None, "seed": 0, "crop": "center",
    "augment": True, "test_time_flip": False, "data_root": "/data", "mixed_precision": False, "thresholds": None,
}


def test_a_config_is_frozen_and_validates_itself() -> None:
    config = TrainConfig(epochs=3, augment=True, lr_schedule=None, weights=Path("w.h5"), identity_targets=["Male"])
    assert (config.augment, config.lr_schedule, config.weights, config.identity_targets) == (
        "full", "constant", "w.h5", ("Male",))  # accepted spellings become the one each field holds
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 4  # type: ignore[misc]
    with pytest.raises(ConfigError, match="crop='square': expected one of center, portrait, none"):
        config.replace(crop="square")
    with pytest.raises(ConfigError, match="unknown training setting 'epoch'"):
        config.replace(epoch=3)
    assert config.replace(epochs=4).epochs == 4 and config.epochs == 3


def test_the_learning_rate_left_open_is_the_optimizers_and_is_recorded() -> None:
    assert TrainConfig(optimizer="adadelta").learning_rate_used == 1.0
    assert TrainConfig(optimizer="adam").learning_rate_used == 1e-3
    # Changing the optimiser of a config that left the rate open changes the rate with it.
    assert TrainConfig(optimizer="adadelta").replace(optimizer="adam").learning_rate_used == 1e-3
    # The settings keep what was asked (None); the record's facts and flat view, the rate used.
    record = runs.RunRecord.new("x", TrainConfig(optimizer="adam"), runs.Facts(learning_rate=1e-3))
    assert TrainConfig(optimizer="adam").to_json()["learning_rate"] is None
    assert record.to_json()["facts"]["learning_rate"] == 1e-3 and record.flat()["learning_rate"] == 1e-3


def test_json_round_trip_keeps_every_field() -> None:
    config = RECIPES["celeba-cpu"].replace(identity_targets=["Male", "Bald"], precision="mixed_bfloat16")
    text = json.dumps(runs.RunRecord.new("x", config, runs.Facts()).to_json())  # the settings beside run facts
    loaded = runs.RunRecord.from_json(json.loads(text)).settings
    assert loaded == config and json.loads(text)["schema_version"] == runs.SCHEMA_VERSION
    with pytest.raises(RunError, match="config.json: schema_version 99"):
        runs.RunRecord.from_json({**json.loads(text), "schema_version": 99})
    incomplete = config.to_json()
    del incomplete["head"]
    with pytest.raises(ConfigError, match="no head"):
        TrainConfig.from_json(incomplete)


def test_an_old_config_loads_with_the_defaults_of_its_time() -> None:
    old = runs.RunRecord.from_json(V0_CONFIG).settings
    # Values it recorded are kept; the rest are the defaults fit() had then, whatever TrainConfig's are now.
    assert (old.epochs, old.image_size, old.optimizer, old.learning_rate) == (2, 32, "adam", 0.001)
    assert (old.augment, old.lr_schedule, old.head, old.label_smoothing, old.checkpoint_metric) == (
        "full", "constant", "average", 0.0, "balanced_accuracy")
    assert (old.dropout_rate, old.bn_momentum, old.time_budget, old.average_epochs) == (0.2, None, None, 0)
    assert old.precision == "float32"
    assert runs.RunRecord.from_json({**V0_CONFIG, "mixed_precision": True}).settings.precision == "mixed_float16"
    assert set(runs.V0_DEFAULTS) | {"epochs", "image_size", "batch_size", "precision"} == {
        f.name for f in dataclasses.fields(TrainConfig)}
    with pytest.raises(RunError, match="runs/x/config.json: image size 8"):
        runs.RunRecord.from_json({**V0_CONFIG, "image_size": 8}, "runs/x/config.json")


def test_settings_fixed_on_resume_are_those_that_change_the_model_or_its_data() -> None:
    assert set(recipes.fixed_on_resume()) == {"image_size", "crop", "alpha", "weights", "loss", "label_smoothing",
                                              "identity_targets", "optimizer", "batch_size", "augment", "head",
                                              "epoch_images"}


def test_enumerations_are_the_librarys() -> None:
    from celebalib import data, losses, model

    assert recipes.choices("loss") == losses.LOSSES
    assert recipes.choices("augment") == model.AUGMENTATIONS
    assert recipes.choices("head") == model.HEADS
    assert recipes.choices("crop") == data.CROPS
    assert recipes.MIN_IMAGE_SIZE == model.MIN_IMAGE_SIZE
    assert set(recipes.choices("optimizer")) == set(recipes.DEFAULT_LEARNING_RATES)
    assert set(recipes.choices("checkpoint_metric")) == set(recipes.CHECKPOINT_METRICS)


def test_every_field_is_a_command_line_option() -> None:
    import argparse

    train_parser = argparse.ArgumentParser()
    train_cli.configure_train_parser(train_parser)
    text = " ".join(train_parser.format_usage().split())
    for field in dataclasses.fields(TrainConfig):
        flag = f"--{field.name.replace('_', '-')}"
        assert flag in text, flag
        if field.name in ("loss", "crop", "head", "strategy", "precision", "checkpoint_metric", "lr_schedule"):
            assert f"{flag} {{{','.join(recipes.choices(field.name))}}}" in text
    parser = cli.build_parser("train")
    args = parser.parse_args(["train", "--out", "x", "--precision", "mixed_bfloat16", "--test-time-flip", "on",
                              "--weights", "none", "--average-epochs", "3", "--preset", "celeba-cpu"])
    assert train_cli.given_settings(args) == {"precision": "mixed_bfloat16", "test_time_flip": True, "weights": None,
                                            "average_epochs": 3}
    assert args.recipe == "celeba-cpu"  # --preset is the old name of --recipe


def test_train_help_does_not_import_tensorflow() -> None:
    code = ("import sys; from celebalib import cli; cli.build_parser('train').format_help(); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def real_root(synthetic_root: Path, tmp_path: Path) -> Path:
    """The synthetic root's annotation files without its marker: what a real CelebA root looks like to a recipe."""
    root = tmp_path / "celeba"
    root.mkdir()
    for name in ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt"):
        shutil.copy(synthetic_root / name, root / name)
    return root


def test_the_recipe_follows_the_data_given_and_the_machine(synthetic_root: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELEBALIB_EPOCHS", "CELEBALIB_IMAGE_SIZE", "CELEBALIB_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELEBA_ROOT", str(synthetic_root))  # the environment does not decide: the data does
    real = real_root(synthetic_root, tmp_path)
    course = recipes.resolve_recipe(synthetic_root, fast=False, gpu=True)
    assert (course.name, course.config) == ("course", RECIPES["course"])
    assert recipes.resolve_recipe(real, fast=False, gpu=False).name == "celeba-cpu"
    assert recipes.resolve_recipe(real, fast=False, gpu=True).name == "celeba-gpu"
    cpu = recipes.resolve_recipe(real, fast=False, gpu=False)
    assert cpu.config == RECIPES["celeba-cpu"] and cpu.minutes == 80
    assert "Recipe celeba-cpu:" in cpu.describe() and "about 80 min" in cpu.describe()
    # The course's time: its epochs over the train rows of the partition file, at the measured cost per image.
    n_train = sum(line.split()[1] == "0" for line in (synthetic_root / "list_eval_partition.txt").read_text().split("\n")
                  if line.strip())
    assert course.minutes == pytest.approx(24 * n_train * recipes.COURSE_SECONDS_PER_IMAGE / 60)


def test_fast_mode_keeps_the_name_and_shrinks_the_recipe(synthetic_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CELEBALIB_EPOCHS", "CELEBALIB_IMAGE_SIZE", "CELEBALIB_BATCH_SIZE"):
        monkeypatch.delenv(name, raising=False)
    fast = recipes.resolve_recipe(real_root(synthetic_root, tmp_path), fast=True, gpu=False)
    assert fast.name == "celeba-cpu" and "fast mode" in fast.describe()
    assert (fast.config.limit, fast.config.image_size, fast.config.alpha, fast.config.epochs) == (1_200, 64, 0.35, 2)
    assert fast.config.time_budget is None and fast.config.epoch_images is None
    # What makes celeba-cpu itself stays: the optimiser, the crop, the views.
    assert (fast.config.optimizer, fast.config.crop, fast.config.test_time_shift) == ("adadelta", "portrait", 3)
    assert recipes.resolve_recipe(synthetic_root, fast=True).config.epochs == 2


def test_the_course_recipe_is_what_notebook_03_trained() -> None:
    # Notebook 03 called fit(epochs=24, image_size=64, batch_size=32, loss="balanced_bce",
    # optimizer="adadelta", augment="flip", seed=0) on the synthetic set, with fit's other defaults.
    course = RECIPES["course"]
    assert course.changes(TrainConfig(epochs=24, image_size=64, batch_size=32, loss="balanced_bce",
                                      optimizer="adadelta", augment="flip", seed=0)) == {}
    assert course.learning_rate_used == 1.0


def test_the_environment_overrides_single_settings(synthetic_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELEBALIB_EPOCHS", "5")
    recipe = recipes.resolve_recipe(synthetic_root, fast=True)
    assert recipe.config.epochs == 5 and "epochs given" in recipe.describe()


def test_train_prints_the_recipe_before_it_starts(synthetic_root: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    from celebalib import train

    class Started(Exception):
        """Raised where training would begin."""

    seen = {}

    def fake_fit(out, config, **kwargs):
        seen.update(config=config, printed=capsys.readouterr().out, **kwargs)
        raise Started

    monkeypatch.delenv("CELEBALIB_EPOCHS", raising=False)
    monkeypatch.setattr(train, "fit", fake_fit)
    with pytest.raises(Started):
        cli.main(["train", "--data", str(synthetic_root), "--out", str(tmp_path / "run"), "--alpha", "0.5"])
    expected = recipes.resolve_recipe(synthetic_root, fast=True).config.replace(alpha=0.5)
    assert seen["config"] == expected and seen["data_root"] == synthetic_root
    assert seen["printed"].startswith("Recipe course in fast mode, with alpha given:")
    assert "Expected training time: about" in seen["printed"]
