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


def _evaluation_table() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"accuracy": rng.uniform(0.6, 1.0, 40), "baseline": rng.uniform(0.5, 1.0, 40),
                          "tpr": rng.uniform(0, 1, 40), "tnr": rng.uniform(0, 1, 40)}, index=ATTRIBUTES)
    return table.assign(gain=table["accuracy"] - table["baseline"], balanced_accuracy=(table["tpr"] + table["tnr"]) / 2)


@pytest.mark.parametrize("chart", [plots.accuracy_vs_baseline, plots.rates_per_attribute])
def test_evaluation_legends_cover_no_bar(chart) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = chart(_evaluation_table())
    FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    bars = [patch.get_window_extent() for patch in ax.patches if patch.get_width() > 0]
    assert len(bars) == 80
    assert not any(legend.overlaps(bar) for bar in bars)
    # One half is a reference for the two rates, not for accuracy, whose reference is the baseline bar.
    assert any(line.get_xdata()[0] == 0.5 for line in ax.lines) == (chart is plots.rates_per_attribute)


def test_cut_marks_say_how_many_more() -> None:
    marks = plots.prediction_marks([1] * 9, [1] * 9, names=[f"A{i}" for i in range(9)], limit=6)
    assert len(marks) == 6 and marks[-1] == "+4 more"
    assert len(plots.prediction_marks([1] * 6, [1] * 6, names=[f"A{i}" for i in range(6)], limit=6)) == 6


def test_training_curves_draw_chance_and_baseline_lines() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 1, 2], "binary_accuracy": [0.6, 0.7, 0.6, 0.7],
                            "mean_balanced_accuracy": [0.55, 0.6, 0.5, 0.6], "loss": [1.0, 0.8, 1.1, 0.9]})
    history = history.iloc[:2].assign(**{f"val_{c}": history.iloc[2:][c].to_numpy()
                                         for c in ("binary_accuracy", "mean_balanced_accuracy", "loss")})
    fig = plots.training_curves(history, baseline=0.8)
    flat = {ax.get_title(): [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"]
            for ax in fig.axes}
    assert flat == {"binary accuracy": [0.8], "mean balanced accuracy": [0.5], "loss": []}


def test_save_figure_writes_a_png_and_creates_folders(tmp_path: Path) -> None:
    fig = plots.image_grid([np.zeros((8, 8, 3))])
    path = plots.save_figure(fig, tmp_path / "reports" / "grid.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary file left


def test_compare_histories_draws_one_line_per_run_and_names_a_missing_column() -> None:
    history = pd.DataFrame({"epoch": [1, 2, 3], "val_mean_auc": [0.6, 0.7, 0.8]})
    fig = plots.compare_histories({"adam": history, "adadelta": history.assign(val_mean_auc=[0.5, 0.55, 0.6])},
                                  "val_mean_auc")
    assert [line.get_label() for line in fig.axes[0].lines] == ["adam", "adadelta"]
    with pytest.raises(ConfigError, match="run 'adam' has no column 'val_loss'"):
        plots.compare_histories({"adam": history}, "val_loss")


def test_template_heatmaps_draw_each_map_scaled_to_its_peak_with_the_landmarks() -> None:
    maps = np.zeros((2, 8, 6), dtype=np.float32)
    maps[0, 2, 3], maps[1, 6, 1] = 0.4, 0.2
    view = {"maps": maps, "attributes": ["Smiling", "Male"], "landmarks": np.array([[1, 2], [4, 2], [3, 4], [2, 6], [4, 6]]),
            "table": pd.DataFrame({"faces": [200, 150]}, index=["Smiling", "Male"])}
    fig = plots.template_heatmaps(view, columns=2)
    first = fig.axes[0]
    assert first.images[0].get_array().max() == pytest.approx(1.0)
    assert len(first.collections[0].get_offsets()) == 5
    assert first.get_title() == "Smiling\n200 faces"
