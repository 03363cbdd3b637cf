"""Exporting a run's model to ONNX: onnxruntime answers as Keras does, the metadata reads back, bad input is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from celebalib import export
from celebalib.attributes import ATTRIBUTES
from celebalib.cli import main
from celebalib.data import load_image
from celebalib.model import OUTPUT
from celebalib.runs import Run

onnxruntime = pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def tuned_run(tiny_run: Run, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A copy of the tiny run with tuned thresholds (a different one per attribute) and ten views."""
    folder = tmp_path_factory.mktemp("export") / "tuned"
    shutil.copytree(tiny_run.path, folder, ignore=shutil.ignore_patterns("logs"))
    run = Run(folder)
    values = {name: round(0.1 + 0.02 * number, 2) for number, name in enumerate(ATTRIBUTES)}
    run.record_thresholds("balanced_accuracy", values)
    run.record_views(True, 2)
    return run


@pytest.fixture(scope="module")
def exported(tuned_run: Run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tuned run's best model written as ONNX by the command line."""
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    assert main(["export", "--run", str(tuned_run.path), "--out", str(out)]) == 0
    return out


def faces(run: Run, table: pd.DataFrame) -> np.ndarray:
    """Eight synthetic test faces as the model takes them, and two of random values in [0, 255]."""
    paths = table[table["split"] == "test"]["path"].head(8)
    images = np.stack([load_image(path, image_size=run.image_size, crop=run.crop) for path in paths])
    noise = np.random.default_rng(0).uniform(0, 255, (2, *images.shape[1:])).astype(np.float32)
    return np.concatenate([images, noise]).astype(np.float32)


@pytest.fixture(scope="module")
def fresh_run(tuned_run: Run, synthetic_table: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """The tuned run's architecture with freshly drawn weights and batch-norm statistics measured on
    the faces. The tiny run's two epochs leave its features nearly the same for every face; here
    every layer changes the answer."""
    import keras

    from celebalib.averaging import recompute_batch_norm
    from celebalib.runs import save_model

    folder = tmp_path_factory.mktemp("export") / "fresh"
    shutil.copytree(tuned_run.path, folder, ignore=shutil.ignore_patterns("logs"))
    keras.utils.set_random_seed(0)
    model = keras.models.clone_model(tuned_run.model())  # freshly initialised layers
    recompute_batch_norm(model, [faces(tuned_run, synthetic_table)[:8]])
    head = model.get_layer(OUTPUT)  # its kernel starts at zero: draw one giving logits of about unit scale
    scale = 1 / np.sqrt(head.kernel.shape[0])
    head.kernel.assign(np.random.default_rng(0).normal(0, scale, head.kernel.shape).astype(np.float32))
    save_model(model, folder / "best.keras")
    return Run(folder)


@pytest.mark.parametrize("weights", ["trained", "drawn"])
def test_onnxruntime_answers_as_keras_does(weights: str, request: pytest.FixtureRequest, tmp_path: Path,
                                           synthetic_table: pd.DataFrame) -> None:
    run = request.getfixturevalue({"trained": "tuned_run", "drawn": "fresh_run"}[weights])
    out = export.export_onnx(run, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (given,) = session.get_inputs()
    assert given.name == "images" and given.shape[1:] == [*run.image_shape, 3]
    images = faces(run, synthetic_table)
    expected = np.asarray(run.model()(images, training=False))
    for batch in (images, images[:1]):  # the batch size is left open
        (probabilities,) = session.run(None, {"images": batch})
        assert probabilities.shape == (len(batch), 40)
        np.testing.assert_allclose(probabilities, expected[:len(batch)], atol=1e-4)
    if weights == "drawn":  # the faces get clearly different answers, so every layer is compared
        assert np.abs(expected[:8] - expected[:8].mean(axis=0)).max() > 0.01


def test_the_metadata_names_the_attributes_thresholds_and_views(tuned_run: Run, exported: Path) -> None:
    metadata = export.onnx_metadata(exported)
    assert json.loads(metadata["attributes"]) == list(ATTRIBUTES)
    np.testing.assert_allclose(json.loads(metadata["thresholds"]), tuned_run.thresholds, atol=1e-6)
    assert json.loads(metadata["thresholds"])[:2] == [0.1, 0.12]
    assert metadata["thresholds_note"] == "thresholds tuned on val for balanced_accuracy"
    assert [tuple(view) for view in json.loads(metadata["views"])] == tuned_run.views() and len(tuned_run.views()) == 10
    assert metadata["run_id"] == tuned_run.run_id and metadata["model_file"] == "best.keras"
    height, width = tuned_run.image_shape
    assert f"float32 (N, {height}, {width}, 3), RGB values 0-255" in metadata["input"]


def test_the_command_says_what_it_wrote_and_leaves_no_temporary_file(exported: Path, capsys) -> None:
    assert sorted(path.name for path in exported.parent.iterdir()) == ["tiny.onnx"]
    main(["export", "--help"])
    assert "python -m celebalib export --run runs/celeba-cpu --out celeba-cpu.onnx" in capsys.readouterr().out


def test_the_final_model_can_be_exported_instead(tuned_run: Run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "final.onnx"
    assert main(["export", "--run", str(tuned_run.path), "--out", str(out), "--model", "final"]) == 0
    assert capsys.readouterr().out.startswith(f"{tuned_run.path / 'model.keras'} -> {out} (ONNX, ")
    assert export.onnx_metadata(out)["model_file"] == "model.keras"


@pytest.mark.parametrize("case", ["no best model", "out is a folder", "out under a file", "wrong ending",
                                  "format and ending disagree"])
def test_bad_input_is_one_line_exit_1_and_nothing_written(case: str, tuned_run: Run, tmp_path: Path, capsys) -> None:
    run, out = tuned_run.path, tmp_path / "out" / "model.onnx"
    argv = []
    if case == "no best model":
        run = tmp_path / "no-best"
        shutil.copytree(tuned_run.path, run, ignore=shutil.ignore_patterns("best.keras", "logs"))
        expected = f"{run / 'best.keras'}: not found; expected the run's best model (--model final"
    elif case == "out is a folder":
        out.mkdir(parents=True)
        expected = f"{out}: is a folder; expected a file name to write"
    elif case == "out under a file":
        (tmp_path / "out").write_text("a file, not a folder")
        expected = f"{out}: cannot write there"
    elif case == "wrong ending":
        out = out.with_suffix(".bin")
        expected = f"{out}: expected a file name ending in .zip or .onnx (or --format)"
    else:
        out, argv = out.with_suffix(".bin"), ["--format", "onnx"]
        expected = f"{out}: expected a file name ending in .onnx for --format onnx"
    before = sorted(tmp_path.rglob("*"))
    assert main(["export", "--run", str(run), "--out", str(out), *argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("celebalib export: error: ") and expected in err[0], err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, not even a folder
