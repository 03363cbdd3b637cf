"""Training-step cost with and without XLA: the same model compiled both ways, fed from memory.

Keras compiles the training step with XLA by default only on a GPU; on a CPU-only machine
``jit_compile="auto"`` means off. This measures whether XLA would pay on the CPU for the
recipe's model: the ``celeba-cpu`` preset's network (MobileNetV2 alpha 1.0, 96 px, depthwise
head), its loss, optimiser and training metrics. Keras declines XLA for a model holding random
augmentation layers (it warns and compiles without), so by default the model is built without
them (``--augment none``); ``--augment shift`` shows that fallback. Both models train on the same
random in-memory tensors (throughput only: no figure of quality comes from this), alternating,
after a warm-up that traces and compiles each step.

    python benchmarks/bench_xla.py [--alpha 1.0] [--image-size 96] [--augment none] [--batch-size 32] [--steps 30] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os

import keras
import numpy as np
import tensorflow as tf

from celebalib.attributes import NUM_ATTRIBUTES
from celebalib.config import seed_everything
from celebalib.losses import get_loss
from celebalib.model import SCRATCH_BN_MOMENTUM, build_model
from celebalib.schedules import CosineSchedule
from celebalib.train import make_optimizer, training_metrics

from bench_training import images_per_second  # the script's own folder is on sys.path


def compiled_model(args: argparse.Namespace, jit_compile: bool, steps: int,
                   fast_layers: bool | tuple[str, ...] = True) -> keras.Model:
    """The preset's model, loss, optimiser (cosine over ``steps``) and metrics, compiled with or without XLA."""
    model = build_model(image_size=args.image_size, alpha=args.alpha, augment=args.augment,
                        bn_momentum=SCRATCH_BN_MOMENTUM, head=args.head, fast_layers=fast_layers)
    model.compile(optimizer=make_optimizer("adam", CosineSchedule(1e-3, steps)), loss=get_loss("bce"),
                  metrics=training_metrics(NUM_ATTRIBUTES), jit_compile=jit_compile)
    return model


def ms_per_step(model: keras.Model, dataset: tf.data.Dataset, steps: int, batch_size: int) -> float:
    """Train ``steps`` steps; milliseconds per step after the iterator's start-up (bench_training's clock)."""
    return 1000 * batch_size / images_per_second(model, dataset, steps, batch_size)


def option_parser(description: str, augment: str, rounds: int | None = 2, steps: int = 30) -> argparse.ArgumentParser:
    """The model and measurement options the step-time benchmarks take (``rounds`` None: no --rounds)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--augment", default=augment, help="augmentation inside the model (Keras declines XLA with it)")
    parser.add_argument("--head", default="depthwise")
    parser.add_argument("--steps", type=int, default=steps, help="training steps per measurement (at least 5)")
    if rounds is not None:
        parser.add_argument("--rounds", type=int, default=rounds, help="measurements of each kind (median)")
    return parser


def parse_options(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """Parse the command line with ``parser``; exit with its usage message for too few steps."""
    args = parser.parse_args()
    if args.steps < 5:
        parser.error(f"--steps {args.steps}: expected at least 5")
    return args


def arguments(description: str, augment: str, rounds: int = 2) -> argparse.Namespace:
    """The parsed model and measurement options (``option_parser``)."""
    return parse_options(option_parser(description, augment, rounds))


def random_batches(args: argparse.Namespace) -> tf.data.Dataset:
    """Random images and labels, ``args.steps`` batches repeated (throughput only)."""
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    images = rng.uniform(0, 255, (n, args.image_size, args.image_size, 3)).astype("float32")
    labels = rng.integers(0, 2, (n, NUM_ATTRIBUTES)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(args.batch_size).repeat()


def compare(models: dict[str, keras.Model], dataset: tf.data.Dataset, args: argparse.Namespace) -> dict[str, float]:
    """Time the models' steps alternately after a warm-up; print each and return the median ms per step."""
    for model in models.values():
        ms_per_step(model, dataset, 5, args.batch_size)  # traces (and for XLA compiles) the training step
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):  # alternate, so load changes on the machine hit both alike
        for name, model in models.items():
            times[name].append(ms_per_step(model, dataset, args.steps, args.batch_size))
    print(f"random tensors (throughput only), MobileNetV2 alpha {args.alpha}, {args.image_size} px, "
          f"augment {args.augment}, head {args.head}, batch {args.batch_size}, {args.steps} steps x "
          f"{args.rounds} rounds, {os.cpu_count()} CPU cores, TensorFlow {tf.__version__}")
    median = {name: float(np.median(values)) for name, values in times.items()}
    width = max(map(len, models))
    for name, values in times.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"{name:<{width}} {median[name]:6.0f} ms per step (median of {rounds})")
    return median


def main() -> None:
    """Parse arguments, measure both ways alternately, print ms per step and the ratio."""
    args = arguments(__doc__.splitlines()[0], augment="none")
    seed_everything(0)
    total = args.steps * (args.rounds + 1)
    models = {"default graph": compiled_model(args, False, total), "XLA (jit_compile)": compiled_model(args, True, total)}
    if not models["XLA (jit_compile)"].jit_compile:
        print(f"Keras declined jit_compile for this model (augment {args.augment}): both would run the same "
              f"graph, so nothing is measured; try --augment none")
        raise SystemExit(1)
    median = compare(models, random_batches(args), args)
    print(f"XLA / default: {median['XLA (jit_compile)'] / median['default graph']:.2f} of the time per step")


if __name__ == "__main__":
    main()
