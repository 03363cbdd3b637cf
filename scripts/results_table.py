"""Print the README's results table from run folders' JSON files, so its figures cannot drift.

Each run folder (a live ``runs/NAME`` or a committed copy in ``docs/results/NAME``) gives one
row from ``eval_<split>.json`` (what ``celebalib evaluate`` and notebook 04 write),
``retrieval_<split>.json`` (notebook 05) and ``config.json`` (the run's settings), and one
line of best and worst attributes. What no run file records (the hardware and the command
that reproduces the run) comes from an optional ``about.json`` beside them:
``{"hardware": "...", "command": "..."}``.

    python scripts/results_table.py docs/results/course docs/results/celeba-cpu
    python scripts/results_table.py runs/course --copy-to docs/results/course   # refresh a committed copy and its card
    python scripts/results_table.py docs/results/celeba-cpu docs/results/course --write README.md

tests/test_results_table.py checks the table between ``<!-- results:start -->`` and
``<!-- results:end -->`` in the README against the committed copies.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from celebalib.runs import RunFiles

HEADER = ("| run | data and split | mean accuracy (majority baseline) | mean balanced accuracy | "
          "mean ROC-AUC | retrieval precision@10 | same person among the 10 closest | hardware | reproduce with |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
SPLITS = ("test", "val")
# The runs the README's table shows: the headline real-data run and the course run. Other committed
# runs (the optimiser comparison opt-adam, opt-adadelta) are read by the notebooks and docs/experiments.
README_RUNS = ("celeba-cpu", "course")


def copied_files(run: Path) -> list[Path]:
    """The run's small JSON files: its record, evaluation and retrieval reports, and about.json."""
    files = RunFiles(run)
    return [files.config, *(files.evaluation(split) for split in SPLITS), *(files.retrieval(split) for split in SPLITS),
            files.about()]
N_BEST = 3
START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's contents, or None when it is absent."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def evaluation(run: Path) -> dict[str, Any]:
    """The run's evaluation, test split first (val when the test split was never scored)."""
    files = RunFiles(run)
    for split in SPLITS:
        found = read_json(files.evaluation(split))
        if found is not None:
            return found
    names = " or ".join(files.evaluation(split).name for split in SPLITS)
    raise SystemExit(f"{run}: no {names} (run `celebalib evaluate --run {run}` first)")


def data_text(config: dict[str, Any], result: dict[str, Any]) -> str:
    """Which data, which split, how many images."""
    recorded = config.get("data_root") or (config.get("facts") or {}).get("data_root")  # schema 1, or 2
    root = Path(str(recorded or result.get("data_root") or ""))
    size = root.name.removeprefix("synthetic-")
    if root.name.startswith("synthetic"):
        source = f"synthetic ({int(size):,} faces)" if size.isdigit() else "synthetic"
    else:
        source = "genuine CelebA"
    return f"{source}, {result['split']} split, {int(result['n_images']):,} images"


def retrieval_text(run: Path, split: str, figure: str) -> str:
    """``figure`` (precision_at_k or same_person_at_k) at k = 10 of the predicted ranking, with the
    true-label and random rankings beside it."""
    found = read_json(RunFiles(run).retrieval(split))
    if found is None:
        return "-"
    by_name = {row["ranking"]: row.get(figure) for row in found["rankings"] if int(row["k"]) == 10}
    if by_name.get("predicted") is None:
        return "-"
    text = f"{by_name['predicted']:.3f}"
    extra = [f"{label} {by_name[name]:.3f}" for name, label in (("oracle (true labels)", "true labels"),
                                                                 ("random", "random")) if by_name.get(name) is not None]
    return text + (f" ({', '.join(extra)})" if extra else "")


def row(run: Path) -> str:
    """The run's row of the results table."""
    config, result = read_json(RunFiles(run).config) or {}, evaluation(run)
    about = read_json(RunFiles(run).about()) or {}
    at, tuned = result["means"]["at_0.5"], result["means"]["tuned"]
    cells = [
        f"`{run.name}`",
        data_text(config, result),
        f"{at['accuracy']:.3f} at 0.5, {tuned['accuracy']:.3f} tuned ({at['baseline']:.3f})",
        f"{at['balanced_accuracy']:.3f} at 0.5, {tuned['balanced_accuracy']:.3f} tuned (0.500)",
        f"{at['roc_auc']:.3f}",
        retrieval_text(run, result["split"], "precision_at_k"),
        retrieval_text(run, result["split"], "same_person_at_k"),
        about.get("hardware", "-"),
        f"`{about['command']}`" if about.get("command") else "-",
    ]
    return "| " + " | ".join(cells) + " |"


def best_and_worst(run: Path, n: int = N_BEST) -> str:
    """One line: the run's best and worst attributes by balanced accuracy at tuned thresholds."""
    result = evaluation(run)
    scored = sorted(((row["tuned"]["balanced_accuracy"], row["attribute"]) for row in result["per_attribute"]
                     if row["tuned"]["balanced_accuracy"] is not None), reverse=True)
    best = ", ".join(f"{name} {value:.3f}" for value, name in scored[:n])
    worst = ", ".join(f"{name} {value:.3f}" for value, name in scored[::-1][:n])
    return f"- `{run.name}`, balanced accuracy at tuned thresholds: best {best}; worst {worst}."


def table(runs: list[Path]) -> str:
    """The whole generated block: the table, then the best and worst attributes of each run."""
    return "\n".join([HEADER, *(row(run) for run in runs), "", *(best_and_worst(run) for run in runs)])


def copy_summaries(run: Path, target: Path) -> list[Path]:
    """Copy the run's small JSON files (never models, images or predictions) to ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in copied_files(run):
        if path.is_file():
            copied.append(Path(shutil.copyfile(path, target / path.name)))
    for path in copied:  # keep the data folder's name, not a path of this machine
        values = read_json(path)
        parts = [values, values.get("facts")] if isinstance(values, dict) else []  # a schema 2 record keeps facts
        found = [part for part in parts if isinstance(part, dict) and part.get("data_root")]
        for part in found:
            part["data_root"] = Path(part["data_root"]).name
        if found:
            path.write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    return copied


def write_block(readme: Path, block: str) -> None:
    """Replace what lies between the README's results markers with ``block``."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    readme.write_text(f"{head}{START}\n{block}\n{END}{rest.split(END, 1)[1]}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Print the table for the runs given, or copy one run's summaries."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders or their copies in docs/results/")
    parser.add_argument("--copy-to", type=Path, help="copy the (single) run's JSON summaries to this folder")
    parser.add_argument("--write", type=Path, metavar="README", help="replace the block between the markers")
    args = parser.parse_args(argv)
    if args.copy_to:
        if len(args.runs) != 1:
            parser.error("--copy-to takes exactly one run")
        for path in copy_summaries(args.runs[0], args.copy_to):
            print(f"copied {path}")
        from celebalib.model_card import write_model_card  # the copy's card, drawn from the copied files

        print(f"wrote {write_model_card(args.copy_to)}")
        return 0
    if args.write:
        write_block(args.write, table(args.runs))
        print(f"wrote the results of {len(args.runs)} runs into {args.write}")
        return 0
    print(table(args.runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
