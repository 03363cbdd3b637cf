"""Val-split figures of training runs on real CelebA: the README's ablation table.

For each run folder: its settings, the epochs run (of the run's epochs; in brackets the best
epoch, whose ``best.keras`` is scored, or the epochs it averages; then the epochs first
planned, where a time budget cut the run short), wall minutes (config.json's ``created`` to
``finished``), then on the val split, with one view, with mirror-image averaging, and with the
run's own test-time views where it has more (``test_time_shift``): mean accuracy
at 0.5, mean accuracy at thresholds tuned for accuracy, mean balanced accuracy at thresholds
tuned for it (both cross-fitted over identity-grouped folds, so no image is scored with
thresholds tuned on it), mean ROC-AUC, and the majority baseline. The test split is never
read. Thresholds stored in the runs are left as they are.

    python benchmarks/bench_celeba_cpu.py runs/celeba-cpu [more run folders] [--data /path/to/celeba; default CELEBA_ROOT]
"""

from __future__ import annotations

import argparse
import os
import datetime as dt
import warnings
from pathlib import Path

import numpy as np

from celebalib.attributes import ATTRIBUTES
from celebalib.data import MissingImagesWarning, load_celeba, majority_baseline
from celebalib.evaluate import attribute_table, cross_fitted_table, table_means, threshold_folds
from celebalib.runs import Run, RunRecord
from celebalib.recipes import CHECKPOINT_METRICS

SETTINGS = ("image_size", "crop", "alpha", "augment", "head", "optimizer", "learning_rate", "lr_schedule", "loss", "label_smoothing", "weight_decay", "batch_size",
            "epoch_images", "time_budget")


def minutes(record: RunRecord) -> str:
    """Wall minutes from the run's creation to its finish ("unfinished" for a stopped run)."""
    if not record.progress.finished:
        return "unfinished"
    start, end = (dt.datetime.fromisoformat(when) for when in (record.created, record.progress.finished))
    return f"{(end - start).total_seconds() / 60:.1f}"


class ValSplit:
    """The val split of a CelebA root, with what scoring needs: labels, baseline, threshold folds."""

    def __init__(self, data: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingImagesWarning)  # a partial root may hold train and val only
            table = load_celeba(data)
        self.rows = table[table["split"] == "val"]
        self.y_true = self.rows[list(ATTRIBUTES)].to_numpy()
        self.baseline = majority_baseline(table, "val")
        self.folds, self.groups = threshold_folds(self.rows, 5)

    def describe(self) -> str:
        """One line naming the images, the baseline and the folds."""
        return (f"val split: {len(self.rows)} genuine CelebA images; majority baseline {self.baseline.mean():.4f}; "
                f"thresholds cross-fitted over {self.folds} folds grouped by identity")

    def figures(self, y_prob: np.ndarray) -> str:
        """"acc@0.5 | acc (tuned for acc) | bal acc (tuned for it) | ROC-AUC" for probabilities of the rows."""
        y_prob = np.asarray(y_prob, dtype=np.float64)
        tuned = {objective: table_means(cross_fitted_table(self.y_true, y_prob, self.baseline, objective=objective,
                                                           folds=self.folds, groups=self.groups))
                 for objective in ("accuracy", "balanced_accuracy")}
        plain = table_means(attribute_table(self.y_true, y_prob, 0.5, self.baseline))["accuracy"]
        return (f"{plain:.4f} | {tuned['accuracy']['accuracy']:.4f} | "
                f"{tuned['balanced_accuracy']['balanced_accuracy']:.4f} | {tuned['accuracy']['roc_auc']:.4f}")


def main() -> None:
    """Print one line per run and set of test-time views."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (a stopped run is scored by its best.keras)")
    parser.add_argument("--data", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        required=not os.environ.get("CELEBA_ROOT"), help="a CelebA root with val images (default: CELEBA_ROOT)")
    args = parser.parse_args()
    val = ValSplit(args.data)
    print(val.describe())
    print("run | settings | epochs (best) | minutes | views | acc@0.5 | acc (tuned for acc) | bal acc (tuned for it) | ROC-AUC")
    for folder in args.runs:
        run = Run(folder)
        recorded = run.train_config  # an old config.json through its migration
        settings = ", ".join(f"{key} {getattr(recorded, key)}" for key in SETTINGS)
        history = run.history()
        monitor = CHECKPOINT_METRICS[recorded.checkpoint_metric]
        if run.record.progress.averaged:  # best.keras averages epochs instead of keeping one
            first, last = run.record.progress.averaged["epochs"]
            chosen = f"average of {first}-{last}"
        else:
            chosen = str(int(history.loc[history[monitor].idxmax(), "epoch"]))
        epochs = f"{len(history)} of {run.record.end_epoch} ({chosen})"
        if run.record.progress.budget_end:  # its time budget shortened the run
            epochs += f", {recorded.epochs} planned"
        choices = [(False, 0), (True, 0)] + ([(True, run.shift_pixels)] if run.shift_pixels else [])
        for flip, shift in choices:
            y_prob = run.predict(val.rows, progress=False, flip=flip, shift=shift)
            print(f"{folder.name} | {settings} | {epochs} | {minutes(run.record)} | "
                  f"{len(run.views(flip, shift))} | {val.figures(y_prob)}", flush=True)


if __name__ == "__main__":
    main()
