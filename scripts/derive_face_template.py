"""Derive CelebA's aligned landmark template: the mean MTCNN landmarks of genuine aligned images.

CelebA's own ``list_landmarks_align_celeba.txt`` is not needed (nor always at hand): this
runs the detector that ``celebalib.faces`` aligns with over aligned train-split images
drawn at random, takes the largest face of each, and writes the five mean (x, y) points
to ``celebalib/resources/celeba_landmarks.csv``. Only those ten numbers enter the repository.
It also prints how far the images' eyes scatter around the mean, which bounds
``faces.ALIGNED_EYE_TOLERANCE``.

Usage: python scripts/derive_face_template.py --root /path/to/celeba [--images 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from celebalib import faces
from celebalib.data import load_celeba, split_rows
from celebalib.io import atomic_path

PROJECT = Path(__file__).resolve().parents[1]


def measure(paths: list[str]) -> tuple[np.ndarray, int]:
    """Landmarks (N, 5, 2) of the largest face of each image where one is found, and how many had none."""
    found, missed = [], 0
    for path in tqdm(paths, desc="detecting", unit="image"):
        detected = faces.detect_faces(faces.read_photo(path))
        if detected:
            found.append(detected[0].landmarks)
        else:
            missed += 1
    return np.stack(found), missed


def main() -> None:
    """Measure the template and write it atomically into celebalib/resources/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=os.environ.get("CELEBA_ROOT") or None, required=not os.environ.get("CELEBA_ROOT"),
                        help="CelebA root with aligned images (default: CELEBA_ROOT)")
    parser.add_argument("--images", type=int, default=400, help="how many train images to measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=faces.TEMPLATE_FILE)
    args = parser.parse_args()
    rows = split_rows(load_celeba(args.root), "train")
    paths = rows["path"].sample(n=min(args.images, len(rows)), random_state=args.seed).tolist()
    landmarks, missed = measure(paths)
    mean = landmarks.mean(axis=0)
    table = pd.DataFrame({"landmark": faces.LANDMARKS, "x": mean[:, 0].round(2), "y": mean[:, 1].round(2)})
    with atomic_path(args.out) as tmp:
        table.to_csv(tmp, index=False, lineterminator="\n")
    eye_error = np.linalg.norm(landmarks[:, :2] - mean[:2], axis=2).max(axis=1)
    print(table.to_string(index=False))
    print(f"from {len(landmarks)} train images of {args.root} (seed {args.seed}; {missed} more had no face found) "
          f"-> {args.out}")
    print("farther eye from its mean, pixels: median {:.2f}, 95th percentile {:.2f}, 99th {:.2f}, max {:.2f}".format(
        *np.percentile(eye_error, [50, 95, 99, 100])))


if __name__ == "__main__":
    main()
