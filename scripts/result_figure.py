"""Draw the README's result picture from a committed run summary: per-attribute accuracy against
the majority baseline, and balanced accuracy at the tuned thresholds. No face pixels.

    python scripts/result_figure.py docs/results/celeba-cpu --out docs/images/celeba_cpu_per_attribute.png

It reads only ``eval_<split>.json`` (what ``celebalib evaluate`` and notebook 04 write), so the
picture and the README's generated results table come from the same file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from celebalib import plots
from celebalib.runs import RunFiles

SPLIT_ORDER = ("val", "test")  # the real-data run scores val; the course run test


def read_result(run: Path) -> dict:
    """The run's evaluation, val first."""
    for split in SPLIT_ORDER:
        path = RunFiles(run).evaluation(split)
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    raise SystemExit(f"{run}: no eval_val.json or eval_test.json (run `celebalib evaluate --run {run}` first)")


def per_attribute(result: dict) -> pd.DataFrame:
    """One row per attribute: majority-baseline accuracy, accuracy at 0.5, balanced accuracy tuned."""
    return pd.DataFrame([{"attribute": row["attribute"], "majority label": row["baseline"],
                          "model, threshold 0.5": row["at_0.5"]["accuracy"],
                          "balanced accuracy": row["tuned"]["balanced_accuracy"]} for row in result["per_attribute"]]
                        ).set_index("attribute").sort_values("balanced accuracy", ascending=False)


def figure(result: dict, name: str) -> Figure:
    """Two panels sharing the attributes: accuracy against the baseline, and balanced accuracy."""
    import seaborn as sns

    table = per_attribute(result)
    fig = Figure(figsize=(8.5, 1.4 + 0.17 * len(table)), layout="constrained")
    left, right = fig.subplots(1, 2, sharey=True)
    accuracy = table[["majority label", "model, threshold 0.5"]].reset_index().melt(
        "attribute", var_name="answer", value_name="accuracy")
    sns.scatterplot(data=accuracy, x="accuracy", y="attribute", hue="answer", style="answer",
                    palette=["0.55", "C0"], markers=["X", "o"], ax=left)
    left.hlines(table.index, table["majority label"], table["model, threshold 0.5"], color="0.8", zorder=0)
    left.set(xlim=(0.4, 1.0), ylabel="", title="accuracy")
    left.legend(loc="lower left", fontsize=8, title=None)
    sns.scatterplot(x=table["balanced accuracy"], y=table.index, color="C1", ax=right)
    right.axvline(0.5, color="0.55", linestyle=":", label="majority label (0.5)")
    right.set(xlim=(0.4, 1.0), xlabel="balanced accuracy", title="balanced accuracy, tuned thresholds")
    right.legend(loc="lower left", fontsize=8)
    for ax in (left, right):
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", color="0.92")
    fig.suptitle(f"{name}: {result['split']} split, {int(result['n_images']):,} images")
    return fig


def main(argv: list[str] | None = None) -> int:
    """Draw the picture of one run summary folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a run folder or its copy in docs/results/")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--name", help="the run's label in the title (default: 'the <folder> model on genuine CelebA')")
    args = parser.parse_args(argv)
    name = args.name or f"the {args.run.name} model on genuine CelebA"
    print(f"wrote {plots.save_figure(figure(read_result(args.run), name), args.out, dpi=100)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
