"""Training-step cost with Keras's batch normalisation against the fused op (``celebalib.model.BatchNormalization``).

Keras 3 trains batch norm with separate moments and arithmetic ops; ``celebalib.model``
swaps the backbone's 52 batch-norm layers for a subclass that calls TensorFlow's fused
kernel in training and gives the same outputs, gradients and moving statistics (tested in
tests/test_model.py). This measures what that buys for the ``celeba-cpu`` preset's network
(MobileNetV2 alpha 1.0, 96 px, whole-pixel shifts and flips, depthwise head), loss,
optimiser and training metrics: both models train on the same random in-memory tensors
(throughput only), alternating round by round, after a warm-up that traces each step.

    python benchmarks/bench_batchnorm.py [--alpha 1.0] [--image-size 96] [--batch-size 32] [--steps 30] [--rounds 5]
"""

from __future__ import annotations

from celebalib.config import seed_everything

from bench_xla import arguments, compare, compiled_model, random_batches  # the script's own folder is on sys.path


def main() -> None:
    """Parse arguments, measure both kinds alternately, print ms per step and the ratio."""
    args = arguments(__doc__.splitlines()[0], augment="shift", rounds=5)  # steps vary by 10-20% here
    seed_everything(0)
    total = args.steps * (args.rounds + 1)
    models = {"Keras batch norm": compiled_model(args, False, total, fused_batch_norm=False),
              "fused batch norm": compiled_model(args, False, total, fused_batch_norm=True)}
    median = compare(models, random_batches(args), args)
    ratio = median["fused batch norm"] / median["Keras batch norm"]
    print(f"fused / Keras: {ratio:.2f} of the time per step ({1 / ratio:.2f}x the images per second)")


if __name__ == "__main__":
    main()
