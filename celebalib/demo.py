"""The ``demo`` command: run the course notebooks 01-05 headless and print the headline figures.

Each notebook is executed top to bottom in a fresh kernel (nbclient), and the executed
notebook and an HTML copy are written to the reports folder. The headline figures are read
from the files the notebooks leave in the course run folder, never from notebook text.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from celebalib.config import PACKAGE_DIR, Settings, get_settings
from celebalib.errors import ConfigError, RunError
from celebalib.io import atomic_path, read_json, write_text

NOTEBOOKS_DIR = PACKAGE_DIR.parent / "notebooks"
CELL_TIMEOUT = 3600  # seconds; the least any cell is allowed (a full-mode course run takes minutes)


def course_notebooks(folder: Path = NOTEBOOKS_DIR) -> list[Path]:
    """Return the numbered course notebooks (``01-...`` to ``05-...``) in order."""
    if not folder.is_dir():
        raise ConfigError(f"{folder}: notebooks folder not found (the demo runs from a source checkout)")
    notebooks = sorted(p for p in folder.glob("[0-9][0-9]-*.ipynb"))
    if not notebooks:
        raise ConfigError(f"{folder}: expected notebooks named 01-*.ipynb ... 05-*.ipynb, found none")
    return notebooks


def course_run_dir(settings: Settings | None = None) -> Path:
    """The run folder of the recipe for the settings' data and this machine: ``runs/<recipe name>``."""
    from celebalib import data, recipes

    settings = settings or get_settings()
    return settings.runs_dir / recipes.resolve_recipe(data.default_root(), fast=settings.fast).name


def course_run(settings: Settings | None = None) -> Any:
    """Open the run CELEBALIB_RUN names (a folder, bundle or address), else the one notebook 03 trains
    (``runs/<recipe name>``), else train a quick one-epoch run of the recipe there."""
    from celebalib import data, recipes, runs, train

    given = runs.run_from_environment()
    if given is not None:
        return given
    settings = settings or get_settings()
    root = data.default_root()
    recipe = recipes.resolve_recipe(root, fast=settings.fast)
    run_dir = settings.runs_dir / recipe.name
    if runs.RunFiles(run_dir).final.is_file():
        return runs.open_run(run_dir)
    print(f"No trained run in {run_dir}: training a quick one-epoch run of the {recipe.name} recipe "
          "(notebook 03 trains the real one).")
    return train.fit(run_dir, recipe.config, data_root=root, epochs=1, progress=False)


def cell_timeout(settings: Settings | None = None) -> int | None:
    """Seconds one notebook cell may take: notebook 03's training cell runs the recipe for this data,
    so twice the recipe's expected time (at least ``CELL_TIMEOUT``); None (no limit) when nothing
    says how long the recipe takes on this kind of machine."""
    from celebalib import recipes

    settings = settings or get_settings()
    recipe = recipes.resolve_recipe(settings.data_root, fast=settings.fast)  # the data need not be drawn yet
    if recipe.minutes is None:
        return None
    return max(CELL_TIMEOUT, round(2 * recipe.minutes * 60))


def _error_text(error: Exception) -> str:
    """Return the one-line reason an execution failed (exception name and message)."""
    ename, evalue = getattr(error, "ename", None), getattr(error, "evalue", None)
    if ename:
        return f"{ename}: {evalue}".strip().rstrip(":")
    first = str(error).strip().splitlines()
    return f"{type(error).__name__}: {first[0] if first else ''}".strip().rstrip(":")


# A cell with this tag shows its printed lines on the demo's console as they arrive (notebook 03's
# recipe and training lines), so a long training is not a silent wait.
ECHO_TAG = "progress"


def _echoing_client(notebook: Any, **options: Any) -> Any:
    """A NotebookClient that also prints the standard output of cells tagged ``ECHO_TAG``."""
    from nbclient import NotebookClient

    class EchoingClient(NotebookClient):
        def output(self, outs, msg, display_id, cell_index):  # type: ignore[no-untyped-def]
            out = super().output(outs, msg, display_id, cell_index)
            tags = self.nb.cells[cell_index].get("metadata", {}).get("tags", [])
            if out is not None and out.get("output_type") == "stream" and out.get("name") == "stdout" \
                    and ECHO_TAG in tags:
                for line in out.text.splitlines():
                    print(f"      {line}", flush=True)
            return out

    return EchoingClient(notebook, **options)


# Outputs that only a live kernel can draw: a saved notebook would show their text repr instead.
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def drop_widget_outputs(notebook: Any) -> Any:
    """Remove widget views (and the widget state) from an executed notebook; the prose shows a screenshot."""
    for cell in notebook.cells:
        if cell.get("cell_type") == "code":
            cell["outputs"] = [out for out in cell.get("outputs", []) if WIDGET_VIEW not in out.get("data", {})]
    notebook.metadata.pop("widgets", None)
    return notebook


def execute_notebook(path: Path, *, timeout: int | None = CELL_TIMEOUT,
                     kernel_log: Path | None = None) -> Any:
    """Execute a notebook in a fresh kernel (working folder: its own) and return it, with each
    cell's consecutive printed outputs merged into one and widget views dropped
    (``drop_widget_outputs``); cells tagged ``ECHO_TAG`` also print
    their lines here as they come.

    Args:
        path: the notebook.
        timeout: seconds one cell may take (None: no limit).
        kernel_log: file that receives the kernel process's own stderr (TensorFlow's C++
            lines, Jupyter's transport warning); None leaves it on this process's stderr.

    Raises:
        RunError: naming the notebook, the cell (1-based, as Jupyter counts) and the error.
    """
    import nbformat
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor

    notebook = nbformat.read(path, as_version=4)
    current = {"index": None}
    client = _echoing_client(
        notebook, timeout=timeout, kernel_name="python3", record_timing=False,
        resources={"metadata": {"path": str(path.parent)}},
        # TensorFlow's C++ start-up lines (no GPU found, CPU features) would otherwise land
        # in the reports as cell output; Python-level output is still captured.
        extra_arguments=["--IPKernelApp.capture_fd_output=False"],
        on_cell_start=lambda cell, cell_index: current.update(index=cell_index),
    )
    with contextlib.ExitStack() as stack:
        start: dict[str, Any] = {}
        if kernel_log is not None:
            kernel_log.parent.mkdir(parents=True, exist_ok=True)
            start["stderr"] = stack.enter_context(kernel_log.open("wb"))
        try:
            client.execute(**start)
        except Exception as error:  # nbclient raises several unrelated types (cell error, timeout, dead kernel)
            where = f"cell {current['index'] + 1}" if current["index"] is not None else "kernel start"
            # A cell's own error says everything; a dead or silent kernel may have said more in its log.
            see = f" (kernel log: {kernel_log})" if kernel_log is not None and not getattr(error, "ename", None) else ""
            raise RunError(f"{path}: {where}: {_error_text(error)}{see}") from None
    # Each flushed print arrives as its own output; merged, they read as one block (no blank lines).
    notebook, _ = CoalesceStreamsPreprocessor().preprocess(notebook, {})
    return drop_widget_outputs(notebook)


def write_reports(notebook: Any, name: str, out_dir: Path) -> tuple[Path, Path]:
    """Write the executed notebook and its HTML copy atomically; return both paths."""
    import nbformat
    from nbconvert import HTMLExporter

    ipynb, html = out_dir / f"{name}.ipynb", out_dir / f"{name}.html"
    body, _ = HTMLExporter().from_notebook_node(notebook)
    with atomic_path(ipynb) as tmp:
        nbformat.write(notebook, tmp)
    write_text(html, body)
    return ipynb, html


def _eval_summary(run_dir: Path) -> tuple[Path, dict[str, Any]] | None:
    """Return (path, contents) of the run's evaluation JSON, test split first."""
    from celebalib.runs import RunFiles

    for split in ("test", "val"):
        path = RunFiles(run_dir).evaluation(split)
        data = read_json(path)
        if data is not None:
            return path, data
    return None


def _eval_figures(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """Pick the mean figures out of an ``eval_<split>.json`` written by celebalib.evaluate."""
    try:
        means = data["means"]
        return {
            "split": str(data["split"]), "n_images": int(data["n_images"]),
            "baseline": float(means["at_0.5"]["baseline"]),
            "accuracy": float(means["at_0.5"]["accuracy"]),
            "balanced_accuracy": float(means["at_0.5"]["balanced_accuracy"]),
            "accuracy_tuned": float(means["tuned"]["accuracy"]),
            "balanced_accuracy_tuned": float(means["tuned"]["balanced_accuracy"]),
            **({"roc_auc": float(means["at_0.5"]["roc_auc"])} if "roc_auc" in means["at_0.5"] else {}),
        }
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{path}: expected the mean figures of celebalib.evaluate (missing {error})") from None


def _retrieval_figures(path: Path, k: int = 10) -> dict[str, float]:
    """Precision@k, and the same-person rate where identities were known, of the predicted, oracle
    and random rankings from ``retrieval_<split>.json``."""
    data = read_json(path)
    if data is None:
        return {}
    names = {"predicted": "", "oracle (true labels)": "_oracle", "random": "_random"}
    figures: dict[str, float] = {}
    try:
        for row in data["rankings"]:
            if row["ranking"] in names and int(row["k"]) == k:
                figures[f"precision_at_10{names[row['ranking']]}"] = float(row["precision_at_k"])
                if row.get("same_person_at_k") is not None:
                    figures[f"same_person_at_10{names[row['ranking']]}"] = float(row["same_person_at_k"])
        return figures
    except (KeyError, TypeError, ValueError) as error:
        raise RunError(f"{path}: expected rankings with ranking, k and precision_at_k "
                       f"(missing {error})") from None


def headline_figures(run_dir: Path) -> dict[str, Any]:
    """Read the headline figures from the files evaluation and retrieval left in a run folder.

    Returns:
        ``split``, ``n_images``, ``baseline``, ``accuracy`` and ``balanced_accuracy`` (at
        0.5, and ``_tuned`` at the val-tuned thresholds), and the retrieval ``precision_at_10``
        and ``same_person_at_10`` (each with ``_oracle`` and ``_random``) when notebook 05 wrote
        them; empty when nothing was evaluated.
    """
    found = _eval_summary(run_dir)
    if found is None:
        return {}
    figures = _eval_figures(*found)
    from celebalib.runs import RunFiles

    figures.update(_retrieval_figures(RunFiles(run_dir).retrieval(figures["split"])))
    return figures


def format_headline(figures: dict[str, Any], run_dir: Path, out_dir: Path) -> str:
    """Return the lines the demo prints at the end: figures, then where to look."""
    lines = []
    if "accuracy" in figures:
        lines += [
            f"{figures['split']} split, {figures['n_images']:,} images:",
            f"  mean accuracy           {figures['accuracy']:.3f} at 0.5, {figures['accuracy_tuned']:.3f} "
            f"with val-tuned thresholds (majority baseline {figures['baseline']:.3f})",
            f"  mean balanced accuracy  {figures['balanced_accuracy']:.3f} at 0.5, "
            f"{figures['balanced_accuracy_tuned']:.3f} with val-tuned thresholds (baseline 0.500)",
        ]
        if "roc_auc" in figures:
            lines.append(f"  mean ROC-AUC            {figures['roc_auc']:.3f} (chance 0.500)")
    else:
        lines.append(f"No evaluation found in {run_dir} (notebook 04 writes it).")
    for key, label in (("precision_at_10", "retrieval precision@10"), ("same_person_at_10", "same person in top 10")):
        if key in figures:
            references = (("true labels", f"{key}_oracle"), ("random", f"{key}_random"))
            extra = ", ".join(f"{name} {figures[ref]:.3f}" for name, ref in references if ref in figures)
            lines.append(f"  {label:<24}{figures[key]:.3f}" + (f" ({extra})" if extra else ""))
    lines.append(f"Executed notebooks and HTML copies: {out_dir}")
    lines.append(f"Trained run (model, history, evaluation): {run_dir}")
    return "\n".join(lines)


def run_demo(notebooks: list[Path], out_dir: Path, *, timeout: int | None = CELL_TIMEOUT) -> list[Path]:
    """Execute the notebooks in order, writing reports as each finishes; return the HTML paths.

    The kernels' own stderr (TensorFlow's C++ start-up lines, Jupyter's transport warning) goes
    to a temporary folder, kept only when a notebook fails, so the console shows progress alone.
    """
    written = []
    logs = Path(tempfile.mkdtemp(prefix="celebalib-demo-"))
    for number, path in enumerate(notebooks, start=1):
        started = time.monotonic()
        print(f"[{number}/{len(notebooks)}] {path.name} ...", flush=True)
        notebook = execute_notebook(path, timeout=timeout, kernel_log=logs / f"{path.stem}.kernel.log")
        _, html = write_reports(notebook, path.stem, out_dir)
        print(f"      done in {time.monotonic() - started:.0f} s -> {html}", flush=True)
        written.append(html)
    shutil.rmtree(logs, ignore_errors=True)
    return written


def _handle(args: argparse.Namespace) -> int:
    """Run the demo command."""
    import importlib.util

    missing = [name for name in ("nbclient", "nbconvert", "ipykernel") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"the demo runs notebooks, which needs {', '.join(missing)}: "
                          "in the celebalib folder run pip install -e '.[course]' (or make setup)")
    if args.fast:
        # Kernels inherit this process's environment, so every notebook sees fast mode.
        os.environ["CELEBALIB_FAST"] = "1"
    settings = get_settings()
    if settings.celeba_root is not None:
        # The kernels run in the notebooks' folder, where a relative CELEBA_ROOT would point elsewhere.
        os.environ["CELEBA_ROOT"] = str(settings.celeba_root)
    out_dir = Path(args.out).expanduser().resolve() if args.out else settings.reports_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {args.out}: expected a folder, found a file")
    notebooks = course_notebooks(Path(args.notebooks) if args.notebooks else NOTEBOOKS_DIR)
    print(settings.describe(), flush=True)
    started = time.monotonic()
    run_demo(notebooks, out_dir, timeout=cell_timeout(settings))
    run_dir = course_run_dir(settings)
    print(f"All {len(notebooks)} notebooks ran in {(time.monotonic() - started) / 60:.1f} min.")
    print(format_headline(headline_figures(run_dir), run_dir, out_dir))
    return 0


def configure_demo_parser(parser: argparse.ArgumentParser) -> None:
    """Add the demo command's arguments."""
    parser.epilog = "example:\n  python -m celebalib demo --fast"
    parser.add_argument("--fast", action="store_true", help="fast mode: tiny images, epochs and gallery "
                        "(the same as CELEBALIB_FAST=1)")
    parser.add_argument("--out", help="folder for executed notebooks and HTML copies "
                        "(default: reports/ under CELEBALIB_HOME)")
    parser.add_argument("--notebooks", help="run the numbered notebooks of this folder (default: notebooks/)")
    parser.set_defaults(handler=_handle)
