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
from celebalib.attributes import ATTRIBUTES
from celebalib.averaging import average_epochs
from celebalib.data import image_shape
from celebalib.errors import ConfigError, RunError, check_fraction
from celebalib.io import atomic_path, write_json, write_text
from celebalib.losses import get_loss
from celebalib.metrics import MeanBalancedAccuracy
from celebalib.model import batch_norm_layers, build_model, dtype_policy, set_backbone_trainable
from celebalib.recipes import (CHECKPOINT_METRICS, DEFAULT_LEARNING_RATES, TrainConfig, choices, fixed_on_resume,
                               resolve_from_args)
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
# Weight averaging keeps each epoch's weights here (``epoch-NN.weights.h5``).
AVERAGING_FOLDER = "averaging"
# config.json key: seconds of the time budget spent when the last finished epoch ended, so a
# resumed run goes on with what is left rather than a whole new budget.
BUDGET_SECONDS = "budget_seconds"


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


def _start_config(out: Path, config: TrainConfig, run_facts: dict[str, Any],
                  table: pd.DataFrame) -> dict[str, Any]:
    """Write config.json for a new run, or check a resumed run's one against ``config``; return it.

    ``run_facts`` (data root, dtype policy) are recorded beside the settings; a new run also
    records the train split's label rates from ``table``'s annotations (``runs.train_label_rates``).
    """
    config_path = out / runs.CONFIG
    if config_path.is_file():
        if (out / runs.FINAL).is_file() and not (out / "backup").exists():
            raise RunError(f"{out}: already holds a finished run; choose another output folder")
        stored = runs.read_config(out)
        recorded = TrainConfig.from_json(stored, config_path)
        for key in fixed_on_resume():
            if getattr(recorded, key) != getattr(config, key):
                raise RunError(f"{config_path}: {key} is {getattr(recorded, key)!r} but this command asks for "
                               f"{getattr(config, key)!r}; resume with the same settings or use another folder")
        stored.update(recorded.to_json())  # an old run's config.json gains its migrated settings
        if config.epochs != stored.get("planned_epochs"):  # else keep the end its time budget set
            stored.update(epochs=config.epochs)
            stored.pop("planned_epochs", None)
        stored.update(run_facts)
    elif out.exists() and any(out.iterdir()):
        raise RunError(f"{out}: folder is not empty and holds no run; choose another output folder")
    else:
        created = dt.datetime.now(dt.timezone.utc)
        stored = {"run_id": f"{out.name}-{created:%Y%m%dT%H%M%S}", "created": created.isoformat(timespec="seconds"),
                  "attributes": list(ATTRIBUTES), **config.to_json(), **run_facts,
                  runs.TRAIN_LABEL_RATES: runs.train_label_rates(table), "thresholds": None, "versions": _versions()}
    write_json(config_path, stored)
    return stored


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
    """Best checkpoint (by ``monitor``), history, then backup: a crash between them repeats the epoch at worst."""
    history = out / runs.HISTORY
    return [
        BestCheckpoint(out / runs.BEST, history, monitor),
        HistoryWriter(history, phase),
        keras.callbacks.BackupAndRestore(str(out / "backup" / phase), delete_checkpoint=False),
        keras.callbacks.TensorBoard(str(out / "logs"), write_graph=False),
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
    epochs had taken (config.json records ``budget_seconds``). Python's and NumPy's global random
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
    facts: dict[str, Any] = {"data_root": table.attrs.get("root", None if data_root is None else str(data_root))}
    out = Path(out_dir).expanduser().resolve() if chief else _worker_folder()
    with precision_policy(config.precision) as policy, seeded(config.seed):
        facts["dtype_policy"] = policy
        stored = _start_config(out, config, facts, table)
        config = config.replace(epochs=stored["epochs"])  # a resumed run keeps an end its time budget set
        start -= stored.get(BUDGET_SECONDS, 0.0)  # and the time its finished epochs took
        model = _train(out, labels, config, progress, callbacks, start)
    if not chief:
        shutil.rmtree(out)
        return None
    if not (out / runs.BEST).is_file():
        runs.save_model(model, out / runs.BEST)
    shutil.rmtree(out / "backup", ignore_errors=True)
    run = runs.Run(out)
    run.update_config(finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return run


def fit_or_reuse(out_dir: str | Path, config: TrainConfig, *, data_root: str | Path, retrain: bool = False,
                 progress: bool | str = "epochs") -> runs.Run:
    """Open the finished run in ``out_dir`` if it trained ``config`` on ``data_root``, else train it there.

    A run of the same settings that did not finish resumes from its last epoch. The stored run may
    have ended before ``config.epochs`` only when its time budget ended it (config.json then records
    the ``planned_epochs``), and its dtype policy may differ (which changes speed, not what is learnt);
    any other difference, such as a quick one-epoch stand-in, or ``retrain``, trains the folder afresh.
    """
    out = Path(out_dir).expanduser().resolve()
    if (out / runs.CONFIG).is_file() and not retrain:
        stored = runs.read_config(out)
        same_data = Path(stored.get("data_root") or "").resolve() == Path(data_root).expanduser().resolve()
        wanted = config.replace(learning_rate=config.learning_rate_used)  # as config.json records it
        changed = set(TrainConfig.from_json(stored, out / runs.CONFIG).changes(wanted)) - {"precision"}
        if stored.get("planned_epochs") == config.epochs:  # its time budget ended it early
            changed.discard("epochs")
        if same_data and not changed and stored.get("finished"):
            if progress:
                print(f"Reusing the finished run {stored.get('run_id')} in {out} (retrain=True trains it again).")
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
           callbacks: Sequence[keras.callbacks.Callback], start: float) -> keras.Model:
    """Build the model under the strategy and run each phase; return the trained model.

    ``start`` is when fit() was called (``monotonic``), from which a time budget counts.
    """
    from celebalib.data import make_dataset, positive_weights, split_rows

    n_train = len(split_rows(table, "train", config.limit))
    val_limit = _smaller(config.limit, config.val_images)
    n_val = len(split_rows(table, "val", val_limit))
    common = {"image_size": config.image_size, "batch_size": config.batch_size, "crop": config.crop,
              "seed": config.seed, "cache": should_cache(config.cache, n_train + n_val, config.image_size, config.crop)}
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
                budget = _time_budget(out, config, phase, steps, schedule, start, progress)
            end = (lambda b=budget, e=phase[2]: b.end if b is not None else e)
            # The time budget decides an epoch's end before EpochWeights asks for it.
            extra = [budget] if budget is not None else []
            if config.average_epochs:
                count = min(config.average_epochs, phase[2] - phase[1])
                extra.append(EpochWeights(out / AVERAGING_FOLDER, count, end))
            if progress == "epochs":
                extra.append(EpochLine(config.epochs, monitor))
            extra += list(callbacks)
            # The dataset shuffles itself (make_dataset), so Keras must not try to.
            model.fit(train_ds, validation_data=val_ds, initial_epoch=phase[1], epochs=phase[2], shuffle=False,
                      steps_per_epoch=steps_per_epoch, callbacks=_callbacks(out, phase[0], monitor, extra),
                      verbose=1 if progress is True else 0)
            if model.stop_training:  # the time budget ended the run
                break
        runs.save_model(model, out / runs.FINAL)
        if config.average_epochs:
            first = max(end() - config.average_epochs, phase[1]) + 1
            files = [epoch_weights_file(out / AVERAGING_FOLDER, epoch) for epoch in range(first, end() + 1)]
            average_epochs(model, files, train_ds, config.batch_size)
            figures = model.evaluate(val_ds, return_dict=True, verbose=0)
            runs.save_model(model, out / runs.BEST)
            runs.Run(out).update_config(averaged={"epochs": [first, end()],
                                                  **{f"val_{k}": float(v) for k, v in figures.items()}})
    return model


def _time_budget(out: Path, config: TrainConfig, phase: tuple[str, int, int], steps: int,
                 schedule: CosineSchedule | None, start: float, progress: bool | str) -> TimeBudget:
    """A TimeBudget for ``phase`` that records a shortened end in config.json (and says so)."""
    planned = config.epochs

    def spent(seconds: float) -> None:
        runs.Run(out).update_config(**{BUDGET_SECONDS: round(seconds, 1)})

    def shorten(end: int) -> None:
        run = runs.Run(out)
        run.update_config(epochs=end, planned_epochs=run.config.get("planned_epochs", planned))
        if progress:
            reaches = "the learning rate reaches zero there" if schedule is not None else "the learning rate is constant"
            print(f"\ntime budget of {config.time_budget:g} minutes: the run ends after epoch {end} "
                  f"instead of {planned}, and {reaches}")

    return TimeBudget(config.time_budget, start, phase[2], schedule, (steps, phase[1]), shorten, clock=monotonic,
                      on_epoch=spent)


# ---------------------------------------------------------------------------------------
# Command line: ``python -m celebalib train`` (its parser is built by ``recipes.configure_train_parser``,
# which imports this module only once the arguments are parsed)


def train_command(args: argparse.Namespace) -> int:
    """Train from the command line: print the recipe and its expected time, train, say where the run went."""
    recipe, data_root = resolve_from_args(args)
    print(recipe.describe(), flush=True)
    run = fit(args.out, recipe.config, data_root=data_root, progress=False if args.quiet else "epochs")
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
