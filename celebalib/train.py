"""Training: ``fit`` for notebooks and ``python -m celebalib train`` for the command line.

A run writes into its own folder (see :mod:`celebalib.runs`). Keras's ``BackupAndRestore``
keeps the last finished epoch in ``backup/``, so a run killed mid-epoch resumes at that
epoch when the same command runs again; finished epochs are not repeated.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as dt
import functools
import inspect
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import celebalib
from celebalib import runs
from celebalib.attributes import ATTRIBUTES, PERSON_ATTRIBUTES, attribute_index
from celebalib.averaging import average_epochs
from celebalib.config import get_settings, seed_everything
from celebalib.data import image_shape
from celebalib.errors import ConfigError, RunError, check_fraction
from celebalib.io import atomic_path, write_json, write_text
from celebalib.losses import LOSSES, check_label_smoothing, get_loss
from celebalib.metrics import MeanBalancedAccuracy
from celebalib.model import (AUGMENTATIONS, HEADS, augmentation_mode, batch_norm_layers, build_model, check_head, check_image_size,
                             dtype_policy, set_backbone_trainable)
from celebalib.runs import prediction_views
from celebalib.schedules import CosineSchedule

# Adadelta adapts its own step sizes; the paper's learning rate is 1.0. Keras's default of
# 0.001 shrinks every step a thousandfold and barely moves the weights: on 9,600 genuine
# CelebA training images (128 px, alpha 0.35) one epoch reached validation binary accuracy
# 0.587 with 0.001, against 0.808 with 1.0 (Adam at 0.001: 0.806).
DEFAULT_LEARNING_RATES = {"adadelta": 1.0, "adam": 1e-3}
STRATEGIES = ("default", "mirrored", "multi-worker")
# Variables (matched by name) that weight decay leaves alone: batch-norm scales and offsets, biases.
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")
MONITOR = "val_mean_balanced_accuracy"
# What the best checkpoint may be chosen by (higher is better): the mean balanced accuracy at
# 0.5, or the mean ROC-AUC, which no threshold or calibration affects.
CHECKPOINT_METRICS = {"balanced_accuracy": MONITOR, "auc": "val_mean_auc"}
# Decoded images (uint8) are kept in memory when train + val fit in this many bytes: on a
# CPU, decoding JPEGs every epoch takes cores away from training. The training shuffle buffer
# holds the in-memory cache's own uint8 tensors, not copies (make_dataset casts to float32 only
# after batching), so the cache's bytes are what the input pipeline holds, beside a few batches
# in flight (benchmarks/bench_cache_memory.py measures it).
CACHE_BUDGET = 2 << 30
# Weight averaging keeps each epoch's weights here (``epoch-NN.weights.h5``).
AVERAGING_FOLDER = "averaging"
# config.json key: seconds of the time budget spent when the last finished epoch ended, so a
# resumed run goes on with what is left rather than a whole new budget.
BUDGET_SECONDS = "budget_seconds"
# Settings that must not change when a run resumes.
FIXED_ON_RESUME = ("image_size", "crop", "alpha", "weights", "loss", "label_smoothing", "identity_targets",
                   "optimizer", "batch_size",
                   "augment", "head", "epoch_images")

PRESETS: dict[str, dict[str, Any]] = {
    # From scratch on 2 CPU cores, chosen by val-split ablations on 19,999 genuine CelebA
    # training images (README, "Real CelebA on a CPU"). At 96 px an epoch costs less than half
    # of one at 128 px, so a wider model fits. With flips alone the model overfitted
    # (in 28 epochs the val mean AUC peaked at epoch 16 while training accuracy kept rising).
    # Random shifts stop that. Whole-pixel shifts ("shift") beat zoom plus resampled shifts
    # ("full") on every val figure over 28 epochs: resampling softens a 96 px face, which cost
    # fine details (Big_Nose, Mouth_Slightly_Open) and most of all Blurry. A learned weight per
    # position of the 3x3 feature map ("depthwise" head) beat average pooling on every val
    # figure, by about 0.002. The full-width alpha 1.0 cost about 1.2x per step against 0.75
    # and beat it on every val figure over the same 28 epochs (ROC-AUC +0.004, twice the
    # seed-to-seed spread). Batch 32 instead of 64 costs the same per image on a CPU and gives
    # twice the updates per epoch; it beat batch 64 on every val figure (by 0.0017-0.0028, one
    # seed). best.keras keeps the epoch with the highest val mean AUC. Predictions average ten
    # views (the image and whole-pixel shifts by 3 px left, right, up and down, each mirrored),
    # which beat the image and its mirror alone on four runs' every val figure (ROC-AUC +0.0016
    # to +0.0022); evaluate predicts them once and its second objective reuses them.
    # An epoch is 20,000 training images (the shared root's 19,999 in one pass), so on the full
    # dataset the same 28 epochs see more distinct faces in the same time, validating on the
    # first 5,000 val images. Training stops within 80 minutes, shortening the cosine schedule
    # on a machine too slow for 28 epochs, so training and both evaluations stay within 90.
    # The "portrait" crop (the face square's width with the hair above and the neck below, 112x96
    # at 96 px) beat the face square alone on every val figure at two lengths: over a fixed 11
    # epochs ROC-AUC 0.8983 against 0.8953 with two views, and over 25 epochs 0.9185 against
    # 0.9152 for the square over 28; it costs about 1.17x the pixels per step.
    "celeba-cpu": {
        "alpha": 1.0, "image_size": 96, "crop": "portrait", "optimizer": "adam", "learning_rate": 1e-3,
        "lr_schedule": "cosine", "bn_momentum": 0.9, "batch_size": 32, "augment": "shift", "head": "depthwise",
        "epochs": 28, "loss": "bce", "weights": None, "test_time_flip": True, "test_time_shift": 3,
        "checkpoint_metric": "auc", "epoch_images": 20_000, "val_images": 5_000, "time_budget": 80,
    },
    # The full dataset on a GPU: ImageNet weights, head warm-up with the backbone frozen, then
    # fine-tuning at a tenth of the rate; mixed precision is switched on by itself on a GPU.
    "celeba-gpu": {
        "alpha": 1.0, "image_size": 224, "crop": "center", "optimizer": "adam", "learning_rate": 1e-3,
        "lr_schedule": "cosine", "batch_size": 128, "augment": "flip", "epochs": 12, "warmup_epochs": 2,
        "loss": "bce", "weights": "imagenet", "test_time_flip": True,
    },
}


def make_optimizer(name: str, learning_rate: float | None = None, decay_steps: int | None = None,
                   weight_decay: float = 0.0):
    """Return Adadelta (default lr 1.0) or Adam (1e-3); ``decay_steps`` adds cosine decay.

    ``weight_decay`` is decoupled (AdamW-style): each step shrinks every convolution and dense
    kernel by ``weight_decay * learning rate``; batch-norm scales and offsets and biases are left alone.
    """
    if name not in DEFAULT_LEARNING_RATES:
        raise ConfigError(f"unknown optimizer {name!r}; expected one of {', '.join(DEFAULT_LEARNING_RATES)}")
    rate = DEFAULT_LEARNING_RATES[name] if learning_rate is None else float(learning_rate)
    if not rate > 0:
        raise ConfigError(f"learning rate {learning_rate!r}: expected a positive number")
    check_fraction("weight_decay", weight_decay)
    schedule = CosineSchedule(rate, decay_steps) if decay_steps else rate
    kind = keras.optimizers.Adadelta if name == "adadelta" else keras.optimizers.Adam
    optimizer = kind(schedule, weight_decay=float(weight_decay) or None)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=list(NO_WEIGHT_DECAY))
    return optimizer


def get_strategy(name: str | None) -> tf.distribute.Strategy:
    """Return the default strategy, MirroredStrategy over all local GPUs (the CPU if none), or
    "multi-worker": MultiWorkerMirroredStrategy over the machines the TF_CONFIG variable lists."""
    if name in (None, "default"):
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi-worker":
        return _multi_worker_strategy(os.environ.get("TF_CONFIG", ""))
    raise ConfigError(f"unknown strategy {name!r}; expected one of {', '.join(STRATEGIES)}")


@functools.cache
def _multi_worker_strategy(tf_config: str) -> tf.distribute.Strategy:
    """The process's one MultiWorkerMirroredStrategy (TensorFlow sets up its collectives once)."""
    try:
        cluster = json.loads(tf_config)
        workers, task = cluster["cluster"]["worker"], cluster["task"]
        valid = isinstance(workers, list) and task["type"] in ("worker", "chief") and isinstance(task["index"], int)
    except (ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ConfigError(f"TF_CONFIG={tf_config!r}: strategy multi-worker expects TF_CONFIG set to JSON like "
                          '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}')
    return _MultiWorkerMirroredStrategy()


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy whose ``reduce`` takes a nest of values, and scalars along an axis.

    Keras's ``fit`` reduces the first batch, a pair (images, labels), to build the model, and
    each step's scalar metrics along axis 0; TensorFlow's strategy reduces one value at a time (its
    own TODO: "support `value` being a nest") and raises for axis 0 of a scalar. One machine's
    strategies take other paths in Keras, so only this one needs it.
    """

    def reduce(self, reduce_op, value, axis=None):
        def one(item):
            rank = self.experimental_local_results(item)[0].shape.rank
            return super(_MultiWorkerMirroredStrategy, self).reduce(reduce_op, item, None if rank == 0 else axis)

        return tf.nest.map_structure(one, value)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run folder: always, except for the non-chief workers of a
    multi-worker strategy (the chief is task "chief", else worker 0, as in TensorFlow's tutorial)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()


@contextlib.contextmanager
def precision_policy() -> Iterator[bool]:
    """Use mixed float16 while training when a GPU is present (it only slows CPUs); yield whether."""
    if not tf.config.list_physical_devices("GPU"):
        yield False
        return
    with dtype_policy("mixed_float16"):
        yield True


class HistoryWriter(keras.callbacks.Callback):
    """Rewrite history.csv atomically after each epoch (1-based), keeping earlier runs' rows."""

    def __init__(self, path: Path, phase: str) -> None:
        super().__init__()
        self.path, self.phase = path, phase

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        previous = pd.read_csv(self.path) if self.path.is_file() else pd.DataFrame({"epoch": []})
        # Rows from an epoch that is being repeated after a crash are replaced, never doubled.
        previous = previous[previous["epoch"] <= epoch]
        row = {"epoch": epoch + 1, "phase": self.phase, **{k: float(v) for k, v in (logs or {}).items()}}
        table = pd.concat([previous, pd.DataFrame([row])], ignore_index=True).astype({"epoch": int})
        write_text(self.path, table.to_csv(index=False))


class BestCheckpoint(keras.callbacks.Callback):
    """Save the model atomically whenever the monitored validation figure improves.

    The best value so far is read back from history.csv, so a resumed run compares against
    the epochs it finished before the interruption.
    """

    def __init__(self, path: Path, history: Path, monitor: str = MONITOR) -> None:
        super().__init__()
        self.path, self.history, self.monitor = path, history, monitor
        self.best = -math.inf

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.history.is_file() and self.path.is_file():
            values = pd.read_csv(self.history).get(self.monitor)
            if values is not None and values.notna().any():
                self.best = float(values.max())

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best:
            self.best = float(value)
            runs.save_model(self.model, self.path)


class TimeBudget(keras.callbacks.Callback):
    """End training within ``minutes`` of ``start``, shortening the cosine schedule to fit.

    Machines differ (the celeba-cpu recipe has trained at half the speed on one 2-core machine
    as on another), so a fixed number of epochs cannot promise a wall time. From the second
    epoch this process runs on (the first also traces the graph and decodes the images), the
    median time of its last three epochs after the first (callbacks included) predicts the rest,
    so one slow epoch does not shorten a run and two in a row do: when the planned epochs do not
    fit, the run ends after those that do, and the schedule's ``decay_steps`` shrinks so the
    learning rate still reaches zero there. It never lengthens a run. ``on_shorten(end)``
    hears each new end, and ``on_epoch(seconds)`` the time spent since ``start`` after each epoch.
    """

    def __init__(self, minutes: float, start: float, end: int, schedule: CosineSchedule | None,
                 steps: tuple[int, int], on_shorten: Callable[[int], None],
                 clock: Callable[[], float] = time.monotonic,
                 on_epoch: Callable[[float], None] | None = None) -> None:
        super().__init__()
        self.seconds, self.start, self.end, self.planned_end, self.schedule = minutes * 60, start, end, end, schedule
        self.steps_per_epoch, self.first_epoch = steps
        self.on_shorten, self.on_epoch, self.clock = on_shorten, on_epoch, clock
        self.mark, self.durations = start, []  # this process's epochs, in seconds

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.mark = self.clock()

    def seconds_per_epoch(self) -> float:
        """The predicted time of an epoch: the median of the last three after this process's first."""
        return statistics.median(self.durations[1:][-3:] or self.durations)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # This callback runs after the checkpoint and backup ones, so an epoch's time includes them.
        now = self.clock()
        last, left, done = now - self.mark, self.seconds - (now - self.start), epoch + 1
        self.mark = now
        self.durations.append(last)
        if self.on_epoch is not None:
            self.on_epoch(now - self.start)
        if len(self.durations) >= 2 or left < last:
            fits = done + int(max(left, 0.0) // max(self.seconds_per_epoch(), 1e-9))
            if fits < self.end:
                self.end = max(fits, done)
                if self.schedule is not None:
                    self.schedule.decay_steps.assign(float((self.end - self.first_epoch) * self.steps_per_epoch))
                self.on_shorten(self.end)
        if done >= self.end and self.end < self.planned_end:
            self.model.stop_training = True


class EpochWeights(keras.callbacks.Callback):
    """Keep the weights of every epoch that may be among the last ``count`` before ``end()``.

    Each is written atomically (``io.atomic_path``), so a crash never leaves half a file.
    """

    def __init__(self, folder: Path, count: int, end: Callable[[], int]) -> None:
        super().__init__()
        self.folder, self.count, self.end = folder, count, end

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 > self.end() - self.count:
            self.folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(epoch_weights_file(self.folder, epoch + 1)) as tmp:
                self.model.save_weights(str(tmp))


def epoch_weights_file(folder: Path, epoch: int) -> Path:
    """Where ``EpochWeights`` keeps the weights after ``epoch`` (1-based)."""
    return folder / f"epoch-{epoch:02d}.weights.h5"


def _load_table(data_root: str | Path | None, table: pd.DataFrame | None) -> pd.DataFrame:
    """Return ``table``, or load ``data_root`` (default: the settings' dataset)."""
    from celebalib.data import default_root, load_celeba

    if table is not None:
        return table
    root = Path(data_root).expanduser() if data_root is not None else default_root()
    if not root.is_dir():
        raise ConfigError(f"data root {root} not found; expected a CelebA folder (or omit it for the synthetic set)")
    return load_celeba(root)


def recorded_setting(config: dict[str, Any], key: str) -> Any:
    """A run's value of ``key``: a config.json written before the option existed means fit()'s default."""
    parameter = inspect.signature(fit).parameters.get(key)
    default = None if parameter is None or parameter.default is inspect.Parameter.empty else parameter.default
    return config.get(key, default)


def _start_config(out: Path, options: dict[str, Any]) -> dict[str, Any]:
    """Write config.json for a new run, or check a resumed run's one against ``options``."""
    config_path = out / runs.CONFIG
    if config_path.is_file():
        if (out / runs.FINAL).is_file() and not (out / "backup").exists():
            raise RunError(f"{out}: already holds a finished run; choose another output folder")
        config = runs.read_config(out)
        for key in FIXED_ON_RESUME:
            recorded = recorded_setting(config, key)
            if recorded != options[key]:
                raise RunError(f"{config_path}: {key} is {recorded!r} but this command asks for "
                               f"{options[key]!r}; resume with the same settings or use another folder")
        if options["epochs"] != config.get("planned_epochs"):  # else keep the end its time budget set
            config.update(epochs=options["epochs"])
            config.pop("planned_epochs", None)
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: folder is not empty and holds no run; choose another output folder")
    else:
        created = dt.datetime.now(dt.timezone.utc)
        config = {"run_id": f"{out.name}-{created:%Y%m%dT%H%M%S}", "created": created.isoformat(timespec="seconds"),
                  "attributes": list(ATTRIBUTES), **options, "thresholds": None, "versions": _versions()}
    write_json(config_path, config)
    return config


def _versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on."""
    return {"celebalib": celebalib.__version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _phases(options: dict[str, Any]) -> list[tuple[str, int, int]]:
    """(name, first epoch, end epoch) of each phase: warm-up then fine-tuning when pretrained."""
    epochs = options["epochs"]
    if options["weights"] is None:
        return [("train", 0, epochs)]
    warmup = min(options["warmup_epochs"], epochs)
    return [p for p in (("warmup", 0, warmup), ("finetune", warmup, epochs)) if p[2] > p[1]]


def _compile(model: keras.Model, options: dict[str, Any], phase: tuple[str, int, int], steps: int,
             pos_weights: np.ndarray | None, run_eagerly: bool = False) -> None:
    """Freeze or unfreeze the backbone for ``phase`` and compile with a fresh optimiser."""
    name, first, end = phase
    set_backbone_trainable(model, name != "warmup", pretrained=options["weights"] is not None)
    rate = options["learning_rate"]
    if name == "finetune":
        # Fine-tuning a pretrained backbone needs a much smaller step than training the head.
        rate = (rate if rate is not None else DEFAULT_LEARNING_RATES[options["optimizer"]]) / 10
    decay = steps * (end - first) if options["lr_schedule"] == "cosine" else None
    model.compile(
        optimizer=make_optimizer(options["optimizer"], rate, decay, options["weight_decay"]),
        loss=get_loss(options["loss"], pos_weights, options["label_smoothing"]),
        metrics=training_metrics(model.output_shape[-1]),
        run_eagerly=run_eagerly,
    )


def training_metrics(n_labels: int) -> list[keras.metrics.Metric]:
    """Fresh metrics that training logs (history.csv): accuracy, mean balanced accuracy, mean ROC-AUC."""
    return [keras.metrics.BinaryAccuracy(name="binary_accuracy"), MeanBalancedAccuracy(),
            keras.metrics.AUC(multi_label=True, num_labels=n_labels, name="mean_auc")]


def _callbacks(out: Path, phase: str, monitor: str, extra: Sequence[keras.callbacks.Callback]) -> list:
    """Best checkpoint (by ``monitor``), history, then backup: a crash between them repeats the epoch at worst."""
    history = out / runs.HISTORY
    return [
        BestCheckpoint(out / runs.BEST, history, monitor),
        HistoryWriter(history, phase),
        keras.callbacks.BackupAndRestore(str(out / "backup" / phase), delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False),
        *extra,
    ]


def identity_target_names(identity_targets: str | Sequence[str] | None) -> tuple[str, ...]:
    """The attributes ``identity_targets`` names: "person" means ``PERSON_ATTRIBUTES``; None or "" none."""
    if not identity_targets or identity_targets == "none":
        return ()
    if identity_targets == "person":
        return PERSON_ATTRIBUTES
    names = identity_targets.split(",") if isinstance(identity_targets, str) else list(identity_targets)
    return tuple(ATTRIBUTES[attribute_index(name)] for name in names)


def _check_options(options: dict[str, Any]) -> None:
    """Raise ConfigError for settings that cannot train, before any data is read."""
    check_image_size(options["image_size"])
    if options["loss"] not in LOSSES:
        raise ConfigError(f"unknown loss {options['loss']!r}; expected one of {', '.join(LOSSES)}")
    check_label_smoothing(options["loss"], options["label_smoothing"])
    make_optimizer(options["optimizer"], options["learning_rate"], weight_decay=options["weight_decay"])
    check_fraction("dropout_rate", options["dropout_rate"])
    if not isinstance(options["average_epochs"], int) or options["average_epochs"] < 0:
        raise ConfigError(f"average_epochs={options['average_epochs']!r}: expected a whole number, 0 for none")
    for key in ("epochs", "batch_size", "epoch_images", "val_images"):
        if options[key] is None and key not in ("epochs", "batch_size"):
            continue
        if not isinstance(options[key], int) or options[key] < 1:
            raise ConfigError(f"{key}={options[key]!r}: expected a positive whole number")
    budget = options["time_budget"]
    if budget is not None and not (isinstance(budget, (int, float)) and budget > 0):
        raise ConfigError(f"time_budget={budget!r}: expected a positive number of minutes")
    augmentation_mode(options["augment"])
    identity_target_names(options["identity_targets"])
    prediction_views(bool(options["test_time_flip"]), options["test_time_shift"],
                     min(image_shape(options["image_size"], options["crop"])))
    check_head(options["head"])
    if options["lr_schedule"] not in (None, "cosine"):
        raise ConfigError(f"lr_schedule={options['lr_schedule']!r}: expected None or 'cosine'")
    if options["checkpoint_metric"] not in CHECKPOINT_METRICS:
        raise ConfigError(f"checkpoint_metric={options['checkpoint_metric']!r}: expected one of "
                          f"{', '.join(CHECKPOINT_METRICS)}")
    if options["strategy"] not in STRATEGIES:
        raise ConfigError(f"unknown strategy {options['strategy']!r}; expected one of {', '.join(STRATEGIES)}")


def fit(
    out_dir: str | Path, *, data_root: str | Path | None = None, table: pd.DataFrame | None = None,
    epochs: int, image_size: int, batch_size: int, alpha: float = 0.35, weights: str | None = None,
    loss: str = "bce", label_smoothing: float = 0.0, optimizer: str = "adadelta", learning_rate: float | None = None,
    lr_schedule: str | None = None, limit: int | None = None, seed: int = 0, crop: str = "center",
    dropout_rate: float = 0.2, weight_decay: float = 0.0, augment: bool | str = True,
    bn_momentum: float | None = None, head: str = "average",
    warmup_epochs: int = 2, strategy: str = "default", test_time_flip: bool = False, test_time_shift: int = 0,
    checkpoint_metric: str = "balanced_accuracy",
    epoch_images: int | None = None, val_images: int | None = None, time_budget: float | None = None,
    average_epochs: int = 0, identity_targets: str | Sequence[str] | None = None,
    cache: bool | str = "auto", run_eagerly: bool = False,
    progress: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> runs.Run | None:
    """Train the attribute model into ``out_dir`` (resuming an unfinished run there) and return the Run.

    Under the "multi-worker" strategy only the chief writes ``out_dir`` and returns the Run; the
    other workers write into a temporary folder that is removed at the end, and return None.

    Args:
        data_root: a CelebA root; None uses ``celebalib.data.default_root()``. Ignored if ``table`` is given.
        weights: None (from scratch), "imagenet" or a local weights file. Pretrained runs train
            the head alone for ``warmup_epochs``, then fine-tune everything at a tenth of the rate.
        label_smoothing: train the cross-entropy losses against ``y * (1 - s) + s / 2`` (0: none).
        learning_rate: None means 1.0 for Adadelta (the paper's value) and 1e-3 for Adam.
        dropout_rate: dropout before the 40-way head.
        head: "average" or "depthwise" pooling of the backbone's last feature map (see ``model.HEADS``).
        weight_decay: decoupled weight decay of the kernels (see ``make_optimizer``); 0 for none.
        limit: use at most this many images of each of the train and val splits.
        strategy: "default", "mirrored" for all local GPUs, or "multi-worker" for the machines
            the TF_CONFIG environment variable lists (each runs the same call; see ``is_chief``).
        test_time_flip: recorded in config.json; the run's predictions then average each
            image with its mirror image (see ``Run.predict``). Training is unchanged.
        test_time_shift: recorded in config.json; when above 0 the run's predictions also
            average views shifted by that many pixels left, right, up and down (``runs.prediction_views``).
        checkpoint_metric: "balanced_accuracy" (val mean at 0.5) or "auc" (val mean ROC-AUC)
            chooses which epoch ``best.keras`` holds.
        epoch_images: training images per epoch (rounded up to whole batches), drawn on from a
            reshuffled repeat of the train split; None means one pass over it. Fixed, it makes an
            epoch the same amount of work on any root: on the full dataset the same steps see more images.
        val_images: validate after each epoch on at most the first this many val images (None: all).
        time_budget: minutes of wall time that training may take, counted from this call; a
            resumed run counts on from the time its finished epochs had taken (config.json records
            ``budget_seconds`` after each epoch). Later epochs are dropped, and the cosine
            schedule shortened, when the machine is too slow for them (see ``TimeBudget``;
            config.json then records ``planned_epochs``).
        identity_targets: train these attributes against each identity's mean label over its
            train images instead of each image's own (``data.identity_mean_labels``): "person"
            for ``attributes.PERSON_ATTRIBUTES``, or names (a list, or one comma-separated string).
        average_epochs: when above 0, ``best.keras`` is the mean of the last this many epochs'
            weights (of the last phase), with batch-norm statistics measured again on
            ``averaging.BN_IMAGES`` training images (see ``celebalib.averaging``); ``model.keras`` keeps the
            last epoch's. The epochs' weights stay in ``averaging/``; config.json records the
            averaged model's val figures under ``averaged``.
        cache: keep decoded images in memory after the first epoch; "auto" does so when they
            fit in ``CACHE_BUDGET`` bytes.
        run_eagerly: skip compiling the training step to a graph. Tracing MobileNetV2 costs
            more CPU than a handful of steps do, so tiny runs (tests, smoke checks) are cheaper eagerly.
        callbacks: extra Keras callbacks, run after the run folder's own.
    """
    start = time.monotonic()
    options = {k: v for k, v in locals().items()
               if k not in ("out_dir", "data_root", "table", "cache", "run_eagerly", "progress", "callbacks", "start")}
    options["weights"] = None if weights is None else str(weights)  # a Path must still go into JSON
    if identity_targets is not None and not isinstance(identity_targets, str):
        options["identity_targets"] = list(identity_targets)  # as JSON gives it back on resume
    # A multi-worker strategy must exist before TensorFlow runs anything (_check_options makes an optimizer).
    chief = strategy != "multi-worker" or is_chief(get_strategy(strategy))
    _check_options(options)
    if options["learning_rate"] is None:  # record the rate actually used in config.json
        options["learning_rate"] = DEFAULT_LEARNING_RATES[optimizer]
    seed_everything(seed)
    table = _load_table(data_root, table)
    if names := identity_target_names(identity_targets):
        from celebalib.data import identity_mean_labels

        table = identity_mean_labels(table, names)
    options["data_root"] = table.attrs.get("root", None if data_root is None else str(data_root))
    out = Path(out_dir).expanduser().resolve() if chief else _worker_folder()
    with precision_policy() as mixed:
        options["mixed_precision"] = mixed
        config = _start_config(out, options)
        options["epochs"] = config["epochs"]  # a resumed run keeps an end its time budget set
        start -= config.get(BUDGET_SECONDS, 0.0)  # and the time its finished epochs took
        model = _train(out, table, options, (cache, run_eagerly, progress), callbacks, start)
    if not (out / runs.BEST).is_file():
        runs.save_model(model, out / runs.BEST)
    shutil.rmtree(out / "backup", ignore_errors=True)
    if not chief:
        shutil.rmtree(out)
        return None
    run = runs.Run(out)
    run.update_config(finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return run


def _worker_folder() -> Path:
    """A temporary run folder for a non-chief worker, removed at exit should training fail.

    Every worker must save its models too (saving reads the variables collectively), so it
    writes a copy that no one keeps, as in TensorFlow's multi-worker Keras tutorial.
    """
    folder = Path(tempfile.mkdtemp(prefix="celebalib-worker-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def should_cache(cache: bool | str, n_images: int, image_size: int, crop: str = "center") -> bool:
    """Decide whether to keep decoded images in memory ("auto": when their uint8 pixels, which the
    cache and the shuffle buffer share, fit in CACHE_BUDGET)."""
    if cache == "auto":
        height, width = image_shape(image_size, crop)
        return n_images * height * width * 3 <= CACHE_BUDGET
    return bool(cache)


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    return b if a is None else a if b is None else min(a, b)


def _train(out: Path, table: pd.DataFrame, options: dict[str, Any], switches: tuple[bool | str, bool, bool],
           callbacks: Sequence[keras.callbacks.Callback], start: float) -> keras.Model:
    """Build the model under the strategy and run each phase; return the trained model.

    ``switches`` is (cache, run_eagerly, progress), which change speed but not the result;
    ``start`` is when fit() was called (``time.monotonic``), from which a time budget counts.
    """
    from celebalib.data import make_dataset, positive_weights, split_rows

    cache, run_eagerly, progress = switches
    n_train = len(split_rows(table, "train", options["limit"]))
    val_limit = _smaller(options["limit"], options["val_images"])
    n_val = len(split_rows(table, "val", val_limit))
    common = {"image_size": options["image_size"], "batch_size": options["batch_size"], "crop": options["crop"],
              "seed": options["seed"], "cache": should_cache(cache, n_train + n_val, options["image_size"], options["crop"])}
    train_ds = make_dataset(table, "train", training=True, limit=options["limit"], **common)
    val_ds = make_dataset(table, "val", training=False, limit=val_limit, **common)
    steps, steps_per_epoch = int(train_ds.cardinality()), None
    if options["epoch_images"] is not None:
        steps = steps_per_epoch = math.ceil(options["epoch_images"] / options["batch_size"])
        train_ds = train_ds.repeat()  # Keras keeps one iterator across epochs when steps_per_epoch is set
    pos_weights = positive_weights(table) if options["loss"] == "balanced_bce" else None
    with get_strategy(options["strategy"]).scope():
        model = build_model(image_size=options["image_size"], crop=options["crop"], alpha=options["alpha"], weights=options["weights"],
                            dropout_rate=options["dropout_rate"], augment=options["augment"],
                            bn_momentum=options["bn_momentum"], head=options["head"])
        if options["strategy"] == "multi-worker":
            # Batch statistics over the global batch, as on one machine, so the workers' moving
            # statistics stay equal (each would otherwise keep its own half's).
            for layer in batch_norm_layers(model):
                layer.synchronized = True
        monitor = CHECKPOINT_METRICS[options["checkpoint_metric"]]
        for phase in _phases(options):
            _compile(model, options, phase, steps, pos_weights, run_eagerly)
            budget = None
            if options["time_budget"] is not None:
                budget = _time_budget(out, options, phase, steps, model.optimizer, start, progress)
            end = (lambda b=budget, e=phase[2]: b.end if b is not None else e)
            # The time budget decides an epoch's end before EpochWeights asks for it.
            extra = [budget] if budget is not None else []
            if options["average_epochs"]:
                count = min(options["average_epochs"], phase[2] - phase[1])
                extra.append(EpochWeights(out / AVERAGING_FOLDER, count, end))
            extra += list(callbacks)
            # The dataset shuffles itself (make_dataset), so Keras must not try to.
            model.fit(train_ds, validation_data=val_ds, initial_epoch=phase[1], epochs=phase[2], shuffle=False,
                      steps_per_epoch=steps_per_epoch, callbacks=_callbacks(out, phase[0], monitor, extra),
                      verbose=1 if progress else 0)
            if model.stop_training:  # the time budget ended the run
                break
        runs.save_model(model, out / runs.FINAL)
        if options["average_epochs"]:
            first = max(end() - options["average_epochs"], phase[1]) + 1
            files = [epoch_weights_file(out / AVERAGING_FOLDER, epoch) for epoch in range(first, end() + 1)]
            average_epochs(model, files, train_ds, options["batch_size"])
            figures = model.evaluate(val_ds, return_dict=True, verbose=0)
            runs.save_model(model, out / runs.BEST)
            runs.Run(out).update_config(averaged={"epochs": [first, end()],
                                                  **{f"val_{k}": float(v) for k, v in figures.items()}})
    return model


def _time_budget(out: Path, options: dict[str, Any], phase: tuple[str, int, int], steps: int,
                 optimizer: keras.optimizers.Optimizer, start: float, progress: bool) -> TimeBudget:
    """A TimeBudget for ``phase`` that records a shortened end in config.json (and says so)."""
    planned = options["epochs"]

    def spent(seconds: float) -> None:
        runs.Run(out).update_config(**{BUDGET_SECONDS: round(seconds, 1)})

    def shorten(end: int) -> None:
        run = runs.Run(out)
        run.update_config(epochs=end, planned_epochs=run.config.get("planned_epochs", planned))
        if progress:
            print(f"\ntime budget of {options['time_budget']:g} minutes: the run ends after epoch {end} "
                  f"instead of {planned}, and the learning rate reaches zero there")

    schedule = optimizer._learning_rate if isinstance(optimizer._learning_rate, CosineSchedule) else None
    return TimeBudget(options["time_budget"], start, phase[2], schedule, (steps, phase[1]), shorten, on_epoch=spent)


# ---------------------------------------------------------------------------------------
# Command line: ``python -m celebalib train``

# Command-line options and the fit() argument each sets; None means "not given".
CLI_OPTIONS: dict[str, tuple[type, str]] = {
    "epochs": (int, "passes over the train split"),
    "image_size": (int, "side of the square input images in pixels (at least 32)"),
    "alpha": (float, "MobileNetV2 width multiplier"),
    "weights": (str, "None (from scratch), imagenet, or a local weights file"),
    "loss": (str, f"one of {', '.join(LOSSES)}"),
    "label_smoothing": (float, "cross-entropy against y * (1 - s) + s / 2 instead of 0/1 labels (default 0)"),
    "optimizer": (str, f"one of {', '.join(DEFAULT_LEARNING_RATES)}"),
    "learning_rate": (float, "default 1.0 for adadelta, 1e-3 for adam"),
    "lr_schedule": (str, "cosine for cosine decay (default: constant)"),
    "batch_size": (int, "images per step"),
    "limit": (int, "use at most this many images of each split"),
    "crop": (str, "center (the face square), portrait (the face square's width, with hair and neck) or none"),
    "bn_momentum": (float, "batch-norm momentum (default 0.9 from scratch)"),
    "dropout_rate": (float, "dropout before the head (default 0.2)"),
    "head": (str, f"pooling of the last feature map: {' or '.join(HEADS)} (default average)"),
    "weight_decay": (float, "decoupled weight decay of the kernels, per unit of learning rate (default 0)"),
    "warmup_epochs": (int, "pretrained runs: epochs with the backbone frozen"),
    "seed": (int, "random seed"),
    "strategy": (str, "default, mirrored for all local GPUs, or multi-worker for the machines TF_CONFIG lists"),
    "checkpoint_metric": (str, "best.keras by val balanced_accuracy (default) or auc"),
    "epoch_images": (int, "training images per epoch (default: one pass over the train split)"),
    "val_images": (int, "validate each epoch on at most this many val images (default: all)"),
    "time_budget": (float, "minutes training may take; the schedule is shortened to fit (default: none)"),
    "identity_targets": (str, "person, or comma-separated attributes, trained against each identity's mean "
                              "label over its train images (default: none)"),
    "average_epochs": (int, "best.keras averages the last N epochs' weights, batch norm measured again (default 0)"),
    "test_time_shift": (int, "predictions also average views shifted by this many pixels left, right, up and down "
                             "(default 0: none)"),
}


def resolve_options(args: argparse.Namespace) -> dict[str, Any]:
    """Merge settings defaults, then the preset, then explicit flags (which win)."""
    settings = get_settings()
    options: dict[str, Any] = {"epochs": settings.epochs, "image_size": settings.image_size,
                               "batch_size": settings.batch_size, "seed": settings.seed}
    if args.preset is not None:
        if args.preset not in PRESETS:
            raise ConfigError(f"unknown preset {args.preset!r}; expected one of {', '.join(PRESETS)}")
        options.update(PRESETS[args.preset])
    options.update({name: getattr(args, name) for name in CLI_OPTIONS if getattr(args, name) is not None})
    if options.get("weights") in ("None", "none"):
        options["weights"] = None
    if args.augment is not None:
        options["augment"] = args.augment
    if args.no_augment:
        options["augment"] = "none"
    if args.test_time_flip is not None:
        options["test_time_flip"] = args.test_time_flip == "on"
    return options


def _train_command(args: argparse.Namespace) -> int:
    """Train from the command line and print where the run went."""
    run = fit(args.out, data_root=args.data, progress=not args.quiet, **resolve_options(args))
    if run is None:
        print(f"worker finished; the chief worker wrote the run folder {args.out}")
        return 0
    monitor = CHECKPOINT_METRICS[run.config["checkpoint_metric"]]
    if "averaged" in run.config:
        first, last = run.config["averaged"]["epochs"]
        what, value = f"the weights of epochs {first}-{last} averaged, ", run.config["averaged"][monitor]
    else:
        what, value = "", run.history()[monitor].max()
    print(f"run {run.run_id} -> {run.path} (best.keras: {what}{monitor} {value:.3f})")
    return 0


def configure_train_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``train`` arguments; defaults come from the settings, then ``--preset``."""
    parser.add_argument("--data", help="CelebA root (default: CELEBA_ROOT, else the synthetic set)")
    parser.add_argument("--out", required=True, help="run folder to create, or to resume")
    parser.add_argument("--preset", help=f"named settings: {', '.join(PRESETS)}; explicit flags override it")
    for name, (kind, text) in CLI_OPTIONS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, default=None, help=text)
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=None,
                        help="full: flips, zoom and shifts (default); shift: flips and whole-pixel shifts; flip: flips only; none")
    parser.add_argument("--no-augment", action="store_true", help="the same as --augment none")
    parser.add_argument("--test-time-flip", choices=("on", "off"), default=None,
                        help="predictions average each image with its mirror image (default off)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_train_command)
