"""Figures for the notebooks and the README: face grids, contact sheets, evaluation charts.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
shows once in a notebook and can be saved with ``fig.savefig(...)``.
"""

from __future__ import annotations

import math
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError


def _as_array(image: str | Path | np.ndarray) -> np.ndarray:
    """Return an (H, W, 3) float image in [0, 1] from a path or an array in [0, 255]."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        path = Path(image)
        if not path.is_file():
            raise ConfigError(f"{path}: image file not found")
        with Image.open(path) as opened:
            image = np.asarray(opened.convert("RGB"))
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 3:
        raise ConfigError(f"image of shape {array.shape}: expected (height, width, 3)")
    return np.clip(array / 255.0, 0.0, 1.0)


def image_grid(images_or_paths: Sequence[str | Path | np.ndarray], captions: Sequence[str] | None = None,
               columns: int = 4, *, cell_width: float = 2.0, fontsize: float = 8.0,
               caption_lines: int | None = None, title: str | None = None) -> Figure:
    """Show images (paths or arrays in [0, 255]) in a grid, each with an optional caption.

    Args:
        caption_lines: text lines reserved under each image; by default the longest caption's.
    """
    images = list(images_or_paths)
    if not images:
        raise ConfigError("image_grid: expected at least one image")
    if captions is not None and len(captions) != len(images):
        raise ConfigError(f"image_grid: {len(captions)} captions for {len(images)} images; expected one each")
    if columns < 1:
        raise ConfigError(f"image_grid: columns={columns}; expected a positive number")
    columns = min(columns, len(images))
    rows = math.ceil(len(images) / columns)
    lines = caption_lines if caption_lines is not None else max(
        (str(c).count("\n") + 1 for c in captions or []), default=0)
    arrays = [_as_array(image) for image in images]
    aspect = arrays[0].shape[0] / arrays[0].shape[1]
    text_height = lines * fontsize * 1.25 / 72  # points to inches
    cell_height = cell_width * aspect + text_height + 0.1
    fig = Figure(figsize=(columns * cell_width, rows * cell_height + (0.3 if title else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < len(arrays):
            ax.imshow(arrays[i])
            if captions is not None:
                ax.text(0.5, -0.02, str(captions[i]), transform=ax.transAxes, ha="center", va="top",
                        fontsize=fontsize, linespacing=1.1)
    if title:
        fig.suptitle(title)
    return fig


def save_figure(figure: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Write ``figure`` as a PNG at ``path`` (atomically, folders created) and return the path."""
    from celebalib.io import atomic_path

    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=dpi)
    return Path(path)


def _positive_caption(row: pd.Series, width: int = 34) -> str:
    """Return the positive attributes of a table row, wrapped to a few short lines."""
    names = [name.replace("_", " ") for name in ATTRIBUTES if row[name] == 1]
    return textwrap.fill(", ".join(names) or "(none)", width=width)


def contact_sheet(table: pd.DataFrame, n: int = 12, columns: int = 4, seed: int = 0) -> Figure:
    """Show ``n`` random faces of a loaded table with their positive attributes under each."""
    missing = [c for c in ("path", *ATTRIBUTES) if c not in table.columns]
    if missing:
        raise ConfigError(f"contact_sheet: the table lacks columns {missing[:3]}; expected one from load_celeba")
    if n < 1 or table.empty:
        raise ConfigError(f"contact_sheet: n={n} faces from a table of {len(table)} rows; expected both positive")
    sample = table.sample(n=min(n, len(table)), random_state=seed)
    captions = [_positive_caption(row) for _, row in sample.iterrows()]
    return image_grid(list(sample["path"]), captions, columns=columns, cell_width=2.4, fontsize=7.5)


# ---------------------------------------------------------------------------------------
# Cluster charts (for celebalib.clustering)


def cluster_map(coords: np.ndarray, labels: np.ndarray, *,
                title: str = "Clusters on the first two principal components") -> Figure:
    """Scatter a 2-D map (e.g. ``clustering.pca_map``) with one colour per cluster."""
    import seaborn as sns

    coords, labels = np.asarray(coords), np.asarray(labels)
    if coords.ndim != 2 or coords.shape[1] != 2 or len(coords) != len(labels):
        raise ConfigError(f"cluster_map: coords {coords.shape} and {len(labels)} labels; expected (N, 2) and N")
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    palette = sns.color_palette("tab10" if len(np.unique(labels)) <= 10 else "husl", len(np.unique(labels)))
    sns.scatterplot(x=coords[:, 0], y=coords[:, 1], hue=labels, palette=palette, s=14, linewidth=0,
                    alpha=0.8, ax=ax)
    ax.set(xlabel="PC 1", ylabel="PC 2", title=title)
    ax.legend(title="cluster", fontsize="small", markerscale=1.5)
    return fig


def cluster_examples(paths: Sequence[str | Path], labels: np.ndarray, *, per_cluster: int = 6,
                     seed: int = 0) -> Figure:
    """A grid of example faces: one row per cluster, up to ``per_cluster`` random members each."""
    labels = np.asarray(labels)
    if len(paths) != len(labels) or per_cluster < 1:
        raise ConfigError(f"cluster_examples: {len(paths)} paths, {len(labels)} labels, per_cluster={per_cluster}")
    rng = np.random.default_rng(seed)
    blank = np.full((8, 8, 3), 255.0)
    images: list[str | Path | np.ndarray] = []
    captions: list[str] = []
    for cluster in np.unique(labels):
        members = np.flatnonzero(labels == cluster)
        picks = rng.choice(members, size=min(per_cluster, len(members)), replace=False)
        # Blank cells pad small clusters so that every cluster starts a new row.
        images += [paths[i] for i in picks] + [blank] * (per_cluster - len(picks))
        captions += [f"cluster {cluster}"] * len(picks) + [""] * (per_cluster - len(picks))
    return image_grid(images, captions, columns=per_cluster, title="Example faces per cluster")


def cluster_lift_heatmap(lift: pd.DataFrame) -> Figure:
    """Heatmap of ``clustering.cluster_lift``: how far each cluster is above or below the gallery."""
    import seaborn as sns

    fig = Figure(figsize=(12, 0.4 * len(lift) + 2.2), layout="constrained")
    ax = fig.subplots()
    sns.heatmap(lift, cmap="vlag", center=0, vmin=-1, vmax=1, ax=ax,
                cbar_kws={"label": "cluster mean - gallery mean"})
    ax.set(xlabel="", ylabel="cluster", title="Attributes over- and under-represented per cluster")
    return fig


# ---------------------------------------------------------------------------------------
# Evaluation charts (for celebalib.evaluate, notebook 04)


def _by_attribute(table: pd.DataFrame, columns: dict[str, str], sort_by: str) -> tuple[pd.DataFrame, list[str]]:
    """Long-form rows (attribute, measure, value) of ``columns``, and attributes by ``sort_by``."""
    missing = [c for c in (*columns, sort_by) if c not in table.columns]
    if missing:
        raise ConfigError(
            f"evaluation chart: the table lacks columns {missing}; expected one from evaluate.attribute_table"
        )
    order = list(table[sort_by].sort_values(ascending=False).index)
    long = table[list(columns)].rename(columns=columns).rename_axis("attribute").reset_index()
    return long.melt("attribute", var_name="measure", value_name="value"), order


def _bar_chart(long: pd.DataFrame, order: list[str], *, xlabel: str, title: str, half_line: bool = False) -> Figure:
    """Horizontal grouped bars, one group per attribute in ``order``, x from 0 to 1 (with a dotted line at
    one half if ``half_line``)."""
    import seaborn as sns

    fig = Figure(figsize=(7, 1.2 + 0.25 * len(order)), layout="constrained")
    ax = fig.subplots()
    sns.barplot(data=long, y="attribute", x="value", hue="measure", order=order, ax=ax)
    ax.set(xlim=(0, 1), xlabel=xlabel, ylabel="")
    fig.suptitle(title)
    # Above the bars, so that it covers none of them.
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    if half_line:
        ax.axvline(0.5, color="0.4", linestyle=":", linewidth=1)
    return fig


def accuracy_vs_baseline(table: pd.DataFrame) -> Figure:
    """Accuracy and majority-baseline accuracy per attribute, sorted by the gain over it."""
    long, order = _by_attribute(table, {"accuracy": "model", "baseline": "majority label"}, "gain")
    # No line at one half: accuracy's reference is each attribute's own baseline bar, not chance.
    return _bar_chart(long, order, xlabel="accuracy", title="Accuracy against the majority baseline (by gain)")


def rates_per_attribute(table: pd.DataFrame) -> Figure:
    """True-positive and true-negative rates per attribute, sorted by balanced accuracy."""
    long, order = _by_attribute(table, {"tpr": "true-positive rate", "tnr": "true-negative rate"}, "balanced_accuracy")
    return _bar_chart(long, order, xlabel="rate", title="Rates per attribute (by balanced accuracy)", half_line=True)


def prediction_marks(y_true: Sequence[int], y_pred: Sequence[int], names: Sequence[str] = ATTRIBUTES,
                     limit: int = 6) -> list[str]:
    """For one image: the labelled or predicted attributes, mistakes first, each marked.

    ``✗ name (missed)`` is labelled but not predicted, ``✗ name (false)`` predicted but not
    labelled, ``✓ name`` both. Beyond ``limit`` lines, the last says how many more there are ("+3 more").
    """
    marks = []
    for name, truth, pred in zip(names, y_true, y_pred):
        if truth and pred:
            marks.append((1, f"✓ {name}"))
        elif truth or pred:
            marks.append((0, f"✗ {name} ({'missed' if truth else 'false'})"))
    texts = [text for _, text in sorted(marks, key=lambda mark: mark[0])]
    return texts if len(texts) <= limit else texts[:limit - 1] + [f"+{len(texts) - limit + 1} more"]


def prediction_grid(images: Sequence[str | Path | np.ndarray], y_true: np.ndarray, y_pred: np.ndarray,
                    names: Sequence[str] = ATTRIBUTES, columns: int = 4, limit: int = 6) -> Figure:
    """Faces with their attributes marked right (✓) or wrong (✗), and the count of mistakes."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape or len(y_true) != len(images):
        raise ConfigError(f"prediction_grid: {len(images)} images, labels {y_true.shape}, predictions {y_pred.shape}")
    captions = [
        "\n".join([f"{int((t != p).sum())} wrong of {len(names)}", *prediction_marks(t, p, names, limit)])
        for t, p in zip(y_true, y_pred)
    ]
    fig = image_grid(images, captions, columns=columns, cell_width=2.2, caption_lines=limit + 1,
                     title="Predictions (✗ wrong, ✓ right)")
    for ax in fig.axes:
        ax.set_anchor("N")  # Faces at the top of their cells leave the room below for the marks.
    return fig


# Chance level of the threshold-free and balanced metrics, drawn on the training curves.
CHANCE_LEVELS = {"mean_auc": 0.5, "mean_balanced_accuracy": 0.5}


def training_curves(history: pd.DataFrame | str | Path, baseline: float | None = None) -> Figure:
    """One panel per metric of ``history.csv``: training and validation against the epoch.

    Dotted lines mark 0.5 (chance) on the balanced accuracy and ROC-AUC panels and, if
    ``baseline`` is given, the majority baseline's mean accuracy on the binary accuracy panel.
    """
    import seaborn as sns

    frame = pd.read_csv(history) if isinstance(history, (str, Path)) else history
    if "epoch" not in frame:
        frame = frame.rename_axis("epoch").reset_index()
    numeric = frame.select_dtypes("number").columns  # leaves out text columns such as "phase"
    metrics = [c for c in numeric if c not in ("epoch", "learning_rate") and not c.startswith("val_")]
    if not metrics:
        raise ConfigError(f"training_curves: no metric columns in {list(frame.columns)}; expected history.csv")
    fig = Figure(figsize=(3.6 * len(metrics), 3.0), layout="constrained")
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False).flat, metrics):
        present = [c for c in (metric, f"val_{metric}") if c in frame]
        long = frame.melt("epoch", value_vars=present, var_name="split", value_name="value")
        long["split"] = np.where(long["split"].str.startswith("val_"), "val", "train")
        sns.lineplot(data=long, x="epoch", y="value", hue="split", marker="o", ax=ax)
        ax.set(title=metric.replace("_", " "), ylabel="")
        reference = baseline if metric == "binary_accuracy" else CHANCE_LEVELS.get(metric)
        if reference is not None:
            label = "majority baseline" if metric == "binary_accuracy" else "chance"
            ax.axhline(reference, color="0.3", linestyle=":", linewidth=1.2, label=label)
            ax.legend(fontsize="small")
        for start in _phase_starts(frame):
            ax.axvline(start - 0.5, color="0.5", linestyle=":", linewidth=1)
    return fig


def _phase_starts(frame: pd.DataFrame) -> list[int]:
    """Epochs where a new training phase begins (e.g. fine-tuning after a warm-up)."""
    if "phase" not in frame or frame.empty:
        return []
    changed = frame["phase"].ne(frame["phase"].shift()) & frame.index.to_series().gt(frame.index[0])
    return frame.loc[changed, "epoch"].tolist()


def heatmap_overlay(image: str | Path | np.ndarray, heat: np.ndarray, *, alpha: float = 0.45,
                    title: str | None = None, ax=None) -> Figure:
    """Draw a Grad-CAM heat map (H, W) in [0, 1] over its image (an array in [0, 255] or a path)."""
    array = _as_array(image)
    if np.shape(heat) != array.shape[:2]:
        raise ConfigError(
            f"heatmap_overlay: heat map {np.shape(heat)} for an image {array.shape[:2]}; expected equal sizes"
        )
    if ax is None:
        ax = Figure(figsize=(3, 3), layout="constrained").subplots()
    ax.imshow(array)
    ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0.0, vmax=1.0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax.figure


def photo_faces(photo: str | Path | np.ndarray, faces: Sequence, *, max_faces: int = 4) -> Figure:
    """A photo with each found face's box, number and five landmarks, beside each face's aligned crop
    with CelebA's template landmarks marked (``faces``: ``predict.prepare_photo``'s list)."""
    from matplotlib.patches import Rectangle

    from celebalib.faces import template

    shown = [face for face in faces if face.face is not None][:max_faces]
    fig = Figure(figsize=(3.2 + 1.6 * len(shown), 3.2), layout="constrained")
    widths = [2.0] + [1.0] * len(shown)
    axes = np.atleast_1d(fig.subplots(1, len(widths), gridspec_kw={"width_ratios": widths}))
    axes[0].imshow(_as_array(photo))
    axes[0].set_title("no face found" if not shown else f"{len(shown)} face(s) found", fontsize=9)
    for ax, face in zip(axes[1:], shown):
        x, y, width, height = face.face.box
        axes[0].add_patch(Rectangle((x, y), width, height, fill=False, edgecolor="yellow", linewidth=1.2))
        axes[0].text(x, y - 3, str(face.number), color="yellow", fontsize=8, va="bottom")
        axes[0].scatter(*face.face.landmarks.T, s=8, c="cyan")
        ax.imshow(_as_array(face.crop))
        ax.scatter(*template().T, s=8, c="cyan", marker="+")
        ax.set_title(f"face {face.number}: {face.how}", fontsize=8)
    for ax in axes:
        ax.axis("off")
    return fig


def attribute_bars(table: pd.DataFrame, *, title: str | None = None) -> Figure:
    """One face's 40 probabilities as bars, each attribute's threshold as a tick, the yes answers in colour
    (``table``: ``predict.attribute_table``'s columns attribute, probability, threshold, answer)."""
    order = table.sort_values("probability")
    fig = Figure(figsize=(5, 7), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(order))
    colours = np.where(order["answer"] == "yes", "tab:orange", "lightgrey")
    ax.barh(positions, order["probability"], color=colours)
    ax.scatter(order["threshold"], positions, marker="|", s=60, c="black", label="threshold")
    ax.set_yticks(positions, order["attribute"], fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability (orange: yes at the threshold)")
    ax.legend(loc="lower right", fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    return fig


def template_heatmaps(gradcam: dict, attributes: Sequence[str] | None = None, *, columns: int = 8,
                      title: str | None = None) -> Figure:
    """Mean Grad-CAM maps (``results.read_gradcam``) drawn on CelebA's landmark template, no face pixels:
    each map scaled to its own peak, with the five template landmarks (eyes, nose, mouth corners) as white dots."""
    names = list(attributes or gradcam["attributes"])
    rows = math.ceil(len(names) / columns)
    height, width = gradcam["maps"].shape[1:]
    fig = Figure(figsize=(1.5 * columns, 1.5 * rows * height / width + (0.4 if title else 0)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    points = np.asarray(gradcam["landmarks"])
    for ax in axes.flat:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        heat = gradcam["maps"][gradcam["attributes"].index(name)]
        ax.imshow(heat / heat.max() if heat.max() > 0 else heat, cmap="jet", vmin=0.0, vmax=1.0)
        ax.scatter(points[:, 0], points[:, 1], s=10, c="white", edgecolors="black", linewidths=0.5)
        faces = gradcam["table"].at[name, "faces"] if "table" in gradcam else None
        ax.set_title(name.replace("_", " ") + (f"\n{faces} faces" if faces is not None else ""), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def compare_histories(histories: dict[str, pd.DataFrame], metric: str = "val_mean_balanced_accuracy") -> Figure:
    """One line per run of ``metric`` against the epoch, e.g. two optimisers on the same data."""
    fig = Figure(figsize=(5.5, 3.2), layout="constrained")
    ax = fig.subplots()
    for name, history in histories.items():
        if metric not in history:
            raise ConfigError(f"compare_histories: run {name!r} has no column {metric!r}; "
                              f"expected one of {', '.join(history.columns)}")
        ax.plot(history["epoch"], history[metric], marker="o", label=name)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "))
    ax.legend(fontsize="small")
    return fig
