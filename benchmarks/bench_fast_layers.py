"""Training-step cost with Keras's layers against ``celebalib.model``'s faster subclasses of them.

Keras 3 trains BatchNormalization with separate moments and arithmetic ops, TensorFlow's CPU
kernels take long over a 1x1 convolution's gradients, and MobileNetV2 pads the feature map
explicitly before each strided depthwise convolution; ``celebalib.model`` swaps the backbone's
52 batch-norm layers for a subclass that calls TensorFlow's fused op, its 34 pointwise
convolutions for one that computes a matrix product, and folds its 4 zero paddings into the
depthwise convolutions' own "same" padding, with the same outputs, gradients and moving
statistics (tested in tests/test_model.py). This measures what each swap and all together buy
for the ``celeba-cpu`` preset's network (MobileNetV2 alpha 1.0, 96 px,
whole-pixel shifts and flips, depthwise head), loss, optimiser and training metrics: the
models train on the same random in-memory tensors (throughput only), alternating round by
round, after a warm-up that traces each step.

    python benchmarks/bench_fast_layers.py [--alpha 1.0] [--image-size 96] [--batch-size 32] [--steps 30] [--rounds 5]
"""

from __future__ import annotations

from celebalib.config import seed_everything

from bench_xla import arguments, compare, compiled_model, random_batches  # the script's own folder is on sys.path

VARIANTS = {"Keras's layers": False, "fused batch norm": ("batch_norm",), "pointwise as matmul": ("pointwise",),
            "padding folded": ("padding",), "batch norm and pointwise": ("batch_norm", "pointwise"),
            "all three (the default)": True}


def main() -> None:
    """Parse arguments, measure the variants alternately, print ms per step and ratios to Keras's."""
    args = arguments(__doc__.splitlines()[0], augment="shift", rounds=5)  # steps vary by 10-20% here
    seed_everything(0)
    total = args.steps * (args.rounds + 1)
    models = {name: compiled_model(args, False, total, fast_layers=kinds) for name, kinds in VARIANTS.items()}
    median = compare(models, random_batches(args), args)
    keras_ms = median["Keras's layers"]
    for name in list(VARIANTS)[1:]:
        ratio = median[name] / keras_ms
        print(f"{name} / Keras's layers: {ratio:.2f} of the time per step ({1 / ratio:.2f}x the images per second)")


if __name__ == "__main__":
    main()
