"""Weight averaging after the fact: for several window sizes W, the mean of a run's last W epochs.

A run trained with ``--average-epochs N`` keeps the weights of its last N epochs in
``averaging/``. For each W this writes a run folder ``RUN-avgW`` beside the run: its
config and history, and a ``best.keras`` holding the mean of the last W epochs' weights with
batch-norm statistics measured again on ``averaging.BN_IMAGES`` training images, as ``fit`` does.
Score the folders on val with ``bench_celeba_cpu.py`` (the test split is never read):

    python benchmarks/bench_weight_averaging.py runs/celeba-cpu --windows 2,4,6,8 [--data /path/to/celeba; default CELEBA_ROOT]
    python benchmarks/bench_celeba_cpu.py runs/celeba-cpu runs/celeba-cpu-avg2 runs/celeba-cpu-avg4 ...
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import warnings
from pathlib import Path

from celebalib import runs
from celebalib.averaging import average_epochs
from celebalib.data import MissingImagesWarning, load_celeba, make_dataset


def main() -> None:
    """Write one averaged run folder per window and print what each cost."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a finished run folder")
    parser.add_argument("--windows", default="2,4,6,8", help="comma-separated numbers of last epochs to average")
    parser.add_argument("--weights", type=Path, help="folder of epoch-NN.weights.h5 files (default: RUN/averaging)")
    parser.add_argument("--data", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        required=not os.environ.get("CELEBA_ROOT"), help="a CelebA root with train images (default: CELEBA_ROOT)")
    args = parser.parse_args()
    run = runs.open_run(args.run)
    folder = args.weights or run.files.averaging
    kept = run.files.kept_epochs(folder)
    if not kept:
        raise SystemExit(f"{folder}: no kept epoch weights; train with --average-epochs N")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingImagesWarning)  # a partial root may hold train and val only
        table = load_celeba(args.data)
    batch_size = run.train_config.batch_size
    last = kept[-1]
    for window in (int(w) for w in args.windows.split(",")):
        epochs = list(range(last - window + 1, last + 1))
        if missing := [e for e in epochs if e not in kept]:
            print(f"window {window}: epochs {missing} not kept in {folder}; skipped")
            continue
        started = time.perf_counter()
        model = runs.load_model(run.files.final)
        images = make_dataset(table, "train", image_size=run.image_size, batch_size=batch_size, training=True,
                              crop=run.crop, seed=run.train_config.seed, limit=run.train_config.limit)
        files = [run.files.epoch_weights(e, folder) for e in epochs]
        used = average_epochs(model, files, images, batch_size)
        out = run.path.with_name(f"{run.path.name}-avg{window}")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        averaged = runs.RunFiles(out)
        shutil.copy(run.files.config, averaged.config)
        shutil.copy(run.files.history, averaged.history)
        runs.save_model(model, averaged.best)
        runs.save_model(model, averaged.final)
        runs.Run(out).record_averaged(epochs[0], last, {})
        print(f"window {window}: epochs {epochs[0]}-{last} averaged, batch norm measured on {used} batches of "
              f"{batch_size}, {time.perf_counter() - started:.0f} s -> {out}", flush=True)


if __name__ == "__main__":
    main()
