"""Training-step cost in mixed bfloat16 against float32 on the CPU: the same model both ways.

Training switches to mixed float16 by itself on a GPU and stays in float32 on a CPU. Recent
Intel CPUs (AVX512_BF16, AMX) run bfloat16 matrix products in hardware, so this measures
whether Keras's ``mixed_bfloat16`` policy would pay on such a CPU for the ``celeba-cpu``
preset's network (MobileNetV2 alpha 1.0, 96 px, whole-pixel shifts and flips, depthwise head,
the fast layers), loss, optimiser and training metrics. Both models train on the same random
in-memory tensors (throughput only), alternating, after a warm-up that traces each step. The
CPU's bfloat16 features are printed from /proc/cpuinfo where it exists.

    python benchmarks/bench_bfloat16.py [--alpha 1.0] [--image-size 96] [--batch-size 32] [--steps 30] [--rounds 3]
"""

from __future__ import annotations

from pathlib import Path

from celebalib.config import seed_everything
from celebalib.model import dtype_policy

from bench_xla import arguments, compare, compiled_model, random_batches  # the script's own folder is on sys.path


def bfloat16_features() -> str:
    """The CPU flags that speak of bfloat16 hardware, or a word that none were found."""
    cpuinfo = Path("/proc/cpuinfo")
    flags = set(cpuinfo.read_text().split()) if cpuinfo.is_file() else set()
    found = sorted(flag for flag in flags if flag in ("avx512_bf16", "amx_bf16", "amx_tile"))
    return ", ".join(found) if found else "none found"


def main() -> None:
    """Parse arguments, measure both policies alternately, print ms per step and the ratio."""
    args = arguments(__doc__.splitlines()[0], augment="shift", rounds=3)
    seed_everything(0)
    total = args.steps * (args.rounds + 1)
    models = {"float32": compiled_model(args, False, total)}
    with dtype_policy("mixed_bfloat16"):
        models["mixed_bfloat16"] = compiled_model(args, False, total)
    print(f"CPU bfloat16 features: {bfloat16_features()}")
    median = compare(models, random_batches(args), args)
    print(f"mixed_bfloat16 / float32: {median['mixed_bfloat16'] / median['float32']:.2f} of the time per step")


if __name__ == "__main__":
    main()
