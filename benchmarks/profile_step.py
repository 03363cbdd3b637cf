"""Where a training step's time goes: TensorFlow's profiler, summed by op type, Keras's layers against the fast ones.

Trains the ``celeba-cpu`` preset's network (as bench_xla and bench_fast_layers build it) on
random in-memory tensors, once with Keras's own layers and once with ``celebalib.model``'s
fast layers, records a few steps of each with ``tf.profiler`` and prints, per op type, the
kernel time per step summed over TensorFlow's compute threads (so the column can exceed the
wall time on two cores). Throughput only: no figure of quality comes from this.

    python benchmarks/profile_step.py [--alpha 1.0] [--image-size 96] [--batch-size 32] [--steps 10] [--top 15]
"""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

import tensorflow as tf

from celebalib.config import seed_everything

from bench_xla import compiled_model, ms_per_step, option_parser, parse_options, random_batches  # the script's own folder is on sys.path

VARIANTS = {"Keras's layers": False, "fast layers": True}


def kernel_ms_by_op_type(trace_dir: Path) -> collections.Counter:
    """Milliseconds of kernel time per op type in the profile written under ``trace_dir``."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    totals: collections.Counter = collections.Counter()
    for path in trace_dir.rglob("*.xplane.pb"):
        space = xplane_pb2.XSpace()
        space.ParseFromString(path.read_bytes())
        for plane in space.planes:
            for line in plane.lines:
                if not line.name.startswith("tf_Compute"):
                    continue
                for event in line.events:
                    op_type = plane.event_metadata[event.metadata_id].display_name  # empty for non-kernels
                    if op_type:
                        totals[op_type] += event.duration_ps / 1e9
    return totals


def profile(model, dataset, steps: int, batch_size: int) -> tuple[float, collections.Counter]:
    """Wall ms per step and kernel ms per step by op type over ``steps`` profiled steps."""
    ms_per_step(model, dataset, 5, batch_size)  # traces the training step outside the profile
    with tempfile.TemporaryDirectory() as folder:
        tf.profiler.experimental.start(folder)
        wall = ms_per_step(model, dataset, steps, batch_size)
        tf.profiler.experimental.stop()
        totals = kernel_ms_by_op_type(Path(folder))
    return wall, collections.Counter({name: ms / steps for name, ms in totals.items()})


def main() -> None:
    """Profile both variants and print the op types that take longest."""
    parser = option_parser(__doc__.splitlines()[0], augment="shift", rounds=None, steps=10)
    parser.add_argument("--top", type=int, default=15, help="op types to list, longest first")
    args = parse_options(parser)
    seed_everything(0)
    dataset = random_batches(args)
    results = {name: profile(compiled_model(args, False, 100, fast_layers=fast), dataset, args.steps, args.batch_size)
               for name, fast in VARIANTS.items()}
    print(f"random tensors (throughput only), MobileNetV2 alpha {args.alpha}, {args.image_size} px, "
          f"augment {args.augment}, head {args.head}, batch {args.batch_size}, {args.steps} profiled steps each, "
          f"TensorFlow {tf.__version__}")
    print("kernel ms per step, summed over compute threads:")
    tables = [totals for _, totals in results.values()]
    ranked = [op_type for op_type, _ in sum(tables, collections.Counter()).most_common()]
    width = max(len(label) for label in ["all other op types", *ranked[:args.top]]) + 2  # oneDNN's names run long

    def row(label: str, cells: list[float]) -> None:
        print(f"{label:<{width}}" + "".join(f"{cell:16.1f}" for cell in cells))

    print(f"{'op type':<{width}}" + "".join(f"{name:>16}" for name in results))

    for op_type in ranked[:args.top]:
        row(op_type, [totals[op_type] for totals in tables])
    row("all other op types", [sum(totals[op] for op in ranked[args.top:]) for totals in tables])
    row("total kernel time", [sum(totals.values()) for totals in tables])
    row("wall time", [wall for wall, _ in results.values()])


if __name__ == "__main__":
    main()
