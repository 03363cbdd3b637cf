"""Reading CelebA roots in every common layout, the image pipeline, and imbalance helpers.

TensorFlow is imported inside the functions that need it, so ``celebalib check`` and
annotation-only reads start quickly.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import os
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from celebalib.attributes import ATTRIBUTES, NUM_ATTRIBUTES, SPLITS, attribute_index
from celebalib.errors import CelebAFormatError, ConfigError

if TYPE_CHECKING:
    import tensorflow as tf

# "center": the largest centred square (on aligned 178x218 faces, the 178x178 face region);
# "portrait": the face square's width and PORTRAIT_ASPECT times as tall, so the hair above and the
# neck below stay in the picture at the face's scale (on aligned faces, the centred 178x208);
# "none": the whole image, squeezed into a square.
CROPS = ("center", "portrait", "none")
PORTRAIT_ASPECT = 208 / 178
# Formats tf.io.decode_image understands; anything else would fail inside the pipeline.
DECODABLE_FORMATS = ("JPEG", "PNG", "BMP", "GIF")


class MissingImagesWarning(UserWarning):
    """Some images listed in the annotations are not in the image folder."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one layout keeps its annotation files and images, relative to the root."""

    name: str
    attributes: str
    partition: str
    identity: str
    image_dirs: tuple[str, ...]


LAYOUTS: tuple[Layout, ...] = (
    Layout("official", "Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt",
           "Anno/identity_CelebA.txt", ("Img/img_align_celeba",)),
    Layout("flat", "list_attr_celeba.txt", "list_eval_partition.txt",
           "identity_CelebA.txt", ("img_align_celeba",)),
    Layout("kaggle", "list_attr_celeba.csv", "list_eval_partition.csv",
           "identity_CelebA.txt", ("img_align_celeba/img_align_celeba", "img_align_celeba")),
    Layout("torchvision", "celeba/list_attr_celeba.txt", "celeba/list_eval_partition.txt",
           "celeba/identity_CelebA.txt", ("celeba/img_align_celeba",)),
)


# ---------------------------------------------------------------------------------------
# Parsing the annotation files


def _read_file(path: Path, head: int) -> tuple[list[str], bytes]:
    """Read a text file: its first ``head`` lines, and the rest as bytes minus trailing blank lines."""
    if not path.is_file():
        raise CelebAFormatError(path, "file not found")
    try:
        body = path.read_bytes().removeprefix(b"\xef\xbb\xbf").rstrip()
    except OSError as error:
        raise CelebAFormatError(path, f"cannot read the file ({error.strerror})") from None
    lines = []
    for number in range(1, head + 1):
        if not body:
            raise CelebAFormatError(path, "file ends early; expected a count line, a header and rows",
                                    line=number)
        line, _, body = body.partition(b"\n")
        lines.append(line.decode("utf-8", errors="replace").strip())
    return lines, body


def _split_line(line: str, sep: str | None) -> list[str]:
    """Split one row the way the fast parser does: runs of spaces, or commas."""
    return line.split() if sep is None else [token.strip() for token in line.split(sep)]


def _check_field_counts(path: Path, body: bytes, first: int, n_fields: int, sep: str | None) -> None:
    """Raise at the first row without ``n_fields`` values (a slow scan, run only on trouble)."""
    for offset, raw in enumerate(body.splitlines()):
        line = raw.decode("utf-8", errors="replace")
        found = len(_split_line(line, sep)) if line.strip() else 0
        if found != n_fields:
            raise CelebAFormatError(
                path, f"expected {n_fields} values (image id and {n_fields - 1} more), found {found}",
                line=first + offset + 1,
            )


def _parse_rows(path: Path, body: bytes, first: int, n_fields: int, sep: str | None) -> pd.DataFrame:
    """Parse the rows after line ``first`` into ``n_fields`` columns (column 0 is str)."""
    if not body:
        raise CelebAFormatError(path, "no rows; expected one line per image", line=first + 1)
    try:
        frame = pd.read_csv(
            io.BytesIO(body), sep=r"\s+" if sep is None else sep, header=None, names=range(n_fields),
            dtype={0: str}, skip_blank_lines=False, engine="c",
        )
    except pd.errors.ParserError:
        frame = None
    if frame is None or frame.isna().any(axis=None):
        _check_field_counts(path, body, first, n_fields, sep)
    if frame is None:
        raise CelebAFormatError(path, "could not parse the rows; expected plain values without quotes",
                                line=first + 1)
    if frame[0].isna().any():
        row = int(np.argmax(frame[0].isna().to_numpy()))
        raise CelebAFormatError(path, "empty image id; expected a file name", line=first + row + 1)
    return frame


def _check_values(path: Path, frame: pd.DataFrame, first: int, allowed: Sequence[int] | None,
                  expected: str) -> np.ndarray:
    """Return columns 1.. as an int array, raising at the first value that is not allowed."""
    values = frame.iloc[:, 1:]
    if all(pd.api.types.is_integer_dtype(dtype) for dtype in values.dtypes):
        numbers, bad = values.to_numpy(np.int64), np.zeros(values.shape, dtype=bool)
    else:
        numeric = values.apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
        bad = np.isnan(numeric) | (np.nan_to_num(numeric) % 1 != 0)
        numbers = np.nan_to_num(numeric).astype(np.int64)
    if allowed is not None:
        # A few equality tests beat np.isin by far on millions of small integers.
        bad |= ~np.logical_or.reduce([numbers == value for value in allowed])
    if bad.any():
        row, column = np.argwhere(bad)[0]
        value = values.iat[row, column]
        shown = "an empty value" if pd.isna(value) else f"value '{value}'"
        raise CelebAFormatError(
            path, f"{shown} in column {column + 2}: expected {expected}",
            line=first + int(row) + 1,
        )
    return numbers


def _check_unique(path: Path, ids: pd.Series, first: int) -> None:
    """Raise at the second occurrence of a duplicated image id."""
    duplicated = ids.duplicated()
    if duplicated.any():
        row = int(np.argmax(duplicated.to_numpy()))
        earlier = int(np.argmax((ids == ids.iat[row]).to_numpy()))
        raise CelebAFormatError(
            path, f"image id {ids.iat[row]} appears twice (first at line {first + earlier + 1}); "
            "expected each image once", line=first + row + 1,
        )


def _check_header(path: Path, names: list[str], line: int) -> list[str]:
    """Check the 40 attribute names (any order) and return them in file order."""
    unknown = [name for name in names if name not in ATTRIBUTES]
    if unknown:
        hint = difflib.get_close_matches(unknown[0], ATTRIBUTES, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise CelebAFormatError(
            path, f"unknown attribute name {unknown[0]!r}{suggestion}; expected the 40 CelebA names",
            line=line,
        )
    missing = [name for name in ATTRIBUTES if name not in names]
    if missing or len(names) != NUM_ATTRIBUTES:
        what = f"missing {', '.join(missing)}" if missing else "a name is repeated"
        raise CelebAFormatError(path, f"header has {len(names)} names, {what}; expected the 40 CelebA names",
                                line=line)
    return names


def _attribute_frame(ids: pd.Series, values: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Build the image_id + 40 int8 0/1 columns in the official attribute order."""
    flags = pd.DataFrame((values > 0).astype(np.int8), columns=names)
    frame = pd.concat([pd.DataFrame({"image_id": ids.to_numpy(dtype=object)}), flags[list(ATTRIBUTES)]], axis=1)
    return frame


def read_attributes(path: str | Path) -> tuple[pd.DataFrame, int]:
    """Read ``list_attr_celeba.txt`` (or the Kaggle ``.csv``) into image_id + 40 int8 columns.

    Returns:
        The frame, and the line number of its first row (for error messages).
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        return _read_attributes_csv(path), 2
    (count, header), body = _read_file(path, 2)
    names = _check_header(path, header.split(), line=2)
    frame = _parse_rows(path, body, 2, NUM_ATTRIBUTES + 1, None)
    if not count.isdigit():
        raise CelebAFormatError(path, f"first line is {count!r}; expected the number of images", line=1)
    if int(count) != len(frame):
        raise CelebAFormatError(path, f"first line says {int(count)} images but the file lists {len(frame)}",
                                line=1)
    values = _check_values(path, frame, 2, (-1, 1), "-1 or 1")
    _check_unique(path, frame[0], 2)
    return _attribute_frame(frame[0], values, names), 3


def _read_attributes_csv(path: Path) -> pd.DataFrame:
    """Read the Kaggle mirror's comma-separated attribute file (header: image_id, 40 names)."""
    (header_line,), body = _read_file(path, 1)
    header = _split_line(header_line, ",")
    if header[0] != "image_id":
        raise CelebAFormatError(path, f"first column is {header[0]!r}; expected 'image_id'", line=1)
    names = _check_header(path, header[1:], line=1)
    frame = _parse_rows(path, body, 1, NUM_ATTRIBUTES + 1, ",")
    values = _check_values(path, frame, 1, (-1, 1), "-1 or 1")
    _check_unique(path, frame[0], 1)
    return _attribute_frame(frame[0], values, names)


def read_partition(path: str | Path) -> pd.Series:
    """Read ``list_eval_partition`` (.txt or Kaggle .csv) into a Series image_id -> split name."""
    path = Path(path)
    first, sep = (1, ",") if path.suffix.lower() == ".csv" else (0, None)
    header, body = _read_file(path, first)
    if header and _split_line(header[0], ",") != ["image_id", "partition"]:
        raise CelebAFormatError(path, f"header is {header[0]!r}; expected 'image_id,partition'", line=1)
    frame = _parse_rows(path, body, first, 2, sep)
    values = _check_values(path, frame, first, (0, 1, 2), "0, 1 or 2 (train, val, test)")
    _check_unique(path, frame[0], first)
    splits = np.asarray(SPLITS, dtype=object)[values[:, 0]]
    return pd.Series(splits, index=frame[0].to_numpy(), name="split")


def read_identity(path: str | Path) -> pd.Series:
    """Read ``identity_CelebA.txt`` into a Series image_id -> identity (int32)."""
    path = Path(path)
    _, body = _read_file(path, 0)
    frame = _parse_rows(path, body, 0, 2, None)
    values = _check_values(path, frame, 0, None, "a whole number (the person's identity)")
    _check_unique(path, frame[0], 0)
    return pd.Series(values[:, 0].astype(np.int32), index=frame[0].to_numpy(), name="identity")


# ---------------------------------------------------------------------------------------
# Finding and loading a root


def find_layout(root: str | Path) -> Layout:
    """Return the layout of a CelebA root, judged by where its attribute file is."""
    root = Path(root)
    if not root.is_dir():
        raise CelebAFormatError(root, "folder not found; expected a CelebA root")
    for layout in LAYOUTS:
        if (root / layout.attributes).is_file():
            return layout
    expected = ", ".join(layout.attributes for layout in LAYOUTS)
    raise CelebAFormatError(root, f"no CelebA attribute file found; expected one of {expected}")


def _image_dir(root: Path, layout: Layout) -> Path:
    """Return the layout's image folder that exists (else its first candidate)."""
    for candidate in layout.image_dirs:
        if (root / candidate).is_dir():
            return root / candidate
    return root / layout.image_dirs[0]


def _attach_splits(table: pd.DataFrame, partition: pd.Series, part_path: Path, attr_path: Path,
                   first: int) -> pd.DataFrame:
    """Add the split column, raising for an image the partition file does not list."""
    split = partition.reindex(table["image_id"].to_numpy())
    if split.isna().any():
        row = int(np.argmax(split.isna().to_numpy()))
        raise CelebAFormatError(
            part_path, f"image {table['image_id'].iat[row]} (line {first + row} of {attr_path.name}) "
            f"is not listed; expected a split for every image ({int(split.isna().sum())} missing)",
        )
    table["split"] = split.to_numpy()
    return table


def _drop_missing_images(table: pd.DataFrame, image_dir: Path, attr_path: Path, first: int,
                         strict: bool) -> pd.DataFrame:
    """Keep the rows whose image file exists; warn (or raise when strict) about the others."""
    hint = "read the annotations alone with images=False (celebalib check --annotations-only)"
    if not image_dir.is_dir():
        raise CelebAFormatError(image_dir, f"image folder not found; {hint}")
    try:
        names = set(os.listdir(image_dir))
    except OSError as error:
        raise CelebAFormatError(image_dir, f"cannot list the image folder ({error.strerror})") from None
    present = table["image_id"].isin(names).to_numpy()
    missing = table.loc[~present, "image_id"]
    if missing.empty:
        return table
    if not present.any():
        raise CelebAFormatError(image_dir, f"none of the {len(table):,} images listed in {attr_path.name} "
                                f"is here; {hint}")
    examples = ", ".join(missing.head(3))
    if strict:
        row = int(np.argmax(~present))
        raise CelebAFormatError(
            attr_path, f"image {missing.iat[0]} not found in {image_dir} ({len(missing)} listed images "
            f"are missing, e.g. {examples})", line=first + row,
        )
    warnings.warn(
        f"{len(missing):,} of {len(table):,} images listed in {attr_path.name} are not in {image_dir} "
        f"(e.g. {examples}); they are left out.",
        MissingImagesWarning, stacklevel=3,
    )
    return table.loc[present].reset_index(drop=True)


def load_celeba(root: str | Path, *, images: bool = True, strict: bool = False) -> pd.DataFrame:
    """Read a CelebA root (official, flat, Kaggle or torchvision layout) into one tidy table.

    Args:
        root: the dataset folder.
        images: False reads the annotations alone (all rows; no image folder needed).
        strict: make a listed image missing from the image folder an error, not a warning.

    Returns:
        One row per image: image_id, path, the 40 attributes (int8 0/1), split, identity
        (int32, -1 where unknown). ``attrs`` holds root, layout and missing_images.
    """
    root = Path(root).expanduser().resolve()
    layout = find_layout(root)
    attr_path = root / layout.attributes
    table, first = read_attributes(attr_path)
    partition = read_partition(root / layout.partition)
    table = _attach_splits(table, partition, root / layout.partition, attr_path, first)
    identity_path = root / layout.identity
    identity = read_identity(identity_path) if identity_path.is_file() else pd.Series(dtype=np.int32)
    table["identity"] = identity.reindex(table["image_id"].to_numpy()).fillna(-1).to_numpy(np.int32)
    image_dir = _image_dir(root, layout)
    table.insert(1, "path", str(image_dir) + os.sep + table["image_id"])
    total = len(table)
    if images:
        table = _drop_missing_images(table, image_dir, attr_path, first, strict)
    table.attrs = {"root": str(root), "layout": layout.name, "missing_images": total - len(table)}
    return table


def default_root(*, progress: bool = True) -> Path:
    """Return ``CELEBA_ROOT`` if set, else the synthetic dataset (generated on first use, with a
    progress bar unless ``progress`` is False)."""
    from celebalib.environment import read_environment

    env = read_environment()
    if env.celeba_root is not None:
        return env.celeba_root
    from celebalib.synthetic import ensure_generated

    return Path(ensure_generated(env.synthetic_dir, env.synthetic_size, env.synthetic_seed, progress=progress))


# ---------------------------------------------------------------------------------------
# Validating a root: ``celebalib check``


def _inspect_one(path: str) -> tuple[str, int, int, str]:
    """Fully decode one image with Pillow: (format, width, height, problem or "")."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            fmt, (width, height) = image.format or "", image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return "", 0, 0, f"cannot decode the image ({error})"
    if fmt not in DECODABLE_FORMATS:
        return fmt, width, height, f"{fmt} image; expected JPEG or PNG"
    return fmt, width, height, ""


def inspect_images(paths: Iterable[str], *, workers: int | None = None, progress: bool = True) -> pd.DataFrame:
    """Decode every image on a thread pool; one row per path: format, width, height, problem."""
    from tqdm.auto import tqdm

    paths = list(paths)
    # Pillow releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1)) as pool:
        results = list(tqdm(pool.map(_inspect_one, paths), total=len(paths), disable=not progress,
                            desc="Decoding images", unit="img"))
    columns = ["format", "width", "height", "problem"]
    return pd.DataFrame(results, columns=columns, index=pd.Index(paths, name="path"))


def summarize(table: pd.DataFrame, report: pd.DataFrame | None = None) -> str:
    """Describe a loaded root: layout, images per split, identities, positive rates, image sizes."""
    counts = table["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    known = table[table["identity"] >= 0]
    shared = int((known.groupby("identity")["split"].nunique() > 1).sum())
    lines = [
        f"Layout: {table.attrs.get('layout')} ({table.attrs.get('root')})",
        f"Images: {len(table):,}" + (f" ({table.attrs['missing_images']:,} listed without an image file, "
                                      "left out)" if table.attrs.get("missing_images") else ""),
        "Per split: " + ", ".join(f"{split} {count:,}" for split, count in counts.items()),
        f"Identities: {known['identity'].nunique():,} ({shared:,} shared across splits)",
    ]
    if report is not None:
        sizes = (report["width"].astype(str) + "x" + report["height"].astype(str)).value_counts()
        lines.append("Image sizes: " + ", ".join(f"{size} ({n:,})" for size, n in sizes.head(3).items()))
    rates = pd.DataFrame({split: positive_rates(table, split) for split in SPLITS if counts[split]})
    lines += ["Positive rate per attribute:", rates.to_string(float_format="{:.1%}".format)]
    return "\n".join(lines)


def _check_command(args: argparse.Namespace) -> int:
    """Validate a root fully, decode every image, and print the summary."""
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers {args.workers}: expected a positive number of threads")
    root = Path(args.root) if args.root else default_root(progress=not args.quiet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MissingImagesWarning)
        table = load_celeba(root, images=not args.annotations_only, strict=args.strict)
    report = None
    if not args.annotations_only:
        report = inspect_images(table["path"], workers=args.workers, progress=not args.quiet)
        bad = report[report["problem"] != ""]
        if len(bad):
            raise CelebAFormatError(bad.index[0], f"{bad['problem'].iat[0]} ({len(bad):,} of "
                                    f"{len(report):,} images fail to decode)")
    print(summarize(table, report))
    for warning in caught:
        print(f"Note: {warning.message} Pass --strict to make this an error.")
    return 0


def configure_check_parser(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``celebalib check``."""
    parser.epilog = "example:\n  python -m celebalib check /path/to/celeba --annotations-only"
    parser.add_argument("root", nargs="?", help="CelebA root in any layout (default: CELEBA_ROOT, "
                        "else the synthetic dataset, generated first if missing)")
    parser.add_argument("--strict", action="store_true", help="a listed image without a file is an error")
    parser.add_argument("--annotations-only", action="store_true", help="read the annotation files alone")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: all cores)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=_check_command)


# ---------------------------------------------------------------------------------------
# The one preprocessing path


def check_image_size(image_size: int, minimum: int = 1) -> int:
    """Return ``image_size`` as an int if it is a whole number of pixels, at least ``minimum``; else raise
    ConfigError. The pipeline takes any size; the model asks for ``model.MIN_IMAGE_SIZE``."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < minimum:
        raise ConfigError(f"image_size={image_size!r}: expected a whole number of pixels, at least {minimum}")
    return int(image_size)


def _check_image_args(image_size: int, crop: str) -> None:
    """Raise ConfigError for an image size or crop the pipeline cannot use."""
    check_image_size(image_size)
    if crop not in CROPS:
        raise ConfigError(f"crop={crop!r}: expected one of {', '.join(CROPS)}")


def image_shape(image_size: int, crop: str = "center") -> tuple[int, int]:
    """(height, width) of the images the pipeline makes: S x S, or for "portrait" S wide and
    ``PORTRAIT_ASPECT`` times as tall, rounded to a multiple of 8 (96 -> 112x96)."""
    _check_image_args(image_size, crop)
    if crop == "portrait":
        return 8 * max(1, round(image_size * PORTRAIT_ASPECT / 8)), int(image_size)
    return int(image_size), int(image_size)


def decode_image(image_bytes: tf.Tensor | bytes, *, image_size: int, crop: str = "center") -> tf.Tensor:
    """Decode JPEG/PNG bytes to RGB, crop, resize: float32 (H, W, 3) in [0, 255] (a TF op).

    (H, W) is ``image_shape(image_size, crop)``: S x S except for the "portrait" crop.
    """
    import tensorflow as tf

    height, width = image_shape(image_size, crop)
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    if crop != "none":
        # The largest centred region of the output's aspect: for aligned 178x218 faces the
        # 178x178 face square ("center") or the 178x208 face, hair and neck ("portrait").
        aspect = 1.0 if crop == "center" else PORTRAIT_ASPECT
        rows, columns = tf.shape(image)[0], tf.shape(image)[1]
        rows_f, columns_f = tf.cast(rows, tf.float32), tf.cast(columns, tf.float32)
        keep_rows = tf.minimum(rows, tf.cast(tf.round(columns_f * aspect), tf.int32))
        keep_columns = tf.minimum(columns, tf.cast(tf.round(rows_f / aspect), tf.int32))
        image = tf.image.crop_to_bounding_box(image, (rows - keep_rows) // 2, (columns - keep_columns) // 2,
                                              keep_rows, keep_columns)
    # Antialiasing keeps downsampled faces free of aliasing; clipping removes float rounding
    # (255.00003) so the promised [0, 255] range holds exactly.
    image = tf.image.resize(image, (height, width), antialias=True)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, (height, width, 3))


def read_image_bytes(path_or_bytes: str | Path | bytes | bytearray | memoryview) -> tuple[bytes, Path]:
    """An image file's bytes (or uploaded bytes as given) and the path that errors should name."""
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), Path("<uploaded bytes>")
    source = Path(path_or_bytes)
    if not source.is_file():
        raise CelebAFormatError(source, "image not found")
    return source.read_bytes(), source


def load_image(path_or_bytes: str | Path | bytes | bytearray | memoryview, *, image_size: int,
               crop: str = "center") -> np.ndarray:
    """Load one image file or uploaded bytes as the model sees it: (H, W, 3) float32 in [0, 255]
    (``image_shape(image_size, crop)``)."""
    import tensorflow as tf

    data, source = read_image_bytes(path_or_bytes)
    _check_image_args(image_size, crop)
    try:
        return decode_image(data, image_size=image_size, crop=crop).numpy()
    except tf.errors.InvalidArgumentError:
        raise CelebAFormatError(source, "cannot decode the image; expected a JPEG or PNG file") from None


def make_dataset(table: pd.DataFrame, split: str | None, *, image_size: int, batch_size: int,
                 training: bool, seed: int = 0, crop: str = "center", cache: bool | str = False,
                 limit: int | None = None, labels: bool = True) -> tf.data.Dataset:
    """Batches of (images, labels) for one split: float32 images (B, H, W, 3) in [0, 255], labels (B, 40).

    Args:
        split: train/val/test, or None for every row in table order.
        training: shuffle with ``seed`` (reshuffled each epoch). No augmentation here: it
            lives inside the model, so every consumer shares one preprocessing path.
        cache: True caches decoded images in memory; a string caches to that file.
        limit: use at most the first ``limit`` rows of the split.
        labels: False yields images alone (for prediction).
    """
    import tensorflow as tf

    _check_image_args(image_size, crop)
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ConfigError(f"batch_size={batch_size!r}: expected a positive whole number")
    needed = ["path", *ATTRIBUTES] if labels else ["path"]
    if missing := [name for name in needed if name not in table.columns]:
        raise ConfigError(f"the table lacks columns {missing[:3]}; expected one from load_celeba")
    rows = split_rows(table, split, limit)
    paths = rows["path"].to_numpy(str)
    ds = tf.data.Dataset.from_tensor_slices(
        (paths, rows[list(ATTRIBUTES)].to_numpy(np.float32)) if labels else paths)

    def load(path: tf.Tensor, *target: tf.Tensor) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor]:
        """Read and decode one file, passing its labels (if any) through."""
        image = decode_image(tf.io.read_file(path), image_size=image_size, crop=crop)
        return (image, *target) if target else image

    if training and not cache:
        # Shuffling file names before decoding keeps the buffer tiny.
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if not cache:
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)
    # Cached as uint8 (a quarter of float32's memory; rounding moves a pixel by < 0.5), and kept
    # uint8 through the whole-split shuffle buffer: only a batch at a time becomes float32.
    ds = ds.map(_on_images(lambda image: tf.cast(tf.round(image), tf.uint8)))
    ds = ds.cache("" if cache is True else str(cache))
    if training:
        ds = ds.shuffle(len(rows), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).map(_on_images(lambda images: tf.cast(images, tf.float32)),
                                  num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _on_images(change):
    """Apply ``change`` to the images of dataset elements that are images or (images, labels)."""
    return lambda images, *rest: (change(images), *rest) if rest else change(images)


# ---------------------------------------------------------------------------------------
# Imbalance helpers


def split_rows(table: pd.DataFrame, split: str | None, limit: int | None = None) -> pd.DataFrame:
    """Return the rows of one split (None: all rows), at most ``limit`` of them; never none."""
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split={split!r}: expected one of {', '.join(SPLITS)}")
    rows = table if split is None else table[table["split"] == split]
    if limit is not None:
        rows = rows.head(limit)
    if rows.empty:
        what = "the table has no rows" if split is None else (f"the {split} split has no images ({len(table):,} rows "
                                                              "in all; its images may be absent from the folder)")
        raise ConfigError(f"{table.attrs.get('root', 'table')}: {what}")
    return rows


def positive_rates(table: pd.DataFrame, split: str | None = None) -> pd.Series:
    """Fraction of positive labels per attribute, in one split or (None) over all rows."""
    return split_rows(table, split)[list(ATTRIBUTES)].mean().rename("positive_rate")


def identity_mean_labels(table: pd.DataFrame, attributes: Sequence[str], split: str = "train") -> pd.DataFrame:
    """A copy of ``table`` whose ``attributes`` on ``split``'s rows are each identity's mean label there.

    CelebA's annotators labelled every photo on its own, so one person's photos often disagree
    on what cannot change between them (a nose is not pointy in one photo and not in the next).
    Training against the mean over a person's photos (0.4 for two pointy of five) keeps the
    labellers' majority and softens their disagreement. Rows of unknown identity, other splits
    and other attributes keep their labels (as float32).
    """
    if "identity" not in table.columns or not (table["identity"] >= 0).any():
        raise ConfigError("identity targets need each image's identity (identity_CelebA.txt); "
                          "this dataset has none, e.g. the Kaggle layout")
    names = [ATTRIBUTES[attribute_index(name)] for name in attributes]
    out = table.copy()
    out[names] = out[names].astype(np.float32)
    rows = (out["split"] == split) & (out["identity"] >= 0)
    out.loc[rows, names] = out.loc[rows].groupby("identity")[names].transform("mean").to_numpy(np.float32)
    return out


def positive_weights(table: pd.DataFrame) -> np.ndarray:
    """Per-attribute negatives/positives on the train split (float32, 40 values).

    An attribute with no positive example counts as having one, so the weight stays finite.
    """
    labels = split_rows(table, "train")[list(ATTRIBUTES)].to_numpy()
    positives = labels.sum(axis=0)
    negatives = len(labels) - positives
    return (negatives / np.maximum(positives, 1)).astype(np.float32)


def majority_baseline(table: pd.DataFrame, split: str, reference: str = "train") -> pd.Series:
    """Accuracy per attribute of always predicting ``reference``'s majority label on ``split``."""
    majority = (positive_rates(table, reference) > 0.5).astype(np.int8)
    labels = split_rows(table, split)[list(ATTRIBUTES)]
    return (labels == majority).mean().rename("majority_accuracy")
