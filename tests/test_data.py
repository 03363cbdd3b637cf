"""Tests for celebalib.data: every layout, every bad-input case, the pipeline, the helpers."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from celebalib import data
from celebalib.attributes import ATTRIBUTES
from celebalib.cli import main
from celebalib.errors import CelebAFormatError, ConfigError

IDS = [f"{i:06d}.jpg" for i in range(1, 9)]
SPLITS = [0, 0, 0, 0, 1, 1, 2, 2]
IDENTITIES = [7, 7, 8, 9, 10, 10, 11, 12]
# Label of image i, attribute j: a fixed pattern with both values in every column.
LABELS = np.array([[1 if (3 * i + j) % 4 == 0 else -1 for j in range(40)] for i in range(len(IDS))])

LAYOUT_PATHS = {  # attribute file, partition file, identity file, image folder
    "official": ("Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt", "Anno/identity_CelebA.txt",
                 "Img/img_align_celeba"),
    "flat": ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt", "img_align_celeba"),
    "kaggle": ("list_attr_celeba.csv", "list_eval_partition.csv", None, "img_align_celeba/img_align_celeba"),
    "torchvision": ("celeba/list_attr_celeba.txt", "celeba/list_eval_partition.txt",
                    "celeba/identity_CelebA.txt", "celeba/img_align_celeba"),
}


def attr_lines(ids: list[str] = IDS, labels: np.ndarray = LABELS) -> list[str]:
    """The official attribute file's lines: count, header, then padded -1/1 rows."""
    rows = [f"{image_id} " + " ".join(f"{v:2d}" for v in row) for image_id, row in zip(ids, labels)]
    return [str(len(ids)), " ".join(ATTRIBUTES) + " ", *rows]


def write(path: Path, lines: list[str], newline: str = "\r\n") -> Path:
    """Write lines with the given line ending (CRLF like the genuine files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def write_image(path: Path, index: int, size: tuple[int, int] = (12, 16)) -> None:
    """Write a small JPEG whose grey level identifies the image."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (20 * index + 40,) * 3).save(path, format="JPEG", quality=95)


def make_root(root: Path, layout: str = "flat", images: list[str] = IDS) -> Path:
    """Build a tiny CelebA root in one layout."""
    attr, partition, identity, image_dir = LAYOUT_PATHS[layout]
    if layout == "kaggle":
        header = ",".join(["image_id", *ATTRIBUTES])
        # CRLF here too: the comma-separated files must accept it like the text files.
        write(root / attr, [header] + [",".join([i, *map(str, r)]) for i, r in zip(IDS, LABELS)])
        write(root / partition, ["image_id,partition"] + [f"{i},{s}" for i, s in zip(IDS, SPLITS)])
    else:
        write(root / attr, attr_lines())
        write(root / partition, [f"{i} {s}" for i, s in zip(IDS, SPLITS)])
        write(root / identity, [f"{i} {p}" for i, p in zip(IDS, IDENTITIES)])
    for name in images:
        write_image(root / image_dir / name, IDS.index(name))
    return root


def edit_line(path: Path, line: int, text: str | None) -> Path:
    """Replace (or, with None, delete) one 1-based line of a CRLF file."""
    lines = path.read_bytes().decode().split("\r\n")[:-1]
    if text is None:
        del lines[line - 1]
    else:
        lines[line - 1] = text
    return write(path, lines)


@pytest.fixture
def flat_root(tmp_path: Path) -> Path:
    """A tiny flat root with every image present."""
    return make_root(tmp_path / "celeba")


# --- layouts and valid variants -------------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUT_PATHS))
def test_each_layout_gives_the_same_tidy_table(tmp_path: Path, layout: str) -> None:
    table = data.load_celeba(make_root(tmp_path, layout))
    assert table.attrs["layout"] == layout
    assert table.attrs["missing_images"] == 0
    assert list(table.columns) == ["image_id", "path", *ATTRIBUTES, "split", "identity"]
    assert table["image_id"].tolist() == IDS
    assert (table[list(ATTRIBUTES)].dtypes == np.int8).all()
    np.testing.assert_array_equal(table[list(ATTRIBUTES)].to_numpy(), (LABELS > 0).astype(np.int8))
    assert table["split"].tolist() == ["train"] * 4 + ["val"] * 2 + ["test"] * 2
    assert table["identity"].dtype == np.int32
    expected_identity = [-1] * len(IDS) if layout == "kaggle" else IDENTITIES
    assert table["identity"].tolist() == expected_identity
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in table["path"])


def test_lf_extra_spaces_and_trailing_blank_lines_are_accepted(flat_root: Path) -> None:
    expected = data.load_celeba(flat_root)
    lines = [line.replace(" ", "   ") + "  " for line in attr_lines()]
    write(flat_root / "list_attr_celeba.txt", lines + ["", "  ", ""], "\n")
    table = data.load_celeba(flat_root)
    pd.testing.assert_frame_equal(table, expected)


def test_attribute_columns_in_another_order_are_reordered(flat_root: Path) -> None:
    order = np.arange(40)[::-1]
    lines = attr_lines(labels=LABELS[:, order])
    lines[1] = " ".join(np.asarray(ATTRIBUTES)[order])
    write(flat_root / "list_attr_celeba.txt", lines)
    table = data.load_celeba(flat_root)
    np.testing.assert_array_equal(table[list(ATTRIBUTES)].to_numpy(), (LABELS > 0).astype(np.int8))


def test_missing_images_are_reported_and_left_out(tmp_path: Path) -> None:
    root = make_root(tmp_path, images=IDS[:5])
    with pytest.warns(data.MissingImagesWarning, match=r"3 of 8 images.*000006\.jpg, 000007\.jpg"):
        table = data.load_celeba(root)
    assert table["image_id"].tolist() == IDS[:5]
    assert table.attrs["missing_images"] == 3


def test_strict_makes_a_missing_image_an_error_at_its_line(tmp_path: Path) -> None:
    root = make_root(tmp_path, images=IDS[:2] + IDS[3:])
    with pytest.raises(CelebAFormatError, match="000003.jpg not found") as info:
        data.load_celeba(root, strict=True)
    assert info.value.path.name == "list_attr_celeba.txt"
    assert info.value.line == 5


def test_annotations_alone_need_no_image_folder(tmp_path: Path) -> None:
    root = make_root(tmp_path, images=[])
    table = data.load_celeba(root, images=False)
    assert len(table) == len(IDS)
    assert table["path"].iloc[0] == str(root.resolve() / "img_align_celeba" / IDS[0])
    with pytest.raises(CelebAFormatError, match="image folder not found"):
        data.load_celeba(root)
    write_image(root / "img_align_celeba" / "other.jpg", 0)
    with pytest.raises(CelebAFormatError, match="none of the 8 images") as info:
        data.load_celeba(root)
    assert info.value.path == root.resolve() / "img_align_celeba"


# --- bad input ------------------------------------------------------------------------


def _corrupt_value(path: Path) -> None:
    edit_line(path, 6, attr_lines()[5].replace("-1", " 0", 1))


BAD_INPUTS = {  # name: (how to break the flat root, file named, line named, message fragment)
    "misspelled header": (lambda r: edit_line(r / "list_attr_celeba.txt", 2, attr_lines()[1].replace(
        "Bangs", "Bangz")), "list_attr_celeba.txt", 2, "did you mean 'Bangs'"),
    "missing header name": (lambda r: edit_line(r / "list_attr_celeba.txt", 2, attr_lines()[1].replace(
        "Bald ", "")), "list_attr_celeba.txt", 2, "missing Bald"),
    "too many values": (lambda r: edit_line(r / "list_attr_celeba.txt", 7, attr_lines()[6] + "  1"),
                        "list_attr_celeba.txt", 7, "expected 41 values"),
    "too few values": (lambda r: edit_line(r / "list_attr_celeba.txt", 4, attr_lines()[3][:-3]),
                       "list_attr_celeba.txt", 4, "found 40"),
    "blank line inside": (lambda r: edit_line(r / "list_attr_celeba.txt", 5, ""),
                          "list_attr_celeba.txt", 5, "found 0"),
    "value other than -1/1": (lambda r: _corrupt_value(r / "list_attr_celeba.txt"),
                              "list_attr_celeba.txt", 6, "expected -1 or 1"),
    "text value": (lambda r: edit_line(r / "list_attr_celeba.txt", 8, attr_lines()[7][:-2] + " x"),
                   "list_attr_celeba.txt", 8, "'x'"),
    "count disagrees": (lambda r: edit_line(r / "list_attr_celeba.txt", 1, "9"),
                        "list_attr_celeba.txt", 1, "says 9 images but the file lists 8"),
    "count not a number": (lambda r: edit_line(r / "list_attr_celeba.txt", 1, "many"),
                           "list_attr_celeba.txt", 1, "expected the number of images"),
    "duplicated image id": (lambda r: edit_line(r / "list_attr_celeba.txt", 9, attr_lines()[8].replace(
        IDS[6], IDS[1])), "list_attr_celeba.txt", 9, "appears twice (first at line 4)"),
    "partition value 3": (lambda r: edit_line(r / "list_eval_partition.txt", 3, f"{IDS[2]} 3"),
                          "list_eval_partition.txt", 3, "expected 0, 1 or 2"),
    "partition duplicate": (lambda r: edit_line(r / "list_eval_partition.txt", 2, f"{IDS[0]} 0"),
                            "list_eval_partition.txt", 2, "appears twice"),
    "image not in partition": (lambda r: edit_line(r / "list_eval_partition.txt", 4, None),
                               "list_eval_partition.txt", None, "000004.jpg (line 6 of list_attr_celeba.txt)"),
    "identity not a number": (lambda r: edit_line(r / "identity_CelebA.txt", 2, f"{IDS[1]} 7.5"),
                              "identity_CelebA.txt", 2, "expected a whole number"),
    "missing partition file": (lambda r: (r / "list_eval_partition.txt").unlink(),
                               "list_eval_partition.txt", None, "file not found"),
    "missing attribute file": (lambda r: (r / "list_attr_celeba.txt").unlink(),
                               "celeba", None, "no CelebA attribute file found"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_names_the_file_and_line(flat_root: Path, case: str) -> None:
    breaker, file_name, line, fragment = BAD_INPUTS[case]
    breaker(flat_root)
    with pytest.raises(CelebAFormatError) as info:
        data.load_celeba(flat_root)
    assert isinstance(info.value, ValueError)
    assert info.value.path.name == file_name
    assert info.value.line == line
    assert fragment in str(info.value)


@pytest.mark.parametrize(("row", "fragment"), [
    ("000003.jpg," + ",".join(["2"] + ["1"] * 39), "value '2' in column 2: expected -1 or 1"),
    ("000003.jpg,," + ",".join(["1"] * 39), "an empty value in column 2"),
    ("," + ",".join(["1"] * 40), "empty image id"),
])
def test_kaggle_csv_errors_count_the_header_line(tmp_path: Path, row: str, fragment: str) -> None:
    root = make_root(tmp_path, "kaggle")
    path = root / "list_attr_celeba.csv"
    lines = path.read_text().splitlines()
    lines[3] = row
    write(path, lines, "\n")
    with pytest.raises(CelebAFormatError, match=fragment) as info:
        data.load_celeba(root)
    assert (info.value.path.name, info.value.line) == ("list_attr_celeba.csv", 4)


# --- images and the pipeline ------------------------------------------------------------


def test_grayscale_jpeg_and_png_named_jpg_decode_to_rgb(flat_root: Path) -> None:
    image_dir = flat_root / "img_align_celeba"
    Image.new("L", (12, 16), 90).save(image_dir / IDS[0], format="JPEG")
    Image.new("RGB", (12, 16), (10, 200, 30)).save(image_dir / IDS[1], format="PNG")
    gray = data.load_image(image_dir / IDS[0], image_size=8)
    png = data.load_image(image_dir / IDS[1], image_size=8)
    assert gray.shape == png.shape == (8, 8, 3)
    np.testing.assert_allclose(gray, 90, atol=2)
    np.testing.assert_allclose(png, np.broadcast_to([10, 200, 30], (8, 8, 3)), atol=0.5)
    images, _ = next(iter(data.make_dataset(data.load_celeba(flat_root), "train", image_size=8,
                                            batch_size=2, training=False)))
    np.testing.assert_allclose(images.numpy(), np.stack([gray, png]), atol=1e-4)


def test_center_crop_keeps_the_middle_square(tmp_path: Path) -> None:
    # A tall image, red in its top and bottom quarters, blue in the centred square.
    pixels = np.zeros((40, 20, 3), np.uint8)
    pixels[:, :] = (0, 0, 255)
    pixels[:10], pixels[30:] = (255, 0, 0), (255, 0, 0)
    path = tmp_path / "tall.png"
    Image.fromarray(pixels).save(path)
    center = data.load_image(path, image_size=10, crop="center")
    whole = data.load_image(path, image_size=10, crop="none")
    np.testing.assert_allclose(center, np.broadcast_to([0, 0, 255], (10, 10, 3)), atol=1e-3)
    assert whole[0, :, 0].min() > 200 and whole[5, :, 2].min() > 200
    assert center.dtype == np.float32 and 0 <= center.min() and center.max() <= 255


def test_portrait_crop_keeps_the_face_square_width_with_hair_and_neck(tmp_path: Path) -> None:
    # An aligned-size 178x218 image: red in the 5 rows at top and bottom the portrait leaves out,
    # green in the 15 rows above and below the face square that only the portrait keeps, blue in the square.
    pixels = np.zeros((218, 178, 3), np.uint8)
    pixels[:] = (0, 0, 255)
    pixels[:20], pixels[198:] = (0, 255, 0), (0, 255, 0)
    pixels[:5], pixels[213:] = (255, 0, 0), (255, 0, 0)
    path = tmp_path / "aligned.png"
    Image.fromarray(pixels).save(path)
    # At 178 px wide the portrait is the centred 178x208 region itself, not resampled.
    assert data.image_shape(178, "portrait") == (208, 178)
    np.testing.assert_array_equal(data.load_image(path, image_size=178, crop="portrait"), pixels[5:213])
    assert data.image_shape(96, "portrait") == (112, 96) and data.image_shape(96, "center") == (96, 96)
    portrait = data.load_image(path, image_size=96, crop="portrait")
    assert portrait.shape == (112, 96, 3) and portrait[..., 0].max() < 1e-3
    assert portrait[0, :, 1].min() > 250 and portrait[-1, :, 1].min() > 250 and portrait[56, :, 2].min() > 250
    np.testing.assert_allclose(data.load_image(path, image_size=96, crop="center"),
                               np.broadcast_to([0, 0, 255], (96, 96, 3)), atol=1e-3)
    # A wide photo keeps all its rows and the centred columns of the portrait's shape.
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:] = (255, 0, 0)
    wide[:, 107:193] = (0, 0, 255)  # round(100 * 178 / 208) = 86 columns in the middle
    Image.fromarray(wide).save(tmp_path / "wide.png")
    np.testing.assert_allclose(data.load_image(tmp_path / "wide.png", image_size=86, crop="portrait"),
                               np.broadcast_to([0, 0, 255], (104, 86, 3)), atol=1e-3)
    images, _ = next(iter(data.make_dataset(pd.DataFrame({"path": [str(path)], **{name: [1] for name in ATTRIBUTES},
                                                          "split": ["train"]}),
                                            "train", image_size=96, batch_size=1, training=False, crop="portrait")))
    np.testing.assert_allclose(images.numpy()[0], portrait, atol=1e-4)


def test_load_image_reads_bytes_like_files_and_names_bad_ones(flat_root: Path, tmp_path: Path) -> None:
    path = flat_root / "img_align_celeba" / IDS[3]
    from_path = data.load_image(path, image_size=8)
    np.testing.assert_array_equal(data.load_image(memoryview(path.read_bytes()), image_size=8), from_path)
    with pytest.raises(CelebAFormatError, match="image not found"):
        data.load_image(tmp_path / "nope.jpg", image_size=8)
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(CelebAFormatError, match="junk.jpg: cannot decode"):
        data.load_image(tmp_path / "junk.jpg", image_size=8)
    with pytest.raises(ConfigError, match="crop"):
        data.load_image(path, image_size=8, crop="face")


def _grey_levels(images: np.ndarray) -> list[int]:
    """Recover each test image's index from its grey level."""
    return [int(round((level - 40) / 20)) for level in images.mean(axis=(1, 2, 3))]


def test_make_dataset_shapes_order_and_labels(flat_root: Path) -> None:
    table = data.load_celeba(flat_root)
    batches = list(data.make_dataset(table, "train", image_size=6, batch_size=3, training=False))
    assert [b[0].shape for b in batches] == [(3, 6, 6, 3), (1, 6, 6, 3)]
    images = np.concatenate([b[0].numpy() for b in batches])
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.float32 and labels.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 255
    assert _grey_levels(images) == [0, 1, 2, 3]
    np.testing.assert_array_equal(labels, (LABELS[:4] > 0).astype(np.float32))


def _order(table: pd.DataFrame, seed: int, **kwargs) -> list[int]:
    """Image indices in the order one epoch of a training dataset yields them."""
    ds = data.make_dataset(table, None, image_size=4, batch_size=8, training=True, seed=seed, **kwargs)
    return _grey_levels(next(iter(ds))[0].numpy())


def test_shuffle_is_fixed_by_the_seed_and_adds_no_augmentation(flat_root: Path) -> None:
    table = data.load_celeba(flat_root)
    first = _order(table, seed=1)
    assert _order(table, seed=1) == first
    assert any(_order(table, seed=s) != first for s in (2, 3, 4))
    assert sorted(first) == list(range(8))
    # Images are exactly the evaluation images, only reordered: no random transform here.
    plain = next(iter(data.make_dataset(table, None, image_size=4, batch_size=8, training=False)))[0]
    shuffled = next(iter(data.make_dataset(table, None, image_size=4, batch_size=8, training=True, seed=1)))[0]
    np.testing.assert_array_equal(shuffled.numpy(), plain.numpy()[first])
    assert sorted(_order(table, seed=1, cache=True)) == list(range(8))


def test_cached_images_are_stored_as_bytes_and_match_the_decoded_ones(flat_root: Path) -> None:
    table = data.load_celeba(flat_root)
    kwargs = {"image_size": 5, "batch_size": 8, "training": False}
    plain = next(iter(data.make_dataset(table, None, **kwargs)))
    cached_ds = data.make_dataset(table, None, cache=True, **kwargs)
    for _ in range(2):  # the second pass reads the cache
        cached = next(iter(cached_ds))
        assert cached[0].dtype.name == "float32"
        np.testing.assert_allclose(cached[0].numpy(), plain[0].numpy(), atol=0.5)
        np.testing.assert_array_equal(cached[0].numpy(), np.round(cached[0].numpy()))
        np.testing.assert_array_equal(cached[1].numpy(), plain[1].numpy())
    images_only = next(iter(data.make_dataset(table, None, cache=True, labels=False, **kwargs)))
    assert images_only.shape == (8, 5, 5, 3)


def test_make_dataset_options_and_bad_arguments(flat_root: Path) -> None:
    table = data.load_celeba(flat_root)
    images_only = data.make_dataset(table, "val", image_size=4, batch_size=8, training=False, labels=False)
    assert next(iter(images_only)).shape == (2, 4, 4, 3)
    paths_only = data.make_dataset(table[["path"]], None, image_size=4, batch_size=8, training=False, labels=False)
    assert next(iter(paths_only)).shape == (8, 4, 4, 3)
    with pytest.raises(ConfigError, match="lacks columns"):
        data.make_dataset(table[["path"]], None, image_size=4, batch_size=8, training=False)
    limited = data.make_dataset(table, "train", image_size=4, batch_size=8, training=False, limit=3)
    assert next(iter(limited))[1].shape == (3, 40)
    with pytest.raises(ConfigError, match="split='dev'"):
        data.make_dataset(table, "dev", image_size=4, batch_size=8, training=False)
    with pytest.raises(ConfigError, match="the test split has no images"):
        data.make_dataset(table[table["split"] != "test"], "test", image_size=4, batch_size=8, training=False)
    with pytest.raises(ConfigError, match="image_size"):
        data.make_dataset(table, "val", image_size=0, batch_size=8, training=False)


# --- imbalance helpers -------------------------------------------------------------------


def test_imbalance_helpers_match_hand_counts(flat_root: Path) -> None:
    table = data.load_celeba(flat_root)
    positives = LABELS > 0
    rates = data.positive_rates(table, "train")
    assert list(rates.index) == list(ATTRIBUTES)
    np.testing.assert_allclose(rates.to_numpy(), positives[:4].mean(axis=0))
    np.testing.assert_allclose(data.positive_rates(table).to_numpy(), positives.mean(axis=0))
    pos = positives[:4].sum(axis=0)
    np.testing.assert_allclose(data.positive_weights(table), (4 - pos) / np.maximum(pos, 1))
    # Flipping val labels must not move weights computed on the train split.
    flipped = table.copy()
    flipped.loc[flipped["split"] == "val", list(ATTRIBUTES)] ^= 1
    np.testing.assert_allclose(data.positive_weights(flipped), data.positive_weights(table))
    majority = (positives[:4].mean(axis=0) > 0.5).astype(int)
    expected = (positives[4:6].astype(int) == majority).mean(axis=0)
    np.testing.assert_allclose(data.majority_baseline(table, "val").to_numpy(), expected)


# --- the check command and default_root ------------------------------------------------------


def test_identity_mean_labels_average_each_persons_train_labels() -> None:
    labels = np.zeros((7, len(ATTRIBUTES)), dtype=np.int8)
    nose, smile = ATTRIBUTES.index("Big_Nose"), ATTRIBUTES.index("Smiling")
    labels[:, nose] = [1, 0, 0, 1, 1, 1, 1]
    labels[:, smile] = [1, 0, 1, 0, 1, 1, 0]
    table = pd.DataFrame(labels, columns=list(ATTRIBUTES))
    table.insert(0, "image_id", [f"{i:06d}.jpg" for i in range(7)])
    table["split"] = ["train", "train", "train", "train", "train", "train", "val"]
    table["identity"] = np.array([1, 1, 1, 2, 2, -1, 1], dtype=np.int32)
    before = table.copy()
    soft = data.identity_mean_labels(table, ["big_nose"])
    np.testing.assert_allclose(soft["Big_Nose"], [1 / 3, 1 / 3, 1 / 3, 1, 1, 1, 1], rtol=1e-6)
    assert soft["Big_Nose"].dtype == np.float32
    # Other attributes, the val row and the row of unknown identity keep their labels; the input is untouched.
    np.testing.assert_array_equal(soft["Smiling"], labels[:, smile])
    pd.testing.assert_frame_equal(table, before)
    with pytest.raises(ConfigError, match="unknown attribute 'Nose'"):
        data.identity_mean_labels(table, ["Nose"])
    with pytest.raises(ConfigError, match="need each image's identity"):
        data.identity_mean_labels(table.assign(identity=-1), ["Big_Nose"])


def test_check_prints_a_summary(flat_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(flat_root), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "Layout: flat" in out
    assert "Per split: train 4, val 2, test 2" in out
    assert "Identities: 6 (0 shared across splits)" in out
    assert "Image sizes: 12x16 (8)" in out


def test_check_names_a_bad_image_in_one_line(flat_root: Path, capsys: pytest.CaptureFixture) -> None:
    bad = flat_root / "img_align_celeba" / IDS[2]
    bad.write_bytes(bad.read_bytes()[:200])
    assert main(["check", str(flat_root), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "cannot decode" in err


def test_check_reports_bad_annotations_in_one_line(flat_root: Path, capsys: pytest.CaptureFixture) -> None:
    edit_line(flat_root / "list_eval_partition.txt", 5, f"{IDS[4]} 7")
    assert main(["check", str(flat_root), "--annotations-only"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "list_eval_partition.txt:5:" in err


def test_check_rejects_a_bad_thread_count(flat_root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(flat_root), "--workers", "0"]) == 1
    assert "--workers 0: expected a positive number" in capsys.readouterr().err


def test_default_root_prefers_celeba_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CELEBA_ROOT", str(tmp_path))
    assert data.default_root() == tmp_path.resolve()


def test_default_root_generates_the_synthetic_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from celebalib import synthetic

    calls = []
    monkeypatch.delenv("CELEBA_ROOT", raising=False)
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path))
    monkeypatch.setattr(synthetic, "ensure_generated", lambda *args, **kw: calls.append(args) or args[0])
    root = data.default_root()
    assert root.parent == tmp_path.resolve() / "data"
    assert calls and calls[0][0] == root


# --- the genuine CelebA files -------------------------------------------------------------


@pytest.fixture(scope="module")
def genuine_annotations(celeba_shared: Path) -> pd.DataFrame:
    """The genuine annotation files read alone."""
    return data.load_celeba(celeba_shared, images=False)


@pytest.mark.celeba
def test_genuine_annotations(genuine_annotations: pd.DataFrame) -> None:
    table = genuine_annotations
    assert len(table) == 202_599
    assert table["split"].value_counts().to_dict() == {"train": 162_770, "val": 19_867, "test": 19_962}
    assert table["identity"].nunique() == 10_177 and (table["identity"] > 0).all()
    assert (table.groupby("identity")["split"].nunique() == 1).all()
    assert round(100 * table["Male"].mean(), 2) == 41.68
    assert table.attrs["layout"] == "flat"


@pytest.mark.celeba
def test_genuine_images(celeba_shared: Path, genuine_annotations: pd.DataFrame) -> None:
    # Whatever part of the release this copy holds: the rows are those whose image file is here.
    present = set(os.listdir(celeba_shared / "img_align_celeba"))
    listed = genuine_annotations["image_id"].isin(present)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", data.MissingImagesWarning)
        table = data.load_celeba(celeba_shared)
    missing = int((~listed).sum())
    assert [str(w.message).startswith(f"{missing:,} of 202,599") for w in caught] == ([True] if missing else [])
    assert table["image_id"].tolist() == genuine_annotations.loc[listed, "image_id"].tolist()
    assert table["split"].value_counts().to_dict() == genuine_annotations.loc[listed, "split"].value_counts().to_dict()
    sample = table["path"].sample(64, random_state=0)
    report = data.inspect_images(sample, progress=False)
    assert (report["problem"] == "").all()
    assert set(zip(report["width"], report["height"])) == {(178, 218)}
    assert data.load_image(sample.iloc[0], image_size=32).shape == (32, 32, 3)


def test_one_image_size_rule_for_the_pipeline_and_the_model() -> None:
    from celebalib.model import check_image_size as model_check

    assert data.check_image_size(np.int64(8)) == 8 and model_check(np.int64(40)) == 40
    for bad in (True, 8.0, "8", 0):
        with pytest.raises(ConfigError, match=r"image_size=.*: expected a whole number of pixels, at least 1"):
            data.check_image_size(bad)
    with pytest.raises(ConfigError, match="image_size=31: expected a whole number of pixels, at least 32"):
        model_check(31)


def test_check_quiet_draws_the_default_faces_without_a_bar(
    flat_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from celebalib import synthetic

    drawn: list[bool] = []

    def ensure_generated(out_dir, n, seed=0, progress=True):  # type: ignore[no-untyped-def]
        drawn.append(progress)
        return flat_root

    monkeypatch.delenv("CELEBA_ROOT", raising=False)
    monkeypatch.setattr(synthetic, "ensure_generated", ensure_generated)
    assert main(["check", "--quiet"]) == 0 and main(["check"]) == 0
    assert drawn == [False, True]
    assert "Layout: flat" in capsys.readouterr().out
