"""Per-attribute evaluation of a trained run, against the majority-label baseline.

On CelebA, always predicting each attribute's majority label already scores about 80%
mean accuracy, so every figure here stands beside that baseline and beside balanced
accuracy (the mean of the true-positive and true-negative rates).

Conventions:
    * An image is predicted positive for an attribute when its probability is
      ``>= threshold``.
    * :func:`attribute_table` returns one row per attribute (index: the 40 names) and no
      summary row, so it sorts and plots cleanly; :func:`table_means` gives the means as
      a separate Series.
    * A rate whose denominator is zero (e.g. the true-positive rate of an attribute with
      no positive image) is NaN, and means skip NaN. Balanced accuracy then averages the
      rates that exist, as scikit-learn's ``balanced_accuracy_score`` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from celebalib.attributes import ATTRIBUTES, NUM_ATTRIBUTES, SPLITS
from celebalib.config import display_path
from celebalib.errors import ConfigError, RunError
from celebalib.runs import Run, RunFiles, describe_views

OBJECTIVES: tuple[str, ...] = ("balanced_accuracy", "accuracy")
SUMMARY_METRICS: tuple[str, ...] = ("accuracy", "balanced_accuracy", "roc_auc", "f1", "baseline")
TABLE_COLUMNS: tuple[str, ...] = (
    "positive_rate", "accuracy", "baseline", "gain", "balanced_accuracy", "tpr", "tnr",
    "precision", "recall", "f1", "roc_auc", "threshold",
)


def _check_arrays(y_true: np.ndarray, y_prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return labels as int8 and probabilities as float64, both (N, 40), or raise."""
    y_true, y_prob = np.asarray(y_true), np.asarray(y_prob, dtype=np.float64)
    if y_true.ndim != 2 or y_true.shape[1] != NUM_ATTRIBUTES or y_true.shape != y_prob.shape:
        raise ConfigError(
            f"labels {y_true.shape} and probabilities {y_prob.shape}: "
            f"expected two arrays of shape (N, {NUM_ATTRIBUTES})"
        )
    if not np.isin(y_true, (0, 1)).all():
        raise ConfigError("labels: expected only 0 and 1 (convert CelebA's -1/1 first)")
    return y_true.astype(np.int8), y_prob


def _as_thresholds(thresholds: float | np.ndarray | pd.Series | None) -> np.ndarray:
    """Return 40 thresholds from a scalar, a sequence or a Series indexed by name."""
    if thresholds is None:
        thresholds = 0.5
    if isinstance(thresholds, pd.Series):
        thresholds = thresholds.reindex(list(ATTRIBUTES)).to_numpy()
    values = np.broadcast_to(np.asarray(thresholds, dtype=np.float64), (NUM_ATTRIBUTES,)).copy()
    if np.isnan(values).any():
        raise ConfigError(f"thresholds: expected {NUM_ATTRIBUTES} numbers, got missing values")
    return values


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Divide element-wise, NaN where the denominator is zero."""
    numerator, denominator = numerator.astype(np.float64), denominator.astype(np.float64)
    out = np.full_like(numerator, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _balanced(tpr: np.ndarray, tnr: np.ndarray) -> np.ndarray:
    """Mean of the two rates, or the one that exists (as scikit-learn does with one class)."""
    return np.where(np.isnan(tpr), tnr, np.where(np.isnan(tnr), tpr, (tpr + tnr) / 2))


def _roc_auc(y_true: np.ndarray, y_prob: np.ndarray) -> np.ndarray:
    """ROC-AUC per attribute, NaN where only one class is present."""
    from sklearn.metrics import roc_auc_score

    auc = np.full(y_true.shape[1], np.nan)
    for j in range(y_true.shape[1]):
        if 0 < y_true[:, j].sum() < len(y_true):
            auc[j] = roc_auc_score(y_true[:, j], y_prob[:, j])
    return auc


def _prediction_table(y_true: np.ndarray, y_pred: np.ndarray, y_prob: np.ndarray) -> pd.DataFrame:
    """Threshold-dependent and threshold-free metrics from binary predictions."""
    from sklearn.metrics import multilabel_confusion_matrix, precision_recall_fscore_support

    # One (40, 2, 2) call instead of 40 confusion matrices: [[tn, fp], [fn, tp]] each.
    confusion = multilabel_confusion_matrix(y_true, y_pred, labels=list(range(NUM_ATTRIBUTES)))
    tn, fp, fn, tp = (confusion[:, i, j] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)))
    precision, recall, f1, _ = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0.0)
    tpr, tnr = _safe_ratio(tp, tp + fn), _safe_ratio(tn, tn + fp)
    return pd.DataFrame(
        {
            "positive_rate": _safe_ratio(tp + fn, tn + fp + fn + tp),
            "accuracy": _safe_ratio(tp + tn, tn + fp + fn + tp),
            "balanced_accuracy": _balanced(tpr, tnr),
            "tpr": tpr,
            "tnr": tnr,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "roc_auc": _roc_auc(y_true, y_prob),
        },
        index=pd.Index(ATTRIBUTES, name="attribute"),
    )


def _finish_table(metrics: pd.DataFrame, baseline: np.ndarray | pd.Series, thresholds: np.ndarray) -> pd.DataFrame:
    """Add the baseline, the gain over it and the thresholds; order the columns."""
    if isinstance(baseline, pd.Series):
        baseline = baseline.reindex(list(ATTRIBUTES)).to_numpy()
    metrics["baseline"] = np.broadcast_to(np.asarray(baseline, dtype=np.float64), (NUM_ATTRIBUTES,))
    metrics["gain"] = metrics["accuracy"] - metrics["baseline"]
    metrics["threshold"] = thresholds
    return metrics[list(TABLE_COLUMNS)]


def attribute_table(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    thresholds: float | np.ndarray | pd.Series | None,
    baseline: np.ndarray | pd.Series,
) -> pd.DataFrame:
    """One row per attribute: rates, accuracy against the baseline, F1, ROC-AUC, threshold.

    Args:
        y_true: (N, 40) labels, 0/1.
        y_prob: (N, 40) predicted probabilities.
        thresholds: one value for all attributes, 40 values, or a Series by name
            (None means 0.5).
        baseline: majority-label accuracy per attribute on the same images, the majority
            taken from the train split (``run_baseline``).
    """
    y_true, y_prob = _check_arrays(y_true, y_prob)
    cuts = _as_thresholds(thresholds)
    metrics = _prediction_table(y_true, (y_prob >= cuts).astype(np.int8), y_prob)
    return _finish_table(metrics, baseline, cuts)


def table_means(table: pd.DataFrame) -> pd.Series:
    """The mean of every metric column over the attributes (NaN skipped)."""
    return table.drop(columns="threshold").mean(axis=0, skipna=True)


def _objective_scores(y_true: np.ndarray, y_pred: np.ndarray, objective: str) -> np.ndarray:
    """Balanced accuracy or accuracy per attribute from binary predictions."""
    y_true, y_pred = y_true.astype(bool), y_pred.astype(bool)
    if objective == "accuracy":
        return (y_true == y_pred).mean(axis=0)
    positives, negatives = y_true.sum(axis=0), (~y_true).sum(axis=0)
    tpr = _safe_ratio((y_true & y_pred).sum(axis=0), positives)
    tnr = _safe_ratio((~y_true & ~y_pred).sum(axis=0), negatives)
    return _balanced(tpr, tnr)


def _best_cut(labels: np.ndarray, probs: np.ndarray, objective: str) -> float:
    """The cut between adjacent distinct probabilities that maximises the objective."""
    from sklearn.metrics import roc_curve

    if labels.min() == labels.max():
        return 0.5  # One class only: every cut between the probabilities ties; keep the default.
    # roc_curve lists every distinct probability t (descending) with the rates of "prob >= t".
    fpr, tpr, cuts = roc_curve(labels, probs, drop_intermediate=False)
    positives = labels.sum()
    negatives = len(labels) - positives
    if objective == "balanced_accuracy":
        scores = (tpr + 1 - fpr) / 2
    else:
        scores = (tpr * positives + (1 - fpr) * negatives) / len(labels)
    # Put each cut half-way to the next lower probability: same predictions, more margin.
    lower = np.append(cuts[1:], 0.0)
    cuts = np.where(np.isinf(cuts), np.nextafter(cuts[1], np.inf), (cuts + lower) / 2)
    best = np.flatnonzero(scores >= scores.max() - 1e-12)
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])  # Ties: the cut nearest 0.5.


def tune_thresholds(y_true: np.ndarray, y_prob: np.ndarray, objective: str = "balanced_accuracy") -> np.ndarray:
    """Per-attribute thresholds that maximise ``objective`` on these arrays (40 values).

    Candidates are the cuts between distinct probabilities; 0.5 is kept wherever no cut
    does strictly better, so the objective never falls below its value at 0.5.
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    y_true, y_prob = _check_arrays(y_true, y_prob)
    tuned = np.array([_best_cut(y_true[:, j], y_prob[:, j], objective) for j in range(NUM_ATTRIBUTES)])
    # Guard against float ties at the edges: never return a cut that scores below 0.5.
    at_tuned = _objective_scores(y_true, y_prob >= tuned, objective)
    at_half = _objective_scores(y_true, y_prob >= 0.5, objective)
    return np.where(at_tuned >= at_half, tuned, 0.5)


def cross_fitted_table(
    y_true: np.ndarray,
    y_prob: np.ndarray,
    baseline: np.ndarray | pd.Series,
    *,
    objective: str = "balanced_accuracy",
    folds: int = 5,
    groups: np.ndarray | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Figures at tuned thresholds that were never tuned on the images they score.

    Each fold's thresholds are tuned on the other folds and applied to it; the table is
    computed over all out-of-fold predictions. ``groups`` (e.g. identities) keeps one
    person's images in one fold. The ``threshold`` column is the mean over folds.
    """
    from sklearn.model_selection import GroupKFold, KFold

    y_true, y_prob = _check_arrays(y_true, y_prob)
    if not 2 <= folds <= len(y_true):
        raise ConfigError(f"folds={folds}: expected between 2 and the number of images ({len(y_true)})")
    splitter = GroupKFold(n_splits=folds) if groups is not None else KFold(folds, shuffle=True, random_state=seed)
    y_pred = np.zeros_like(y_true)
    fold_cuts = []
    for fit_rows, held_rows in splitter.split(y_prob, groups=groups):
        cuts = tune_thresholds(y_true[fit_rows], y_prob[fit_rows], objective)
        y_pred[held_rows] = y_prob[held_rows] >= cuts
        fold_cuts.append(cuts)
    metrics = _prediction_table(y_true, y_pred, y_prob)
    return _finish_table(metrics, baseline, np.mean(fold_cuts, axis=0))


@dataclasses.dataclass
class EvaluationResult:
    """One split's evaluation: tables at 0.5 and at the tuned thresholds, and the inputs."""

    split: str
    data_root: str | None
    objective: str
    thresholds_source: str
    thresholds: np.ndarray
    table_default: pd.DataFrame
    table_tuned: pd.DataFrame
    probabilities: np.ndarray
    image_ids: list[str]
    table_tuned_in_sample: pd.DataFrame | None = None
    predictions_source: str = ""

    @property
    def n_images(self) -> int:
        """How many images were scored."""
        return len(self.probabilities)

    @property
    def means(self) -> pd.DataFrame:
        """Mean of each metric over the attributes; columns ``at_0.5`` and ``tuned``."""
        return pd.DataFrame({"at_0.5": table_means(self.table_default), "tuned": table_means(self.table_tuned)})


def check_run_matches(run: Any) -> None:
    """Raise RunError unless the run predicts the 40 attributes at its recorded image size."""
    config_path = RunFiles(Path(run.path)).config
    attributes = list(run.record.attributes)
    if attributes != list(ATTRIBUTES):
        raise RunError(
            f"{config_path}: the model predicts {len(attributes)} attributes "
            f"({', '.join(attributes[:3])}...); expected the {NUM_ATTRIBUTES} CelebA attributes in official order"
        )
    input_size = tuple(run.model().input_shape[1:3])
    if input_size != run.image_shape:
        height, width = run.image_shape
        raise RunError(f"{config_path}: image_size {run.image_size} and crop {run.crop!r} make {width}x{height} "
                       f"images but the model takes {input_size[1]}x{input_size[0]} images")


def run_baseline(run: Any, table: pd.DataFrame, rows: pd.DataFrame) -> pd.Series:
    """Accuracy per attribute on ``rows`` of always predicting the train split's majority label.

    The majority comes from the label rates the run recorded at training time
    (``Run.label_rates``; for an older run, the train rows of ``table``'s annotations, images
    present or not), so a root holding only the evaluated split's images is enough.
    """
    majority = (run.label_rates(table) > 0.5).astype(np.int8)
    return (rows[list(ATTRIBUTES)] == majority).mean().rename("majority_accuracy")


def threshold_folds(rows: pd.DataFrame, folds: int) -> tuple[int, np.ndarray | None]:
    """The fold count to use and the identity groups, when identities allow grouping."""
    identity = rows["identity"].to_numpy() if "identity" in rows else None
    folds = min(folds, len(rows))
    if folds < 2:
        raise RunError(f"the val split has {len(rows)} image(s); tuning thresholds needs at least 2")
    if identity is None or (identity < 0).any() or len(np.unique(identity)) < folds:
        return folds, None
    return folds, identity


def _tune_on_val(run: Any, rows: pd.DataFrame, y_true: np.ndarray, y_prob: np.ndarray, objective: str,
                 baseline: pd.Series, folds: int) -> tuple[np.ndarray, pd.DataFrame, pd.DataFrame, str]:
    """Tune and store thresholds on val; return them, the cross-fitted and in-sample tables."""
    thresholds = tune_thresholds(y_true, y_prob, objective)
    run.record_thresholds(objective, dict(zip(ATTRIBUTES, map(float, thresholds))))
    n_folds, groups = threshold_folds(rows, folds)
    crossed = cross_fitted_table(y_true, y_prob, baseline, objective=objective, folds=n_folds, groups=groups)
    in_sample = attribute_table(y_true, y_prob, thresholds, baseline)
    source = (f"tuned on val ({objective}), stored in {run.files.config.name}; tuned figures cross-fitted over "
              f"{n_folds} folds")
    return thresholds, crossed, in_sample, source


def _stored_thresholds(run: Any, objective: str) -> tuple[np.ndarray, str, str]:
    """The thresholds stored in the run, their objective and a note on where they came from."""
    stored = run.record.thresholds
    if not stored:
        note = "0.5 for every attribute: none stored yet (evaluate the val split first)"
        return np.full(NUM_ATTRIBUTES, 0.5), objective, note
    return np.asarray(run.thresholds, dtype=np.float64), stored.objective, (
        f"tuned on val ({stored.objective}), read from {run.files.config.name}"
    )


def evaluate_run(
    run: Any,
    table: pd.DataFrame,
    split: str,
    *,
    objective: str = "balanced_accuracy",
    batch_size: int | None = None,
    progress: bool = True,
    folds: int = 5,
    flip: bool | None = None,
    shift: int | None = None,
) -> EvaluationResult:
    """Predict ``split`` and tabulate every attribute at 0.5 and at tuned thresholds.

    On val, thresholds are tuned, stored in the run's record (``Run.record_thresholds``), and the tuned figures
    are cross-fitted (each fold scored with thresholds tuned on the others). On train or
    test, the stored thresholds are applied unchanged (0.5 where none are stored).
    ``flip`` and ``shift`` choose the test-time views (None: as the run's config says; see
    ``runs.prediction_views``). Predictions are kept in the run folder and reused by the next
    evaluation of the same split, model and views (``Run.predict_stored``).
    """
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r}: expected one of {', '.join(OBJECTIVES)}")
    from celebalib.data import split_rows

    rows = split_rows(table, split)
    check_run_matches(run)
    y_prob, reused = run.predict_stored(rows, split, batch_size=batch_size, progress=progress, flip=flip, shift=shift)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    views = run.views(flip, shift)
    predicted = f"{len(views)} view{'s' if len(views) > 1 else ''} averaged ({describe_views(views)})" + (
        f"; reused from {run.files.predictions(split).name} (same model file and views)" if reused else "")
    y_true = rows[list(ATTRIBUTES)].to_numpy()
    baseline = run_baseline(run, table, rows)
    in_sample = None
    if split == "val":
        thresholds, tuned, in_sample, source = _tune_on_val(run, rows, y_true, y_prob, objective, baseline, folds)
    else:
        thresholds, objective, source = _stored_thresholds(run, objective)
        tuned = attribute_table(y_true, y_prob, thresholds, baseline)
    root = table.attrs.get("root")
    return EvaluationResult(
        split=split, data_root=str(root) if root is not None else None, objective=objective,
        thresholds_source=source, thresholds=thresholds, table_default=attribute_table(y_true, y_prob, 0.5, baseline),
        table_tuned=tuned, probabilities=y_prob, image_ids=rows["image_id"].tolist(), table_tuned_in_sample=in_sample,
        predictions_source=predicted,
    )


def _number(value: Any) -> float | None:
    """A float for JSON, None for NaN (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


THRESHOLD_FREE = ("positive_rate", "baseline", "roc_auc")


def flat_table(result: EvaluationResult) -> pd.DataFrame:
    """One row per attribute: threshold-free columns once, the rest suffixed _at_0.5 / _tuned."""
    parts = [result.table_default[list(THRESHOLD_FREE)]]
    for suffix, table in (("at_0.5", result.table_default), ("tuned", result.table_tuned)):
        parts.append(table.drop(columns=list(THRESHOLD_FREE)).add_suffix(f"_{suffix}"))
    return pd.concat(parts, axis=1)


def evaluation_json(result: EvaluationResult) -> dict[str, Any]:
    """The documented JSON summary of an evaluation (see docs/ARCHITECTURE.md)."""
    means = {name: {key: _number(column[key]) for key in SUMMARY_METRICS} for name, column in result.means.items()}
    per_attribute = []
    for name in ATTRIBUTES:
        entry: dict[str, Any] = {"attribute": name}
        entry.update({key: _number(result.table_default.at[name, key]) for key in THRESHOLD_FREE})
        for which, table in (("at_0.5", result.table_default), ("tuned", result.table_tuned)):
            entry[which] = {key: _number(value) for key, value in table.loc[name].items() if key not in THRESHOLD_FREE}
        per_attribute.append(entry)
    return {
        "split": result.split, "n_images": result.n_images, "data_root": result.data_root,
        "objective": result.objective, "thresholds_source": result.thresholds_source,
        "means": means, "per_attribute": per_attribute,
    }


def write_evaluation(result: EvaluationResult, run_dir: str | Path) -> tuple[Path, Path]:
    """Write the split's report (``RunFiles.evaluation``: a CSV table and a JSON summary) atomically into
    ``run_dir``, and its mean figures into the run's record where the folder holds one."""
    from celebalib.io import atomic_path, write_json

    files = RunFiles(Path(run_dir))
    csv_path, json_path = files.evaluation(result.split, ".csv"), files.evaluation(result.split, ".json")
    with atomic_path(csv_path) as tmp:
        flat_table(result).to_csv(tmp, float_format="%.6g")
    summary = evaluation_json(result)
    write_json(json_path, summary)
    if files.config.is_file():
        Run(files.path).record_results(result.split, {key: summary[key] for key in (
            "n_images", "data_root", "objective", "thresholds_source", "means")})
    return csv_path, json_path


def summary_text(result: EvaluationResult, n: int = 5) -> str:
    """A few lines: mean figures against the baseline, the best and worst attributes."""
    means = result.means
    ranked = result.table_tuned["balanced_accuracy"].sort_values(ascending=False).dropna()
    best = ", ".join(f"{name} {value:.3f}" for name, value in ranked.head(n).items())
    worst = ", ".join(f"{name} {value:.3f}" for name, value in ranked.tail(n)[::-1].items())
    return "\n".join([
        f"{result.split}: {result.n_images} images from {display_path(result.data_root) if result.data_root else 'a table in memory'}",
        *([f"predictions: {result.predictions_source}"] if result.predictions_source else []),
        f"thresholds: {result.thresholds_source}",
        f"mean accuracy {means.at['accuracy', 'at_0.5']:.3f} at 0.5, {means.at['accuracy', 'tuned']:.3f} tuned "
        f"(majority baseline {means.at['baseline', 'at_0.5']:.3f})",
        f"mean balanced accuracy {means.at['balanced_accuracy', 'at_0.5']:.3f} at 0.5, "
        f"{means.at['balanced_accuracy', 'tuned']:.3f} tuned (baseline 0.500)",
        f"mean ROC-AUC {means.at['roc_auc', 'at_0.5']:.3f} (threshold-free)",
        f"best balanced accuracy (tuned): {best}",
        f"worst balanced accuracy (tuned): {worst}",
    ])


def configure_evaluate_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``evaluate`` command's arguments."""
    parser.epilog = "example:\n  python -m celebalib evaluate --run runs/course --split val --quiet"
    from celebalib.bundles import RUN_SOURCES

    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, e.g. runs/NAME (a bundle's run is "
                        "its unpacked folder in the cache, where the reports go)")
    parser.add_argument("--data", default=None, help="CelebA root (default: the run's data_root)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to evaluate (val tunes thresholds)")
    parser.add_argument("--objective", default="balanced_accuracy", choices=OBJECTIVES,
                        help="what the val thresholds maximise")
    parser.add_argument("--batch-size", type=int, default=None, help="prediction batch size (default: the run's)")
    parser.add_argument("--test-time-flip", choices=("run", "on", "off"), default="run",
                        help="average with mirror images: as the run's config says, on or off")
    parser.add_argument("--flip", dest="test_time_flip", choices=("run", "on", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--test-time-shift", type=int, default=None, metavar="PIXELS",
                        help="also average views shifted by this many pixels left, right, up and down; "
                             "0 for none (default: as the run's config says)")
    parser.add_argument("--shift", dest="test_time_shift", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)
    parser.set_defaults(handler=_evaluate_command)


def _evaluate_command(args: argparse.Namespace) -> int:
    """Evaluate a run on a split, write the files and print the summary."""
    from celebalib.data import load_celeba
    from celebalib.runs import open_run

    run = open_run(args.run)
    table = load_celeba(run.data_root(args.data))
    result = evaluate_run(run, table, args.split, objective=args.objective, batch_size=args.batch_size,
                          progress=not args.quiet,
                          flip={"run": None, "on": True, "off": False}[args.test_time_flip],
                          shift=args.test_time_shift)
    csv_path, json_path = write_evaluation(result, run.path)
    print(summary_text(result))
    print(f"wrote {csv_path} and {json_path}")
    return 0
