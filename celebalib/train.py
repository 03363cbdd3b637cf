"""Training: ``fit``, which notebooks and ``python -m celebalib train`` (:mod:`celebalib.train_cli`) call.

A run writes into its own folder (see :mod:`celebalib.runs`), its record through ``runs.Run``'s named writes. Keras's ``BackupAndRestore``
keeps the last finished epoch in ``backup/``, so a run killed mid-epoch resumes at that
epoch when the same command runs again; finished epochs are not repeated.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from time import monotonic
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

import celebalib
from celebalib import runs
from celebalib.averaging import average_epochs
from celebalib.data import image_shape
from celebalib.errors import ConfigError, RunError, check_fraction
from celebalib.io import atomic_path, write_text
from celebalib.losses import get_loss
from celebalib.metrics import MeanBalancedAccuracy
from celebalib.model import batch_norm_layers, build_model, dtype_policy, set_backbone_trainable
from celebalib.recipes import CHECKPOINT_METRICS, DEFAULT_LEARNING_RATES, TrainConfig, choices, fixed_on_resume
from celebalib.schedules import CosineSchedule

# Variables (matched by name) that weight decay leaves alone: batch-norm scales and offsets, biases.
NO_WEIGHT_DECAY = ("gamma", "beta", "bias")
MONITOR = CHECKPOINT_METRICS["balanced_accuracy"]
# Decoded images (uint8) are kept in memory when train + val fit in this many bytes: on a
# CPU, decoding JPEGs every epoch takes cores away from training. The training shuffle buffer
# holds the in-memory cache's own uint8 tensors, not copies (make_dataset casts to float32 only
# after batching), so the cache's bytes are what the input pipeline holds, beside a few batches
# in flight (benchmarks/bench_cache_memory.py measures it).
CACHE_BUDGET = 2 << 30


def make_optimizer(name: str, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
                   weight_decay: float = 0.0) -> keras.optimizers.Optimizer:
    """Return Adadelta (default lr 1.0) or Adam (1e-3) at ``learning_rate`` (a number or a schedule).

    ``weight_decay`` is decoupled (AdamW-style): each step shrinks every convolution and dense
    kernel by ``weight_decay * learning rate``; batch-norm scales and offsets and biases are left alone.
    """
    if name not in DEFAULT_LEARNING_RATES:
        raise ConfigError(f"optimizer={name!r}: expected one of {', '.join(DEFAULT_LEARNING_RATES)}")
    rate = DEFAULT_LEARNING_RATES[name] if learning_rate is None else learning_rate
    if not isinstance(rate, keras.optimizers.schedules.LearningRateSchedule) and not float(rate) > 0:
        raise ConfigError(f"learning_rate={learning_rate!r}: expected a positive number")
    check_fraction("weight_decay", weight_decay)
    kind = keras.optimizers.Adadelta if name == "adadelta" else keras.optimizers.Adam
    optimizer = kind(rate, weight_decay=float(weight_decay) or None)
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
    raise ConfigError(f"strategy={name!r}: expected one of {', '.join(choices('strategy'))}")


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
def precision_policy(precision: str = "auto") -> Iterator[str]:
    """Train under Keras's dtype policy ``precision`` and yield its name; "auto" means mixed
    float16 when a GPU is present and float32 otherwise (mixed precision only slows CPUs)."""
    name = precision
    if precision == "auto":
        name = "mixed_float16" if tf.config.list_physical_devices("GPU") else "float32"
    with dtype_policy(name):
        yield name


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed Python, NumPy, TensorFlow and Keras for a run; give Python's and NumPy's global
    generators back their state afterwards, so the caller's random draws go on as before.

    ``keras.utils.set_random_seed`` is the one public way to make Keras's weight initialisers
    and dropout repeat; TensorFlow's global seed has no public getter, so it stays at ``seed``.
    """
    python_state, numpy_state = random.getstate(), np.random.get_state()
    keras.utils.set_random_seed(seed)
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


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
                 clock: Callable[[], float] = monotonic,
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


class EpochLine(keras.callbacks.Callback):
    """Print one line per epoch: its number, its time, and the loss and ``monitor`` on train and val."""

    def __init__(self, epochs: int, monitor: str) -> None:
        super().__init__()
        self.epochs, self.keys = epochs, ("loss", "val_loss", monitor.removeprefix("val_"), monitor)
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.perf_counter()  # not ``monotonic``, which tests replace with a ticking clock

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        figures = ", ".join(f"{key} {float(logs[key]):.4f}" for key in self.keys if key in (logs or {}))
        print(f"epoch {epoch + 1}/{self.epochs} ({time.perf_counter() - self.started:.0f} s): {figures}", flush=True)


class EpochWeights(keras.callbacks.Callback):
    """Keep the weights of every epoch that may be among the last ``count`` before ``end()``.

    Each is written atomically (``io.atomic_path``), so a crash never leaves half a file.
    """

    def __init__(self, files: runs.RunFiles, count: int, end: Callable[[], int]) -> None:
        super().__init__()
        self.files, self.count, self.end = files, count, end

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 > self.end() - self.count:
            with atomic_path(self.files.epoch_weights(epoch + 1)) as tmp:
                self.model.save_weights(str(tmp))


class EpochRecorder(keras.callbacks.Callback):
    """Record each finished epoch in the run's record (``Run.record_epoch``)."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        runs.Run(self.folder).record_epoch(epoch + 1)


def _load_table(data_root: str | Path | None, table: pd.DataFrame | None) -> pd.DataFrame:
    """Return ``table``, or load ``data_root`` (default: the settings' dataset)."""
    from celebalib.data import default_root, load_celeba

    if table is not None:
        return table
    root = Path(data_root).expanduser() if data_root is not None else default_root()
    if not root.is_dir():
        raise ConfigError(f"data root {root} not found; expected a CelebA folder (or omit it for the synthetic set)")
    return load_celeba(root)


def _start_record(out: Path, config: TrainConfig, facts: runs.Facts, table: pd.DataFrame) -> runs.RunRecord:
    """Write the record of a new run, or check a resumed run's against ``config`` and update it; return it.

    A new run also records the train split's label rates from ``table``'s annotations
    (``runs.train_label_rates``); a resumed one keeps its own. A resumed run asking for the epochs
    it asked for before keeps the end its time budget set; asking for others drops it.
    """
    files = runs.RunFiles(out)
    if files.config.is_file():
        if files.final.is_file() and not files.backup.exists():
            raise RunError(f"{out}: already holds a finished run; choose another output folder")
        recorded = runs.read_record(out)
        for key in fixed_on_resume():
            if getattr(recorded.settings, key) != getattr(config, key):
                raise RunError(f"{files.config}: {key} is {getattr(recorded.settings, key)!r} but this command asks "
                               f"for {getattr(config, key)!r}; resume with the same settings or use another folder")
        run = runs.Run(out)
        if recorded.settings.epochs != config.epochs and recorded.progress.budget_end is not None:
            run.record_budget_end(None)
        return run.record_resumed(config, facts)
    if out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: folder is not empty and holds no run; choose another output folder")
    record = runs.RunRecord.new(out.name, config,
                                dataclasses.replace(facts, train_label_rates=runs.train_label_rates(table)))
    runs.write_record(out, record)
    return record


def _versions() -> dict[str, str]:
    """Versions of the libraries a saved model depends on."""
    return {"celebalib": celebalib.__version__, "keras": keras.__version__, "tensorflow": tf.__version__}


def _phases(config: TrainConfig) -> list[tuple[str, int, int]]:
    """(name, first epoch, end epoch) of each phase: warm-up then fine-tuning when pretrained."""
    if config.weights is None:
        return [("train", 0, config.epochs)]
    warmup = min(config.warmup_epochs, config.epochs)
    return [p for p in (("warmup", 0, warmup), ("finetune", warmup, config.epochs)) if p[2] > p[1]]


def _compile(model: keras.Model, config: TrainConfig, phase: tuple[str, int, int], steps: int,
             pos_weights: np.ndarray | None) -> CosineSchedule | None:
    """Freeze or unfreeze the backbone for ``phase``, compile with a fresh optimiser; return its cosine schedule.

    The schedule is returned rather than read back from the optimiser: under mixed float16
    ``compile`` wraps the optimiser in a ``LossScaleOptimizer``, whose learning rate is not it.
    """
    name, first, end = phase
    set_backbone_trainable(model, name != "warmup", pretrained=config.weights is not None)
    rate = config.learning_rate_used
    if name == "finetune":
        rate /= 10  # fine-tuning a pretrained backbone needs a much smaller step than training the head
    schedule = CosineSchedule(rate, steps * (end - first)) if config.lr_schedule == "cosine" else None
    model.compile(
        optimizer=make_optimizer(config.optimizer, schedule or rate, config.weight_decay),
        loss=get_loss(config.loss, pos_weights, config.label_smoothing),
        metrics=training_metrics(model.output_shape[-1]),
        run_eagerly=config.run_eagerly,
    )
    return schedule


def training_metrics(n_labels: int) -> list[keras.metrics.Metric]:
    """Fresh metrics that training logs (history.csv): accuracy, mean balanced accuracy, mean ROC-AUC."""
    return [keras.metrics.BinaryAccuracy(name="binary_accuracy"), MeanBalancedAccuracy(),
            keras.metrics.AUC(multi_label=True, num_labels=n_labels, name="mean_auc")]


def _callbacks(out: Path, phase: str, monitor: str, extra: Sequence[keras.callbacks.Callback]) -> list:
    """Best checkpoint (by ``monitor``), history, backup, then the record's epoch count: a crash
    between them repeats the epoch at worst."""
    files = runs.RunFiles(out)
    return [
        BestCheckpoint(files.best, files.history, monitor),
        HistoryWriter(files.history, phase),
        keras.callbacks.BackupAndRestore(str(files.backup / phase), delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(files.logs), write_graph=False),
        EpochRecorder(out),
        *extra,
    ]


def _config_of(config: TrainConfig | None, overrides: dict[str, Any]) -> TrainConfig:
    """``config`` (default: TrainConfig()) with keyword ``overrides``; unknown names are a ConfigError."""
    if config is not None and not isinstance(config, TrainConfig):
        raise ConfigError(f"config={config!r}: expected a TrainConfig (or keyword settings)")
    return (config or TrainConfig()).replace(**overrides) if overrides else (config or TrainConfig())


def fit(out_dir: str | Path, config: TrainConfig | None = None, *, data_root: str | Path | None = None,
        table: pd.DataFrame | None = None, progress: bool | str = True,
        callbacks: Sequence[keras.callbacks.Callback] = (), **field_overrides: Any) -> runs.Run | None:
    """Train the attribute model into ``out_dir`` (resuming an unfinished run there) and return the Run.

    Under the "multi-worker" strategy only the chief writes ``out_dir`` and returns the Run; the
    other workers write into a temporary folder that is removed at the end, and return None.

    Args:
        config: the settings (``recipes.TrainConfig``; each field documents itself); None means
            TrainConfig(). ``field_overrides`` replace single fields, e.g. ``fit(out, epochs=2)``.
        data_root: a CelebA root; None uses ``celebalib.data.default_root()``. Ignored if ``table`` is given.
        progress: True shows Keras's progress bar, "epochs" one line per epoch (``EpochLine``), False
            nothing; either of the first two also says when a time budget shortens the run.
        callbacks: extra Keras callbacks, run after the run folder's own.

    A time budget counts from this call; a resumed run counts on from the time its finished
    epochs had taken (the record's ``progress.seconds``). Python's and NumPy's global random
    generators are left as they were (see ``seeded``).
    """
    start = monotonic()
    config = _config_of(config, field_overrides)
    # A multi-worker strategy must exist before TensorFlow runs anything.
    chief = config.strategy != "multi-worker" or is_chief(get_strategy(config.strategy))
    table = _load_table(data_root, table)
    labels = table
    if names := config.identity_target_names:
        from celebalib.data import identity_mean_labels

        labels = identity_mean_labels(table, names)
    root = table.attrs.get("root", None if data_root is None else str(data_root))
    out = Path(out_dir).expanduser().resolve() if chief else _worker_folder()
    with precision_policy(config.precision) as policy, seeded(config.seed):
        facts = runs.Facts(data_root=root, data_kind=_data_kind(root), images=_split_sizes(table, config),
                           learning_rate=config.learning_rate_used, dtype_policy=policy, versions=_versions())
        record = _start_record(out, config, facts, table)
        start -= record.progress.seconds  # a resumed run counts on from the time its finished epochs took
        model = _train(out, labels, config, progress, callbacks, start, end=record.end_epoch)
    files = runs.RunFiles(out)
    if not chief:
        shutil.rmtree(out)
        return None
    if not files.best.is_file():
        runs.save_model(model, files.best)
    shutil.rmtree(files.backup, ignore_errors=True)
    run = runs.Run(out)
    run.record_finished()
    return run


def _data_kind(root: str | None) -> str | None:
    """"synthetic" or "celeba" for a data root (``recipes.is_synthetic``), None for a table without one."""
    from celebalib.recipes import is_synthetic

    return None if root is None else "synthetic" if is_synthetic(root) else "celeba"


def _split_sizes(table: pd.DataFrame, config: TrainConfig) -> dict[str, int]:
    """The train and val images training draws from, after ``limit`` and ``val_images``."""
    from celebalib.data import split_rows

    return {"train": len(split_rows(table, "train", config.limit)),
            "val": len(split_rows(table, "val", _smaller(config.limit, config.val_images)))}


def fit_or_reuse(out_dir: str | Path, config: TrainConfig, *, data_root: str | Path, retrain: bool = False,
                 progress: bool | str = "epochs") -> runs.Run:
    """Open the finished run in ``out_dir`` if it trained ``config`` on ``data_root``, else train it there.

    A run of the same settings that did not finish resumes from its last epoch. The stored run may
    have ended before ``config.epochs`` (its time budget ended it: its settings still say what was
    asked), and its dtype policy may differ (which changes speed, not what is learnt); any other
    difference, such as a quick one-epoch stand-in, or ``retrain``, trains the folder afresh.
    """
    out = Path(out_dir).expanduser().resolve()
    if runs.RunFiles(out).config.is_file() and not retrain:
        record = runs.read_record(out)
        same_data = Path(record.facts.data_root or "").resolve() == Path(data_root).expanduser().resolve()
        # An old record keeps the learning rate used, not the one asked for: compare those.
        used = record.settings.replace(learning_rate=record.settings.learning_rate_used)
        changed = set(used.changes(config.replace(learning_rate=config.learning_rate_used))) - {"precision"}
        if same_data and not changed and record.progress.finished:
            if progress:
                from celebalib.config import display_path

                print(f"Reusing the finished run {record.run_id} in {display_path(out)} (retrain=True trains it "
                      "again).")
            return runs.open_run(out)
        if same_data and not changed:
            return fit(out, config, data_root=data_root, progress=progress)
    shutil.rmtree(out, ignore_errors=True)
    return fit(out, config, data_root=data_root, progress=progress)


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
    cache and the shuffle buffer share, fit in CACHE_BUDGET; "on", "off")."""
    if cache == "auto":
        height, width = image_shape(image_size, crop)
        return n_images * height * width * 3 <= CACHE_BUDGET
    return cache in (True, "on")


def _smaller(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    return b if a is None else a if b is None else min(a, b)


def _train(out: Path, table: pd.DataFrame, config: TrainConfig, progress: bool | str,
           callbacks: Sequence[keras.callbacks.Callback], start: float, end: int) -> keras.Model:
    """Build the model under the strategy and run each phase up to epoch ``end``; return the trained model.

    ``start`` is when fit() was called (``monotonic``), from which a time budget counts; ``end`` is
    ``config.epochs``, or the earlier end a resumed run's time budget set.
    """
    from celebalib.data import make_dataset, positive_weights

    sizes, val_limit = _split_sizes(table, config), _smaller(config.limit, config.val_images)
    files, asked = runs.RunFiles(out), config.epochs
    config = config.replace(epochs=end)  # the phases and the schedule end where training ends
    common = {"image_size": config.image_size, "batch_size": config.batch_size, "crop": config.crop, "seed": config.seed,
              "cache": should_cache(config.cache, sizes["train"] + sizes["val"], config.image_size, config.crop)}
    train_ds = make_dataset(table, "train", training=True, limit=config.limit, **common)
    val_ds = make_dataset(table, "val", training=False, limit=val_limit, **common)
    steps, steps_per_epoch = int(train_ds.cardinality()), None
    if config.epoch_images is not None:
        steps = steps_per_epoch = math.ceil(config.epoch_images / config.batch_size)
        train_ds = train_ds.repeat()  # Keras keeps one iterator across epochs when steps_per_epoch is set
    pos_weights = positive_weights(table) if config.loss == "balanced_bce" else None
    with get_strategy(config.strategy).scope():
        model = build_model(image_size=config.image_size, crop=config.crop, alpha=config.alpha, weights=config.weights,
                            dropout_rate=config.dropout_rate, augment=config.augment,
                            bn_momentum=config.bn_momentum, head=config.head)
        if config.strategy == "multi-worker":
            # Batch statistics over the global batch, as on one machine, so the workers' moving
            # statistics stay equal (each would otherwise keep its own half's).
            for layer in batch_norm_layers(model):
                layer.synchronized = True
        monitor = CHECKPOINT_METRICS[config.checkpoint_metric]
        for phase in _phases(config):
            schedule = _compile(model, config, phase, steps, pos_weights)
            budget = None
            if config.time_budget is not None:
                budget = _time_budget(out, config, asked, phase, steps, schedule, start, progress)
            end = (lambda b=budget, e=phase[2]: b.end if b is not None else e)
            # The time budget decides an epoch's end before EpochWeights asks for it.
            extra = [budget] if budget is not None else []
            if config.average_epochs:
                count = min(config.average_epochs, phase[2] - phase[1])
                extra.append(EpochWeights(files, count, end))
            if progress == "epochs":
                extra.append(EpochLine(asked, monitor))
            extra += list(callbacks)
            # The dataset shuffles itself (make_dataset), so Keras must not try to.
            model.fit(train_ds, validation_data=val_ds, initial_epoch=phase[1], epochs=phase[2], shuffle=False,
                      steps_per_epoch=steps_per_epoch, callbacks=_callbacks(out, phase[0], monitor, extra),
                      verbose=1 if progress is True else 0)
            if model.stop_training:  # the time budget ended the run
                break
        runs.save_model(model, files.final)
        if config.average_epochs:
            first = max(end() - config.average_epochs, phase[1]) + 1
            average_epochs(model, [files.epoch_weights(epoch) for epoch in range(first, end() + 1)], train_ds,
                           config.batch_size)
            figures = model.evaluate(val_ds, return_dict=True, verbose=0)
            runs.save_model(model, files.best)
            runs.Run(out).record_averaged(first, end(), figures)
    return model


def _time_budget(out: Path, config: TrainConfig, asked: int, phase: tuple[str, int, int], steps: int,
                 schedule: CosineSchedule | None, start: float, progress: bool | str) -> TimeBudget:
    """A TimeBudget for ``phase`` that records the time spent and a shortened end (and says so);
    the record's settings keep the ``asked`` epochs."""

    def spent(seconds: float) -> None:
        runs.Run(out).record_seconds(seconds)

    def shorten(end: int) -> None:
        runs.Run(out).record_budget_end(end)
        if progress:
            reaches = "the learning rate reaches zero there" if schedule is not None else "the learning rate is constant"
            print(f"\ntime budget of {config.time_budget:g} minutes: the run ends after epoch {end} "
                  f"instead of {asked}, and {reaches}")

    return TimeBudget(config.time_budget, start, phase[2], schedule, (steps, phase[1]), shorten, clock=monotonic,
                      on_epoch=spent)
