"""Finding and aligning faces in real photos: scikit-image's public-domain pictures and genuine CelebA."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image

from celebalib import faces
from celebalib.data import load_celeba, split_rows
from celebalib.errors import CelebAFormatError

# Where MTCNN puts the eyes of NASA's portrait of Eileen Collins (skimage.data.astronaut, 512x512),
# as checked by hand when the issue was filed.
ASTRONAUT_EYES = np.array([[204, 100], [245, 102]], dtype=np.float64)
# CelebA's aligned images put the eyes, nose and mouth corners near these points.
CELEBA_ALIGNED = np.array([[69, 111], [108, 111], [88, 134], [72, 152], [105, 152]], dtype=np.float64)


def encoded(pixels: np.ndarray, kind: str = "JPEG", **options) -> bytes:
    """The bytes of an image file holding ``pixels``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=kind, **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def val_paths(celeba_shared: Path) -> list[str]:
    """20 genuine aligned val images drawn at random."""
    with pytest.warns(UserWarning):  # a partial root holds part of the images
        rows = split_rows(load_celeba(celeba_shared), "val")
    return rows["path"].sample(n=20, random_state=1).tolist()


def test_template_is_where_celeba_aligns_faces() -> None:
    points = faces.template()
    assert points.shape == (5, 2)
    np.testing.assert_allclose(points, CELEBA_ALIGNED, atol=2.0)


def test_finds_the_astronaut_and_her_eyes(astronaut: np.ndarray) -> None:
    found = faces.detect_faces(astronaut)
    assert len(found) == 1
    np.testing.assert_allclose(found[0].landmarks[:2], ASTRONAUT_EYES, atol=2.0)
    x, y, width, height = found[0].box
    assert np.all((found[0].landmarks >= [x, y]) & (found[0].landmarks <= [x + width, y + height]))


@pytest.mark.parametrize("photo", ["blank", "chelsea", "coffee"])
def test_no_face_in_a_blank_image_a_cat_or_coffee(photo: str) -> None:
    pixels = np.full((300, 400, 3), 255, np.uint8) if photo == "blank" else getattr(skimage.data, photo)()
    assert faces.detect_faces(pixels) == []
    assert faces.aligned_faces(pixels) == []


@pytest.mark.parametrize("small_on_the_left", [False, True])
def test_two_faces_are_listed_largest_first(astronaut: np.ndarray, small_on_the_left: bool) -> None:
    small = np.full((512, 512, 3), 128, np.uint8)
    small[128:384, 128:384] = astronaut[::2, ::2]
    canvas = np.hstack([small, astronaut] if small_on_the_left else [astronaut, small])
    found = faces.detect_faces(canvas)
    assert len(found) == 2
    assert found[0].area > 3 * found[1].area
    big_x = found[0].box[0]
    assert (big_x > 512) == small_on_the_left
    assert [crop.crop.shape for crop in faces.aligned_faces(canvas)] == [(218, 178, 3)] * 2


def test_a_tiny_face_is_found_and_aligned(astronaut: np.ndarray) -> None:
    tiny = np.asarray(Image.fromarray(astronaut).resize((64, 64), Image.Resampling.LANCZOS))
    found = faces.aligned_faces(tiny)
    assert len(found) == 1 and found[0].face.box[2] < 16
    assert found[0].crop.shape == (218, 178, 3) and found[0].how == "aligned"
    # Its eyes land on the template's: the astronaut's eyes scaled by 1/8, mapped by the alignment.
    eyes = faces.transform_points(faces.alignment_transform(found[0].face.landmarks), ASTRONAUT_EYES / 8)
    np.testing.assert_allclose(eyes, faces.template()[:2], atol=8.0)
    # A photo smaller than the smallest face looked for has none.
    assert faces.detect_faces(tiny[:16, :16]) == []


def test_photos_detected_together_give_each_photos_own_faces(astronaut: np.ndarray,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    small = np.full((512, 512, 3), 128, np.uint8)
    small[128:384, 128:384] = astronaut[::2, ::2]
    two = np.hstack([astronaut, small])  # another shape, two faces
    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    blank = np.full((512, 512, 3), 255, np.uint8)
    photos = [astronaut, two, blank, mirrored, astronaut[:16, :16], small]
    # Two 512x512 photos per MTCNN batch: the four square ones make two batches, the wide one its own.
    monkeypatch.setattr(faces, "DETECTION_BATCH_PIXELS", 2 * 512 * 512)
    together = faces.detect_faces_in(photos)
    assert [len(found) for found in together] == [1, 2, 0, 1, 0, 1]
    for photo, found in zip(photos, together):
        alone = faces.detect_faces(photo)  # a batch of one photo
        assert len(found) == len(alone)
        for face, reference in zip(found, alone):
            np.testing.assert_allclose(face.box, reference.box, atol=1e-3)
            np.testing.assert_allclose(face.landmarks, reference.landmarks, atol=1e-3)
    # The mirror image's eyes are the astronaut's, mirrored.
    np.testing.assert_allclose(np.sort(511 - together[3][0].landmarks[:2, 0]), ASTRONAUT_EYES[:, 0], atol=2.0)
    crops = faces.aligned_faces_in(photos)
    assert [[crop.how for crop in found] for found in crops] == [["aligned"], ["aligned"] * 2, [], ["aligned"], [],
                                                                  ["aligned"]]
    np.testing.assert_array_equal(crops[0][0].crop, faces.aligned_faces(astronaut)[0].crop)


def test_alignment_undoes_a_known_turn_scale_and_shift(astronaut: np.ndarray) -> None:
    # Geometry alone: landmarks placed by a known similarity come back exactly onto the template.
    crop = faces.align_face(astronaut, faces.detect_faces(astronaut)[0].landmarks)
    canvas, placed = faces.place_on_canvas(crop, angle=20, scale=1.3, shift=(15, -10))
    landmarks = faces.transform_points(placed, faces.template())
    np.testing.assert_allclose(faces.alignment_transform(landmarks).params, np.linalg.inv(placed.params), atol=1e-9)
    back = faces.align_face(canvas, landmarks)
    # Two bilinear resamplings blur a little; the interior is otherwise the same picture.
    difference = np.abs(back[20:-20, 20:-20].astype(int) - crop[20:-20, 20:-20])
    assert difference.mean() < 4


def test_round_trip_on_genuine_val_images(val_paths: list[str]) -> None:
    rng = np.random.default_rng(0)
    errors = []
    for path in val_paths:
        original = faces.read_photo(path)
        eyes = faces.detect_faces(original)[0].landmarks[:2]
        canvas, placed = faces.place_on_canvas(original, angle=rng.uniform(-25, 25), scale=rng.uniform(0.6, 1.6),
                                               shift=tuple(rng.uniform(-40, 40, size=2)))
        found = faces.aligned_faces(canvas)
        assert found, f"no face found on the canvas of {path}"
        back = faces.transform_points(faces.alignment_transform(found[0].face.landmarks),
                                      faces.transform_points(placed, eyes))
        errors.append(np.linalg.norm(back - eyes, axis=1).mean())
    # Small faces (scale 0.6) carry the detector's landmark noise: one in twenty may stray further.
    assert np.median(errors) < 3.5 and np.percentile(errors, 90) < 6.0 and max(errors) < 15.0, errors


def test_a_genuine_aligned_image_is_not_aligned_twice(val_paths: list[str]) -> None:
    for path in val_paths[:5]:
        original = faces.read_photo(path)
        found = faces.aligned_faces(original)
        assert found[0].how == "already aligned"
        np.testing.assert_array_equal(found[0].crop, original)
        # The same face in a larger frame is re-aligned.
        framed = np.pad(original, ((20, 20), (10, 10), (0, 0)), mode="edge")
        assert faces.aligned_faces(framed)[0].how == "aligned"


def test_genuine_jpegs_are_decoded_as_the_training_pipeline_decodes_them(val_paths: list[str]) -> None:
    import tensorflow as tf

    for path in val_paths[:5]:
        expected = tf.io.decode_image(Path(path).read_bytes(), channels=3).numpy()
        np.testing.assert_array_equal(faces.read_photo(path), expected)


def test_an_exif_rotated_jpeg_is_read_upright(astronaut: np.ndarray, tmp_path: Path) -> None:
    # A camera held sideways stores the picture turned a quarter anticlockwise, with orientation 6.
    exif = Image.Exif()
    exif[faces.EXIF_ORIENTATION] = 6
    path = tmp_path / "sideways.jpg"
    path.write_bytes(encoded(np.ascontiguousarray(np.rot90(astronaut)), quality=95, exif=exif.tobytes()))
    upright = faces.read_photo(path)
    assert upright.shape == astronaut.shape
    assert np.abs(upright.astype(int) - astronaut).mean() < 3
    # Pillow's own EXIF transpose agrees (up to its JPEG decoder's rounding, largest at sharp edges).
    from PIL import ImageOps

    with Image.open(path) as image:
        reference = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    assert reference.shape == upright.shape and np.abs(upright.astype(int) - reference).mean() < 2
    np.testing.assert_allclose(faces.detect_faces(upright)[0].landmarks[:2], ASTRONAUT_EYES, atol=3.0)


def test_a_png_with_alpha_is_put_on_white(astronaut: np.ndarray, tmp_path: Path) -> None:
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:, :100, 3] = 0
    path = tmp_path / "cut-out.png"
    path.write_bytes(encoded(rgba, "PNG"))
    pixels = faces.read_photo(path)
    assert pixels.shape == astronaut.shape and np.all(pixels[:, :100] == 255)
    np.testing.assert_array_equal(pixels[:, 100:], astronaut[:, 100:])
    assert len(faces.detect_faces(pixels)) == 1


def test_a_forty_megapixel_image_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "huge.png"
    Image.new("L", (8000, 5001)).save(path)
    with pytest.raises(CelebAFormatError) as raised:
        faces.read_photo(path)
    assert str(raised.value) == f"{path}: 8000x5001 pixels; the limit is 40 megapixels"


def test_truncated_missing_and_unreadable_files_name_the_file(astronaut: np.ndarray, tmp_path: Path) -> None:
    cut = tmp_path / "cut.jpg"
    data = encoded(astronaut)
    cut.write_bytes(data[:len(data) // 2])
    with pytest.raises(CelebAFormatError) as raised:
        faces.read_photo(cut)
    assert str(raised.value) == (f"{cut}: cannot decode the image (truncated or damaged); "
                                 "expected a JPEG or PNG photo")
    with pytest.raises(CelebAFormatError, match=r"gone.jpg: image not found"):
        faces.read_photo(tmp_path / "gone.jpg")
    with pytest.raises(CelebAFormatError, match=r"<uploaded bytes>: not a readable image"):
        faces.read_photo(b"%PDF-1.4 not a photo")


def test_a_photo_array_must_be_rgb_uint8() -> None:
    with pytest.raises(CelebAFormatError, match=r"expected RGB uint8"):
        faces.detect_faces(np.zeros((50, 50), np.float32))
