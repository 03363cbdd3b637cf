"""Training throughput: JPEG files through ``make_dataset`` against the same model fed from memory.

If the ratio (files / memory) is near 1, the input pipeline keeps up and is not the
bottleneck. All sources are measured in one process on one model, alternating, after a
warm-up that traces the training step; a third source, ``make_dataset(cache=True)``, shows
what keeping decoded images in memory after the first pass buys.

    python benchmarks/bench_training.py [--images 640] [--image-size 96] [--steps 20] [--rounds 2]

Uses a freshly generated synthetic set (so the figures are labelled synthetic), or
``--data ROOT`` for a real CelebA root (the figures then name its train split).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from celebalib.config import seed_everything
from celebalib.data import load_celeba, make_dataset
from celebalib.losses import get_loss
from celebalib.metrics import MeanBalancedAccuracy
from celebalib.model import build_model
from celebalib.synthetic import generate
from celebalib.train import make_optimizer


def in_memory(dataset: tf.data.Dataset, batches: int, batch_size: int) -> tf.data.Dataset:
    """The first ``batches`` batches of ``dataset`` held as tensors, batched and repeated."""
    images, labels = zip(*dataset.take(batches).as_numpy_iterator())
    tensors = (np.concatenate(images), np.concatenate(labels))
    return tf.data.Dataset.from_tensor_slices(tensors).batch(batch_size).repeat().prefetch(tf.data.AUTOTUNE)


class StepClock(keras.callbacks.Callback):
    """Record when each training step ends."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.times: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.times.append(time.perf_counter())


def images_per_second(model: keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Train ``steps`` steps from ``dataset``; images/s after the first two (iterator start-up) steps."""
    clock = StepClock()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False, callbacks=[clock])
    skip = min(2, steps - 2)
    return (steps - 1 - skip) * batch_size / (clock.times[-1] - clock.times[skip])


def measure(root: Path, args: argparse.Namespace) -> tuple[dict[str, list[float]], int]:
    """Return images/s per round from files, from files cached after one pass, and from memory."""
    table = load_celeba(root)
    common = {"image_size": args.image_size, "batch_size": args.batch_size, "training": True}
    sources = {"files": make_dataset(table, "train", **common).repeat(),
               "cached": make_dataset(table, "train", cache=True, **common).repeat()}
    sources["memory"] = in_memory(sources["files"], args.steps, args.batch_size)
    model = build_model(image_size=args.image_size, alpha=args.alpha)
    model.compile(optimizer=make_optimizer("adam"), loss=get_loss("bce"),
                  metrics=[keras.metrics.BinaryAccuracy(), MeanBalancedAccuracy()])
    n_train = int((table["split"] == "train").sum())
    images_per_second(model, sources["files"], 4, args.batch_size)  # traces the training step once
    images_per_second(model, sources["cached"], -(-n_train // args.batch_size), args.batch_size)  # fills the cache
    rates: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(args.rounds):  # alternate, so load changes on the machine hit all alike
        for name, dataset in sources.items():
            rates[name].append(images_per_second(model, dataset, args.steps, args.batch_size))
    return rates, n_train


def main() -> None:
    """Parse arguments, measure, print the figures and the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a real CelebA root (default: a new synthetic set)")
    parser.add_argument("--images", type=int, default=640, help="size of the synthetic set")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--alpha", type=float, default=0.35)
    parser.add_argument("--steps", type=int, default=20, help="training steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each kind (median)")
    args = parser.parse_args()
    seed_everything(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or generate(Path(tmp) / "synthetic", n=args.images, seed=0, progress=False)
        rates, n_train = measure(root, args)
    source = f"real CelebA at {args.data}, train split" if args.data else "synthetic data"
    print(f"{source} ({n_train} train images), MobileNetV2 alpha {args.alpha}, {args.image_size} px, "
          f"batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds, {os.cpu_count()} CPU cores")
    labels = {"files": "JPEG files through make_dataset", "cached": "make_dataset(cache=True), after one pass",
              "memory": "in-memory tensors"}
    median = {name: float(np.median(values)) for name, values in rates.items()}
    for name, values in rates.items():
        rounds = ", ".join(f"{v:.1f}" for v in values)
        print(f"{labels[name]:<42} {median[name]:7.1f} images/s (median of {rounds})")
    print(f"ratio files/memory: {median['files'] / median['memory']:.2f}, "
          f"cached/memory: {median['cached'] / median['memory']:.2f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
