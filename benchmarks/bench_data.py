"""Speed of the data layer: reading the annotation files, and the image pipeline.

1. Time to read the genuine 202,599-row annotation files alone (goal: under 2 s), best of
   ``--repeats``; skipped when the genuine files are absent.
2. Images per second through ``make_dataset`` from JPEG files (centre crop, 128 px,
   batch 64, shuffled as in training), on the genuine images when present, otherwise on a
   freshly generated synthetic root. Each figure says which data it was measured on.

    python benchmarks/bench_data.py
    python benchmarks/bench_data.py --root /path/to/celeba --batches 60
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

from celebalib import data

def time_annotations(root: Path, repeats: int) -> float:
    """Best wall time of reading the annotation files alone (CPU time shown beside it)."""
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        table = data.load_celeba(root, images=False)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # CPU time barely moves when other processes share the cores; wall time does.
    print(f"annotations: {len(table):,} rows from {root} read in {min(times):.2f} s wall, "
          f"{min(cpu):.2f} s CPU (best of {repeats}; goal < 2 s; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    return min(times)


def time_pipeline(root: Path, label: str, batches: int, image_size: int, batch_size: int) -> float:
    """Images per second of one shuffled training split through decode, crop and resize."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.MissingImagesWarning)
        table = data.load_celeba(root)
    ds = data.make_dataset(table, "train", image_size=image_size, batch_size=batch_size, training=True)
    iterator = iter(ds.repeat())
    next(iterator)  # Warm-up: builds the graph and starts the parallel readers.
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(iterator)
    images = batches * batch_size
    rate = images / (time.perf_counter() - start)
    per_cpu = images / (time.process_time() - start_cpu)
    print(f"pipeline: {rate:,.0f} images/s from JPEG, {per_cpu:,.0f} per CPU-second ({label}, train split, "
          f"{images:,} images; centre crop, {image_size} px, batch {batch_size}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    return rate


def main() -> None:
    """Parse arguments and print both figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        help="a CelebA root (default: CELEBA_ROOT, else synthetic faces drawn for the run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    genuine = args.root is not None and ((args.root / "list_attr_celeba.txt").is_file() or (args.root / "Anno").is_dir())
    if genuine:
        time_annotations(args.root, args.repeats)
        time_pipeline(args.root, f"real CelebA at {args.root}", args.batches, args.image_size, args.batch_size)
        return
    print(f"annotations: skipped, no CelebA files at {args.root or 'CELEBA_ROOT (not set)'}")
    from celebalib import synthetic

    with tempfile.TemporaryDirectory() as tmp:
        n = max(args.batches * args.batch_size // 2, 256)
        root = synthetic.generate(Path(tmp) / "synthetic", n, seed=0, progress=False)
        time_pipeline(root, f"synthetic data, {n} generated faces", args.batches, args.image_size,
                      args.batch_size)


if __name__ == "__main__":
    main()
