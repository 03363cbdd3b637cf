"""Test-time augmentation on real CelebA val: mirror averaging against mirror plus shifted views.

For each run folder, predicts the val split once per view (the image, whole-pixel shifts of it by
``--shift`` pixels left, right, up and down with the edge mirrored in, as the "shift" training
augmentation fills it, and the mirror image of each) and prints, for each set of views averaged,
the same val figures as ``bench_celeba_cpu.py``: mean accuracy at 0.5, mean accuracy and mean
balanced accuracy at thresholds tuned for each (cross-fitted over identity-grouped folds) and
mean ROC-AUC. The test split is never read.

    python benchmarks/bench_tta.py runs/celeba-cpu [more run folders] [--shift 3] [--data ../shared/celeba]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from bench_celeba_cpu import ValSplit  # the script's own folder is on sys.path
from celebalib.runs import Run


def shift(images: tf.Tensor, dx: int, dy: int) -> tf.Tensor:
    """Move a batch (N, S, S, C) by whole pixels (right by dx, down by dy), mirroring the edge in."""
    size = images.shape[1]
    pad = max(abs(dx), abs(dy))
    padded = tf.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="SYMMETRIC")
    return padded[:, pad - dy:pad - dy + size, pad - dx:pad - dx + size, :]


def views(pixels: int) -> dict[str, tuple[int, int, bool]]:
    """Name -> (dx, dy, mirrored) for the image, four shifts by ``pixels`` and all their mirror images."""
    moves = {"image": (0, 0), "left": (-pixels, 0), "right": (pixels, 0), "up": (0, -pixels), "down": (0, pixels)}
    named = {}
    for name, (dx, dy) in moves.items():
        named[name] = (dx, dy, False)
        named[f"{name}, mirrored"] = (dx, dy, True)
    return named


def main() -> None:
    """Print one line per run and set of views."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (best.keras is scored)")
    parser.add_argument("--shift", type=int, default=3, help="pixels each shifted view moves (default 3)")
    parser.add_argument("--data", type=Path, default=Path("../shared/celeba"), help="a CelebA root with val images")
    args = parser.parse_args()
    val = ValSplit(args.data)
    named = views(args.shift)
    sets = {"1 view (the image)": ["image"],
            "2 views (and its mirror image)": ["image", "image, mirrored"],
            f"10 views (and shifts by {args.shift} px, each mirrored)": list(named)}
    print(val.describe())
    print("run | views | acc@0.5 | acc (tuned for acc) | bal acc (tuned for it) | ROC-AUC")
    for folder in args.runs:
        run = Run(folder)
        model = run.model("best")
        dataset = run.images(val.rows, batch_size=64).cache()
        probabilities, started = {}, time.perf_counter()
        for name, (dx, dy, mirrored) in named.items():
            view = dataset.map(lambda images, dx=dx, dy=dy: shift(images, dx, dy))
            if mirrored:
                view = view.map(tf.image.flip_left_right)
            probabilities[name] = np.asarray(model.predict(view, verbose=0), dtype=np.float64)
        seconds = (time.perf_counter() - started) / len(named)
        for label, members in sets.items():
            y_prob = np.mean([probabilities[name] for name in members], axis=0)
            print(f"{folder.name} | {label} | {val.figures(y_prob)}", flush=True)
        print(f"{folder.name}: {seconds:.1f} s per view of {len(val.rows)} images")


if __name__ == "__main__":
    main()
