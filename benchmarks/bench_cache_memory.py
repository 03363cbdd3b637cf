"""Peak memory of the cached input pipeline over celeba-cpu-setting epochs, before and after issue 28.

The celeba-cpu recipe keeps decoded images in memory (``make_dataset(cache=True)``). Before,
the uint8 cache was cast back to float32 and then shuffled with a buffer of the whole split,
so the buffer held four times the cache's bytes; now the images stay uint8 through the shuffle
and only a batch at a time becomes float32. Each variant runs in a fresh process on the train
split (96 px, portrait crop, batch 32, shuffled as in training), through ``--epochs`` passes,
and prints its peak resident set size (``resource.getrusage``) before and after the passes.
"before" is a copy of the pipeline as it was at the branch point, kept here for the comparison.
The input pipeline alone is measured, not a training step: the model's memory does not depend on it.

    python benchmarks/bench_cache_memory.py                      # the genuine root beside the project
    python benchmarks/bench_cache_memory.py --root DIR --limit 5000 --variants after
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

VARIANTS = ("before", "after")


def peak_rss_mib() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def before_dataset(table, *, image_size: int, batch_size: int, crop: str, seed: int):
    """The cached training pipeline as ``make_dataset`` built it before: float32 through the shuffle."""
    import tensorflow as tf

    from celebalib.attributes import ATTRIBUTES
    from celebalib.data import decode_image, split_rows

    rows = split_rows(table, "train")
    ds = tf.data.Dataset.from_tensor_slices((rows["path"].to_numpy(str), rows[list(ATTRIBUTES)].to_numpy("float32")))
    ds = ds.map(lambda path, label: (decode_image(tf.io.read_file(path), image_size=image_size, crop=crop), label),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda image, label: (tf.cast(tf.round(image), tf.uint8), label)).cache("")
    ds = ds.map(lambda image, label: (tf.cast(image, tf.float32), label))
    ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run_variant(variant: str, root: Path, epochs: int, image_size: int, batch_size: int, crop: str,
                limit: int | None) -> None:
    """Build one variant's pipeline, run ``epochs`` passes over it, and print the peak RSS figures."""
    from celebalib import data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", data.MissingImagesWarning)
        table = data.load_celeba(root)
    if limit is not None:
        table = data.split_rows(table, "train", limit)
    common = {"image_size": image_size, "batch_size": batch_size, "crop": crop, "seed": 0}
    if variant == "before":
        ds = before_dataset(table, **common)
    else:
        ds = data.make_dataset(table, "train", training=True, cache=True, **common)
    n_images = len(data.split_rows(table, "train"))
    baseline = peak_rss_mib()
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        seen = sum(int(images.shape[0]) for images, _ in ds)
        print(f"{variant}: epoch {epoch}: {seen:,} images in {time.perf_counter() - start:.0f} s, "
              f"peak RSS so far {peak_rss_mib():,.0f} MiB", flush=True)
    height, width = data.image_shape(image_size, crop)
    cache_mib = n_images * height * width * 3 / 2**20
    print(f"{variant}: peak RSS {peak_rss_mib():,.0f} MiB, {peak_rss_mib() - baseline:,.0f} MiB above the "
          f"{baseline:,.0f} MiB before the first epoch (uint8 pixels of the split: {cache_mib:,.0f} MiB; "
          f"{n_images:,} train images of {root}, {width}x{height} px, batch {batch_size}, {epochs} epochs)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("CELEBA_ROOT") or None, required=not os.environ.get("CELEBA_ROOT"),
                        help="CelebA root (default: CELEBA_ROOT)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=2, help="passes over the train split (default 2)")
    parser.add_argument("--image-size", type=int, default=96)
    parser.add_argument("--crop", default="portrait")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="at most this many train images")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_variant(args.child, args.root, args.epochs, args.image_size, args.batch_size, args.crop, args.limit)
        return
    # One fresh process per variant, so neither's peak includes the other's.
    for variant in args.variants:
        command = [sys.executable, __file__, "--child", variant, "--root", str(args.root), "--epochs", str(args.epochs),
                   "--image-size", str(args.image_size), "--crop", args.crop, "--batch-size", str(args.batch_size)]
        if args.limit is not None:
            command += ["--limit", str(args.limit)]
        subprocess.run(command, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


if __name__ == "__main__":
    main()
