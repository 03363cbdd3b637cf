"""What sharing a trained run costs and keeps: the bundle's and the ONNX file's sizes, the time to
write each, and how far ONNX Runtime's probabilities are from Keras's on the same images.

    python benchmarks/bench_export.py --run runs/celeba-cpu --data "$CELEBA_ROOT" [--images 256]

The images are the first ``--images`` of the val split the run's data holds (with ``--data``;
without it, the synthetic default's), prepared as the run's model takes them (its size and crop).
Nothing is kept: the files are written into a temporary folder.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a trained run: folder, .zip bundle or #sha256 address")
    parser.add_argument("--data", type=Path, help="a CelebA root whose val images are compared (default: synthetic)")
    parser.add_argument("--images", type=int, default=256, help="val images compared (default 256)")
    args = parser.parse_args()

    import onnxruntime

    from celebalib import data, export, runs
    from celebalib.data import MissingImagesWarning
    from celebalib.export import INPUT_NAME

    run = runs.open_run(args.run)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as folder:
        started = time.perf_counter()
        bundle = Path(folder) / "run.zip"
        export.write_bundle(run, bundle)
        bundle_seconds = time.perf_counter() - started
        started = time.perf_counter()
        onnx_file = export.export_onnx(run, Path(folder) / "run.onnx")
        onnx_seconds = time.perf_counter() - started
        print(f"run {run.run_id} ({run.path})")
        print(f"bundle: {bundle.stat().st_size / 2**20:.1f} MiB, written in {bundle_seconds:.1f} s")
        print(f"onnx:   {onnx_file.stat().st_size / 2**20:.1f} MiB, written in {onnx_seconds:.1f} s")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingImagesWarning)
            table = data.load_celeba(args.data or data.default_root(progress=False))
        rows = table[table["split"] == "val"].head(args.images)
        images = np.concatenate([batch.numpy() for batch in run.images(rows)])
        keras_probabilities = np.asarray(run.model()(images, training=False))
        session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
        (onnx_probabilities,) = session.run(None, {INPUT_NAME: images.astype(np.float32)})
    source = f"genuine CelebA val ({args.data.name})" if args.data else "synthetic val"
    difference = np.abs(onnx_probabilities - keras_probabilities).max()
    print(f"{len(images)} {source} images, 40 attributes: max |onnx - keras| = {difference:.2e}")


if __name__ == "__main__":
    main()
