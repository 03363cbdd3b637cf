"""Photos per second of ``celebalib predict``: detection and alignment, then prediction with Keras or ONNX Runtime.

Photos are 512x512 JPEG files: with ``--data``, genuine CelebA val images; else scikit-image's
astronaut portrait (public domain). Each face is put on a grey canvas turned, scaled and moved
at random (``faces.place_on_canvas``), so every photo needs detecting and aligning. Timed, as
medians of ``--repeats`` rounds after a warm-up:

- detection and alignment (reading the file included), one photo at a time and in one batch
  (``predict.prepare_pixels``, as ``predict_photos`` does it);
- prediction of the faces with every test-time view of the run: with the per-view eager calls of
  ``Run.predict_images``, with ``predict.view_predictor`` (one compiled call), and with the model
  exported to ONNX (``export.export_onnx``) in onnxruntime, the views built by ``runs.view_of``;
  for one photo and for all of them at once;
- ``predict.predict_photos`` end to end on the files, for one photo and for all of them;
- once, the first call of the compiled function, which traces its graph.

Without ``--run``, a stand-in run is trained once into ``--workdir``: the ``celeba-cpu`` recipe's
architecture and views (MobileNetV2 alpha 1.0, 96x112 portrait crop, ten views) for one epoch on
64 synthetic faces. What the weights learnt does not change the time.

    python benchmarks/bench_predict.py [--run runs/celeba-cpu] [--photos 20] [--data "$CELEBA_ROOT"]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

from celebalib import faces, synthetic, train
from celebalib.data import load_celeba, split_rows
from celebalib.export import INPUT_NAME, export_onnx
from celebalib.predict import photo_pixels, predict_photos, prepare_pixels, view_predictor
from celebalib.recipes import RECIPES
from celebalib.runs import Run, RunFiles, open_run, view_of


def stand_in_run(workdir: Path) -> Run:
    """The celeba-cpu architecture trained for one epoch on 64 synthetic faces (made once in ``workdir``)."""
    folder = workdir / "celeba-cpu-architecture"
    if not RunFiles(folder).final.is_file():
        root = synthetic.generate(workdir / "synthetic", n=120, seed=0, progress=False)
        config = RECIPES["celeba-cpu"].replace(epochs=1, limit=64, epoch_images=None, val_images=None,
                                               time_budget=None, cache="off")
        train.fit(folder, config, data_root=root, progress=False)
    return open_run(folder)


def source_faces(data: Path | None, count: int, seed: int) -> list[np.ndarray]:
    """Aligned faces to put on the canvases: genuine CelebA val images, else the astronaut's face."""
    if data is None:
        return [faces.aligned_faces(skimage.data.astronaut())[0].crop] * count
    rows = split_rows(load_celeba(data), "val")
    return [faces.read_photo(path) for path in rows["path"].sample(n=count, random_state=seed)]


def write_photos(crops: list[np.ndarray], folder: Path, seed: int) -> list[Path]:
    """Each crop turned, scaled and moved at random on a 512x512 canvas, saved as a JPEG file."""
    rng = np.random.default_rng(seed)
    paths = []
    for number, crop in enumerate(crops):
        canvas, _ = faces.place_on_canvas(crop, angle=rng.uniform(-20, 20), scale=rng.uniform(1.0, 1.8),
                                          shift=tuple(rng.uniform(-40, 40, size=2)), size=512)
        paths.append(folder / f"photo-{number:03d}.jpg")
        Image.fromarray(canvas).save(paths[-1], quality=92)
    return paths


def median_seconds(work: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``work`` over ``repeats`` calls, after one untimed call."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def onnx_predictor(run: Run, folder: Path) -> Callable[[np.ndarray], np.ndarray]:
    """The run's model exported to ONNX in an onnxruntime session, averaging the run's views."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(export_onnx(run, folder / "model.onnx")),
                                           providers=["CPUExecutionProvider"])
    views = run.views()

    def predict(pixels: np.ndarray) -> np.ndarray:
        stacked = np.concatenate([np.asarray(view_of(pixels, *view)) for view in views])
        (outputs,) = session.run(None, {INPUT_NAME: stacked})
        return outputs.reshape(len(views), len(pixels), -1).mean(axis=0)

    return predict


def main() -> None:
    """Time each stage and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a trained run folder (default: a stand-in, see above)")
    parser.add_argument("--data", type=Path, help="a CelebA root whose val images make the photos")
    parser.add_argument("--photos", type=int, default=20, help="photos in a batch (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per figure (default 5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=Path("build/bench-predict"),
                        help="where the stand-in run is kept (default build/bench-predict)")
    args = parser.parse_args()
    run = open_run(args.run) if args.run else stand_in_run(args.workdir)
    height, width = run.image_shape
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folder = Path(tmp)
        files = write_photos(source_faces(args.data, args.photos, args.seed), folder, args.seed)
        print(f"run {run.path}: {width}x{height} input, {len(run.views())} views; {len(files)} photos of 512x512 "
              f"({'genuine CelebA val images of ' + str(args.data) if args.data else 'the astronaut'} on canvases); "
              f"medians of {args.repeats} rounds")
        pixels = [photo_pixels(path) for path in files]
        prepared = prepare_pixels(run, pixels)
        found = [face for photo in prepared for face in photo]
        print(f"faces found: {len(found)} in {sum(1 for photo in prepared if photo)} of {len(files)} photos")
        one_pixels, every_pixels = (np.stack([face.pixels for face in group]) for group in (prepared[0], found))

        detect_one = median_seconds(lambda: prepare_pixels(run, [photo_pixels(files[0])]), args.repeats)
        detect_batch = median_seconds(lambda: prepare_pixels(run, [photo_pixels(path) for path in files]),
                                      args.repeats) / len(files)
        print(f"detection and alignment (file read included): one photo {detect_one:.3f} s; "
              f"{len(files)} photos together {detect_batch:.3f} s per photo")

        fresh = Run(run.path)  # its own compiled function, traced on first use
        fresh.model()
        started = time.perf_counter()
        view_predictor(fresh)(one_pixels)
        print(f"first compiled call (tracing the graph, once per process and run): {time.perf_counter() - started:.2f} s")

        # Before onnxruntime starts its own threads beside TensorFlow's.
        end_one = median_seconds(lambda: predict_photos(run, files[:1]), args.repeats)
        end_all = median_seconds(lambda: predict_photos(run, files), args.repeats)
        print(f"predict_photos end to end (Keras): one photo {end_one:.3f} s; {len(files)} photos {end_all:.2f} s, "
              f"{len(files) / end_all:.2f} photos/s")

        onnx = onnx_predictor(run, folder)
        backends = {"Keras, one eager call per view (Run.predict_images)": run.predict_images,
                    "Keras, one compiled call (predict.view_predictor)": view_predictor(run),
                    "ONNX Runtime, views in one call": onnx}
        for name, predict in backends.items():
            single = median_seconds(lambda: predict(one_pixels), args.repeats)
            batch = median_seconds(lambda: predict(every_pixels), args.repeats) / len(files)
            print(f"prediction, {name}: one photo {single:.3f} s ({1 / (detect_one + single):.2f} photos/s with "
                  f"detection); {len(files)} photos together {batch:.3f} s per photo "
                  f"({1 / (detect_batch + batch):.2f} photos/s with detection)")



if __name__ == "__main__":
    main()
