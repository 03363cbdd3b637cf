"""Run folders: what a training run leaves behind, its record, and how to use it afterwards.

:class:`RunFiles` names every file of a run folder (no other module spells one), and
:class:`RunRecord` is the typed record its ``config.json`` holds: the settings exactly as
asked (``recipes.TrainConfig``), facts about the run, its progress, the tuned thresholds and
the evaluation results. :class:`Run` writes each part by a named method, atomically; a
config.json of an older schema (1, or none at all) is migrated when read. :func:`locate_run`
turns what ``--run`` names (a folder, a ``.zip`` bundle, or an ``https://.../NAME.zip#sha256=HEX``
address, see :mod:`celebalib.bundles`) into a run folder.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celebalib import bundles
from celebalib.attributes import ATTRIBUTES
from celebalib.environment import read_environment
from celebalib.errors import ConfigError, RunError
from celebalib.io import atomic_path, write_json
from celebalib.recipes import TrainConfig, describe_views, prediction_views

__all__ = ["RunFiles", "RunRecord", "Facts", "Progress", "Thresholds", "Run", "open_run", "locate_run",
           "run_from_environment", "read_record", "load_record", "write_record", "migrate", "prediction_views", "describe_views", "view_of", "save_model", "load_model",
           "train_label_rates", "SCHEMA_VERSION"]

SCHEMA_VERSION = 2
MODEL_CHOICES = ("best", "final")


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """Every file and folder of a run folder, by name."""

    path: Path

    @property
    def config(self) -> Path:
        """The run's record (``RunRecord``)."""
        return self.path / "config.json"

    @property
    def final(self) -> Path:
        """The model after the last epoch."""
        return self.path / "model.keras"

    @property
    def best(self) -> Path:
        """The best epoch's model by the checkpoint metric (or the averaged weights)."""
        return self.path / "best.keras"

    @property
    def history(self) -> Path:
        """One row per epoch: loss and metrics on train and val."""
        return self.path / "history.csv"

    @property
    def logs(self) -> Path:
        """TensorBoard's logs."""
        return self.path / "logs"

    @property
    def backup(self) -> Path:
        """Keras's ``BackupAndRestore`` state; there only while the run is unfinished."""
        return self.path / "backup"

    @property
    def averaging(self) -> Path:
        """The epochs' weights that weight averaging keeps."""
        return self.path / "averaging"

    def model(self, which: str = "best") -> Path:
        """The ``"best"`` or ``"final"`` model file."""
        if which not in MODEL_CHOICES:
            raise RunError(f"model {which!r}: expected 'best' or 'final'")
        return self.best if which == "best" else self.final

    def epoch_weights(self, epoch: int, folder: Path | None = None) -> Path:
        """The weights after ``epoch`` (1-based) that weight averaging keeps (in ``averaging``, or ``folder``)."""
        return (folder or self.averaging) / f"epoch-{epoch:02d}.weights.h5"

    def kept_epochs(self, folder: Path | None = None) -> list[int]:
        """The epochs whose weights ``averaging`` (or ``folder``) holds, in order."""
        found = (re.fullmatch(r"epoch-(\d+)\.weights\.h5", path.name)
                 for path in (folder or self.averaging).glob("epoch-*.weights.h5"))
        return sorted(int(match.group(1)) for match in found if match)

    def predictions(self, name: str) -> Path:
        """Stored predictions of one split (``Run.predict_stored``)."""
        return self.path / f"predictions_{name}.npz"

    def index(self, split: str) -> Path:
        """A retrieval index over ``split`` (``celebalib index``)."""
        return self.path / f"index_{split}.npz"

    def evaluation(self, split: str, suffix: str = ".json") -> Path:
        """An evaluation report of ``split`` (``celebalib evaluate``): ``.json`` or ``.csv``."""
        return self.path / f"eval_{split}{suffix}"

    def retrieval(self, split: str) -> Path:
        """The retrieval quality report of ``split`` (notebook 05)."""
        return self.path / f"retrieval_{split}.json"

    def about(self) -> Path:
        """Notes on where a published run came from (docs/results)."""
        return self.path / "about.json"

    @property
    def model_card(self) -> Path:
        """What the run is fit for and how well each attribute works (``model_card.render_model_card``)."""
        return self.path / "MODEL_CARD.md"

    @property
    def manifest(self) -> Path:
        """What the bundle a run folder was unpacked from held (there only in such a folder)."""
        return self.path / bundles.MANIFEST


# ---------------------------------------------------------------------------------------
# The record


@dataclasses.dataclass(frozen=True)
class Facts:
    """What was true of the run when it trained (not asked for, found)."""

    data_root: str | None = None
    data_kind: str | None = None  # "synthetic" or "celeba"; None in records from before it was kept
    images: dict[str, int] | None = None  # train and val images each epoch drew from
    learning_rate: float | None = None  # the rate used: the settings', else the optimiser's default
    dtype_policy: str | None = None
    versions: dict[str, str] | None = None
    # Each attribute's rate of positive labels over the train split's annotations; the majority
    # baseline of any split is taken from it.
    train_label_rates: dict[str, float] | None = None


@dataclasses.dataclass(frozen=True)
class Progress:
    """How far training went."""

    epochs_done: int = 0
    # The epoch the time budget ended the run after, where it ended it before ``settings.epochs``.
    budget_end: int | None = None
    # Seconds training had taken when the last finished epoch ended (a resumed run counts on).
    seconds: float = 0.0
    finished: str | None = None  # when, in ISO 8601
    # Where best.keras averages epochs: {"epochs": [first, last], "val_<metric>": ...}.
    averaged: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Decision thresholds per attribute, and what they were tuned for."""

    objective: str
    values: dict[str, float]


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """What config.json holds: who the run is, its settings, facts, progress, thresholds, results."""

    run_id: str
    created: str
    attributes: tuple[str, ...]
    settings: TrainConfig
    facts: Facts = Facts()
    progress: Progress = Progress()
    thresholds: Thresholds | None = None
    results: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # per split: mean figures

    @classmethod
    def new(cls, name: str, settings: TrainConfig, facts: Facts) -> RunRecord:
        """The record of a run named ``name`` (its folder's name) that starts now."""
        created = dt.datetime.now(dt.timezone.utc)
        return cls(f"{name}-{created:%Y%m%dT%H%M%S}", created.isoformat(timespec="seconds"), tuple(ATTRIBUTES),
                   settings, facts)

    @property
    def end_epoch(self) -> int:
        """The epoch training ends after: the one the time budget set, else the epochs asked for."""
        return self.progress.budget_end or self.settings.epochs

    def with_data_root(self, data_root: str | None) -> RunRecord:
        """The record with ``data_root`` for the data folder wherever it names one (its facts and each
        split's results): a record leaving the machine keeps no path of it."""
        results = {split: {**figures, "data_root": data_root} if "data_root" in figures else figures
                   for split, figures in self.results.items()}
        return dataclasses.replace(self, facts=dataclasses.replace(self.facts, data_root=data_root), results=results)

    def to_json(self) -> dict[str, Any]:
        """The JSON config.json holds (schema ``SCHEMA_VERSION``)."""
        return {"schema_version": SCHEMA_VERSION, "run_id": self.run_id, "created": self.created,
                "attributes": list(self.attributes), "settings": self.settings.to_json(),
                "facts": dataclasses.asdict(self.facts), "progress": dataclasses.asdict(self.progress),
                "thresholds": dataclasses.asdict(self.thresholds) if self.thresholds else None,
                "results": self.results}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str | Path = "config.json") -> RunRecord:
        """Read a record of any schema (older ones through ``migrate``); errors name ``source``."""
        data = migrate(data, source)
        try:
            settings = TrainConfig.from_json(data["settings"], source)
            facts = Facts(**data["facts"])
            progress = Progress(**data["progress"])
            thresholds = Thresholds(**data["thresholds"]) if data.get("thresholds") else None
            return cls(str(data["run_id"]), str(data.get("created") or ""), tuple(data["attributes"]), settings,
                       facts, progress, thresholds, dict(data.get("results") or {}))
        except ConfigError as error:
            raise RunError(str(error)) from None
        except (KeyError, TypeError) as error:
            raise RunError(f"{source}: schema_version {SCHEMA_VERSION} record without the expected {error}") from None

    @property
    def learning_rate_used(self) -> float:
        """The learning rate the run trained with: as recorded, else what its settings give."""
        return self.facts.learning_rate or self.settings.learning_rate_used

    def flat(self) -> dict[str, Any]:
        """One flat dict, as config.json was before schema 2: the identity, the settings (with the learning
        rate used), the facts, ``thresholds``, ``finished`` and ``averaged``; for reading, never written."""
        facts = {k: v for k, v in dataclasses.asdict(self.facts).items() if v is not None}
        return {"run_id": self.run_id, "created": self.created, "attributes": list(self.attributes),
                **self.settings.to_json(), **facts, "learning_rate": self.learning_rate_used,
                "thresholds": dataclasses.asdict(self.thresholds) if self.thresholds else None,
                "finished": self.progress.finished, "averaged": self.progress.averaged}


# ---------------------------------------------------------------------------------------
# Older schemas

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
# The keys of a schema 1 config.json that were not settings, and where schema 2 keeps them.
V1_FACTS = ("data_root", "dtype_policy", "versions", "train_label_rates")


def migrate_v0(config: Mapping[str, Any]) -> dict[str, Any]:
    """A config.json written before ``schema_version`` existed, as schema 1: the settings it lacks take
    the defaults of that time, and its ``mixed_precision`` flag becomes ``precision``."""
    out = {**V0_DEFAULTS, **config, "schema_version": 1}
    out["precision"] = "mixed_float16" if config.get("mixed_precision") else "float32"
    out.pop("mixed_precision", None)
    return out


def migrate_v1(config: Mapping[str, Any]) -> dict[str, Any]:
    """A schema 1 config.json (one flat dict) as schema 2.

    Schema 1 recorded the learning rate used (kept as a fact and as the setting, since what was
    asked is lost), and a time budget's end as ``epochs`` with the epochs asked for in ``planned_epochs``.
    """
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    settings = {name: config[name] for name in names if name in config}
    budget_end = None
    if config.get("planned_epochs") is not None:
        settings["epochs"], budget_end = config["planned_epochs"], config.get("epochs")
    finished = config.get("finished")
    epochs = budget_end or settings.get("epochs") or 0
    progress = {"epochs_done": epochs if finished else 0, "budget_end": budget_end,
                "seconds": float(config.get("budget_seconds") or 0.0), "finished": finished,
                "averaged": config.get("averaged")}
    facts = {key: config.get(key) for key in V1_FACTS}
    facts["learning_rate"] = config.get("learning_rate")
    return {"schema_version": SCHEMA_VERSION, "run_id": config.get("run_id"), "created": config.get("created"),
            "attributes": config.get("attributes"), "settings": settings, "facts": facts, "progress": progress,
            "thresholds": config.get("thresholds") or None, "results": {}}


def migrate(data: Mapping[str, Any], source: str | Path = "config.json") -> dict[str, Any]:
    """A config.json of any schema celebalib wrote (none, 1 or 2) as schema 2."""
    if not isinstance(data, Mapping):
        raise RunError(f"{source}: expected a JSON object")
    version = data.get("schema_version")
    if version is None:
        data = migrate_v0(data)
        version = 1
    if version == 1:
        for key in ("run_id", "image_size", "crop", "attributes"):
            if key not in data:
                raise RunError(f"{source}: missing key {key!r}")
        try:
            return migrate_v1(data)
        except (TypeError, ValueError) as error:
            raise RunError(f"{source}: a schema 1 record with a malformed value ({error})") from None
    if version != SCHEMA_VERSION:
        raise RunError(f"{source}: schema_version {version!r}; this celebalib reads 1 and {SCHEMA_VERSION}")
    return dict(data)


def read_record(folder: str | Path) -> RunRecord:
    """Read a run folder's record, raising RunError for a missing or broken config.json."""
    path = RunFiles(Path(folder)).config
    if not path.is_file():
        raise RunError(f"{path}: not found; expected a run folder written by celebalib train")
    return load_record(path)


def load_record(path: str | Path) -> RunRecord:
    """Read a record from a JSON file (a run's config.json, perhaps copied elsewhere)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise RunError(f"{path}: cannot read ({error.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        where = f":{error.lineno}" if isinstance(error, json.JSONDecodeError) else ""
        raise RunError(f"{path}{where}: invalid JSON; expected a run's config.json") from None
    return RunRecord.from_json(data, path)


def write_record(folder: str | Path, record: RunRecord) -> None:
    """Write a run folder's record atomically."""
    write_json(RunFiles(Path(folder)).config, record.to_json())


def view_of(images: Any, dx: int, dy: int, mirrored: bool) -> Any:
    """A batch (N, H, W, C) moved by whole pixels (right by dx, down by dy), then mirrored if asked.

    The edge is mirrored in, as the "shift" training augmentation (Keras's "reflect" fill) fills it.
    """
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    if dx or dy:
        pad, height, width = max(abs(dx), abs(dy)), images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="SYMMETRIC")
        images = padded[:, pad - dy:pad - dy + height, pad - dx:pad - dx + width, :]
    return tf.image.flip_left_right(images) if mirrored else images


def save_model(model: Any, path: str | Path) -> None:
    """Save a Keras model atomically (``io.atomic_path``)."""
    with atomic_path(path) as tmp:
        model.save(tmp)


def load_model(path: str | Path, *, compile: bool = True) -> Any:
    """Load a saved model in Keras's safe mode (no pickled code; custom objects are registered);
    ``compile=False`` leaves out the loss, metrics and optimiser it trained with."""
    import keras

    # Importing registers the custom loss, metric, layer and schedule classes with Keras.
    import celebalib.losses  # noqa: F401
    import celebalib.metrics  # noqa: F401
    import celebalib.model  # noqa: F401
    import celebalib.schedules  # noqa: F401

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except (ValueError, OSError, KeyError) as error:
        raise RunError(f"{path}: cannot load the model ({error})") from None


def train_label_rates(table: pd.DataFrame) -> dict[str, float]:
    """Positive-label rate per attribute over every train row of the annotations of ``table``'s root
    (images present or not), or over ``table``'s train rows when it has no readable root."""
    from celebalib.data import load_celeba

    root = table.attrs.get("root")
    annotations = load_celeba(root, images=False) if root and Path(root).is_dir() else table
    rows = annotations[annotations["split"] == "train"]
    if rows.empty:
        raise RunError(f"{root or 'the table'}: no train rows in the annotations; the majority baseline needs them")
    return {name: float(rate) for name, rate in rows[list(ATTRIBUTES)].mean().items()}


class Run:
    """A trained run folder: its config, models, history, and predictions through the one pipeline."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.files = RunFiles(self.path)
        self.record = read_record(self.path)
        self._models: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, run_id={self.run_id!r})"

    @property
    def run_id(self) -> str:
        """The run's unique id (folder name and creation time)."""
        return self.record.run_id

    @property
    def image_size(self) -> int:
        """Width of the images the model takes (and their height, but for the "portrait" crop)."""
        return self.record.settings.image_size

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the images the model takes: ``data.image_shape`` of its size and crop."""
        from celebalib.data import image_shape

        return image_shape(self.image_size, self.crop)

    @property
    def crop(self) -> str:
        """The crop used in training, to use again at inference."""
        return self.record.settings.crop

    @property
    def train_config(self) -> TrainConfig:
        """The run's settings as asked (an old config.json through its migration)."""
        return self.record.settings

    @property
    def config(self) -> dict[str, Any]:
        """The record as one flat dict (``RunRecord.flat``), for reading: settings, facts, thresholds."""
        return self.record.flat()

    def label_rates(self, table: pd.DataFrame) -> pd.Series:
        """The train split's positive-label rates recorded at training time; for a run from before
        they were recorded, ``train_label_rates`` of ``table``'s annotations."""
        rates = self.record.facts.train_label_rates or train_label_rates(table)
        return pd.Series(rates, dtype=np.float64).reindex(list(ATTRIBUTES)).rename("positive_rate")

    @property
    def thresholds(self) -> np.ndarray:
        """Decision threshold per attribute (40 values): tuned ones from config, else 0.5."""
        values = self.record.thresholds.values if self.record.thresholds else {}
        return np.array([float(values.get(name, 0.5)) for name in ATTRIBUTES], dtype=np.float32)

    def data_root(self, override: str | Path | None = None) -> Path:
        """The data to use with this run: ``override``, else the data it was trained on, else the default."""
        if override:
            return Path(override)
        if self.record.facts.data_root:
            return Path(self.record.facts.data_root)
        from celebalib.data import default_root

        if self.record.facts.data_kind == "celeba" and read_environment().celeba_root is None:
            raise RunError(f"{self.path}: this run was trained on CelebA and does not say where it is; "
                           "expected --data ROOT or CELEBA_ROOT naming a CelebA folder")
        return default_root()

    def history(self) -> pd.DataFrame:
        """The per-epoch training history (epoch, loss, metrics, val_ metrics)."""
        path = self.files.history
        if not path.is_file():
            raise RunError(f"{path}: not found; the run has not finished an epoch")
        return pd.read_csv(path)

    def model(self, which: str = "best") -> Any:
        """The Keras model (``"best"`` or ``"final"``), loaded once in safe mode."""
        path = self.model_file(which)  # checks ``which`` before the cache, which also holds feature extractors
        if which not in self._models:
            self._models[which] = load_model(path)
        return self._models[which]

    def model_file(self, which: str = "best") -> Path:
        """The path of the ``"best"`` or ``"final"`` model file."""
        return self.files.model(which)

    def images(self, table: pd.DataFrame, batch_size: int | None = None):
        """Images of every row of ``table``, in order, as the run's model takes them (its size and crop)."""
        from celebalib.data import make_dataset

        return make_dataset(table, None, image_size=self.image_size, batch_size=self._batch_size(batch_size),
                            training=False, crop=self.crop, labels=False)

    def _batch_size(self, batch_size: int | None) -> int:
        """``batch_size``, else the run's training batch size, else 64."""
        return int(batch_size or self.record.settings.batch_size)

    @property
    def flip_average(self) -> bool:
        """Whether predictions average each image with its mirror image (config ``test_time_flip``)."""
        return self.record.settings.test_time_flip

    @property
    def shift_pixels(self) -> int:
        """Pixels by which shifted views move (config ``test_time_shift``; 0: no shifted views)."""
        return self.record.settings.test_time_shift

    def views(self, flip: bool | None = None, shift: int | None = None) -> list[tuple[int, int, bool]]:
        """The views predictions average: ``prediction_views`` of the arguments, None meaning the run's config."""
        return prediction_views(self.flip_average if flip is None else flip,
                                self.shift_pixels if shift is None else shift, min(self.image_shape))

    def predict(self, table: pd.DataFrame, *, batch_size: int | None = None, progress: bool = True,
                which: str = "best", flip: bool | None = None, shift: int | None = None) -> np.ndarray:
        """Probabilities (N, 40) for the rows of ``table``, in table order, averaged over the run's views.

        ``flip`` averages each image's probabilities with those of its mirror image (faces
        are symmetric, so this cancels some noise); ``shift`` adds views moved by that many
        pixels left, right, up and down (see ``prediction_views``). None follows the run's config.
        Each image is read once: every batch goes through the model once per view.
        """
        import tensorflow as tf

        views = self.views(flip, shift)
        model = self.model(which)
        dataset = self.images(table, batch_size)
        size, n = self._batch_size(batch_size), len(table)
        sizes = [min(size, n - start) for start in range(0, n, size)]
        if len(views) > 1:
            dataset = dataset.flat_map(
                lambda images: tf.data.Dataset.from_tensor_slices(tf.stack([view_of(images, *v) for v in views])))
            dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(sizes) * len(views)))
        outputs = np.asarray(model.predict(dataset, verbose=1 if progress else 0))
        # The model saw each batch of b images as len(views) batches in a row: regroup and average.
        parts = np.split(outputs, np.cumsum([len(views) * b for b in sizes])[:-1])
        return np.concatenate([part.reshape(len(views), -1, part.shape[-1]).mean(axis=0) for part in parts])

    def predict_stored(self, table: pd.DataFrame, name: str, *, batch_size: int | None = None, progress: bool = True,
                       which: str = "best", flip: bool | None = None,
                       shift: int | None = None) -> tuple[np.ndarray, bool]:
        """``predict``, kept in ``predictions_<name>.npz`` in the run folder; return (probabilities, reused).

        The file is reused while the model file (its size and modification time), the views and
        the image ids are those it was written for, so evaluating one split twice (e.g. for two
        threshold objectives) predicts it once; anything else predicts again and replaces it.
        """

        model_file = self.model_file(which)
        stat = model_file.stat() if model_file.is_file() else None
        key = {"model": f"{model_file.name}:{stat.st_size}:{stat.st_mtime_ns}" if stat else "",
               "views": np.asarray(self.views(flip, shift), dtype=np.int64).reshape(-1, 3),
               "image_ids": table["image_id"].to_numpy(str)}
        path = self.files.predictions(name)
        try:
            with np.load(path) as stored:
                if (str(stored["model"]) == key["model"] and np.array_equal(stored["views"], key["views"])
                        and np.array_equal(stored["image_ids"], key["image_ids"])):
                    return np.asarray(stored["probabilities"]), True
        except (OSError, KeyError, ValueError):  # missing, unreadable or another format: predict again
            pass
        probabilities = self.predict(table, batch_size=batch_size, progress=progress, which=which, flip=flip,
                                     shift=shift)
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, probabilities=probabilities, **key)
        return probabilities, False

    def features(self, table: pd.DataFrame, *, batch_size: int | None = None, progress: bool = True,
                 which: str = "best") -> np.ndarray:
        """Pooled feature vectors (N, D) for the rows of ``table``, in table order."""
        from celebalib.model import feature_extractor

        key = f"{which}-features"
        if key not in self._models:
            self._models[key] = feature_extractor(self.model(which))
        return np.asarray(self._models[key].predict(self.images(table, batch_size), verbose=1 if progress else 0))

    def predict_images(self, images: np.ndarray, *, which: str = "best") -> np.ndarray:
        """Probabilities (N, 40) for images (N, H, W, 3) float in [0, 255], e.g. from ``data.load_image``."""
        pixels = np.asarray(images, dtype=np.float32)
        if pixels.ndim == 3:
            pixels = pixels[None]
        height, width = self.image_shape
        if pixels.ndim != 4 or pixels.shape[1:] != (height, width, 3):
            raise RunError(f"{self.path}: images of shape {pixels.shape}; expected (N, {height}, {width}, 3), as "
                           f"data.load_image(..., image_size={self.image_size}, crop={self.crop!r}) gives")
        model = self.model(which)
        return np.mean([np.asarray(model(view_of(pixels, *view), training=False)) for view in self.views()], axis=0)

    # -----------------------------------------------------------------------------------
    # Named writes: each reads the record on disk, changes its part, and writes it atomically.

    def _write(self, **parts: Any) -> RunRecord:
        """Replace ``parts`` of the record on disk and keep the result."""
        self.record = dataclasses.replace(read_record(self.path), **parts)
        write_record(self.path, self.record)
        return self.record

    def record_resumed(self, settings: TrainConfig, facts: Facts) -> RunRecord:
        """A resumed run's settings (those a resume may change) and this process's facts."""
        record = read_record(self.path)
        kept = {k: v for k, v in dataclasses.asdict(record.facts).items() if v is not None}
        return self._write(settings=settings, facts=dataclasses.replace(facts, **{
            k: v for k, v in kept.items() if getattr(facts, k) is None}))

    def record_epoch(self, epochs_done: int) -> RunRecord:
        """An epoch finished: ``epochs_done`` in all."""
        return self._write(progress=dataclasses.replace(read_record(self.path).progress, epochs_done=epochs_done))

    def record_seconds(self, seconds: float) -> RunRecord:
        """Training has taken ``seconds`` since the run started (a time budget counts them)."""
        return self._write(progress=dataclasses.replace(read_record(self.path).progress, seconds=round(seconds, 1)))

    def record_budget_end(self, epoch: int | None) -> RunRecord:
        """The time budget ends the run after ``epoch`` (None: it no longer does); the settings keep
        the epochs asked for."""
        return self._write(progress=dataclasses.replace(read_record(self.path).progress, budget_end=epoch))

    def record_averaged(self, first: int, last: int, figures: Mapping[str, float]) -> RunRecord:
        """best.keras holds the mean weights of epochs ``first`` to ``last``; ``figures`` are its val metrics."""
        averaged = {"epochs": [int(first), int(last)], **{f"val_{k}": float(v) for k, v in figures.items()}}
        return self._write(progress=dataclasses.replace(read_record(self.path).progress, averaged=averaged))

    def record_finished(self) -> RunRecord:
        """Training finished now."""
        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        return self._write(progress=dataclasses.replace(read_record(self.path).progress, finished=when))

    def record_thresholds(self, objective: str, values: Mapping[str, float]) -> RunRecord:
        """Thresholds tuned for ``objective``, one per attribute."""
        return self._write(thresholds=Thresholds(objective, {name: float(values[name]) for name in ATTRIBUTES}))

    def record_results(self, split: str, figures: Mapping[str, Any]) -> RunRecord:
        """The evaluation of ``split``: its mean figures (the full report is ``files.evaluation(split)``)."""
        return self._write(results={**read_record(self.path).results, split: dict(figures)})

    def record_views(self, flip: bool, shift: int) -> RunRecord:
        """How predictions are made from now on: ``flip`` and ``shift`` as ``prediction_views`` takes them.

        The only settings a trained run may change: they are used at prediction, not in training.
        """
        settings = read_record(self.path).settings.replace(test_time_flip=flip, test_time_shift=shift)
        return self._write(settings=settings)


def locate_run(source: str | Path) -> Path:
    """The run folder ``source`` names: a folder as it is; a ``.zip`` bundle or an http(s) address
    unpacked once into the cache under CELEBALIB_HOME (``bundles``), checked before it is used."""
    if bundles.is_address(source):
        return bundles.fetch_bundle(str(source))
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".zip":
            raise RunError(f"{path}: a file not ending in .zip; expected {bundles.RUN_SOURCES}")
        return bundles.unpack_bundle(path)
    return path


def open_run(source: str | Path) -> Run:
    """Open a finished run (``locate_run`` of ``source``), raising RunError if it is missing or incomplete."""
    folder = locate_run(source)
    if not folder.is_dir():
        raise RunError(f"{folder}: run folder not found; expected {bundles.RUN_SOURCES}")
    files = RunFiles(folder)
    # A bundle holds the best model only; a training run writes model.keras when it finishes.
    unpacked = files.manifest.is_file() and folder.resolve().parent == bundles.cache_root().resolve()
    if not files.final.is_file() and not unpacked:
        raise RunError(f"{folder}: no {files.final.name}; the run is unfinished (run the same train command again "
                       "to resume)")
    return Run(folder)


def run_from_environment() -> Run | None:
    """The run CELEBALIB_RUN names (``open_run``), or None where it is unset."""
    source = read_environment().run
    return open_run(source) if source else None
