"""Read the committed evidence of real-data runs (``docs/results/<name>/``) for the notebooks.

The folders are written by ``scripts/real_evidence.py`` (``celebalib.evidence``) and hold no
face: the run's record (read as ``runs.RunRecord``), per-epoch history, evaluation and
retrieval reports, label rates, mean Grad-CAM maps on CelebA's landmark template, and the
answers for one public-domain photo.
A user's own run folder with the same name (under ``runs/``) is read instead where it holds
an evaluation, so the notebooks show their run when ``CELEBA_ROOT`` is set.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celebalib.attributes import ATTRIBUTES
from celebalib.config import PACKAGE_DIR, Settings
from celebalib.errors import RunError
from celebalib.io import read_json
from celebalib.runs import RunFiles, RunRecord, load_record

RESULTS_DIR = PACKAGE_DIR.parent / "docs" / "results"
LABEL_RATES = "label_rates_train.csv"
GRADCAM_JSON = "gradcam_val.json"
GRADCAM_MAPS = "gradcam_val.npz"
GRADCAM_PNG = "gradcam_val.png"
ASTRONAUT = "astronaut.json"
# CelebA's aligned frame (width, height).
TEMPLATE_SIZE = (178, 218)


@dataclasses.dataclass(frozen=True)
class Evidence:
    """The evidence files of one real-data run; a file the folder lacks reads as None."""

    name: str
    path: Path

    @property
    def record(self) -> RunRecord:
        """The run's typed record (its config.json; a schema 1 file is migrated as ``runs`` reads it)."""
        path = RunFiles(self.path).config
        if not path.is_file():
            raise RunError(f"{path}: not found; expected the folder scripts/real_evidence.py writes")
        return load_record(path)

    def describe(self) -> str:
        """One line naming the run and its recipe, e.g. "celeba-cpu (run celeba-cpu-2026...; adadelta at 1.0, ...)"."""
        record = self.record
        settings, rate = record.settings, record.learning_rate_used
        return (f"{self.name} (run {record.run_id}; {settings.optimizer} at {rate}, {settings.loss}, "
                f"{settings.image_size} px, {self.epochs()} epochs)")

    def epochs(self) -> int:
        """Epochs trained: rows of the history, else the epochs the record says were done."""
        history = self.history()
        return len(history) if history is not None else self.record.progress.epochs_done

    def history(self) -> pd.DataFrame | None:
        """The per-epoch history (with ``seconds`` per epoch where the log gave it)."""
        path = RunFiles(self.path).history
        return pd.read_csv(path) if path.is_file() else None

    def evaluation(self, split: str = "val") -> dict[str, Any] | None:
        """``eval_<split>.json``: the split, image count, means and per-attribute rows."""
        return read_json(RunFiles(self.path).evaluation(split))

    def retrieval(self, split: str = "val") -> pd.DataFrame | None:
        """``retrieval_<split>.json``'s rankings as a table (precision@k and same-person rate per ranking)."""
        found = read_json(RunFiles(self.path).retrieval(split))
        return None if found is None else pd.DataFrame(found["rankings"]).set_index("ranking")

    def label_rates(self) -> pd.DataFrame | None:
        """The train split's ``positive_rate`` per attribute, with ``positives`` and ``images`` where the
        file gives them (a run folder without it has only the rates its config recorded)."""
        path = self.path / LABEL_RATES
        if path.is_file():
            return pd.read_csv(path, index_col="attribute")
        rates = self.record.facts.train_label_rates
        return None if not rates else pd.DataFrame({"positive_rate": pd.Series(rates, dtype=float)}).reindex(
            list(ATTRIBUTES)).rename_axis("attribute")

    def gradcam(self) -> dict[str, Any] | None:
        """Mean Grad-CAM: ``read_gradcam`` of the folder, or None where it has none."""
        return read_gradcam(self.path) if (self.path / GRADCAM_MAPS).is_file() else None

    def astronaut(self) -> pd.DataFrame | None:
        """The run's answers for the astronaut photo: probability, threshold, answer per attribute."""
        found = read_json(self.path / ASTRONAUT)
        return None if found is None else pd.DataFrame(found["answers"]).set_index("attribute")

    def minutes(self) -> float | None:
        """Training time in minutes: the history's summed epoch seconds, else created to finished."""
        history = self.history()
        if history is not None and "seconds" in history:
            return float(history["seconds"].sum()) / 60
        record = self.record
        if record.created and record.progress.finished:
            return (pd.Timestamp(record.progress.finished) - pd.Timestamp(record.created)).total_seconds() / 60
        return None


def read_gradcam(folder: str | Path) -> dict[str, Any]:
    """The mean Grad-CAM maps of an evidence folder: ``maps`` (K, H, W) in [0, 1], ``attributes``,
    and the JSON summary's ``layer``, ``landmarks`` (template points in the maps' frame), ``table``."""
    folder = Path(folder)
    summary = read_json(folder / GRADCAM_JSON)
    if summary is None:
        raise RunError(f"{folder / GRADCAM_JSON}: not found; expected the folder scripts/real_evidence.py writes")
    with np.load(folder / GRADCAM_MAPS) as stored:
        maps = stored["maps"].astype(np.float32) / 255
    return gradcam_view(summary, maps)


def gradcam_view(summary: dict[str, Any], maps: np.ndarray) -> dict[str, Any]:
    """Mean maps (K, H, W) with their JSON summary (``evidence.gradcam_summary``) as ``plots.template_heatmaps``
    takes them: ``maps``, ``attributes``, ``layer``, ``selection``, ``landmarks`` and a ``table`` by attribute."""
    table = pd.DataFrame(summary["attributes"]).set_index("attribute")
    return {"maps": np.asarray(maps), "attributes": list(table.index), "layer": summary["layer"],
            "selection": summary["selection"], "landmarks": np.asarray(summary["landmarks"]), "table": table}


def attribute_table(evaluation: dict[str, Any]) -> pd.DataFrame:
    """One row per attribute of an ``eval_<split>.json``: rate, baseline, ROC-AUC, and accuracy and
    balanced accuracy at 0.5 and at the tuned thresholds (with the threshold)."""
    rows = {row["attribute"]: {"positive_rate": row["positive_rate"], "baseline": row["baseline"],
                               "roc_auc": row.get("roc_auc"),
                               "accuracy_0.5": row["at_0.5"]["accuracy"],
                               "balanced_0.5": row["at_0.5"]["balanced_accuracy"],
                               "accuracy_tuned": row["tuned"]["accuracy"],
                               "balanced_tuned": row["tuned"]["balanced_accuracy"],
                               "threshold": row["tuned"]["threshold"]}
            for row in evaluation["per_attribute"]}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("attribute")


def open_evidence(name: str, settings: Settings | None = None, folder: Path = RESULTS_DIR) -> Evidence:
    """The evidence of run ``name``: the user's own, ``runs/<name>/evidence`` as scripts/real_evidence.py
    writes it, where real data is set (not in fast mode, whose runs are quick stand-ins), else the
    committed ``docs/results/<name>``."""
    if settings is not None and settings.uses_real_data and not settings.fast:
        own = own_evidence(settings.runs_dir, name)
        if RunFiles(own).config.is_file() and (own / GRADCAM_MAPS).is_file():
            return Evidence(name, own)
    path = folder / name
    if not RunFiles(path).config.is_file():
        raise RunError(f"{path}: no committed evidence of run {name!r}; expected a folder written by "
                       "scripts/real_evidence.py (see docs/results/README.md)")
    return Evidence(name, path)


def own_evidence(runs_dir: Path, name: str) -> Path:
    """Where a user's own evidence of run ``name`` goes: ``runs/<name>/evidence``."""
    return Path(runs_dir) / name / "evidence"
