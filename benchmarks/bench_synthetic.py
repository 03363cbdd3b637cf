"""Generation speed of the synthetic dataset, and how well the default model learns it.

Speed: draws ``--n`` faces into a temporary folder with one worker and with ``--workers``
and prints images per second (figures on synthetic data, as everything here).

Learnability (``--learn``): generates the settings' synthetic set (or ``--size`` faces),
trains the library's default model with the settings' image size, epochs and batch
(``CELEBALIB_FAST=1`` gives the fast demo's budget), tunes thresholds on the synthetic
val split and prints mean accuracy and mean balanced accuracy on the synthetic test split
against the majority baseline, over the 39 attributes with a visual cue.

    python benchmarks/bench_synthetic.py --n 1000
    python benchmarks/bench_synthetic.py --skip-speed --learn --runs-dir /tmp/bench-runs
    python benchmarks/bench_synthetic.py --skip-speed --sheet docs/images/contact_sheet.png
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from celebalib import synthetic
from celebalib.attributes import ATTRIBUTES
from celebalib.config import get_settings

# Attractive is drawn from the label statistics alone: no stroke of the drawing shows it.
NO_CUE = ("Attractive",)


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def speed(n: int, workers: int) -> tuple[float, float]:
    """Draw ``n`` faces into a temporary folder; return images per second and CPU ms per image."""
    with tempfile.TemporaryDirectory() as folder:
        start, cpu = time.perf_counter(), _cpu_seconds()
        synthetic.generate(Path(folder) / "faces", n, seed=0, workers=workers, progress=False)
        return n / (time.perf_counter() - start), 1000 * (_cpu_seconds() - cpu) / n


def learnability(size: int | None, runs_dir: Path, optimizer: str, loss: str, augment: str) -> None:
    """Train the course model (notebook 03's recipe by default) and print its test-split figures."""
    from celebalib import train
    from celebalib.data import load_celeba
    from celebalib.evaluate import evaluate_run

    settings = get_settings()
    n = size or settings.synthetic_size
    root = synthetic.ensure_generated(settings.data_dir / f"synthetic-{n}", n, settings.synthetic_seed)
    table = load_celeba(root)
    start = time.perf_counter()
    name = f"synthetic-{n}-{settings.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}"
    run = train.fit(runs_dir / name, table=table, epochs=settings.epochs,
                    image_size=settings.image_size, batch_size=settings.batch_size, optimizer=optimizer,
                    loss=loss, augment=augment, seed=settings.seed, progress=False)
    minutes = (time.perf_counter() - start) / 60
    evaluate_run(run, table, "val", progress=False)  # tunes and stores the thresholds
    result = evaluate_run(run, table, "test", progress=False)
    cued = [name for name in ATTRIBUTES if name not in NO_CUE]
    print(f"learnability on synthetic data: {n} faces, {settings.image_size} px, {settings.epochs} epochs, "
          f"batch {settings.batch_size}, {optimizer} (lr {run.config['learning_rate']}), {loss} loss, "
          f"augmentation {augment}, trained in {minutes:.1f} min on {os.cpu_count()} cores")
    print(f"test split ({result.n_images} synthetic images), {len(cued)} attributes with a visual cue:")
    for label, table_ in (("threshold 0.5", result.table_default), ("tuned on val", result.table_tuned)):
        rows = table_.loc[cued]
        print(f"  {label:14s} mean accuracy {rows['accuracy'].mean():.3f} (majority baseline "
              f"{rows['baseline'].mean():.3f}), mean balanced accuracy {rows['balanced_accuracy'].mean():.3f}")
    print(result.table_tuned[["positive_rate", "accuracy", "baseline", "balanced_accuracy"]].round(3).to_string())


def contact_sheet(path: Path) -> None:
    """Save the README's contact sheet of synthetic faces."""
    from celebalib.data import load_celeba
    from celebalib.plots import contact_sheet as sheet

    with tempfile.TemporaryDirectory() as folder:
        root = synthetic.generate(Path(folder) / "faces", 240, seed=0, progress=False)
        figure = sheet(load_celeba(root), n=12, columns=4, seed=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
    print(f"wrote a contact sheet of 12 synthetic faces to {path}")


def main() -> None:
    """Parse the options and print the requested figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="faces drawn for the speed figure")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--learn", action="store_true", help="train and evaluate the default model")
    parser.add_argument("--size", type=int, default=None, help="synthetic set size for --learn")
    parser.add_argument("--optimizer", default="adadelta", help="as in notebook 03 by default")
    parser.add_argument("--loss", default="balanced_bce", help="as in notebook 03 by default")
    parser.add_argument("--augment", default="flip", help="full, flip or none (notebook 03: flip)")
    parser.add_argument("--runs-dir", type=Path, default=get_settings().runs_dir / "bench")
    parser.add_argument("--sheet", type=Path, default=None, help="also save a contact sheet PNG here")
    args = parser.parse_args()
    if not args.skip_speed:
        # Other processes share the cores; the load average says how free they were.
        print(f"{os.cpu_count()} cores, load average before: {os.getloadavg()[0]:.1f}")
        for workers in sorted({1, args.workers}):
            rate, cpu_ms = speed(args.n, workers)
            print(f"generation speed (synthetic faces, {args.n} images, {workers} worker(s)): "
                  f"{rate:.0f} images/s, {cpu_ms:.1f} ms CPU per image")
    if args.sheet:
        contact_sheet(args.sheet)
    if args.learn:
        learnability(args.size, args.runs_dir, args.optimizer, args.loss, args.augment)


if __name__ == "__main__":
    main()
