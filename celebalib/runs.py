"""Run folders: what a training run leaves behind, and how to use it afterwards.

A finished run folder holds ``model.keras`` (final weights), ``best.keras`` (best epoch
by validation mean balanced accuracy), ``config.json``, ``history.csv`` and ``logs/``
(TensorBoard). ``backup/`` exists only while a run is unfinished, so it can resume.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError, RunError
from celebalib.io import atomic_path, write_json

CONFIG = "config.json"
FINAL = "model.keras"
BEST = "best.keras"
HISTORY = "history.csv"
MODEL_FILES = {"best": BEST, "final": FINAL}
# config.json key: each attribute's rate of positive labels over the train split's annotations,
# recorded at training time; the majority baseline of any split is taken from it.
TRAIN_LABEL_RATES = "train_label_rates"


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


def load_model(path: str | Path) -> Any:
    """Load a saved model in Keras's safe mode (no pickled code; custom objects are registered)."""
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
        return keras.saving.load_model(path, safe_mode=True)
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


def read_config(path: Path) -> dict:
    """Read a run's config.json, raising RunError for a missing or broken file."""
    config_path = path / CONFIG
    if not config_path.is_file():
        raise RunError(f"{config_path}: not found; expected a run folder written by celebalib train")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{config_path}:{error.lineno}: invalid JSON ({error.msg})") from None
    for key in ("run_id", "image_size", "crop", "attributes"):
        if key not in config:
            raise RunError(f"{config_path}: missing key {key!r}")
    return config


class Run:
    """A trained run folder: its config, models, history, and predictions through the one pipeline."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser().resolve()
        self.config = read_config(self.path)
        self._models: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, run_id={self.run_id!r})"

    @property
    def run_id(self) -> str:
        """The run's unique id (folder name and creation time)."""
        return str(self.config["run_id"])

    @property
    def image_size(self) -> int:
        """Width of the images the model takes (and their height, but for the "portrait" crop)."""
        return int(self.config["image_size"])

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of the images the model takes: ``data.image_shape`` of its size and crop."""
        from celebalib.data import image_shape

        return image_shape(self.image_size, self.crop)

    @property
    def crop(self) -> str:
        """The crop used in training, to use again at inference."""
        return str(self.config["crop"])

    @property
    def train_config(self) -> Any:
        """The run's settings as a ``recipes.TrainConfig`` (an old config.json through its migration)."""
        from celebalib.recipes import TrainConfig

        try:
            return TrainConfig.from_json(self.config, self.path / CONFIG)
        except ConfigError as error:
            raise RunError(str(error)) from None

    def label_rates(self, table: pd.DataFrame) -> pd.Series:
        """The train split's positive-label rates recorded at training time; for a run from before
        they were recorded, ``train_label_rates`` of ``table``'s annotations."""
        rates = self.config.get(TRAIN_LABEL_RATES) or train_label_rates(table)
        return pd.Series(rates, dtype=np.float64).reindex(list(ATTRIBUTES)).rename("positive_rate")

    @property
    def thresholds(self) -> np.ndarray:
        """Decision threshold per attribute (40 values): tuned ones from config, else 0.5."""
        values = (self.config.get("thresholds") or {}).get("values") or {}
        return np.array([float(values.get(name, 0.5)) for name in ATTRIBUTES], dtype=np.float32)

    def data_root(self, override: str | Path | None = None) -> Path:
        """The data to use with this run: ``override``, else the data it was trained on, else the default."""
        if override:
            return Path(override)
        if self.config.get("data_root"):
            return Path(self.config["data_root"])
        from celebalib.data import default_root

        return default_root()

    def history(self) -> pd.DataFrame:
        """The per-epoch training history (epoch, loss, metrics, val_ metrics)."""
        path = self.path / HISTORY
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
        if which not in MODEL_FILES:
            raise RunError(f"model {which!r}: expected 'best' or 'final'")
        return self.path / MODEL_FILES[which]

    def images(self, table: pd.DataFrame, batch_size: int | None = None):
        """Images of every row of ``table``, in order, as the run's model takes them (its size and crop)."""
        from celebalib.data import make_dataset

        return make_dataset(table, None, image_size=self.image_size, batch_size=self._batch_size(batch_size),
                            training=False, crop=self.crop, labels=False)

    def _batch_size(self, batch_size: int | None) -> int:
        """``batch_size``, else the run's training batch size, else 64."""
        return int(batch_size or self.config.get("batch_size") or 64)

    @property
    def flip_average(self) -> bool:
        """Whether predictions average each image with its mirror image (config ``test_time_flip``)."""
        return bool(self.config.get("test_time_flip", False))

    @property
    def shift_pixels(self) -> int:
        """Pixels by which shifted views move (config ``test_time_shift``; 0: no shifted views)."""
        return int(self.config.get("test_time_shift") or 0)

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
        path = self.path / f"predictions_{name}.npz"
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

    def update_config(self, **values: Any) -> dict:
        """Merge ``values`` into config.json (written atomically) and return the new config."""
        config = {**read_config(self.path), **values}
        write_json(self.path / CONFIG, config)
        self.config = config
        return config


def open_run(path: str | Path) -> Run:
    """Open a finished run folder, raising RunError if it is missing or incomplete."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise RunError(f"{folder}: run folder not found")
    if not (folder / FINAL).is_file():
        raise RunError(f"{folder}: no {FINAL}; the run is unfinished (run the same train command again to resume)")
    return Run(folder)
