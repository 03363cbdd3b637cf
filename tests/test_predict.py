"""The 40 attributes of your own photos: the library function and the ``predict`` command."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image

from celebalib import predict, runs
from celebalib.attributes import ATTRIBUTES
from celebalib.cli import main
from celebalib.faces import EXIF_ORIENTATION
from celebalib.runs import Run


def save(pixels: np.ndarray, path: Path, **options) -> Path:
    """Write an image file and return its path."""
    Image.fromarray(pixels).save(path, **options)
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photos of one face, two faces (the smaller one on the right) and none."""
    folder = tmp_path_factory.mktemp("photos")
    astronaut = skimage.data.astronaut()
    small = np.full((512, 512, 3), 128, np.uint8)
    small[128:384, 128:384] = astronaut[::2, ::2]
    return {"one": save(astronaut, folder / "astronaut.jpg", quality=95),
            "two": save(np.hstack([astronaut, small]), folder / "two.jpg", quality=95),
            "none": save(skimage.data.coffee(), folder / "coffee.png")}


@pytest.fixture()
def tuned_run(tiny_run: Run, tmp_path: Path) -> Run:
    """A copy of the tiny run whose thresholds say yes to everything but Smiling."""
    folder = tmp_path / "tuned"
    shutil.copytree(tiny_run.path, folder)
    run = Run(folder)
    values = {name: 0.0 for name in ATTRIBUTES} | {"Smiling": 1.01}
    run.record_thresholds("balanced_accuracy", values)
    return run


def with_ten_views(run: Run, folder: Path) -> Run:
    """A copy of ``run`` in ``folder`` that averages ten views: shifts by 3 px and mirror images."""
    shutil.copytree(run.path, folder, ignore=shutil.ignore_patterns("logs"))
    copy = Run(folder)
    copy.record_views(True, 3)
    assert len(copy.views()) == 10
    return copy


@pytest.fixture()
def ten_view_run(tiny_run: Run, tmp_path: Path) -> Run:
    """The tiny run averaging ten views."""
    return with_ten_views(tiny_run, tmp_path / "ten-views")


@pytest.fixture()
def position_run(ten_view_run: Run) -> Run:
    """``ten_view_run`` with a model that reads pixel positions (a dense layer over the flattened image),
    so each shifted or mirrored view gets clearly different probabilities."""
    import keras

    height, width = ten_view_run.image_shape
    inputs = keras.Input((height, width, 3))
    flat = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    dense = keras.layers.Dense(40, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 0.3, 0))
    runs.save_model(keras.Model(inputs, dense(flat)), ten_view_run.model_file("best"))
    return Run(ten_view_run.path)


def pipeline_input(run: Run, path: str | Path) -> np.ndarray:
    """The image as evaluation feeds it to the model: the run's own tf.data pipeline over a file."""
    return next(iter(run.images(pd.DataFrame({"path": [str(path)]}), batch_size=1))).numpy()[0]


def test_one_row_per_face_largest_first_and_a_row_for_no_face(tiny_run: Run, photos: dict[str, Path]) -> None:
    table = predict.predict_photos(tiny_run, [photos["one"], photos["two"], photos["none"]])
    assert table["file"].tolist() == [str(photos["one"]), str(photos["two"]), str(photos["two"]), str(photos["none"])]
    assert table["face"].tolist()[:3] == [1, 1, 2] and pd.isna(table["face"].iloc[3])
    assert table["faces"].tolist() == [1, 2, 2, 0]
    assert table["status"].tolist() == ["aligned", "aligned", "aligned", "no face found"]
    areas = table["box_width"] * table["box_height"]
    assert areas.iloc[1] > 3 * areas.iloc[2] and table["box_x"].iloc[2] > 512
    probabilities = table[list(ATTRIBUTES)].to_numpy(np.float64)
    assert np.all((probabilities[:3] >= 0) & (probabilities[:3] <= 1)) and np.isnan(probabilities[3]).all()
    answers = table[[f"{name}_yes" for name in ATTRIBUTES]]
    np.testing.assert_array_equal(answers.iloc[:3].to_numpy(bool), probabilities[:3] >= tiny_run.thresholds)
    assert answers.iloc[3].isna().all()


def test_the_aligned_crop_reaches_the_model_through_the_evaluation_pipeline(tiny_run: Run, tmp_path: Path) -> None:
    face = predict.prepare_photo(tiny_run, skimage.data.astronaut())[0]
    saved = save(face.crop, tmp_path / "crop.png")
    np.testing.assert_array_equal(face.pixels, pipeline_input(tiny_run, saved))
    np.testing.assert_allclose(predict.face_attributes(tiny_run, face)["probability"],
                               np.asarray(tiny_run.predict_images(pipeline_input(tiny_run, saved)))[0], atol=1e-6)


@pytest.mark.parametrize("model", ["mobilenet", "position"])
def test_one_compiled_call_equals_averaging_each_view_on_its_own(request: pytest.FixtureRequest, model: str,
                                                                 photos: dict[str, Path]) -> None:
    run = request.getfixturevalue({"mobilenet": "ten_view_run", "position": "position_run"}[model])
    prepared = [face for path in photos.values() for face in predict.prepare_photo(run, path)]
    pixels = np.stack([face.pixels for face in prepared])
    # The reference: each view built by hand and sent through the model eagerly, then averaged.
    each_view = [np.asarray(run.model()(runs.view_of(pixels, *view), training=False)) for view in run.views()]
    if model == "position":  # the views do change the answer
        assert np.abs(each_view[0] - np.mean(each_view, axis=0)).max() > 0.05
    np.testing.assert_allclose(predict.predict_faces(run, prepared), np.mean(each_view, axis=0), atol=1e-5)
    np.testing.assert_allclose(predict.predict_faces(run, prepared[:1]), run.predict_images(pixels[:1]), atol=1e-5)
    assert predict.view_predictor(run) is predict.view_predictor(run)  # built once
    assert predict.predict_faces(run, []).shape == (0, 40)


def test_photos_predicted_in_batches_equal_each_photo_predicted_alone(position_run: Run, photos: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    files = [photos["two"], photos["none"], photos["one"], photos["two"], photos["one"]]
    monkeypatch.setattr(predict, "PHOTO_BATCH", 2)  # batches of 2, 2 and 1 photos: 2, 3 and 1 faces
    monkeypatch.setattr(predict, "FACE_BATCH", 2)  # the second batch's three faces take two model calls
    table = predict.predict_photos(position_run, files)
    assert table["faces"].tolist() == [2, 2, 0, 1, 2, 2, 1]
    expected = []
    for path in files:
        prepared = predict.prepare_photo(position_run, path)
        expected.append(position_run.predict_images(np.stack([face.pixels for face in prepared])) if prepared
                        else np.full((1, 40), np.nan))
    np.testing.assert_allclose(table[list(ATTRIBUTES)].to_numpy(np.float64), np.concatenate(expected), atol=1e-5)


def test_a_genuine_aligned_image_is_predicted_as_evaluation_predicts_it(tiny_run: Run, celeba_shared: Path) -> None:
    path = celeba_shared / "img_align_celeba" / "182637.jpg"
    if not path.is_file():
        path = sorted((celeba_shared / "img_align_celeba").glob("18*.jpg"))[0]
    face = predict.prepare_photo(tiny_run, path)[0]
    assert face.how == "already aligned"
    np.testing.assert_array_equal(face.pixels, pipeline_input(tiny_run, path))


def test_a_grey_photo_array_is_read_as_rgb(tiny_run: Run) -> None:
    grey = skimage.data.camera()
    (face,) = predict.prepare_photo(tiny_run, grey)
    np.testing.assert_array_equal(face.pixels, predict.prepare_photo(tiny_run, np.dstack([grey] * 3))[0].pixels)
    assert face.how == "aligned"


def test_no_align_keeps_the_plain_centre_crop(tiny_run: Run, synthetic_table: pd.DataFrame) -> None:
    path = synthetic_table["path"].iloc[0]
    (face,) = predict.prepare_photo(tiny_run, path, align=False)
    assert face.how == "centre crop" and face.face is None
    np.testing.assert_array_equal(face.pixels, pipeline_input(tiny_run, path))


def test_answers_follow_the_runs_tuned_thresholds(tuned_run: Run, tiny_run: Run, photos: dict[str, Path]) -> None:
    row = predict.predict_photos(tuned_run, [photos["one"]]).iloc[0]
    assert predict.yes_attributes(row) == [name for name in ATTRIBUTES if name != "Smiling"]
    assert predict.thresholds_note(tuned_run).startswith("thresholds tuned on val for balanced_accuracy")
    assert "0.5 for every attribute" in predict.thresholds_note(tiny_run)
    table = predict.attribute_table(tuned_run, row[list(ATTRIBUTES)].to_numpy(np.float64))
    assert len(table) == 40 and table.set_index("attribute").loc["Smiling", "answer"] == "no"


def test_an_exif_rotated_photo_is_predicted_upright(tiny_run: Run, photos: dict[str, Path], tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8  # stored a quarter turn clockwise
    sideways = np.ascontiguousarray(np.rot90(skimage.data.astronaut(), k=-1))
    path = save(sideways, tmp_path / "sideways.jpg", quality=95, exif=exif.tobytes())
    table = predict.predict_photos(tiny_run, [photos["one"], path])
    boxes = table[list(predict.BOX_COLUMNS)].to_numpy(np.float64)
    np.testing.assert_allclose(boxes[1], boxes[0], atol=4)


def test_command_prints_forty_rows_for_one_face(tiny_run: Run, photos: dict[str, Path], capsys) -> None:
    assert main(["predict", "--run", str(tiny_run.path), str(photos["one"])]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("threshold 0.5 for every attribute")
    assert out[1].startswith(f"{photos['one']}: face 1 of 1 at (") and out[1].endswith("aligned")
    rows = [line.split() for line in out[3:]]
    assert [row[0] for row in rows] == list(ATTRIBUTES)
    assert all(row[3] == ("yes" if float(row[1]) >= float(row[2]) else "no") for row in rows)


def test_command_writes_one_csv_row_per_face(tiny_run: Run, photos: dict[str, Path], tmp_path: Path,
                                             capsys) -> None:
    out = tmp_path / "answers" / "faces.csv"
    assert main(["predict", "--run", str(tiny_run.path), str(photos["one"].parent), "--csv", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr()
    assert printed.err == "" and f"4 row(s) for 3 photo(s) -> {out}" in printed.out
    table = pd.read_csv(out)
    assert sorted(table["file"].map(lambda name: Path(name).name)) == [
        "astronaut.jpg", "coffee.png", "two.jpg", "two.jpg"]
    assert len(table.columns) == 9 + 2 * 40 and not list(tmp_path.glob("answers/.*"))


def test_command_summarises_several_photos_and_says_no_face_found(tiny_run: Run, photos: dict[str, Path],
                                                                  capsys) -> None:
    assert main(["predict", "--run", str(tiny_run.path), str(photos["two"]), str(photos["none"]), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:]
    assert lines[0].startswith(f"{photos['two']}: face 1 of 2") and "; yes: " in lines[0]
    assert lines[1].startswith(f"{photos['two']}: face 2 of 2")
    assert lines[2] == f"{photos['none']}: no face found (--no-align predicts the whole photo, centre-cropped)"


def test_command_no_align_uses_the_whole_photo(tiny_run: Run, photos: dict[str, Path], capsys) -> None:
    assert main(["predict", "--run", str(tiny_run.path), str(photos["none"]), "--no-align"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{photos['none']}: whole photo, centre crop" and len(out) == 3 + 40


@pytest.mark.parametrize("kind", ["unreadable", "truncated", "huge", "missing"])
def test_command_exits_1_with_one_line_for_a_bad_file(tiny_run: Run, tmp_path: Path, capsys, kind: str) -> None:
    path = tmp_path / f"{kind}.jpg"
    if kind == "unreadable":
        path.write_bytes(b"not a photo at all")
    elif kind == "truncated":
        buffer = io.BytesIO()
        Image.fromarray(skimage.data.astronaut()).save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue()[:20_000])
    elif kind == "huge":
        path = tmp_path / "huge.png"
        Image.new("L", (8000, 5001)).save(path)
    expected = {"unreadable": "not a readable image", "truncated": "truncated or damaged",
                "huge": "8000x5001 pixels; the limit is 40 megapixels", "missing": "not found"}[kind]
    assert main(["predict", "--run", str(tiny_run.path), str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"celebalib predict: error: {path}") and expected in err[0]


def test_help_is_fast_and_shows_an_example() -> None:
    code = ("import sys; from celebalib.cli import build_parser; build_parser('predict'); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'mtcnn', 'skimage') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    shown = subprocess.run([sys.executable, "-m", "celebalib", "predict", "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "python -m celebalib predict --run runs/celeba-cpu photo.jpg" in shown.stdout
    assert "--no-align" in shown.stdout and "--csv OUT" in shown.stdout
