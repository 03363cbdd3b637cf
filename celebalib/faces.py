"""Finding faces in a photo and aligning them as CelebA's aligned images are aligned.

A model trained on CelebA's aligned 178x218 crops (eyes at fixed places) answers only for
faces framed the same way. :func:`detect_faces` finds each face and its five landmarks
(eyes, nose, mouth corners) with MTCNN (the ``mtcnn`` package, imported on first use; its
weights ship inside its wheel, so it works offline); :func:`align_face` maps the landmarks
onto :func:`template` with a similarity transform (rotation, uniform scale, shift) and
cuts the 178x218 frame. :func:`read_photo` decodes a file or upload once, honouring its
EXIF orientation and flattening transparency, and refuses images too large to decode.
"""

from __future__ import annotations

import dataclasses
import functools
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from celebalib.errors import CelebAFormatError

# CelebA's aligned images: width x height.
ALIGNED_WIDTH, ALIGNED_HEIGHT = 178, 218
# Image-left eye first, as MTCNN orders them (on a frontal face, the person's right eye).
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
TEMPLATE_FILE = Path(__file__).with_name("resources") / "celeba_landmarks.csv"
# Decoding is what costs memory, so a small file that unpacks to a huge image is refused
# before decoding; the widget's upload check uses the same limit.
MAX_PIXELS = 40_000_000
# A 178x218 image whose eyes are each within this many pixels of the template's is taken
# as an aligned CelebA crop already (genuine aligned images scatter around it by up to about 10).
ALIGNED_EYE_TOLERANCE = 11.0
# MTCNN's smallest face side (pixels) by default: smaller faces are not looked for.
MIN_FACE_SIZE = 20
# Photos of one shape are detected in batches of up to this many pixels (float32 copies of them
# and their image pyramid are held while a batch runs).
DETECTION_BATCH_PIXELS = 8_000_000
# How an aligned crop was made: warped onto the template, or kept as it came.
ALIGNED, ALREADY_ALIGNED = "aligned", "already aligned"


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face: its box (x, y, width, height), five landmarks (5, 2) as (x, y), confidence."""

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    confidence: float

    @property
    def area(self) -> float:
        """The box's area in pixels (faces are listed largest first)."""
        return self.box[2] * self.box[3]


@functools.lru_cache(maxsize=1)
def template() -> np.ndarray:
    """The five landmark positions (5, 2) of CelebA's aligned 178x218 frame, in ``LANDMARKS`` order.

    They are the mean MTCNN landmarks of genuine aligned CelebA train images, measured by
    ``scripts/derive_face_template.py`` (see ``celebalib/resources/README.md``), so the
    alignment lands a face where this detector finds faces in the training images.
    """
    import pandas as pd

    table = pd.read_csv(TEMPLATE_FILE).set_index("landmark")
    if list(table.index) != list(LANDMARKS) or list(table.columns) != ["x", "y"]:
        raise CelebAFormatError(TEMPLATE_FILE, f"expected columns landmark,x,y and rows {', '.join(LANDMARKS)}")
    points = table.to_numpy(np.float64)
    points.flags.writeable = False
    return points


def read_photo(source: str | Path | bytes | bytearray | memoryview, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a photo file or its bytes to RGB uint8 (H, W, 3), upright as its EXIF says, over white where
    transparent; raise CelebAFormatError for a missing, unreadable, truncated or too large image."""
    from PIL import Image, UnidentifiedImageError

    from celebalib.data import DECODABLE_FORMATS, read_image_bytes

    data, where = read_image_bytes(source)
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
            if width * height > max_pixels:
                raise CelebAFormatError(where, f"{width}x{height} pixels; the limit is "
                                               f"{max_pixels / 1e6:g} megapixels")
            orientation = image.getexif().get(EXIF_ORIENTATION, 1)
            transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            # Opaque images are decoded by TensorFlow, as the training pipeline decodes its files:
            # Pillow's JPEG decoder differs from it by a few levels per pixel.
            pixels = None if transparent or image.format not in DECODABLE_FORMATS else _decode_tf(data, where)
            if pixels is None:
                image.load()  # decodes every pixel: a truncated file fails here, not later
                pixels = _flatten(image)
    except CelebAFormatError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError):
        raise CelebAFormatError(where, "not a readable image; expected a JPEG or PNG photo") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise CelebAFormatError(where, f"cannot decode the image ({error}); expected a JPEG or PNG photo") from None
    return _upright(pixels, orientation)


# The EXIF tag saying how the camera was held, and the turn that makes each value upright
# (the table Pillow's ImageOps.exif_transpose uses).
EXIF_ORIENTATION = 0x0112
_UPRIGHT = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
            7: "TRANSVERSE", 8: "ROTATE_90"}


def _decode_tf(data: bytes, where: Path) -> np.ndarray:
    """Decode opaque image bytes with TensorFlow to RGB uint8, as the training pipeline does."""
    import tensorflow as tf

    try:
        return tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.InvalidArgumentError:
        raise CelebAFormatError(where, "cannot decode the image (truncated or damaged); "
                                       "expected a JPEG or PNG photo") from None


def _upright(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn decoded pixels as an EXIF orientation value says (1 or unknown: as they are)."""
    from PIL import Image

    if orientation not in _UPRIGHT:
        return pixels
    return np.asarray(Image.fromarray(pixels).transpose(getattr(Image.Transpose, _UPRIGHT[orientation])))


def _flatten(image: Any) -> np.ndarray:
    """RGB uint8 pixels of a Pillow image, transparent parts composited over white."""
    from PIL import Image

    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


@functools.lru_cache(maxsize=1)
def detector() -> Any:
    """The MTCNN detector, built once (it imports TensorFlow and reads the weights in its wheel)."""
    from mtcnn import MTCNN

    return MTCNN()


def detect_faces(photo: np.ndarray, *, min_face_size: int = MIN_FACE_SIZE) -> list[Face]:
    """Every face MTCNN finds in an RGB photo (H, W, 3), largest box first."""
    return detect_faces_in([photo], min_face_size=min_face_size)[0]


def detect_faces_in(photos: Sequence[np.ndarray], *, min_face_size: int = MIN_FACE_SIZE) -> list[list[Face]]:
    """``detect_faces`` of each photo. Photos of one shape go through MTCNN together, up to
    ``DETECTION_BATCH_PIXELS`` at a time: one network call per pyramid scale for all of them."""
    pixels = [_check_photo(photo) for photo in photos]
    groups: dict[tuple[int, ...], list[int]] = {}
    for number, one in enumerate(pixels):
        if min(one.shape[:2]) >= min_face_size:
            groups.setdefault(one.shape, []).append(number)
    found: list[list[Face]] = [[] for _ in pixels]
    for (height, width, _), members in groups.items():
        size = max(1, DETECTION_BATCH_PIXELS // (height * width))
        for start in range(0, len(members), size):
            chunk = members[start:start + size]
            # "numpy" output keeps sub-pixel landmarks (the JSON output rounds them to whole pixels).
            rows = detector().detect_faces([pixels[number] for number in chunk], output_type="numpy",
                                           box_format="xyxy", min_face_size=min_face_size)
            for row in np.asarray(rows, dtype=np.float64).reshape(-1, 16):
                found[chunk[int(row[0])]].append(_face_of(row))
    return [sorted(faces, key=lambda face: -face.area) for faces in found]


def _face_of(row: np.ndarray) -> Face:
    """The Face of one row of MTCNN's "numpy" output (image, x1, y1, x2, y2, confidence, 5 x, 5 y)."""
    x1, y1, x2, y2, confidence = row[1:6]
    landmarks = np.stack([row[6:11], row[11:16]], axis=1)
    return Face((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), landmarks, float(confidence))


def _check_photo(photo: Any) -> np.ndarray:
    """The photo as uint8 (H, W, 3), or CelebAFormatError naming what was expected."""
    pixels = np.asarray(photo)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise CelebAFormatError("<photo array>", f"array of shape {pixels.shape} and type {pixels.dtype}; "
                                                 "expected RGB uint8 (height, width, 3), as read_photo gives")
    return pixels


def alignment_transform(landmarks: np.ndarray) -> Any:
    """The similarity transform (scikit-image) taking a face's landmarks (5, 2) closest to ``template()``."""
    from skimage.transform import SimilarityTransform

    transform = SimilarityTransform.from_estimate(np.asarray(landmarks, dtype=np.float64), template())
    if not transform:  # a failed estimate is falsy (degenerate landmarks, e.g. all in one point)
        raise CelebAFormatError("<landmarks>", f"cannot fit a similarity transform to {landmarks.tolist()}")
    return transform


def align_face(photo: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The face with these landmarks cut out of ``photo`` as CelebA's aligned 178x218 crop (uint8)."""
    from skimage.transform import warp

    pixels = _check_photo(photo)
    transform = alignment_transform(landmarks)
    # Where the frame reaches past the photo's edge, the edge pixels are repeated.
    crop = warp(pixels, transform.inverse, output_shape=(ALIGNED_HEIGHT, ALIGNED_WIDTH), order=1,
                mode="edge", preserve_range=True)
    return np.clip(np.round(crop), 0, 255).astype(np.uint8)


def is_aligned(photo: np.ndarray, face: Face) -> bool:
    """Whether ``photo`` is already a 178x218 aligned crop of ``face`` (its eyes at the template's)."""
    if np.asarray(photo).shape[:2] != (ALIGNED_HEIGHT, ALIGNED_WIDTH):
        return False
    eye_error = np.linalg.norm(face.landmarks[:2] - template()[:2], axis=1)
    return bool(np.all(eye_error <= ALIGNED_EYE_TOLERANCE))


@dataclasses.dataclass(frozen=True)
class AlignedFace:
    """A face and its 178x218 crop; ``how`` is "aligned" or "already aligned"."""

    face: Face
    crop: np.ndarray
    how: str


def aligned_faces(photo: np.ndarray, *, min_face_size: int = MIN_FACE_SIZE) -> list[AlignedFace]:
    """Every face of ``photo``, largest first, as a 178x218 crop aligned onto CelebA's template.

    A photo that is already an aligned CelebA crop is kept as it is (not interpolated again).
    """
    return aligned_faces_in([photo], min_face_size=min_face_size)[0]


def aligned_faces_in(photos: Sequence[np.ndarray], *,
                     min_face_size: int = MIN_FACE_SIZE) -> list[list[AlignedFace]]:
    """``aligned_faces`` of each photo, detected together (``detect_faces_in``)."""
    found = detect_faces_in(photos, min_face_size=min_face_size)
    return [[AlignedFace(face, np.asarray(photo).copy(), ALREADY_ALIGNED) if is_aligned(photo, face)
             else AlignedFace(face, align_face(photo, face.landmarks), ALIGNED) for face in faces]
            for photo, faces in zip(photos, found)]


def transform_points(transform: Any, points: np.ndarray) -> np.ndarray:
    """Points (N, 2) as (x, y) mapped by a scikit-image transform."""
    return np.asarray(transform(np.asarray(points, dtype=np.float64)))


def place_on_canvas(crop: np.ndarray, *, angle: float, scale: float, shift: tuple[float, float],
                    size: int = 512, fill: int = 128) -> tuple[np.ndarray, Any]:
    """``crop`` turned by ``angle`` degrees (anticlockwise), scaled and moved by ``shift`` (dx, dy) from the
    centre of a grey ``size`` x ``size`` canvas: the canvas, and the transform from crop to canvas
    coordinates. It makes un-aligned photos with known geometry, to test the alignment's round trip."""
    from skimage.transform import SimilarityTransform, warp

    pixels = _check_photo(crop)
    centre = np.array([pixels.shape[1], pixels.shape[0]], dtype=np.float64) / 2
    # Image y points down, so an anticlockwise turn on screen is a negative rotation here.
    turn = SimilarityTransform(scale=scale, rotation=-np.deg2rad(angle))
    move = np.array([size / 2 + shift[0], size / 2 + shift[1]]) - transform_points(turn, centre[None])[0]
    transform = SimilarityTransform(scale=scale, rotation=-np.deg2rad(angle), translation=move)
    canvas = warp(pixels, transform.inverse, output_shape=(size, size), order=1, mode="constant", cval=fill,
                  preserve_range=True)
    return np.clip(np.round(canvas), 0, 255).astype(np.uint8), transform
