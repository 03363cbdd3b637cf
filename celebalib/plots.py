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
