"""Figures for the notebooks and the README: face grids, contact sheets, evaluation charts.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so it
shows once in a notebook and can be saved with ``fig.savefig(...)``.
"""

from __future__ import annotations

import math
import textwrap
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
               columns: int = 4, *, cell_width: float = 2.0, fontsize: float = 6.0,
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
    return image_grid(list(sample["path"]), captions, columns=columns, fontsize=5.5)


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
