"""Training settings: one validated ``TrainConfig``, the named recipes, and the choice of recipe for the data.

``TrainConfig`` is what ``train.fit`` takes, what a run's record keeps (``runs.RunRecord``)
and what the ``train`` command line is generated from (:mod:`celebalib.train_cli`): each field
carries its help text and whether a resumed run must keep it. A recipe is a ``TrainConfig``
chosen for the data and the machine (:func:`resolve_recipe`, the one place that choice is
made, with :func:`is_synthetic` the one test for real data). This module imports neither
TensorFlow nor Keras, and only modules below it (environment, data, synthetic).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from celebalib.attributes import ATTRIBUTES, PERSON_ATTRIBUTES, attribute_index
from celebalib.environment import Environment, gpu_available, read_environment
from celebalib.errors import ConfigError, check_fraction

MIN_IMAGE_SIZE = 32  # MobileNetV2's smallest input (``model.MIN_IMAGE_SIZE``)
# Adadelta adapts its own step sizes; the paper's learning rate is 1.0. Keras's default of 0.001
# shrinks every step a thousandfold and barely moves the weights.
DEFAULT_LEARNING_RATES = {"adadelta": 1.0, "adam": 1e-3}
# What the best checkpoint may be chosen by (higher is better), and the history column it reads.
CHECKPOINT_METRICS = {"balanced_accuracy": "val_mean_balanced_accuracy", "auc": "val_mean_auc"}

Loss = Literal["bce", "balanced_bce", "focal", "cosine"]
Optimizer = Literal["adadelta", "adam"]
Crop = Literal["center", "portrait", "none"]
Head = Literal["average", "depthwise"]
Augment = Literal["full", "shift", "flip", "none"]
Schedule = Literal["constant", "cosine"]
CheckpointMetric = Literal["balanced_accuracy", "auc"]
Strategy = Literal["default", "mirrored", "multi-worker"]
Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]
Cache = Literal["auto", "on", "off"]


def _field(default: Any, help: str, *, fixed: bool = False) -> Any:
    """A TrainConfig field: its default, help text, and whether a resumed run must keep it."""
    return dataclasses.field(default=default, metadata={"help": help, "fixed_on_resume": fixed})


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; invalid combinations raise ConfigError on construction."""

    # The model.
    image_size: int = _field(64, "width of the input images in pixels (at least 32)", fixed=True)
    crop: Crop = _field("center", "center: the face square; portrait: its width with hair and neck; "
                                  "none: the whole image squeezed", fixed=True)
    alpha: float = _field(0.35, "MobileNetV2 width multiplier", fixed=True)
    weights: Optional[str] = _field(None, "none (from scratch), imagenet, or a local weights file", fixed=True)
    head: Head = _field("average", "pooling of the last feature map", fixed=True)
    dropout_rate: float = _field(0.2, "dropout before the 40-way head")
    bn_momentum: Optional[float] = _field(None, "batch-norm momentum (none: 0.9 from scratch, Keras's with weights)")
    # What the model learns from.
    augment: Augment = _field("full", "full: flips, zoom and shifts; shift: flips and whole-pixel shifts; "
                                      "flip: flips only; none", fixed=True)
    loss: Loss = _field("bce", "training loss", fixed=True)
    label_smoothing: float = _field(0.0, "cross-entropy against y * (1 - s) + s / 2 instead of 0/1 labels",
                                    fixed=True)
    identity_targets: Union[str, tuple[str, ...], None] = _field(
        None, "person, or comma-separated attributes, trained against each identity's mean label over its "
              "train images", fixed=True)
    # How it learns.
    optimizer: Optimizer = _field("adadelta", "optimiser", fixed=True)
    learning_rate: Optional[float] = _field(None, "none: 1.0 for adadelta, 1e-3 for adam")
    lr_schedule: Schedule = _field("constant", "constant, or cosine decay to zero at the last epoch")
    weight_decay: float = _field(0.0, "decoupled weight decay of the kernels, per unit of learning rate")
    batch_size: int = _field(32, "images per step", fixed=True)
    epochs: int = _field(24, "epochs to train")
    warmup_epochs: int = _field(2, "pretrained runs: epochs with the backbone frozen")
    epoch_images: Optional[int] = _field(None, "training images per epoch (none: one pass over the train split)",
                                         fixed=True)
    val_images: Optional[int] = _field(None, "validate each epoch on at most this many val images (none: all)")
    limit: Optional[int] = _field(None, "use at most this many images of each split (none: all)")
    time_budget: Optional[float] = _field(None, "minutes training may take; the schedule is shortened to fit "
                                                "(none: no budget)")
    average_epochs: int = _field(0, "best.keras averages the last N epochs' weights (0: none)")
    checkpoint_metric: CheckpointMetric = _field("balanced_accuracy", "best.keras keeps the epoch with the "
                                                                      "highest val mean of this")
    # How the run's predictions are made (recorded; training is unchanged).
    test_time_flip: bool = _field(False, "predictions average each image with its mirror image")
    test_time_shift: int = _field(0, "predictions also average views shifted by this many pixels (0: none)")
    # Where and how fast.
    seed: int = _field(0, "random seed")
    strategy: Strategy = _field("default", "default, mirrored over all local GPUs, or multi-worker over the machines TF_CONFIG lists")
    precision: Precision = _field("auto", "Keras dtype policy while training (auto: mixed_float16 on a GPU, "
                                          "else float32)")
    cache: Cache = _field("auto", "keep decoded images in memory (auto: when they fit)")
    run_eagerly: bool = _field(False, "skip compiling the training step to a graph (tiny runs)")

    def __post_init__(self) -> None:
        for name, value in _normalised(self).items():
            object.__setattr__(self, name, value)
        _validate(self)

    @property
    def learning_rate_used(self) -> float:
        """The learning rate used: ``learning_rate``, else the optimiser's default."""
        return DEFAULT_LEARNING_RATES[self.optimizer] if self.learning_rate is None else self.learning_rate

    @property
    def identity_target_names(self) -> tuple[str, ...]:
        """The attributes trained against identity means ("person": ``PERSON_ATTRIBUTES``)."""
        return identity_target_names(self.identity_targets)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` (validated; unknown names are a ConfigError)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """The fields as given (``learning_rate`` may be None)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from keyword values, naming any unknown setting."""
        check_names(values)
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The fields exactly as given, in JSON's types (``learning_rate`` may be None)."""
        values = self.to_dict()
        if isinstance(self.identity_targets, tuple):
            values["identity_targets"] = list(self.identity_targets)
        return values

    @classmethod
    def from_json(cls, values: Mapping[str, Any], source: str | Path = "settings") -> TrainConfig:
        """The settings ``to_json`` wrote: every field must be there; errors name ``source``.

        Run records of older schemas reach this through ``runs.migrate``, which gives them the
        values they trained with.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        if missing := [name for name in names if name not in values]:
            raise ConfigError(f"{source}: no {', '.join(sorted(missing))} among the settings")
        try:
            return cls.from_dict({k: v for k, v in values.items() if k in names})
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    def changes(self, base: TrainConfig | None = None) -> dict[str, Any]:
        """The fields that differ from ``base`` (default: TrainConfig()), in field order."""
        base = base or TrainConfig()
        return {k: v for k, v in self.to_dict().items() if getattr(base, k) != v}


def check_names(values: Mapping[str, Any]) -> None:
    """Raise ConfigError naming any key that is not a TrainConfig field."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    unknown = [key for key in values if key not in names]
    if unknown:
        raise ConfigError(f"unknown training setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                          f"expected some of {', '.join(names)}")


def fixed_on_resume() -> tuple[str, ...]:
    """The settings a resumed run must keep (fields marked ``fixed_on_resume``)."""
    return tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["fixed_on_resume"])


def choices(name: str) -> tuple[str, ...]:
    """The allowed values of an enumerated TrainConfig field (its ``Literal``)."""
    kind = typing.get_type_hints(TrainConfig)[name]
    return typing.get_args(kind)


# ---------------------------------------------------------------------------------------
# Normalising and validating


def identity_target_names(identity_targets: str | Sequence[str] | None) -> tuple[str, ...]:
    """The attributes ``identity_targets`` names: "person" means ``PERSON_ATTRIBUTES``; None, "" or "none" none."""
    if not identity_targets or identity_targets == "none":
        return ()
    if identity_targets == "person":
        return PERSON_ATTRIBUTES
    names = identity_targets.split(",") if isinstance(identity_targets, str) else list(identity_targets)
    return tuple(ATTRIBUTES[attribute_index(name)] for name in names)


def _normalised(config: TrainConfig) -> dict[str, Any]:
    """Accepted spellings turned into the one each field holds (e.g. augment=True -> "full", a Path -> str)."""
    out: dict[str, Any] = {}
    if isinstance(config.augment, bool):
        out["augment"] = "full" if config.augment else "none"
    if isinstance(config.cache, bool):
        out["cache"] = "on" if config.cache else "off"
    if config.lr_schedule is None:
        out["lr_schedule"] = "constant"
    if isinstance(config.weights, Path):
        out["weights"] = str(config.weights)
    if config.weights in ("none", "None", ""):
        out["weights"] = None
    if config.identity_targets is not None and not isinstance(config.identity_targets, str):
        out["identity_targets"] = tuple(config.identity_targets)
    for name in ("alpha", "dropout_rate", "label_smoothing", "weight_decay", "learning_rate", "bn_momentum",
                 "time_budget"):
        value = getattr(config, name)
        if isinstance(value, int) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _whole(name: str, value: Any, *, minimum: int = 1, optional: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a whole number of at least ``minimum`` (or None if optional)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        what = "a positive whole number" if minimum == 1 else f"a whole number of at least {minimum}"
        raise ConfigError(f"{name}={value!r}: expected {what}" + (" or None" if optional else ""))


def _positive(name: str, value: Any, *, optional: bool = False) -> None:
    """Raise ConfigError unless ``value`` is a positive number (or None if optional)."""
    if optional and value is None:
        return
    if not isinstance(value, float) or not value > 0:
        raise ConfigError(f"{name}={value!r}: expected a positive number" + (" or None" if optional else ""))


def _validate(config: TrainConfig) -> None:
    """Raise ConfigError for settings that cannot train, before any data is read."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(config):
        allowed = typing.get_args(hints[field.name]) if typing.get_origin(hints[field.name]) is Literal else None
        if allowed and getattr(config, field.name) not in allowed:
            raise ConfigError(f"{field.name}={getattr(config, field.name)!r}: expected one of {', '.join(allowed)}")
    if not isinstance(config.image_size, int) or config.image_size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image size {config.image_size!r}: expected a whole number of pixels, "
                          f"at least {MIN_IMAGE_SIZE}")
    for name in ("epochs", "batch_size"):
        _whole(name, getattr(config, name))
    for name in ("epoch_images", "val_images", "limit"):
        _whole(name, getattr(config, name), optional=True)
    for name in ("warmup_epochs", "average_epochs", "seed"):
        _whole(name, getattr(config, name), minimum=0)
    _positive("alpha", config.alpha)
    _positive("learning_rate", config.learning_rate, optional=True)
    _positive("time_budget", config.time_budget, optional=True)
    for name in ("dropout_rate", "weight_decay", "label_smoothing"):
        check_fraction(name, getattr(config, name))
    if config.bn_momentum is not None:
        check_fraction("bn_momentum", config.bn_momentum)
    if config.label_smoothing and config.loss == "cosine":
        raise ConfigError("label_smoothing applies to the cross-entropy losses (bce, balanced_bce, focal), not cosine")
    if not isinstance(config.test_time_flip, bool) or not isinstance(config.run_eagerly, bool):
        raise ConfigError("test_time_flip and run_eagerly: expected True or False")
    _check_shift(config)
    identity_target_names(config.identity_targets)


def _check_shift(config: TrainConfig) -> None:
    """A test-time shift is a whole number of pixels, fewer than the image's shorter side."""
    from celebalib.data import image_shape  # light: TensorFlow is imported inside its functions

    prediction_views(config.test_time_flip, config.test_time_shift, min(image_shape(config.image_size, config.crop)))


# ---------------------------------------------------------------------------------------
# The test-time views a config implies


def prediction_views(flip: bool, shift: int, image_size: int | None = None) -> list[tuple[int, int, bool]]:
    """Test-time views as (dx, dy, mirrored): the image, with ``shift`` > 0 also moved by that many
    pixels left, right, up and down, and with ``flip`` the mirror image of each (1, 2, 5 or 10 views).

    A shift must be a whole number of pixels, below ``image_size`` where given.
    """
    if not isinstance(shift, (int, np.integer)) or isinstance(shift, bool) or shift < 0:
        raise ConfigError(f"test-time shift {shift!r}: expected a whole number of pixels, 0 for none")
    if image_size is not None and shift >= image_size:
        raise ConfigError(f"test-time shift {shift}: expected fewer pixels than the image size, {image_size}")
    moves = [(0, 0)] + ([(-shift, 0), (shift, 0), (0, -shift), (0, shift)] if shift else [])
    return [(dx, dy, mirrored) for dx, dy in moves for mirrored in ((False, True) if flip else (False,))]


def describe_views(views: list[tuple[int, int, bool]]) -> str:
    """Words for ``prediction_views``' list, e.g. "the image and shifts by 3 px, each also mirrored"."""
    shift = max(max(abs(dx), abs(dy)) for dx, dy, _ in views)
    mirrored = any(flipped for _, _, flipped in views)
    words = "the image" + (f" and shifts by {shift} px left, right, up and down" if shift else "")
    if mirrored:
        words += ", each also mirrored" if shift else " and its mirror image"
    return words


# ---------------------------------------------------------------------------------------
# Recipes: the settings for this data and this machine

RECIPES: dict[str, TrainConfig] = {
    # What notebook 03 teaches on the synthetic faces: Adadelta at its paper's rate of 1.0,
    # cross-entropy weighted against each attribute's imbalance, flips only.
    "course": TrainConfig(image_size=64, batch_size=32, epochs=24, alpha=0.35, loss="balanced_bce",
                          optimizer="adadelta", augment="flip"),
    # Real CelebA from scratch on a CPU, chosen by val-split ablations (docs/experiments): the
    # portrait crop at 96 px, full width, whole-pixel shifts, a learned weight per position of the
    # last feature map, ten test-time views; Adadelta at 1.0 as in the course, which beat Adam at
    # 1e-3 on real val with everything else equal (docs/results/opt-adadelta, opt-adam). An epoch
    # is a fixed 20,000 images, so it costs the same on any download; the time budget shortens
    # the cosine schedule on a machine too slow for 28.
    "celeba-cpu": TrainConfig(
        alpha=1.0, image_size=96, crop="portrait", optimizer="adadelta", learning_rate=1.0, lr_schedule="cosine",
        bn_momentum=0.9, batch_size=32, augment="shift", head="depthwise", epochs=28, loss="bce",
        test_time_flip=True, test_time_shift=3, checkpoint_metric="auc", epoch_images=20_000, val_images=5_000,
        time_budget=80.0),
    # The full dataset on a GPU: ImageNet weights, head warm-up with the backbone frozen, then
    # fine-tuning at a tenth of the rate, in mixed precision.
    "celeba-gpu": TrainConfig(
        alpha=1.0, image_size=224, crop="center", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine",
        batch_size=128, augment="flip", epochs=12, warmup_epochs=2, loss="bce", weights="imagenet",
        test_time_flip=True),
}
# Fast mode (CELEBALIB_FAST=1, headless runs and CI): the same recipe shrunk to a few minutes' work.
FAST_CHANGES: dict[str, dict[str, Any]] = {
    "course": {"epochs": 2},
    "celeba-cpu": {"limit": 1_200, "image_size": 64, "alpha": 0.35, "epochs": 2, "time_budget": None,
                   "epoch_images": None, "val_images": None},
    "celeba-gpu": {"limit": 1_200, "image_size": 64, "alpha": 0.35, "epochs": 2, "weights": None,
                   "time_budget": None},
}
# Seconds per train image per epoch (validation included) of the course recipe on 2 CPU cores:
# ``make demo``'s notebook 03 trained 24 epochs of 4,800 synthetic train images at 64 px in 275 s.
COURSE_SECONDS_PER_IMAGE = 275 / 24 / 4_800


@dataclasses.dataclass(frozen=True)
class Recipe:
    """A named TrainConfig for one kind of data and machine, with the minutes it should take there."""

    name: str
    config: TrainConfig
    minutes: float | None  # None: nothing measured on this kind of machine
    how: str  # where ``minutes`` comes from
    fast: bool = False
    changed: tuple[str, ...] = ()  # settings given on top of the recipe

    def describe(self) -> str:
        """Two lines: the recipe with its settings (those that differ from TrainConfig's defaults), the time."""
        settings = ", ".join(f"{k}={v}" for k, v in self.config.changes().items()) or "the defaults"
        mode = " in fast mode" if self.fast else ""
        given = f", with {', '.join(self.changed)} given" if self.changed else ""
        if self.minutes is None:
            time = "not known"
        else:
            time = f"about {self.minutes:.0f} min" if self.minutes >= 2 else f"about {self.minutes * 60:.0f} s"
        return f"Recipe {self.name}{mode}{given}: {settings}\nExpected training time: {time} ({self.how})."

    def with_changes(self, data_root: str | Path, **changes: Any) -> Recipe:
        """The same recipe with ``changes`` to its settings (and its expected time recomputed)."""
        if not changes:
            return self
        config = self.config.replace(**changes)
        minutes, how = _expected_minutes(config, Path(data_root).expanduser(), self.name)
        return Recipe(self.name, config, minutes, how, self.fast, tuple(dict.fromkeys(self.changed + tuple(changes))))


def is_synthetic(data_root: str | Path) -> bool:
    """The one test for real data: whether ``data_root`` holds celebalib's synthetic faces (their
    marker file is there) or is the folder the synthetic set is drawn into when CELEBA_ROOT is unset."""
    from celebalib.synthetic import MARKER

    root = Path(data_root).expanduser()
    return (root / MARKER).is_file() or root.resolve() == read_environment().synthetic_dir


def recipe_name(data_root: str | Path, *, gpu: bool | None = None) -> str:
    """The recipe for the data and the machine: ``course`` for the synthetic faces, ``celeba-gpu``
    for real CelebA where a GPU is present (``gpu`` None asks TensorFlow), else ``celeba-cpu``."""
    if is_synthetic(data_root):
        return "course"
    return "celeba-gpu" if (gpu_available() if gpu is None else gpu) else "celeba-cpu"


def recipe_config(name: str, *, fast: bool, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Recipe ``name``'s settings, shrunk in fast mode (``FAST_CHANGES``), with ``overrides``."""
    if name not in RECIPES:
        raise ConfigError(f"recipe {name!r}: expected one of {', '.join(RECIPES)}")
    config = RECIPES[name].replace(**FAST_CHANGES[name]) if fast else RECIPES[name]
    return config.replace(**overrides) if overrides else config


def default_config(env: Environment | None = None) -> TrainConfig:
    """The settings the environment's data trains with: its recipe, fast mode and single overrides."""
    env = env or read_environment()
    return recipe_config(recipe_name(env.data_root), fast=env.fast, overrides=env.overrides)


def _train_rows(data_root: Path) -> int | None:
    """The train split's rows in the root's partition file, or None where it cannot be read."""
    from celebalib.data import find_layout, read_partition

    try:
        partition = read_partition(data_root / find_layout(data_root).partition)
    except (OSError, ValueError):  # CelebAFormatError is a ValueError: no estimate rather than a failure here
        return None
    return int((partition == "train").sum())


def _expected_minutes(config: TrainConfig, data_root: Path, name: str) -> tuple[float | None, str]:
    """Minutes the training should take and how that was found."""
    if config.time_budget is not None:
        return config.time_budget, "its time budget, which shortens the schedule on a slower machine"
    if name == "celeba-gpu" and config.weights is not None:
        return None, "no GPU measurement"
    images = config.epoch_images or _train_rows(data_root)
    if images is None:
        return None, "the train split could not be counted"
    if config.limit is not None:
        images = min(images, config.limit)
    from celebalib.data import image_shape

    height = image_shape(config.image_size, config.crop)[0]
    # The course's measured cost per image, scaled by pixels and, above alpha 0.5, by about 3 for the width.
    per_image = COURSE_SECONDS_PER_IMAGE * height * config.image_size / 64 ** 2 * (3 if config.alpha > 0.5 else 1)
    return (config.epochs * images * per_image / 60,
            f"{config.epochs} epochs of {images:,} train images, from the course recipe's measured "
            f"{COURSE_SECONDS_PER_IMAGE * 1000:.1f} ms per 64 px image on 2 idle CPU cores; "
            "start-up and graph tracing come on top")


def saved_recipe(name: str, config: TrainConfig, data_root: str | Path) -> Recipe:
    """``config`` (e.g. a saved run's settings) as a recipe called ``name``, with its expected time."""
    minutes, how = _expected_minutes(config, Path(data_root).expanduser(), name)
    return Recipe(name, config, minutes, how)


def named_recipe(name: str, data_root: str | Path, *, fast: bool) -> Recipe:
    """Recipe ``name`` (one of ``RECIPES``), shrunk in fast mode, with the environment's single
    overrides (CELEBALIB_EPOCHS and the like) applied."""
    config = recipe_config(name, fast=fast)
    minutes, how = _expected_minutes(config, Path(data_root).expanduser(), name)
    return Recipe(name, config, minutes, how, fast).with_changes(data_root, **read_environment().overrides)


def resolve_recipe(data_root: str | Path, *, fast: bool, gpu: bool | None = None) -> Recipe:
    """The recipe for the data given and this machine (``recipe_name``); ``fast`` shrinks it to about a minute.

    Real or synthetic is read from the root itself (``is_synthetic``), not from CELEBA_ROOT.
    """
    return named_recipe(recipe_name(data_root, gpu=gpu), data_root, fast=fast)
