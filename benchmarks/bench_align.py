"""Face alignment's round trip on genuine CelebA val images, against plain centre cropping.

Each aligned val image is put on a grey 512x512 canvas, turned by up to ``--max-angle``
degrees, scaled by 0.6x to 1.6x and moved by up to ``--max-shift`` pixels (drawn with
``--seed``), and aligned back by ``celebalib.faces``. Printed: how often a face is found; the
eye error in the 178x218 frame (the mean distance of the two eyes from where MTCNN finds them in
the genuine image; median and 95th percentile), for the aligned crop (also against the genuine
image put through the same alignment, which leaves out how far that image sits from the
template) and for the canvas centre-cropped to 178x218; how often the run's yes/no answers
(its tuned thresholds, else 0.5) on the aligned crop and on the centre-cropped canvas agree
with those on the genuine image; and seconds per photo of ``predict.predict_photos``. The
test split is never read.

    python benchmarks/bench_align.py --run runs/celeba-cpu [--images 200] [--data /path/to/celeba; default CELEBA_ROOT]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from celebalib import faces
from celebalib.data import load_celeba, split_rows
from celebalib.predict import model_input, predict_photos, thresholds_note
from celebalib.runs import Run

WIDTH, HEIGHT = faces.ALIGNED_WIDTH, faces.ALIGNED_HEIGHT


def centre_frame(points: np.ndarray, size: int) -> np.ndarray:
    """Canvas points in the 178x218 frame of the canvas's largest centred 178:218 region, resized."""
    width = size * WIDTH / HEIGHT
    return np.stack([(points[:, 0] - (size - width) / 2) * HEIGHT / size, points[:, 1] * HEIGHT / size], axis=1)


def eye_error(eyes: np.ndarray, reference: np.ndarray) -> float:
    """Mean distance (pixels) of the two eyes from their reference positions."""
    return float(np.linalg.norm(eyes - reference, axis=1).mean())


def main() -> None:
    """Run the round trip and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder (best.keras is used)")
    parser.add_argument("--data", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        required=not os.environ.get("CELEBA_ROOT"), help="a CelebA root with val images (default: CELEBA_ROOT)")
    parser.add_argument("--images", type=int, default=200, help="val images to use (default 200)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=512, help="canvas side in pixels")
    parser.add_argument("--max-angle", type=float, default=25.0)
    parser.add_argument("--max-shift", type=float, default=40.0)
    parser.add_argument("--timed", type=int, default=20, help="canvases timed end to end with predict_photos")
    args = parser.parse_args()
    run = Run(args.run)
    rows = split_rows(load_celeba(args.data), "val")
    paths = rows["path"].sample(n=min(args.images, len(rows)), random_state=args.seed).tolist()
    rng = np.random.default_rng(args.seed)
    errors, inputs, canvases, missing, no_face_in_original, align_seconds = [], [], [], 0, 0, []
    for path in paths:
        original = faces.read_photo(path)
        angle, scale = rng.uniform(-args.max_angle, args.max_angle), rng.uniform(0.6, 1.6)
        shift = tuple(rng.uniform(-args.max_shift, args.max_shift, size=2))
        found = faces.detect_faces(original)
        if not found:
            no_face_in_original += 1
            continue
        eyes = found[0].landmarks[:2]
        canvas, placed = faces.place_on_canvas(original, angle=angle, scale=scale, shift=shift, size=args.size)
        started = time.perf_counter()
        aligned = faces.aligned_faces(canvas)
        align_seconds.append(time.perf_counter() - started)
        canvas_eyes = faces.transform_points(placed, eyes)
        centre_error = eye_error(centre_frame(canvas_eyes, args.size), eyes)
        if not aligned:
            missing += 1
            errors.append((np.nan, np.nan, centre_error))
            continue
        back = faces.transform_points(faces.alignment_transform(aligned[0].face.landmarks), canvas_eyes)
        # Also against the genuine image aligned by the same code: the detector's own consistency.
        realigned = faces.transform_points(faces.alignment_transform(found[0].landmarks), eyes)
        errors.append((eye_error(back, eyes), eye_error(back, realigned), centre_error))
        inputs.append([model_input(run, image) for image in (original, aligned[0].crop, canvas)])
        canvases.append(canvas)
    report(run, args, np.array(errors), inputs, missing, no_face_in_original, align_seconds)
    time_predict(run, canvases[:args.timed])


def report(run: Run, args: argparse.Namespace, errors: np.ndarray, inputs: list, missing: int,
           no_face_in_original: int, align_seconds: list[float]) -> None:
    """Print the face-finding rate, the eye errors and the answers' agreement."""
    tried = len(errors)
    print(f"run {run.path} ({run.crop} crop, {run.image_size} px; {thresholds_note(run)})")
    print(f"{tried} genuine val images of {args.data} on {args.size}x{args.size} canvases (seed {args.seed}; "
          f"{no_face_in_original} more left out: no face found in the genuine image)")
    print(f"face found on {tried - missing} of {tried} canvases")
    found = ~np.isnan(errors[:, 0])
    for name, column, where in (("aligned", 0, found),
                                ("aligned, against the genuine image aligned the same way", 1, found),
                                ("centre-cropped", 2, found),
                                ("centre-cropped, every canvas", 2, np.ones(tried, bool))):
        median, p95 = np.percentile(errors[where, column], [50, 95])
        print(f"eye error, {name}: median {median:.2f} px, 95th percentile {p95:.2f} px")
    probabilities = [run.predict_images(np.stack([group[i] for group in inputs])) for i in range(3)]
    answers = [p >= run.thresholds for p in probabilities]
    for name, i in (("aligned", 1), ("centre-cropped", 2)):
        agree = (answers[i] == answers[0]).mean()
        gap = np.abs(probabilities[i] - probabilities[0]).mean()
        print(f"yes/no answers agreeing with the genuine image's, {name}: {agree:.4f} "
              f"(mean |probability difference| {gap:.4f})")
    print(f"for scale: answering no to everything agrees with {(~answers[0]).mean():.4f} of them")
    print(f"detection and alignment: {np.median(align_seconds):.3f} s per {args.size}x{args.size} canvas (median)")


def time_predict(run: Run, canvases: list[np.ndarray]) -> None:
    """Time ``predict_photos`` end to end (detection, alignment, prediction) after a warm-up photo."""
    if len(canvases) < 2:
        return
    predict_photos(run, canvases[:1])
    started = time.perf_counter()
    predict_photos(run, canvases[1:])
    seconds = (time.perf_counter() - started) / (len(canvases) - 1)
    print(f"predict_photos: {seconds:.3f} s per photo over {len(canvases) - 1} canvases, {len(run.views())} view(s) "
          "each (after a warm-up photo)")


if __name__ == "__main__":
    main()
