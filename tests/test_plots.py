"""Figures: face grids and contact sheets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from celebalib import plots
from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError


def _captions(fig: Figure) -> list[str]:
    return [text.get_text() for ax in fig.axes for text in ax.texts]


def _shown(fig: Figure) -> list[np.ndarray]:
    return [ax.images[0].get_array() for ax in fig.axes if ax.images]


def test_image_grid_shows_arrays_and_paths_with_captions(synthetic_root: Path) -> None:
    red = np.zeros((20, 16, 3)); red[..., 0] = 255
    path = synthetic_root / "img_align_celeba" / "000001.jpg"
    fig = plots.image_grid([red, path, red], captions=["a", "b\nc", "d"], columns=2)
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # a 2x2 grid, the last cell empty
    shown = _shown(fig)
    assert len(shown) == 3 and shown[0].shape == (20, 16, 3) and shown[1].shape == (218, 178, 3)
    assert np.allclose(shown[0][..., 0], 1.0) and np.allclose(shown[0][..., 1], 0.0)
    assert _captions(fig) == ["a", "b\nc", "d"]


def test_image_grid_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one"):
        plots.image_grid([])
    with pytest.raises(ConfigError, match="captions"):
        plots.image_grid([np.zeros((4, 4, 3))], captions=["a", "b"])
    with pytest.raises(ConfigError, match="not found"):
        plots.image_grid([tmp_path / "absent.jpg"])
    with pytest.raises(ConfigError, match="expected \\(height, width, 3\\)"):
        plots.image_grid([np.zeros((4, 4))])


def test_contact_sheet_writes_each_face_positive_attributes(synthetic_table: pd.DataFrame) -> None:
    fig = plots.contact_sheet(synthetic_table, n=6, columns=3, seed=4)
    captions = _captions(fig)
    assert len(_shown(fig)) == 6 and len(captions) == 6
    sample = synthetic_table.sample(n=6, random_state=4)
    for caption, (_, row) in zip(captions, sample.iterrows()):
        words = caption.replace("\n", " ")
        for name in ATTRIBUTES:
            # No attribute name followed by a comma occurs inside another, so containment is exact.
            assert (f"{name.replace('_', ' ')}," in words + ",") == bool(row[name]), (name, caption)
    assert captions != _captions(plots.contact_sheet(synthetic_table, n=6, columns=3, seed=5))


def test_contact_sheet_needs_a_loaded_table() -> None:
    with pytest.raises(ConfigError, match="lacks columns"):
        plots.contact_sheet(pd.DataFrame({"path": ["x.jpg"]}))
