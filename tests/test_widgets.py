"""The retrieval explorer driven headlessly: clicks, value changes and fake uploads."""

from __future__ import annotations

import io

import ipywidgets as widgets
import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from celebalib.attributes import ATTRIBUTES
from celebalib.data import load_image
from celebalib.errors import ConfigError
from celebalib.retrieval import GalleryIndex
from celebalib.faces import MAX_PIXELS
from celebalib.widgets import MAX_UPLOAD_PIXELS, RetrievalExplorer, check_upload, result_caption


@pytest.fixture(scope="module")
def gallery(synthetic_table: pd.DataFrame) -> GalleryIndex:
    """An index of 60 synthetic faces whose vectors are their labels blurred by noise (no model)."""
    rows = synthetic_table.iloc[:60]
    labels = rows[list(ATTRIBUTES)].to_numpy(np.float32)
    noise = np.random.default_rng(0).uniform(0.0, 0.3, labels.shape)
    return GalleryIndex(
        probabilities=np.abs(labels - noise), image_ids=rows["image_id"].to_numpy(str),
        paths=rows["path"].to_numpy(str), run_id="noisy-labels", split="any",
    )


def upload_state(content: bytes, name: str, kind: str = "image/jpeg") -> dict:
    """The state a browser sends when a file is chosen in a FileUpload (ipywidgets 8 form)."""
    entry = {"name": name, "type": kind, "size": len(content), "content": memoryview(content), "last_modified": 0}
    return {"value": [entry]}


def jpeg_of(pixels: np.ndarray) -> bytes:
    """A JPEG file of an RGB array."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def jpeg_bytes(size: tuple[int, int] = (178, 218), colour: tuple[int, int, int] = (180, 120, 90)) -> bytes:
    """A plain JPEG image."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_opens_on_the_first_gallery_image(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=5)
    expected = gallery.query_id(gallery.image_ids[0], k=5)
    pd.testing.assert_frame_equal(explorer.results, expected)
    assert explorer.query_label == gallery.image_ids[0]
    assert gallery.image_ids[0] in explorer.status and not explorer.error


def test_choosing_an_image_in_the_dropdown_queries_it(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=4)
    before = explorer.results
    explorer.image_picker.value = gallery.image_ids[7]
    pd.testing.assert_frame_equal(explorer.results, gallery.query_id(gallery.image_ids[7], k=4))
    assert not explorer.results["image_id"].equals(before["image_id"])
    assert gallery.image_ids[7] in explorer.query_caption.value


def test_random_button_queries_another_gallery_image(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=4, seed=3)
    labels = set()
    for _ in range(5):
        explorer.random_button.click()
        labels.add(explorer.query_label)
        pd.testing.assert_frame_equal(explorer.results, gallery.query_id(explorer.query_label, k=4))
        # The dropdown follows the random pick, so the two controls never disagree.
        assert explorer.image_picker.value == explorer.query_label
    assert len(labels) > 1 and labels <= set(gallery.image_ids)


def test_k_slider_repeats_the_query_with_more_results(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=3)
    explorer.image_picker.value = gallery.image_ids[2]
    explorer.k_slider.value = 9
    assert explorer.k == 9 and len(explorer.grid.children) == 9
    pd.testing.assert_frame_equal(explorer.results, gallery.query_id(gallery.image_ids[2], k=9))


def test_attribute_pickers_query_the_chosen_attributes(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=6)
    explorer.attribute_pickers["Eyeglasses"].value = "yes"
    pd.testing.assert_frame_equal(explorer.results, gallery.query_attributes({"Eyeglasses": 1}, k=6))
    explorer.attribute_pickers["Male"].value = "no"
    expected = gallery.query_attributes({"Eyeglasses": 1, "Male": 0}, k=6)
    pd.testing.assert_frame_equal(explorer.results, expected)
    assert explorer.query_label == "Eyeglasses, not Male"
    assert explorer.image_picker.value is None  # the dropdown no longer names the query
    explorer.clear_button.click()
    assert explorer.selected_attributes() == {}
    pd.testing.assert_frame_equal(explorer.results, expected)


def test_the_attribute_pickers_are_drawn_when_their_accordion_opens(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=6)
    accordion = next(child for child in explorer.widget.children if isinstance(child, widgets.Accordion))
    grid = accordion.children[0].children[1]
    assert accordion.selected_index is None and grid.children == ()
    accordion.selected_index = 0
    assert [picker.description for picker in grid.children] == list(gallery.attributes)
    assert grid.children == tuple(explorer.attribute_pickers.values())


def test_query_by_attributes_sets_the_pickers(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=6)
    explorer.query_by_attributes({"Smiling": 1, "Bald": 0})
    assert explorer.selected_attributes() == {"Smiling": 1, "Bald": 0}
    pd.testing.assert_frame_equal(explorer.results, gallery.query_attributes({"Smiling": 1, "Bald": 0}, k=6))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.query_by_attributes({}), "at least one attribute"),
        (lambda e: e.query_by_attributes({"Wings": 1}), "Unknown attribute 'Wings'"),
        (lambda e: e.query_by_attributes({"Smiling": 0.5}), "expected 1 (yes) or 0 (no)"),
        (lambda e: e.query_by_id("999999.jpg"), "999999.jpg is not in the gallery"),
        (lambda e: e.set_k(0), "k=0"),
    ],
)
def test_unusable_queries_show_a_message_and_keep_the_results(gallery: GalleryIndex, call, message: str) -> None:
    explorer = RetrievalExplorer(gallery, k=4)
    before = explorer.results.copy()
    assert call(explorer) is None
    assert message in explorer.status and explorer.error
    assert message.split("'")[0] in explorer.status_html.value
    pd.testing.assert_frame_equal(explorer.results, before)


def test_results_grid_shows_small_thumbnails_with_captions(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=5, thumbnail_size=40)
    assert len(explorer.grid.children) == 5
    for card, row in zip(explorer.grid.children, explorer.results.to_dict("records")):
        image, caption = card.children
        with Image.open(io.BytesIO(image.value)) as thumb:
            assert thumb.format == "JPEG" and max(thumb.size) <= 40
        assert f"#{row['rank']}</b> {row['image_id']}" in caption.value
        assert f"d = {row['distance']:.3f}" in caption.value


def test_a_missing_gallery_file_shows_a_grey_square(gallery: GalleryIndex, tmp_path) -> None:
    paths = gallery.paths.copy()
    paths[1:] = str(tmp_path / "gone.jpg")
    moved = GalleryIndex(probabilities=gallery.probabilities, image_ids=gallery.image_ids, paths=paths)
    explorer = RetrievalExplorer(moved, k=3, thumbnail_size=24)
    for card in explorer.grid.children:
        with Image.open(io.BytesIO(card.children[0].value)) as thumb:
            assert thumb.size == (24, 24) and thumb.getpixel((12, 12)) == pytest.approx((200, 200, 200), abs=3)


def test_caption_shortens_long_lists_of_differing_attributes() -> None:
    row = {"rank": 2, "image_id": "000009.jpg", "distance": 0.12345, "differs": "Bald, Bangs, Big_Lips, Male, Young"}
    caption = result_caption(row)
    assert "<b>#2</b> 000009.jpg" in caption and "d = 0.123" in caption
    assert ">Bald, Bangs, Big_Lips, Male +1 more<" in caption
    assert ">same attributes<" in result_caption({**row, "differs": ""})
    assert "&lt;b&gt;" in result_caption({**row, "image_id": "<b>.jpg"})


def test_upload_without_a_run_shows_a_message(gallery: GalleryIndex) -> None:
    explorer = RetrievalExplorer(gallery, k=4)
    before = explorer.results.copy()
    explorer.upload.set_state(upload_state(jpeg_bytes(), "me.jpg"))
    assert "needs a trained run" in explorer.status and explorer.error
    pd.testing.assert_frame_equal(explorer.results, before)


def test_upload_checks_size_and_format_before_decoding() -> None:
    assert check_upload(jpeg_bytes(), "a.jpg") is None
    png = io.BytesIO()
    Image.new("RGB", (20, 20)).save(png, format="PNG")
    assert check_upload(png.getvalue(), "a.png") is None
    gif = io.BytesIO()
    Image.new("RGB", (20, 20)).save(gif, format="GIF")
    assert "GIF image; expected a JPEG or PNG" in check_upload(gif.getvalue(), "a.gif")
    assert "not a readable image" in check_upload(b"%PDF-1.4 not a photo", "cv.pdf")
    assert "not a readable image" in check_upload(jpeg_bytes()[:200], "cut.jpg")
    assert "big.jpg is 10 MB; the limit is 1 MB" in check_upload(b"\xff" * 10 * 2**20, "big.jpg", max_bytes=2**20)
    assert "empty" in check_upload(b"", "none.jpg")


def test_k_outside_the_gallery_is_a_config_error(gallery: GalleryIndex) -> None:
    with pytest.raises(ConfigError, match="k=0"):
        RetrievalExplorer(gallery, k=0)
    with pytest.raises(ConfigError, match="gallery size"):
        RetrievalExplorer(gallery, k=len(gallery) + 1)


class PixelRun:
    """A stand-in run whose "model" reads 40 pixel values, so every face gets its own vector."""

    run_id = "pixel-run"
    config = {"attributes": list(ATTRIBUTES)}
    image_size = 8
    image_shape = (8, 8)
    crop = "center"

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        """Return the first 40 pixel values of each image, scaled to [0, 1]."""
        return images.reshape(len(images), -1)[:, :40] / 255.0


@pytest.fixture(scope="module")
def pixel_gallery(synthetic_table: pd.DataFrame) -> GalleryIndex:
    """An index of 30 synthetic faces by :class:`PixelRun`, preprocessed as uploads are."""
    rows, run = synthetic_table.iloc[:30], PixelRun()
    pixels = np.stack([load_image(path, image_size=run.image_size, crop=run.crop) for path in rows["path"]])
    return GalleryIndex(
        probabilities=run.predict_images(pixels), image_ids=rows["image_id"].to_numpy(str),
        paths=rows["path"].to_numpy(str), run_id=run.run_id,
    )


@pytest.fixture(scope="module")
def face_far_from_first(pixel_gallery: GalleryIndex) -> tuple[str, bytes]:
    """The gallery face farthest from the first one (the explorer's opening query), and its JPEG."""
    far = pixel_gallery.query_id(pixel_gallery.image_ids[0], k=len(pixel_gallery) - 1).iloc[-1]
    with open(far["path"], "rb") as handle:
        return far["image_id"], handle.read()


def test_uploading_a_photo_changes_the_results(pixel_gallery: GalleryIndex, face_far_from_first) -> None:
    # The gallery holds aligned faces, indexed with the plain centre crop: upload one without re-aligning.
    explorer = RetrievalExplorer(pixel_gallery, PixelRun(), k=5, align=False)
    before = explorer.results.copy()
    image_id, content = face_far_from_first
    explorer.upload.set_state(upload_state(content, "me.jpg"))
    assert not explorer.error and explorer.query_label == "me.jpg"
    pd.testing.assert_frame_equal(explorer.results, pixel_gallery.query_image(PixelRun(), content, k=5))
    # The upload is that gallery face, cropped and resized as the gallery was: it finds itself first.
    assert explorer.results["image_id"].iloc[0] == image_id
    assert explorer.results["distance"].iloc[0] < 1e-6
    assert not explorer.results["image_id"].equals(before["image_id"])
    assert explorer.upload.value == () and explorer.image_picker.value is None


def test_uploading_a_photo_with_a_trained_run(tiny_index: GalleryIndex, tiny_run) -> None:
    explorer = RetrievalExplorer(tiny_index, tiny_run, k=5, align=False)
    with open(tiny_index.paths[3], "rb") as handle:
        content = handle.read()
    explorer.upload.set_state(upload_state(content, "face.jpg"))
    assert not explorer.error and explorer.query_label == "face.jpg"
    pd.testing.assert_frame_equal(explorer.results, tiny_index.query_image(tiny_run, content, k=5))


def test_an_uploaded_photo_is_aligned_and_the_preview_shows_what_the_model_saw(
    tiny_index: GalleryIndex, tiny_run
) -> None:
    from celebalib.predict import prepare_photo

    explorer = RetrievalExplorer(tiny_index, tiny_run, k=5)
    photo = skimage.data.astronaut()
    small = np.full((512, 512, 3), 128, np.uint8)
    small[128:384, 128:384] = photo[::2, ::2]
    content = jpeg_of(np.hstack([photo, small]))
    explorer.upload.set_state(upload_state(content, "two.jpg"))
    assert not explorer.error, explorer.status
    assert "its largest face of 2, aligned onto CelebA's template" in explorer.status
    # The query is the largest face, aligned, through the run's own crop and resize.
    largest = prepare_photo(tiny_run, content)[0]
    pd.testing.assert_frame_equal(explorer.results, tiny_index.query_image(tiny_run, largest.pixels, k=5))
    pd.testing.assert_frame_equal(explorer.results, tiny_index.query_image(tiny_run, content, k=5, align=True))
    with Image.open(io.BytesIO(explorer.query_preview.value)) as preview:
        assert preview.size == tiny_run.image_shape[::-1]
        shown = np.asarray(preview.convert("RGB"), dtype=np.float64)
    # A JPEG of the model's input: close to it, far from the whole photo centre-cropped.
    whole = prepare_photo(tiny_run, content, align=False)[0].pixels
    assert np.abs(shown - largest.pixels).mean() < 8 < np.abs(shown - whole).mean()


def test_an_upload_without_a_face_shows_a_message_and_keeps_the_results(tiny_index: GalleryIndex, tiny_run) -> None:
    explorer = RetrievalExplorer(tiny_index, tiny_run, k=5)
    before = explorer.results.copy()
    explorer.upload.set_state(upload_state(jpeg_of(skimage.data.coffee()), "coffee.jpg"))
    assert explorer.error and explorer.status.startswith("No face found in coffee.jpg")
    pd.testing.assert_frame_equal(explorer.results, before)


def test_a_truncated_jpeg_upload_is_refused_by_the_check(tiny_index: GalleryIndex, tiny_run) -> None:
    content = jpeg_of(skimage.data.astronaut())[:20_000]
    # Pillow's verify() reads the JPEG's structure only: it passes this file, whose pixels stop half-way.
    with Image.open(io.BytesIO(content)) as image:
        image.verify()
    assert check_upload(content, "cut.jpg") == "cut.jpg is not a readable image; expected a JPEG or PNG photo."
    explorer = RetrievalExplorer(tiny_index, tiny_run, k=5)
    before = explorer.results.copy()
    explorer.upload.set_state(upload_state(content, "cut.jpg"))
    assert explorer.error and "not a readable image" in explorer.status
    pd.testing.assert_frame_equal(explorer.results, before)


def test_uploads_and_photos_share_one_pixel_limit() -> None:
    png = io.BytesIO()
    Image.new("L", (8000, 5001)).save(png, format="PNG")
    assert MAX_UPLOAD_PIXELS == MAX_PIXELS == 40_000_000
    assert check_upload(png.getvalue(), "huge.png") == "huge.png is 8000x5001 pixels; the limit is 40 megapixels."


@pytest.mark.parametrize(
    ("content", "limit", "message"),
    [
        (b"GIF89a but not really" * 10, 10 * 2**20, "not a readable image"),
        (None, 1000, "the limit is 1000 bytes"),
    ],
)
def test_a_bad_upload_shows_a_message_and_keeps_the_results(
    pixel_gallery: GalleryIndex, face_far_from_first, content: bytes | None, limit: int, message: str
) -> None:
    explorer = RetrievalExplorer(pixel_gallery, PixelRun(), k=5, max_upload_bytes=limit)
    before = explorer.results.copy()
    explorer.upload.set_state(upload_state(content or face_far_from_first[1], "file.jpg"))
    assert explorer.error and message in explorer.status and message in explorer.status_html.value
    pd.testing.assert_frame_equal(explorer.results, before)
    assert explorer.query_label == pixel_gallery.image_ids[0]
