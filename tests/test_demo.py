"""The demo command: notebook execution, failure messages, reports and headline figures."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from celebalib import cli, demo
from celebalib.errors import ConfigError, RunError


def _write_notebook(path: Path, *sources: str) -> Path:
    """Write a notebook with one code cell per source string."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, path)
    return path


def _eval_json(split: str = "test", accuracy: float = 0.91) -> dict:
    """A small evaluation summary shaped like celebalib.evaluate's eval_<split>.json."""
    means = {"at_0.5": {"accuracy": accuracy, "balanced_accuracy": 0.7, "baseline": 0.8, "roc_auc": 0.85},
             "tuned": {"accuracy": 0.88, "balanced_accuracy": 0.83, "baseline": 0.8}}
    return {"split": split, "n_images": 120, "means": means, "per_attribute": []}


def _write_eval(run_dir: Path, split: str = "test") -> None:
    """Write the evaluation summary into a run folder."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / f"eval_{split}.json").write_text(json.dumps(_eval_json(split)))


def test_course_notebooks_are_the_five_in_order() -> None:
    names = [path.name for path in demo.course_notebooks()]
    assert [name[:3] for name in names] == ["01-", "02-", "03-", "04-", "05-"]
    assert names[2] == "03-train-with-adadelta.ipynb"  # the notebook that trains the course run


def test_course_notebooks_errors_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "absent")):
        demo.course_notebooks(tmp_path / "absent")
    (tmp_path / "notes.ipynb").write_text("{}")  # not numbered, so not a course notebook
    with pytest.raises(ConfigError, match="01-"):
        demo.course_notebooks(tmp_path)


def test_headline_figures_read_eval_and_retrieval_files(tmp_path: Path) -> None:
    assert demo.headline_figures(tmp_path) == {}
    _write_eval(tmp_path, split="val")
    rankings = [{"ranking": "predicted", "precision_at_k": 0.625, "same_person_at_k": 0.25, "k": 10},
                {"ranking": "random", "precision_at_k": 0.05, "same_person_at_k": None, "k": 10},
                {"ranking": "predicted", "precision_at_k": 0.9, "k": 5}]
    (tmp_path / "retrieval_val.json").write_text(json.dumps({"rankings": rankings}))
    figures = demo.headline_figures(tmp_path)
    assert figures == {"split": "val", "n_images": 120, "baseline": 0.8, "accuracy": 0.91,
                       "balanced_accuracy": 0.7, "accuracy_tuned": 0.88, "balanced_accuracy_tuned": 0.83, "roc_auc": 0.85,
                       "precision_at_10": 0.625, "precision_at_10_random": 0.05, "same_person_at_10": 0.25}
    text = demo.format_headline(figures, tmp_path, tmp_path / "reports")
    assert "0.910 at 0.5, 0.880 with val-tuned thresholds (majority baseline 0.800)" in text
    assert "retrieval precision@10  0.625 (random 0.050)" in text and "mean ROC-AUC            0.850" in text
    assert "same person in top 10   0.250\n" in text  # no identities for the random row: no reference


def test_headline_figures_prefer_test_and_reject_damaged_files(tmp_path: Path) -> None:
    _write_eval(tmp_path, split="val")
    damaged = _eval_json("test")
    del damaged["means"]["tuned"]
    (tmp_path / "eval_test.json").write_text(json.dumps(damaged))
    with pytest.raises(RunError, match="eval_test.json: expected the mean figures .*tuned"):
        demo.headline_figures(tmp_path)
    (tmp_path / "eval_test.json").write_text('{"means": \n oops')
    with pytest.raises(RunError, match=r"eval_test.json:2: expected JSON"):
        demo.headline_figures(tmp_path)
    (tmp_path / "eval_test.json").write_text(json.dumps(_eval_json("test", accuracy=0.5)))
    assert demo.headline_figures(tmp_path)["accuracy"] == 0.5


def test_course_run_opens_an_existing_run_or_trains_a_quick_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from celebalib import config, data, recipes, runs, synthetic, train

    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path))
    settings = config.get_settings()
    calls: list[tuple[str, Path, dict]] = []
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / synthetic.MARKER).write_text("{}")  # synthetic faces: the course recipe
    monkeypatch.setattr(data, "default_root", lambda: tmp_path / "faces")
    monkeypatch.setattr(train, "fit", lambda out, config=None, **kw: calls.append(("fit", out, {**kw, "config": config})) or "trained")
    monkeypatch.setattr(runs, "open_run", lambda path: calls.append(("open", path, {})) or "opened")
    assert demo.course_run(settings) == "trained"
    assert "No trained run" in capsys.readouterr().out
    kind, out, options = calls[-1]
    assert (kind, out, options["epochs"], options["data_root"]) == ("fit", settings.runs_dir / "course", 1,
                                                                   tmp_path / "faces")
    assert options["config"] == recipes.resolve_recipe(tmp_path / "faces", fast=settings.fast).config
    (out).mkdir(parents=True)
    (out / "model.keras").write_bytes(b"")  # a finished run has its final model
    assert demo.course_run(settings) == "opened" and calls[-1][:2] == ("open", out)


def test_demo_rejects_a_file_as_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    target = tmp_path / "reports"
    target.write_text("not a folder")
    assert cli.main(["demo", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "expected a folder" in err


@pytest.mark.slow
def test_demo_runs_notebooks_writes_reports_and_prints_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path / "home"))
    folder = tmp_path / "nbs"
    folder.mkdir()
    # The notebook writes an evaluation file into the course run, as notebook 04 does.
    run_dir = tmp_path / "home" / "runs-fast" / "course"
    _write_notebook(folder / "01-ok.ipynb", "import json, pathlib, os",
                    f"d = pathlib.Path({str(run_dir)!r}); d.mkdir(parents=True)\n"
                    f"(d / 'eval_test.json').write_text(json.dumps({_eval_json()!r}))",
                    "os.environ['CELEBALIB_FAST']")
    out = tmp_path / "out"
    assert cli.main(["demo", "--fast", "--notebooks", str(folder), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mean balanced accuracy  0.700 at 0.5" in printed and str(out) in printed
    executed = nbformat.read(out / "01-ok.ipynb", as_version=4)
    assert [c.execution_count for c in executed.cells] == [1, 2, 3]
    assert executed.cells[2].outputs[0]["data"]["text/plain"] == "'1'"  # --fast reached the kernel
    assert "<html" in (out / "01-ok.html").read_text().lower()


@pytest.mark.slow
def test_demo_stops_at_a_failing_cell_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "nbs"
    folder.mkdir()
    _write_notebook(folder / "01-fine.ipynb", "1 + 1")
    broken = _write_notebook(folder / "02-broken.ipynb", "x = 1", "x / 0", "print('never')")
    _write_notebook(folder / "03-after.ipynb", "2 + 2")
    out = tmp_path / "out"
    assert cli.main(["demo", "--notebooks", str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"celebalib demo: error: {broken}: cell 2: ZeroDivisionError: division by zero"
    assert sorted(p.name for p in out.iterdir()) == ["01-fine.html", "01-fine.ipynb"]


@pytest.mark.slow
def test_the_kernels_own_stderr_goes_to_its_log_not_the_console(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    # What TensorFlow's C++ start-up does: write straight to file descriptor 2, past Jupyter.
    notebook = _write_notebook(tmp_path / "01-noisy.ipynb", "import os; os.write(2, b'I0000 cpu_feature_guard.cc\\n')",
                               "print('a cell output')")
    log = tmp_path / "logs" / "01-noisy.kernel.log"
    executed = demo.execute_notebook(notebook, kernel_log=log)
    console = capfd.readouterr()
    assert "cpu_feature_guard" not in console.out + console.err
    assert "Kernel is running over TCP" not in console.err
    assert "cpu_feature_guard" in log.read_text()
    assert executed.cells[1].outputs[0]["text"] == "a cell output\n"


@pytest.mark.slow
def test_tagged_cells_print_live_and_flushed_lines_are_one_output(
    tmp_path: Path, capfd: pytest.CaptureFixture
) -> None:
    loop = "for i in range(3):\n    print(f'{name} {i}', flush=True)"
    notebook = _write_notebook(tmp_path / "01-echo.ipynb", "name = 'quiet'\n" + loop, "name = 'epoch'\n" + loop)
    written = nbformat.read(notebook, as_version=4)
    written.cells[1].metadata["tags"] = [demo.ECHO_TAG]
    nbformat.write(written, notebook)
    executed = demo.execute_notebook(notebook)
    console = capfd.readouterr().out
    assert "      epoch 0\n      epoch 1\n      epoch 2\n" in console
    assert "quiet" not in console  # untagged cells stay in the notebook
    for cell, name in zip(executed.cells, ("quiet", "epoch")):
        assert [o["text"] for o in cell.outputs] == [f"{name} 0\n{name} 1\n{name} 2\n"]


def test_a_relative_celeba_root_reaches_the_kernels_resolved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "celeba").mkdir()
    folder = tmp_path / "nbs"
    folder.mkdir()
    checked = _write_notebook(folder / "01-root.ipynb", "import os, pathlib\n"
                              "root = pathlib.Path(os.environ['CELEBA_ROOT'])\n"
                              "assert root.is_absolute() and root.is_dir(), root")
    monkeypatch.chdir(tmp_path)  # the kernels run in the notebooks' folder, not here
    monkeypatch.setenv("CELEBA_ROOT", "celeba")
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path / "home"))
    cli.main(["demo", "--notebooks", str(folder), "--out", str(tmp_path / "out")])
    assert f"{checked}: cell" not in capsys.readouterr().err  # the cell passed; no run folder follows


def test_the_cell_timeout_outlasts_the_recipes_expected_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celebalib import recipes

    real = tmp_path / "celeba"  # no synthetic marker: read as real CelebA
    real.mkdir()
    monkeypatch.setenv("CELEBA_ROOT", str(real))
    monkeypatch.delenv("CELEBALIB_FAST", raising=False)
    monkeypatch.setattr(recipes, "gpu_available", lambda: False)  # where the recipe is chosen
    recipe = recipes.resolve_recipe(real, fast=False, gpu=False)
    assert recipe.name == "celeba-cpu" and recipe.minutes is not None
    # notebook 03's training cell runs the whole 80-minute budget: an hour per cell would kill it
    assert demo.cell_timeout() >= 2 * recipe.minutes * 60 > demo.CELL_TIMEOUT
    # the synthetic default is not generated to find its recipe (notebook 01 does that)
    monkeypatch.delenv("CELEBA_ROOT")
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path / "home"))
    demo.cell_timeout()
    assert not (tmp_path / "home").exists() or not any((tmp_path / "home").rglob("*.jpg"))


def test_widget_views_are_dropped_from_saved_notebooks() -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["widgets"] = {"state": {}}
    widget = nbformat.v4.new_output("display_data", data={demo.WIDGET_VIEW: {"model_id": "x"},
                                                           "text/plain": "VBox(children=(...))"})
    text = nbformat.v4.new_output("stream", name="stdout", text="kept\n")
    notebook.cells = [nbformat.v4.new_code_cell("explorer", outputs=[text, widget])]
    demo.drop_widget_outputs(notebook)
    assert [out.get("text") for out in notebook.cells[0]["outputs"]] == ["kept\n"]
    assert "widgets" not in notebook.metadata
