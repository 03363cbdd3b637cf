"""The 40 attributes of any photo: find each face, align it as CelebA was aligned, predict, decide.

:func:`prepare_photo` turns a photo into what the run's model takes, one entry per face
(largest first): the face aligned onto CelebA's 178x218 template (``celebalib.faces``), then
the run's own crop and resize (``data.load_image``, the pipeline training used).
:func:`predict_photos` does it for many photos and returns one row per face;
``python -m celebalib predict`` is its command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from celebalib.attributes import ATTRIBUTES
from celebalib.errors import CelebAFormatError, ConfigError

if TYPE_CHECKING:
    from celebalib.faces import Face
    from celebalib.runs import Run

# How a face reached the model besides ``faces.ALIGNED`` and ``faces.ALREADY_ALIGNED``: with
# align=False the whole photo, centre-cropped; a photo without a face gets a NO_FACE row.
CENTRE_CROP, NO_FACE = "centre crop", "no face found"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
BOX_COLUMNS = ("box_x", "box_y", "box_width", "box_height")
# predict_photos decodes up to this many photos (and pixels) before detecting their faces together
# and sending every face through the model in one call.
PHOTO_BATCH, BATCH_PIXELS = 16, 16_000_000
# Faces per model call (each with all its test-time views), which bounds the call's memory.
FACE_BATCH = 32


@dataclasses.dataclass(frozen=True)
class PhotoFace:
    """One face of a photo as the model sees it.

    ``number`` counts from 1 (the largest face) to ``count`` (the faces found in the photo);
    ``crop`` is the 178x218 aligned face (with ``how`` "centre crop", the whole photo), and
    ``pixels`` that crop after the run's own crop and resize: the model's input.
    """

    number: int
    count: int
    how: str
    face: Face | None
    crop: np.ndarray
    pixels: np.ndarray


def png_bytes(image: np.ndarray) -> bytes:
    """An RGB image (values 0-255, rounded) encoded as a PNG file's bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def model_input(run: Run, image: np.ndarray) -> np.ndarray:
    """An RGB uint8 image through the run's crop and resize (``data.load_image``, as in training)."""
    from celebalib.data import load_image

    # A lossless PNG hands the pixels to the training pipeline's decoder unchanged.
    return load_image(png_bytes(image), image_size=run.image_size, crop=run.crop)


def prepare_photo(run: Run, photo: str | Path | bytes | np.ndarray, *, align: bool = True) -> list[PhotoFace]:
    """Every face of a photo (file, bytes, or RGB or grey uint8 array), largest first, ready for ``run``.

    With ``align`` False the whole photo is one entry, centre-cropped as training crops its
    (already aligned) images. A photo without a face gives an empty list.
    """
    return prepare_pixels(run, [photo_pixels(photo)], align=align)[0]


def photo_pixels(photo: str | Path | bytes | np.ndarray) -> np.ndarray:
    """A photo (file, bytes, or RGB or grey uint8 array) as RGB uint8 (H, W, 3)."""
    from celebalib import faces

    pixels = np.asarray(photo) if isinstance(photo, np.ndarray) else faces.read_photo(photo)
    if pixels.ndim == 2:  # a grey photo, e.g. skimage.data.camera()
        pixels = np.dstack([pixels] * 3)
    return pixels


def prepare_pixels(run: Run, photos: Sequence[np.ndarray], *, align: bool = True) -> list[list[PhotoFace]]:
    """``prepare_photo`` of each RGB photo (``photo_pixels``); the faces are detected together."""
    from celebalib import faces

    if not align:
        return [[PhotoFace(1, 1, CENTRE_CROP, None, pixels, model_input(run, pixels))] for pixels in photos]
    return [[PhotoFace(number, len(found), one.how, one.face, one.crop, model_input(run, one.crop))
             for number, one in enumerate(found, start=1)]
            for found in faces.aligned_faces_in(photos)]


def query_face(run: Run, photo: str | Path | bytes | np.ndarray, *, align: bool = True) -> PhotoFace:
    """The face a photo searches with: its largest, aligned (or with ``align`` False the whole photo)."""
    prepared = prepare_photo(run, photo, align=align)
    if not prepared:
        name = "the photo" if isinstance(photo, (bytes, bytearray, memoryview, np.ndarray)) else str(photo)
        raise ConfigError(f"{name}: no face found; expected a photo with a face "
                          "(--no-align, or align=False, uses the whole photo, centre-cropped)")
    return prepared[0]


def describe_face(face: PhotoFace) -> str:
    """Say which face it is and how it was framed, e.g. "face 1 of 2 at (182, 64) 83x107, aligned"."""
    if face.face is None:
        return "whole photo, centre crop"
    x, y, width, height = (round(value) for value in face.face.box)
    return f"face {face.number} of {face.count} at ({x}, {y}) {width}x{height}, {face.how}"


def save_pixels(pixels: np.ndarray, path: str | Path) -> None:
    """Save an image (values 0-255) as a PNG file, atomically."""
    from celebalib.io import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_bytes(png_bytes(pixels))


def thresholds_note(run: Run) -> str:
    """Say where the run's decision thresholds come from: tuned by ``evaluate``, or 0.5 for want of them."""
    stored = run.record.thresholds
    if stored is not None and stored.values:
        return f"thresholds tuned on val for {stored.objective or 'an unnamed objective'}"
    return (f"threshold 0.5 for every attribute: {run.path.name} has no tuned thresholds "
            f"(python -m celebalib evaluate --run {run.path} tunes them)")


def attribute_table(run: Run, probabilities: np.ndarray) -> pd.DataFrame:
    """The 40 attributes of one face: probability, the run's threshold and the yes/no answer."""
    probabilities = np.asarray(probabilities, dtype=np.float64).reshape(len(ATTRIBUTES))
    thresholds = run.thresholds.astype(np.float64)
    return pd.DataFrame({"attribute": list(ATTRIBUTES), "probability": probabilities, "threshold": thresholds,
                         "answer": np.where(probabilities >= thresholds, "yes", "no")})


# One compiled predictor per run, model and set of views; forgotten with the run.
_PREDICTORS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def view_predictor(run: Run, which: str = "best") -> Callable[[np.ndarray], np.ndarray]:
    """A compiled function: images (N, H, W, 3) in [0, 255] -> probabilities (N, 40) averaged over
    ``run.views()``, as ``Run.predict_images`` averages them, but with every view of every image
    in one batch through one graph (traced once: the batch size is left open)."""
    import tensorflow as tf

    from celebalib.runs import view_of

    views = tuple(run.views())
    key = (which, views)
    cached = _PREDICTORS.setdefault(run, {})
    if key not in cached:
        model, (height, width) = run.model(which), run.image_shape

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.float32)])
        def predict(images: tf.Tensor) -> tf.Tensor:
            stacked = tf.concat([view_of(images, *view) for view in views], axis=0)
            outputs = model(stacked, training=False)
            return tf.reduce_mean(tf.reshape(outputs, [len(views), -1, outputs.shape[-1]]), axis=0)

        cached[key] = lambda images: predict(np.asarray(images, dtype=np.float32)).numpy()
    return cached[key]


def predict_faces(run: Run, faces: Sequence[PhotoFace], *, which: str = "best") -> np.ndarray:
    """Probabilities (N, 40) of prepared faces, averaged over the run's views (``view_predictor``),
    ``FACE_BATCH`` faces per call."""
    predict = view_predictor(run, which)
    parts = [predict(np.stack([face.pixels for face in faces[start:start + FACE_BATCH]]))
             for start in range(0, len(faces), FACE_BATCH)]
    return np.concatenate(parts) if parts else np.zeros((0, len(ATTRIBUTES)), dtype=np.float32)


def face_attributes(run: Run, face: PhotoFace) -> pd.DataFrame:
    """The 40 attributes of one prepared face (``attribute_table`` of its prediction)."""
    return attribute_table(run, predict_faces(run, [face])[0])


def face_rows(run: Run, name: str, prepared: Sequence[PhotoFace],
              probabilities: np.ndarray | None = None) -> pd.DataFrame:
    """One row per prepared face (a single "no face found" row for none): where it is, 40 probabilities
    and 40 yes/no answers at the run's thresholds (columns ``<attribute>`` and ``<attribute>_yes``).

    ``probabilities`` (one row per face) are predicted here when not given.
    """
    if not prepared:
        row = {"file": name, "face": pd.NA, "faces": 0, "status": NO_FACE}
        return _with_attributes(pd.DataFrame([row]), np.full((1, len(ATTRIBUTES)), np.nan), run.thresholds)
    probabilities = predict_faces(run, prepared) if probabilities is None else probabilities
    rows = []
    for face in prepared:
        box = face.face.box if face.face is not None else (np.nan,) * 4
        confidence = face.face.confidence if face.face is not None else np.nan
        rows.append({"file": name, "face": face.number, "faces": face.count, "status": face.how,
                     **dict(zip(BOX_COLUMNS, box)), "confidence": confidence})
    return _with_attributes(pd.DataFrame(rows), probabilities, run.thresholds)


def _with_attributes(table: pd.DataFrame, probabilities: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Add the 40 probability columns and the 40 yes/no columns (missing where there is no face)."""
    table = table.reindex(columns=["file", "face", "faces", "status", *BOX_COLUMNS, "confidence"])
    table["face"] = table["face"].astype("Int64")
    answers = pd.DataFrame(probabilities >= thresholds, columns=[f"{name}_yes" for name in ATTRIBUTES],
                           dtype="boolean")
    answers.loc[np.isnan(probabilities).any(axis=1)] = pd.NA
    return pd.concat([table, pd.DataFrame(probabilities, columns=list(ATTRIBUTES)), answers], axis=1)


def predict_photos(run: Run, photos: Iterable[str | Path | np.ndarray], *, align: bool = True,
                   progress: bool = False) -> pd.DataFrame:
    """One row per face of each photo (largest first; "no face found" rows for photos without one).

    Args:
        run: a trained run (``runs.open_run``); its thresholds decide yes or no.
        photos: files or RGB uint8 arrays (named ``photo 1``, ``photo 2``, ... in the ``file`` column).
        align: False skips detection and centre-crops the whole photo, for images already aligned.
        progress: show a progress bar over the photos.
    """
    from tqdm.auto import tqdm

    photos = list(photos)
    if not photos:
        raise ConfigError("no photos to predict; expected at least one file or image")
    parts, batch = [], []
    with tqdm(total=len(photos), unit="photo", disable=not progress or len(photos) < 2) as bar:
        for number, photo in enumerate(photos, start=1):
            name = f"photo {number}" if isinstance(photo, np.ndarray) else str(photo)
            batch.append((name, photo_pixels(photo)))
            held = sum(pixels.shape[0] * pixels.shape[1] for _, pixels in batch)
            if len(batch) == PHOTO_BATCH or held >= BATCH_PIXELS or number == len(photos):
                parts.extend(_batch_rows(run, batch, align=align))
                bar.update(len(batch))
                batch = []
    return pd.concat(parts, ignore_index=True)


def _batch_rows(run: Run, batch: Sequence[tuple[str, np.ndarray]], *, align: bool) -> list[pd.DataFrame]:
    """``face_rows`` of each (name, pixels), with every face of the batch in one model call."""
    prepared = prepare_pixels(run, [pixels for _, pixels in batch], align=align)
    probabilities = predict_faces(run, [face for faces in prepared for face in faces])
    per_photo = np.split(probabilities, np.cumsum([len(faces) for faces in prepared])[:-1])
    return [face_rows(run, name, faces, rows) for (name, _), faces, rows in zip(batch, prepared, per_photo)]


def yes_attributes(row: pd.Series) -> list[str]:
    """The attributes a ``predict_photos`` row answers yes to."""
    return [name for name in ATTRIBUTES if not pd.isna(row[f"{name}_yes"]) and bool(row[f"{name}_yes"])]


def photo_files(paths: Iterable[str | Path]) -> list[Path]:
    """The photos named: files as given, folders as their JPEG and PNG files (recursively, sorted)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file())
            if not inside:
                raise CelebAFormatError(path, "folder holds no JPEG or PNG file")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise CelebAFormatError(path, "not found; expected a photo or a folder of photos")
    return found


# ---------------------------------------------------------------------------------------
# Command line: ``celebalib predict``
# ---------------------------------------------------------------------------------------

EXAMPLE = """example:
  python -m celebalib predict --run runs/celeba-cpu photo.jpg
  python -m celebalib predict --run runs/celeba-cpu holiday/ --csv attributes.csv"""


def configure_predict_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``celebalib predict``."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE
    parser.description = ("Find each face in the photos, align it onto CelebA's template and print its 40\n"
                          "attributes: probability, and yes or no at the run's tuned thresholds.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="photos (JPEG or PNG) or folders of photos")
    from celebalib.bundles import RUN_SOURCES

    parser.add_argument("--run", required=True, help=f"{RUN_SOURCES}, e.g. runs/celeba-cpu")
    parser.add_argument("--csv", metavar="OUT", default=None,
                        help="write one row per face to this CSV file (default: print a table)")
    parser.add_argument("--no-align", dest="align", action="store_false",
                        help="skip face detection and centre-crop the whole photo (for already aligned images)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_predict_command)


def _predict_command(args: argparse.Namespace) -> int:
    """Predict every photo; print a table (one face) or a summary, or write the CSV."""
    from celebalib.io import atomic_path
    from celebalib.runs import open_run

    files = photo_files(args.paths)
    run = open_run(args.run)
    table = predict_photos(run, files, align=args.align, progress=not args.quiet)
    if args.csv:
        with atomic_path(args.csv) as tmp:
            table.to_csv(tmp, index=False, float_format="%.4f", lineterminator="\n")
        print(f"{len(table)} row(s) for {len(files)} photo(s) -> {args.csv} ({thresholds_note(run)})")
        return 0
    print(thresholds_note(run))
    faces = table[table["status"] != NO_FACE]
    if len(table) == 1 and len(faces) == 1:
        row = table.iloc[0]
        print(f"{row['file']}: {_where(row)}")
        probabilities = row[list(ATTRIBUTES)].to_numpy(np.float64)
        print(attribute_table(run, probabilities).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        return 0
    for _, row in table.iterrows():
        if row["status"] == NO_FACE:
            hint = "" if not args.align else " (--no-align predicts the whole photo, centre-cropped)"
            print(f"{row['file']}: no face found{hint}")
        else:
            print(f"{row['file']}: {_where(row)}; yes: {', '.join(yes_attributes(row)) or 'none'}")
    return 0


def _where(row: pd.Series) -> str:
    """Say which face a row is and how it was framed, e.g. "face 1 of 2 at (182, 64) 83x107, aligned"."""
    if row["status"] == CENTRE_CROP:
        return "whole photo, centre crop"
    x, y, width, height = (round(float(row[column])) for column in BOX_COLUMNS)
    return f"face {row['face']} of {row['faces']} at ({x}, {y}) {width}x{height}, {row['status']}"

