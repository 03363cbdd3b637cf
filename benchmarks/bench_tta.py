"""Test-time augmentation on real CelebA val: mirror averaging against mirror plus shifted views.

For each run folder, predicts the val split once per view (the image, whole-pixel shifts of it by
``--shift`` pixels left, right, up and down with the edge mirrored in, as the "shift" training
augmentation fills it, and the mirror image of each) and prints, for each set of views averaged,
the same val figures as ``bench_celeba_cpu.py``: mean accuracy at 0.5, mean accuracy and mean
balanced accuracy at thresholds tuned for each (cross-fitted over identity-grouped folds) and
mean ROC-AUC. The test split is never read.

    python benchmarks/bench_tta.py runs/celeba-cpu [more run folders] [--shift 3] [--data /path/to/celeba; default CELEBA_ROOT]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from bench_celeba_cpu import ValSplit  # the script's own folder is on sys.path
from celebalib.runs import Run, describe_views, prediction_views, view_of


def main() -> None:
    """Print one line per run and set of views."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (best.keras is scored)")
    parser.add_argument("--shift", type=int, default=3, help="pixels each shifted view moves (default 3)")
    parser.add_argument("--data", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        required=not os.environ.get("CELEBA_ROOT"), help="a CelebA root with val images (default: CELEBA_ROOT)")
    args = parser.parse_args()
    val = ValSplit(args.data)
    every = prediction_views(flip=True, shift=args.shift)
    sets = [prediction_views(flip=False, shift=0), prediction_views(flip=True, shift=0), every]
    print(val.describe())
    print("run | views | acc@0.5 | acc (tuned for acc) | bal acc (tuned for it) | ROC-AUC")
    for folder in args.runs:
        run = Run(folder)
        model = run.model("best")
        dataset = run.images(val.rows, batch_size=64).cache()
        probabilities, started = {}, time.perf_counter()
        for view in every:
            images = dataset.map(lambda batch, view=view: view_of(batch, *view))
            probabilities[view] = np.asarray(model.predict(images, verbose=0), dtype=np.float64)
        seconds = (time.perf_counter() - started) / len(every)
        for members in sets:
            y_prob = np.mean([probabilities[view] for view in members], axis=0)
            print(f"{folder.name} | {len(members)}: {describe_views(members)} | {val.figures(y_prob)}", flush=True)
        print(f"{folder.name}: {seconds:.1f} s per view of {len(val.rows)} images")


if __name__ == "__main__":
    main()
