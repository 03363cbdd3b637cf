"""Training settings: one validated ``TrainConfig``, the named recipes, and the ``train`` options built from them.

``TrainConfig`` is what ``train.fit`` takes, what a run's config.json records (with
``SCHEMA_VERSION``) and what the ``train`` command line is generated from: each field carries
its help text and whether a resumed run must keep it. A recipe is a ``TrainConfig`` chosen for
the data and the machine (:func:`resolve_recipe`). This module imports neither TensorFlow nor
Keras, so ``python -m celebalib train --help`` answers at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Optional, Union

from celebalib.attributes import ATTRIBUTES, PERSON_ATTRIBUTES, attribute_index
from celebalib.errors import ConfigError, check_fraction

SCHEMA_VERSION = 1
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
        """The JSON form config.json records: the fields, the learning rate actually used, the schema version."""
        values = self.to_dict()
        values["learning_rate"] = self.learning_rate_used
        if isinstance(self.identity_targets, tuple):
            values["identity_targets"] = list(self.identity_targets)
        return {"schema_version": SCHEMA_VERSION, **values}

    @classmethod
    def from_json(cls, config: Mapping[str, Any], source: str | Path = "config.json") -> TrainConfig:
        """The settings recorded in a config.json (other keys, such as run_id, are ignored).

        A config without ``schema_version`` was written before it existed: it loads through
        :func:`migrate_v0`, whose defaults are those of that time. A config of this schema must
        hold every field, so adding a field means a new ``SCHEMA_VERSION`` and a migration that
        gives older configs the value they trained with.
        """
        version = config.get("schema_version")
        if version is None:
            config = migrate_v0(config)
        elif version != SCHEMA_VERSION:
            raise ConfigError(f"{source}: schema_version {version!r}; this celebalib reads {SCHEMA_VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        if missing := [name for name in names if name not in config]:
            raise ConfigError(f"{source}: schema_version {SCHEMA_VERSION} but no {', '.join(sorted(missing))}")
        try:
            return cls(**{k: v for k, v in config.items() if k in names})
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
    from celebalib.runs import prediction_views

    prediction_views(config.test_time_flip, config.test_time_shift, min(image_shape(config.image_size, config.crop)))


# ---------------------------------------------------------------------------------------
# Old run folders

# fit()'s defaults when config.json had no schema_version, frozen here: changing a default
# later must never change what an old run means.
V0_DEFAULTS: dict[str, Any] = {
    "alpha": 0.35, "weights": None, "loss": "bce", "label_smoothing": 0.0, "optimizer": "adadelta",
    "learning_rate": None, "lr_schedule": None, "limit": None, "seed": 0, "crop": "center", "dropout_rate": 0.2,
    "weight_decay": 0.0, "augment": True, "bn_momentum": None, "head": "average", "warmup_epochs": 2,
    "strategy": "default", "test_time_flip": False, "test_time_shift": 0, "checkpoint_metric": "balanced_accuracy",
    "epoch_images": None, "val_images": None, "time_budget": None, "average_epochs": 0, "identity_targets": None,
    "cache": "auto", "run_eagerly": False,
}


def migrate_v0(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config.json written before ``schema_version`` existed, in the current schema: the settings
    it lacks take the defaults of that time, and its ``mixed_precision`` flag becomes ``precision``."""
    out = {**V0_DEFAULTS, **config, "schema_version": SCHEMA_VERSION}
    out["precision"] = "mixed_float16" if config.get("mixed_precision") else "float32"
    return out


# ---------------------------------------------------------------------------------------
# Recipes: the settings for this data and this machine

RECIPES: dict[str, TrainConfig] = {
    # What notebook 03 teaches on the synthetic faces: Adadelta at its paper's rate of 1.0,
    # cross-entropy weighted against each attribute's imbalance, flips only.
    "course": TrainConfig(image_size=64, batch_size=32, epochs=24, alpha=0.35, loss="balanced_bce",
                          optimizer="adadelta", augment="flip"),
    # Real CelebA from scratch on a CPU, chosen by val-split ablations (docs/experiments): the
    # portrait crop at 96 px, full width, whole-pixel shifts, a learned weight per position of the
    # last feature map, ten test-time views. An epoch is a fixed 20,000 images, so it costs the same
    # on any download; the time budget shortens the cosine schedule on a machine too slow for 28.
    "celeba-cpu": TrainConfig(
        alpha=1.0, image_size=96, crop="portrait", optimizer="adam", learning_rate=1e-3, lr_schedule="cosine",
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
    """Whether ``data_root`` holds celebalib's synthetic faces (``synthetic.MARKER`` is there)."""
    from celebalib.synthetic import MARKER

    return (Path(data_root).expanduser() / MARKER).is_file()


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
    height = round(config.image_size * 208 / 178 / 8) * 8 if config.crop == "portrait" else config.image_size
    # The course's measured cost per image, scaled by pixels and, above alpha 0.5, by about 3 for the width.
    per_image = COURSE_SECONDS_PER_IMAGE * height * config.image_size / 64 ** 2 * (3 if config.alpha > 0.5 else 1)
    return (config.epochs * images * per_image / 60,
            f"{config.epochs} epochs of {images:,} train images, from the course recipe's measured "
            f"{COURSE_SECONDS_PER_IMAGE * 1000:.1f} ms per 64 px image on 2 idle CPU cores; "
            "start-up and graph tracing come on top")


def named_recipe(name: str, data_root: str | Path, *, fast: bool) -> Recipe:
    """Recipe ``name`` (one of ``RECIPES``), shrunk in fast mode, with the environment's single
    overrides (``environment_overrides``) applied."""
    if name not in RECIPES:
        raise ConfigError(f"recipe {name!r}: expected one of {', '.join(RECIPES)}")
    config = RECIPES[name].replace(**FAST_CHANGES[name]) if fast else RECIPES[name]
    minutes, how = _expected_minutes(config, Path(data_root).expanduser(), name)
    return Recipe(name, config, minutes, how, fast).with_changes(data_root, **environment_overrides())


def resolve_recipe(data_root: str | Path, *, fast: bool, gpu: bool | None = None) -> Recipe:
    """The recipe for the data given and this machine: ``course`` for the synthetic faces,
    ``celeba-cpu`` or ``celeba-gpu`` for real CelebA; ``fast`` shrinks it to about a minute.

    Real or synthetic is read from the root itself (the synthetic set's marker file), not from
    CELEBA_ROOT. ``gpu`` None asks TensorFlow, for real data only.
    """
    if is_synthetic(data_root):
        return named_recipe("course", data_root, fast=fast)
    if gpu is None:
        from celebalib.config import gpu_available

        gpu = gpu_available()
    return named_recipe("celeba-gpu" if gpu else "celeba-cpu", data_root, fast=fast)


# ---------------------------------------------------------------------------------------
# The ``train`` command line, generated from the fields


# What an optional setting given as "none" parses to, so "--time-budget none" can clear a recipe's budget.
CLEARED = object()


def _optional(kind: type) -> Any:
    """An argparse type that also accepts "none" (as ``CLEARED``) for None."""
    def convert(text: str) -> Any:
        return CLEARED if text.lower() == "none" else kind(text)
    convert.__name__ = kind.__name__
    return convert


def _on_off(text: str) -> bool:
    """on/off (also true/false, yes/no, 1/0) as a bool."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: expected on or off")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per TrainConfig field (``--image-size`` for image_size); unset options stay None."""
    hints = typing.get_type_hints(TrainConfig)
    group = parser.add_argument_group("training settings (default: the recipe's; 'none' clears an optional one)")
    for field in dataclasses.fields(TrainConfig):
        kind, flag = hints[field.name], f"--{field.name.replace('_', '-')}"
        text = f"{field.metadata['help']} ({recipe_values(field.name)})"
        options: dict[str, Any] = {"default": None, "help": text, "dest": field.name}
        allowed = choices(field.name) if typing.get_origin(kind) is Literal else None
        if allowed:
            options["choices"] = allowed
        elif kind is bool:
            options.update(type=_on_off, metavar="{on,off}")
        elif field.name in ("weights", "identity_targets"):
            options["type"] = _optional(str)
        else:
            base = next(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
            options["type"] = _optional(base) if type(None) in typing.get_args(kind) else base
        group.add_argument(flag, **options)
    group.add_argument("--no-augment", dest="augment", action="store_const", const="none",
                       help="the same as --augment none")


def _shown(value: Any) -> str:
    """A setting as the command line spells it: on/off for booleans, none for None."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def recipe_values(name: str) -> str:
    """What each recipe sets ``name`` to, for --help: "every recipe: 32" or "course 64, celeba-cpu 96, ..."."""
    values = {recipe: _shown(getattr(config, name)) for recipe, config in RECIPES.items()}
    if len(set(values.values())) == 1:
        return f"every recipe: {next(iter(values.values()))}"
    return ", ".join(f"{recipe} {value}" for recipe, value in values.items())


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line (those not None)."""
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    return {name: None if value is CLEARED else value for name, value in given.items()}


def recipe_table() -> str:
    """One line per recipe with its settings that differ from TrainConfig's defaults, for --help."""
    return "\n".join(f"  {name}: " + ", ".join(f"{k}={v}" for k, v in config.changes().items())
                     for name, config in RECIPES.items())


def environment_overrides() -> dict[str, Any]:
    """CELEBALIB_EPOCHS, CELEBALIB_IMAGE_SIZE and CELEBALIB_BATCH_SIZE where set (single overrides)."""
    from celebalib.config import _env_int

    names = {"CELEBALIB_EPOCHS": "epochs", "CELEBALIB_IMAGE_SIZE": "image_size", "CELEBALIB_BATCH_SIZE": "batch_size"}
    return {field: _env_int(var, 1) for var, field in names.items() if os.environ.get(var, "").strip()}


def resolve_from_args(args: argparse.Namespace) -> tuple[Recipe, Path | None]:
    """The recipe a ``train`` command line asks for and its ``--data`` root (None: the settings' data):
    ``--recipe``, else the one for the data and machine (``resolve_recipe``), then the flags given."""
    from celebalib.config import get_settings

    settings = get_settings()
    root = Path(args.data).expanduser() if args.data else settings.data_root
    if args.data and not root.is_dir():
        raise ConfigError(f"data root {root} not found; expected a CelebA folder (or omit it for the synthetic set)")
    if args.recipe:
        recipe = named_recipe(args.recipe, root, fast=settings.fast)
    elif not args.data and not settings.uses_real_data:  # the synthetic set, drawn when training starts
        recipe = named_recipe("course", root, fast=settings.fast)
    else:
        recipe = resolve_recipe(root, fast=settings.fast)
    return recipe.with_changes(root, **given_settings(args)), (root if args.data else None)


def _run_train(args: argparse.Namespace) -> int:
    """The ``train`` handler: TensorFlow is imported here, after the arguments are parsed."""
    from celebalib.train import train_command

    return train_command(args)


def configure_train_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments: data, output, recipe, and one option per TrainConfig field."""
    parser.epilog = ("example:\n  python -m celebalib train --data /path/to/celeba --out runs/celeba-cpu\n\n"
                     "Without --recipe, the recipe follows the data and the machine: course for the synthetic "
                     "faces, celeba-cpu or celeba-gpu for real CelebA; CELEBALIB_FAST=1 shrinks it. Recipes:\n"
                     + recipe_table())
    parser.add_argument("--data", help="CelebA root (default: CELEBA_ROOT, else the synthetic set)")
    parser.add_argument("--out", required=True, help="run folder to create, or to resume")
    parser.add_argument("--recipe", "--preset", dest="recipe", choices=tuple(RECIPES),
                        help="named settings (default: the recipe for the data and machine); flags override it")
    parser.add_argument("--quiet", action="store_true", help="no line per epoch")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    add_config_arguments(parser)
    parser.set_defaults(handler=_run_train)
