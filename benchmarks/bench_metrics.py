"""What the training metrics cost per step: the celeba-cpu model's training step timed with
and without each metric that ``train`` compiles (Keras's multi-label AUC, the mean
balanced accuracy).

Random pixels and labels in memory (synthetic), so only the step itself is timed; the
variants alternate over several rounds after a warm-up that traces each step.

Model settings default to the ``celeba-cpu`` recipe's (``recipes.RECIPES``).

    python benchmarks/bench_metrics.py [--image-size S] [--alpha A] [--batch-size B] [--augment MODE] [--steps 15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from celebalib.config import seed_everything
from celebalib.model import AUGMENTATIONS, build_model
from celebalib.recipes import RECIPES
from celebalib.train import make_optimizer, training_metrics


def metric_sets(n_labels: int) -> dict[str, list]:
    """Named metric lists, from none to everything ``train`` compiles (``train.training_metrics``)."""
    return {
        "loss only": [],
        "accuracy + balanced accuracy": [m for m in training_metrics(n_labels) if m.name != "mean_auc"],
        "accuracy + balanced accuracy + AUC (as train compiles)": training_metrics(n_labels),
    }


def main() -> None:
    """Print milliseconds per training step for each metric set."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    recipe = RECIPES["celeba-cpu"]
    parser.add_argument("--image-size", type=int, default=recipe.image_size)
    parser.add_argument("--alpha", type=float, default=recipe.alpha)
    parser.add_argument("--batch-size", type=int, default=recipe.batch_size)
    parser.add_argument("--augment", choices=AUGMENTATIONS, default=recipe.augment)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    seed_everything(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.batch_size, args.image_size, args.image_size, 3)).astype(np.float32)
    y = (rng.uniform(size=(args.batch_size, 40)) < 0.2).astype(np.float32)
    models = {}
    for name, metrics in metric_sets(40).items():
        model = build_model(image_size=args.image_size, alpha=args.alpha, augment=args.augment)
        model.compile(optimizer=make_optimizer("adam"), loss="binary_crossentropy", metrics=metrics)
        model.train_on_batch(x, y)  # trace the step
        models[name] = model
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                model.train_on_batch(x, y)
            times[name].append((time.perf_counter() - start) / args.steps * 1000)
    print(f"synthetic random batches: {args.batch_size} x {args.image_size} px, alpha {args.alpha}, "
          f"augment {args.augment}, {args.steps} steps x {args.rounds} rounds; median ms per training step")
    base = float(np.median(times["loss only"]))
    for name, values in times.items():
        ms = float(np.median(values))
        print(f"{name}: {ms:.0f} ms ({(ms / base - 1) * 100:+.1f}% against loss only)")


if __name__ == "__main__":
    main()
