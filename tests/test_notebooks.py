"""The course notebooks as files: prose without typed-in figures, clean committed runs, and the
layers written out in notebook 02 equal to ``build_model``'s."""

from __future__ import annotations

import json
import re
import types
from pathlib import Path

import numpy as np
import pytest

from celebalib import demo

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]-*.ipynb"))
# A decimal figure with two or more decimals (0.868, 12.40), not part of a word, version or path.
FIGURE = re.compile(r"(?<![\w.])\d+\.\d{2,}(?![\w.])")
# Figures that are settings, not results, and so cannot contradict a run.
ALLOWED = {
    "0.001",  # Keras's default Adadelta learning rate, which the course argues against
    "0.999",  # Keras's batch-normalisation momentum in MobileNetV2
    "0.95",  # Adadelta's decay rate rho, Keras's default
    "0.35",  # the width multiplier alpha of the course's MobileNetV2
}


def cells(path: Path, kind: str) -> list[dict]:
    """The cells of one kind ("markdown" or "code") of a notebook."""
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == kind]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def test_there_are_five_notebooks() -> None:
    assert [path.name[:3] for path in NOTEBOOKS] == ["01-", "02-", "03-", "04-", "05-"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_markdown_holds_no_typed_in_figures(path: Path) -> None:
    found = [(figure, source(cell)[:60]) for cell in cells(path, "markdown")
             for figure in FIGURE.findall(source(cell)) if figure not in ALLOWED]
    assert not found, f"{path.name}: figures typed into the prose (print them from code): {found}"


def test_the_figure_pattern_catches_results_and_spares_settings() -> None:
    text = "accuracy 0.868 (baseline 0.80), v3.11.7, 12.5 px, 1.0, file_0.123.png, 1,000.25"
    assert FIGURE.findall(text) == ["0.868", "0.80", "000.25"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebook_is_one_clean_run(path: Path) -> None:
    code = cells(path, "code")
    assert [cell["execution_count"] for cell in code] == list(range(1, len(code) + 1))
    errors = [o for cell in code for o in cell["outputs"] if o["output_type"] == "error"]
    assert not errors, f"{path.name}: error outputs committed"
    # one print per flush is one output each; unmerged, they render with a gap between lines
    split = sorted({n for n, cell in enumerate(code, 1) for a, b in zip(cell["outputs"], cell["outputs"][1:])
             if a["output_type"] == b["output_type"] == "stream" and a["name"] == b["name"]})
    assert not split, f"{path.name}: code cells {split} hold unmerged printed outputs (run it with demo.execute_notebook)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_code_is_short_lined_and_scaffolding_is_in_tags(path: Path) -> None:
    for cell in cells(path, "code"):
        text = source(cell)
        assert "NBVAL_" not in text, f"{path.name}: nbval markers belong in cell tags"
        long = [line for line in text.splitlines() if len(line) > 100]
        assert not long, f"{path.name}: lines over 100 characters: {long}"
        assert "atomic_path" not in text and "write_json" not in text, f"{path.name}: file writing in view"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_notebook_ends_with_a_summary_then_exercises_each_with_a_check_cell(path: Path) -> None:
    every = json.loads(path.read_text())["cells"]
    start = next(i for i, cell in enumerate(every) if source(cell).startswith("## Exercises"))
    assert any(source(cell).startswith("## Summary") for cell in every[:start]), f"{path.name}: no Summary"
    after = every[start + 1:]
    exercises = [i for i, cell in enumerate(after) if cell["cell_type"] == "markdown"
                 and re.match(r"\d\. ", source(cell))]
    assert len(exercises) >= 2, f"{path.name}: expected numbered exercises after ## Exercises"
    assert all(i + 1 < len(after) and after[i + 1]["cell_type"] == "code" for i in exercises), \
        f"{path.name}: each exercise ends in a check cell"


def tagged_source(path: Path, tag: str) -> str:
    """The source of the one code cell carrying ``tag``."""
    found = [source(cell) for cell in cells(path, "code") if tag in cell["metadata"].get("tags", [])]
    assert len(found) == 1, f"{path.name}: expected one cell tagged {tag!r}, found {len(found)}"
    return found[0]


def test_the_training_shows_on_the_demo_console() -> None:
    training = [cell for path in NOTEBOOKS for cell in cells(path, "code") if "fit_or_reuse" in source(cell)]
    assert len(training) == 1 and demo.ECHO_TAG in training[0]["metadata"].get("tags", [])


def test_written_out_model_equals_build_model() -> None:
    """Notebook 02's inline Keras block builds build_model's network: layers, shapes, weights, outputs."""
    import keras
    from keras import layers

    from celebalib.model import batch_norm_layers, build_model

    namespace = {"keras": keras, "layers": layers, "settings": types.SimpleNamespace(image_size=64)}
    exec(tagged_source(NOTEBOOKS[1], "inline-model"), namespace)
    written_out = namespace["written_out"]
    library = build_model(image_size=64, alpha=0.35, augment="flip")  # the course run's augmentation

    def describe(model):
        return [(layer.name, type(layer).__name__, tuple(layer.output.shape), layer.count_params())
                for layer in model.layers]

    assert describe(written_out) == describe(library)
    assert [type(layer).__name__ for layer in written_out.get_layer("augment").layers] == \
        [type(layer).__name__ for layer in library.get_layer("augment").layers]
    assert written_out.get_layer("dropout").rate == library.get_layer("dropout").rate
    assert {layer.momentum for layer in batch_norm_layers(written_out)} == \
        {layer.momentum for layer in batch_norm_layers(library)}
    assert written_out.get_layer("attributes").activation is library.get_layer("attributes").activation
    written_out.set_weights(library.get_weights())
    images = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    np.testing.assert_allclose(written_out.predict(images, verbose=0), library.predict(images, verbose=0),
                               atol=1e-5)
