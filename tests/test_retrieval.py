"""Retrieval: exact top-k against a brute-force reference, the gallery index, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from celebalib import cli
from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError, RunError
from celebalib.retrieval import (
    GalleryIndex,
    VectorSearch,
    description_matches,
    evaluate_retrieval,
    neighbours_excluding_self,
    parse_attributes,
    precision_at_k,
    random_neighbours,
    same_person_rate,
    save_retrieval_report,
    threshold_centred,
    top_k,
)


def brute_force(query: np.ndarray, gallery: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Reference: a distance per row in float64, stable sort (ties by lower index)."""
    q, g = query.astype(np.float64), gallery.astype(np.float64)
    if metric == "cosine":
        distances = np.array([1 - row @ q / (np.linalg.norm(row) * np.linalg.norm(q)) for row in g])
    else:
        distances = np.array([np.sqrt(((row - q) ** 2).sum()) for row in g])
    order = np.argsort(distances, kind="stable")[:k]
    return order, distances[order]


def small_index(n: int = 30, seed: int = 0, run_id: str = "run-a") -> GalleryIndex:
    """An index of random probabilities, without a model."""
    rng = np.random.default_rng(seed)
    return GalleryIndex(probabilities=rng.random((n, len(ATTRIBUTES)), dtype=np.float32),
                        image_ids=[f"{i + 1:06d}.jpg" for i in range(n)],
                        paths=[f"/faces/{i + 1:06d}.jpg" for i in range(n)], run_id=run_id, split="test")


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_top_k_matches_brute_force_on_random_data(metric: str) -> None:
    rng = np.random.default_rng(1)
    gallery = rng.random((500, 40), dtype=np.float32)
    queries = rng.random((7, 40), dtype=np.float32)
    indices, distances = top_k(queries, gallery, 10, metric)
    assert indices.shape == distances.shape == (7, 10)
    for row, query in enumerate(queries):
        expected_idx, expected_dist = brute_force(query, gallery, 10, metric)
        np.testing.assert_array_equal(indices[row], expected_idx)
        np.testing.assert_allclose(distances[row], expected_dist, rtol=1e-9, atol=1e-12)


def test_top_k_breaks_ties_by_lower_index() -> None:
    # Binary vectors give many equal distances; duplicates too.
    rng = np.random.default_rng(2)
    gallery = rng.integers(0, 2, size=(300, 6)).astype(np.float32)
    for query in gallery[:20]:
        indices, distances = top_k(query, gallery, 25)
        expected_idx, expected_dist = brute_force(query, gallery, 25, "euclidean")
        np.testing.assert_array_equal(indices, expected_idx)
        np.testing.assert_allclose(distances, expected_dist)


def test_one_query_gives_1d_results_and_k_is_clipped() -> None:
    gallery = np.eye(4, dtype=np.float32)
    indices, distances = top_k(gallery[2], gallery, 10)
    assert indices.shape == distances.shape == (4,)
    assert indices[0] == 2 and distances[0] == 0
    np.testing.assert_array_equal(indices[1:], [0, 1, 3])


def test_cosine_treats_a_zero_vector_as_orthogonal_to_everything() -> None:
    gallery = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [2.0, 2.0]])
    indices, distances = top_k(np.array([3.0, 0.0]), gallery, 4, metric="cosine")
    np.testing.assert_array_equal(indices, [1, 3, 0, 2])
    np.testing.assert_allclose(distances, [0.0, 1 - np.sqrt(0.5), 1.0, 2.0], atol=1e-12)


def test_distances_are_symmetric_and_zero_on_self() -> None:
    rng = np.random.default_rng(3)
    vectors = rng.random((40, 40))
    for metric in ("euclidean", "cosine"):
        _, matrix_rows = top_k(vectors, vectors, 40, metric)
        indices, _ = top_k(vectors, vectors, 40, metric)
        full = np.empty((40, 40))
        np.put_along_axis(full, indices, matrix_rows, axis=1)
        np.testing.assert_allclose(full, full.T, atol=1e-12)
        np.testing.assert_allclose(np.diag(full), 0, atol=1e-12)


def test_bad_arguments_raise_config_errors() -> None:
    gallery = np.zeros((5, 3))
    with pytest.raises(ConfigError, match="metric"):
        top_k(gallery[0], gallery, 2, metric="manhattan")
    with pytest.raises(ConfigError, match="3"):
        top_k(np.zeros(4), gallery, 2)
    with pytest.raises(ConfigError, match="k must"):
        top_k(gallery[0], gallery, 0)
    with pytest.raises(ConfigError, match="NaN"):
        top_k(np.full(3, np.nan), gallery, 1)


def test_faiss_backend_gives_identical_results() -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(4)
    gallery = np.vstack([rng.random((400, 40)), rng.integers(0, 2, (200, 40))]).astype(np.float32)
    queries = gallery[::37]
    for metric in ("euclidean", "cosine"):
        expected = VectorSearch(gallery, metric).search(queries, 12)
        found = VectorSearch(gallery, metric, backend="faiss").search(queries, 12)
        np.testing.assert_array_equal(found[0], expected[0])
        np.testing.assert_allclose(found[1], expected[1])


def test_attribute_query_ignores_unspecified_attributes() -> None:
    index = small_index()
    wanted = {"Eyeglasses": 1, "Smiling": 1, "Male": 0}
    before = index.query_attributes(wanted, k=30)
    changed = small_index()
    keep = [ATTRIBUTES.index(name) for name in wanted]
    others = np.setdiff1d(np.arange(len(ATTRIBUTES)), keep)
    changed.probabilities[:, others] = np.random.default_rng(9).random((30, len(others)))
    after = changed.query_attributes(wanted, k=30)
    pd.testing.assert_frame_equal(before[["image_id", "distance"]], after[["image_id", "distance"]])
    # The distance is over the three named columns alone.
    top = before.iloc[0]
    row = index.probabilities[index.position(top["image_id"])][keep]
    assert top["distance"] == pytest.approx(np.linalg.norm(row - np.array([1, 1, 0])))
    assert set(before["differs"].str.split(", ").explode()) - {""} <= set(wanted)


def test_attribute_query_errors() -> None:
    index = small_index()
    with pytest.raises(ConfigError, match="Sunglasses"):
        index.query_attributes({"Sunglasses": 1})
    with pytest.raises(ConfigError, match="expected 0 or 1"):
        index.query_attributes({"Smiling": 2})
    with pytest.raises(ConfigError, match="empty"):
        index.query_attributes({})


def test_parse_attributes() -> None:
    assert parse_attributes("Eyeglasses, smiling,-Male") == {"Eyeglasses": 1, "Smiling": 1, "Male": 0}
    with pytest.raises(ConfigError, match="Glasses"):
        parse_attributes("Glasses")


def test_query_id_leaves_the_image_out_and_reports_differences() -> None:
    index = small_index()
    results = index.query_id("000005.jpg", k=5)
    assert list(results.columns) == ["rank", "image_id", "path", "distance", "differs"]
    assert "000005.jpg" not in set(results["image_id"])
    assert results["rank"].tolist() == [1, 2, 3, 4, 5]
    assert results["distance"].is_monotonic_increasing
    first = index.position(results["image_id"][0])
    labels = index.probabilities[[4, first]] >= 0.5
    expected = [name for name, a, b in zip(ATTRIBUTES, *labels, strict=True) if a != b]
    assert results["differs"][0] == ", ".join(expected)
    with pytest.raises(ConfigError, match=r"999999.jpg.*e.g. .000001.jpg.\)"):
        index.query_id("999999.jpg")


def test_query_vector_of_a_gallery_row_finds_it_first() -> None:
    index = small_index()
    results = index.query_vector(index.probabilities[7], k=3, metric="cosine")
    assert results["image_id"][0] == "000008.jpg"
    assert results["distance"][0] == pytest.approx(0, abs=1e-9)
    assert results["differs"][0] == ""


def test_save_load_round_trip(tmp_path) -> None:
    index = small_index()
    index.features = np.random.default_rng(5).random((30, 8)).astype(np.float32)
    path = index.save(tmp_path / "index_test.npz")
    assert [p.name for p in tmp_path.iterdir()] == ["index_test.npz"]
    loaded = GalleryIndex.load(path)
    np.testing.assert_array_equal(loaded.probabilities, index.probabilities)
    np.testing.assert_array_equal(loaded.features, index.features)
    np.testing.assert_array_equal(loaded.image_ids, index.image_ids)
    assert loaded.image_ids.dtype.kind == "U"
    assert (loaded.run_id, loaded.split, loaded.attributes) == ("run-a", "test", ATTRIBUTES)
    pd.testing.assert_frame_equal(loaded.query_id("000003.jpg"), index.query_id("000003.jpg"))


class FakeRun:
    """The parts of a Run that loading checks."""

    def __init__(self, run_id: str, attributes=ATTRIBUTES) -> None:
        self.run_id = run_id
        self.config = {"attributes": list(attributes)}


def test_load_mismatch_and_missing_errors(tmp_path) -> None:
    path = small_index(run_id="run-a").save(tmp_path / "index.npz")
    GalleryIndex.load(path, run=FakeRun("run-a"))
    with pytest.raises(RunError, match="run-a.*run-b"):
        GalleryIndex.load(path, run=FakeRun("run-b"))
    with pytest.raises(RunError, match="other attributes"):
        GalleryIndex.load(path, run=FakeRun("run-a", ATTRIBUTES[:39] + ("Sunglasses",)))
    with pytest.raises(RunError, match="no index"):
        GalleryIndex.load(tmp_path / "absent.npz")
    (tmp_path / "broken.npz").write_bytes(b"not an index")
    with pytest.raises(RunError, match="broken.npz"):
        GalleryIndex.load(tmp_path / "broken.npz")


def test_precision_and_same_person_rate_on_hand_made_cases() -> None:
    truth = np.array([[0, 0, 0, 0], [0, 0, 0, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    queries = np.array([0, 2])
    neighbours = np.array([[1, 2], [3, 0]])
    # Query 0: row 1 within 1 (relevant), row 2 at 4 (not); query 2: row 3 at 2, row 0 at 4.
    assert precision_at_k(neighbours, queries, truth, max_hamming=1) == 0.25
    assert precision_at_k(neighbours, queries, truth, max_hamming=2) == 0.5
    identities = np.array([7, 7, 8, -1])
    # Query 0's person appears at row 1 (hit); query 2's person has no other image.
    assert same_person_rate(neighbours, queries, identities) == 1.0


def test_neighbour_lists_leave_the_query_out() -> None:
    vectors = np.zeros((6, 3), dtype=np.float32)  # all equal: the query is not first
    found = neighbours_excluding_self(vectors, np.array([0, 5]), k=3)
    np.testing.assert_array_equal(found, [[1, 2, 3], [0, 1, 2]])
    drawn = random_neighbours(6, np.array([0, 5]), k=5, seed=0)
    assert all(q not in row and len(set(row)) == 5 for q, row in zip([0, 5], drawn, strict=True))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run the command line in-process."""
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_query_cli_errors_are_one_line(tiny_run, tmp_path, capsys) -> None:
    run_dir = str(tiny_run.path)
    code, _, err = run_cli(["query", "--run", run_dir, "--like", "000001.jpg", "--index",
                            str(tmp_path / "none.npz")], capsys)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "none.npz" in err
    index = small_index(run_id=tiny_run.run_id)
    path = str(index.save(tmp_path / "index.npz"))
    for extra, needle in ([["--like", "nope.jpg"], "nope.jpg"], [["--attributes", "Smiling,-Glasses"], "Glasses"],
                          [["--image", str(tmp_path / "missing.png")], "missing.png"]):
        code, _, err = run_cli(["query", "--run", run_dir, "--index", path, *extra], capsys)
        assert code == 1, extra
        assert len(err.strip().splitlines()) == 1 and needle in err
    code, _, err = run_cli(["query", "--run", run_dir, "--index", str(small_index(run_id="other").save(
        tmp_path / "other.npz")), "--like", "000001.jpg"], capsys)
    assert code == 1 and "built by run 'other'" in err


def test_index_cli_errors_are_one_line(tmp_path, capsys) -> None:
    cases = [(["--run", str(tmp_path / "absent")], "absent"), (["--run", str(tmp_path), "--limit", "0"], "--limit")]
    for argv, needle in cases:
        code, _, err = run_cli(["index", *argv], capsys)
        assert code == 1 and len(err.strip().splitlines()) == 1 and needle in err


def test_index_and_query_commands_on_tiny_run(tiny_run, synthetic_root, synthetic_table, tmp_path, capsys) -> None:
    out = tmp_path / "index_val.npz"
    code, printed, _ = run_cli(["index", "--run", str(tiny_run.path), "--data", str(synthetic_root),
                                "--split", "val", "--limit", "12", "--out", str(out)], capsys)
    assert code == 0 and str(out) in printed
    index = GalleryIndex.load(out, run=tiny_run)
    val = synthetic_table[synthetic_table["split"] == "val"].iloc[:12]
    assert index.image_ids.tolist() == val["image_id"].tolist()
    assert index.probabilities.shape == (12, len(ATTRIBUTES)) and index.split == "val"
    like = index.image_ids[3]
    code, printed, _ = run_cli(["query", "--run", str(tiny_run.path), "--index", str(out), "--like", like,
                                "-k", "4"], capsys)
    assert code == 0 and len(printed.strip().splitlines()) == 5 and like not in printed
    # The photo through load_image gives the vector the tf.data pipeline indexed.
    by_image = index.query_image(tiny_run, val["path"].iloc[3], k=len(index)).set_index("image_id")
    assert by_image.loc[like, "distance"] < 1e-4


def test_an_index_reuses_the_predictions_evaluate_stored(tiny_run, synthetic_table, monkeypatch) -> None:
    first = GalleryIndex.build(tiny_run, synthetic_table, "val", limit=6, progress=False)
    assert (tiny_run.path / "predictions_val_first6.npz").is_file()
    monkeypatch.setattr(type(tiny_run), "predict", lambda *args, **kwargs: pytest.fail("predicted again"))
    again = GalleryIndex.build(tiny_run, synthetic_table, "val", limit=6, progress=False)
    np.testing.assert_array_equal(again.probabilities, first.probabilities)
    assert again.image_ids.tolist() == first.image_ids.tolist()


class ColourRun(FakeRun):
    """A stand-in model whose 40 outputs are the image's mean red, green and blue, repeated."""

    image_size, crop = 8, "center"

    def predict_images(self, images: np.ndarray) -> np.ndarray:
        means = np.asarray(images, dtype=np.float64).mean(axis=(1, 2)) / 255
        return np.tile(means, (1, 14))[:, : len(ATTRIBUTES)]


def test_query_image_preprocesses_like_training(tmp_path) -> None:
    from PIL import Image

    from celebalib.data import load_image
    from celebalib.errors import CelebAFormatError

    run = ColourRun("colours")
    paths = []
    for i, colour in enumerate([(250, 10, 10), (10, 250, 10), (10, 10, 250), (200, 200, 20)]):
        paths.append(tmp_path / f"{i:06d}.png")
        # A 20x30 image whose centre square holds the colour and whose top and bottom are grey:
        # only the centre crop used in training makes the query match its gallery vector.
        pixels = np.full((30, 20, 3), 128, dtype=np.uint8)
        pixels[5:25] = colour
        Image.fromarray(pixels).save(paths[-1])
    vectors = run.predict_images(np.stack([load_image(p, image_size=8, crop="center") for p in paths]))
    index = GalleryIndex(probabilities=vectors, image_ids=[p.name for p in paths], paths=paths, run_id="colours")
    results = index.query_image(run, paths[2], k=2)
    assert results["image_id"][0] == "000002.png" and results["distance"][0] < 1e-6
    from_bytes = index.query_image(run, paths[3].read_bytes(), k=1)
    assert from_bytes["image_id"][0] == "000003.png"
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(CelebAFormatError, match="notes.txt"):
        index.query_image(run, tmp_path / "notes.txt")
    with pytest.raises(RunError, match="other"):
        index.query_image(ColourRun("other"), paths[0])


def test_evaluate_retrieval_ranks_oracle_above_random() -> None:
    rng = np.random.default_rng(6)
    people = rng.integers(0, 2, size=(40, len(ATTRIBUTES)))
    identity = np.repeat(np.arange(40), 3)  # three photos per person, one label flipped on some
    truth = people[identity].copy()
    truth[::3, 0] ^= 1
    table = pd.DataFrame(truth.astype(np.int8), columns=list(ATTRIBUTES))
    table.insert(0, "image_id", [f"{i:06d}.jpg" for i in range(120)])
    table.insert(1, "path", "/faces/" + table["image_id"])
    table["split"], table["identity"] = "val", identity
    # A "model" that predicts the true labels with a little noise, for the first 27 people (81 images).
    noisy = np.clip(truth + rng.normal(0, 0.1, truth.shape), 0, 1)
    index = GalleryIndex(probabilities=noisy[:81], image_ids=table["image_id"][:81], paths=table["path"][:81],
                         run_id="r", split="val")
    report = evaluate_retrieval(index, table, k=2, queries=50, seed=0).set_index("ranking")
    assert list(report.index) == ["predicted", "oracle (true labels)", "random"]
    assert (report["queries"] == 50).all() and (report["gallery"] == 81).all()
    assert report.loc["oracle (true labels)", "precision_at_k"] == 1.0
    assert report.loc["predicted", "same_person_at_k"] == 1.0
    assert report.loc["random", "precision_at_k"] < 0.5
    with pytest.raises(ConfigError, match="not in the table"):
        evaluate_retrieval(index, table.iloc[10:])


def test_saved_retrieval_report_is_what_demo_reads(tmp_path) -> None:
    from celebalib.demo import _retrieval_figures

    report = pd.DataFrame({"ranking": ["predicted", "oracle (true labels)", "random"],
                           "precision_at_k": [0.3, 0.6, 0.02], "same_person_at_k": [0.9, 1.0, 0.05],
                           "k": 10, "split": "test"})
    path = save_retrieval_report(report, tmp_path)
    assert path == tmp_path / "retrieval_test.json"
    assert _retrieval_figures(path) == {"precision_at_10": 0.3, "precision_at_10_oracle": 0.6,
                                        "precision_at_10_random": 0.02, "same_person_at_10": 0.9,
                                        "same_person_at_10_oracle": 1.0, "same_person_at_10_random": 0.05}


def test_threshold_centred_puts_each_threshold_at_one_half() -> None:
    thresholds = np.array([0.9, 0.5, 0.2])
    centred = threshold_centred(np.array([[0.9, 0.5, 0.2], [0.0, 0.7, 1.0]]), thresholds)
    np.testing.assert_allclose(centred[0], 0.5, atol=1e-6)
    np.testing.assert_allclose(centred[1, [0, 2]], [0.0, 1.0])
    # sigmoid(logit p - logit t), checked against the logarithmic form.
    logit = lambda x: np.log(x / (1 - x))  # noqa: E731
    p = np.linspace(0.01, 0.99, 50)
    expected = 1 / (1 + np.exp(-(logit(p) - logit(0.84))))
    np.testing.assert_allclose(threshold_centred(p[:, None], [0.84])[:, 0], expected, rtol=1e-5)
    # With every threshold at 0.5 it changes nothing.
    np.testing.assert_allclose(threshold_centred(p[:, None], [0.5])[:, 0], p, rtol=1e-6)


def description_index() -> GalleryIndex:
    """Two faces: A just under Eyeglasses' high threshold and female; B above it, unsure of Male."""
    probabilities = np.full((2, len(ATTRIBUTES)), 0.5, dtype=np.float32)
    eyes, male = ATTRIBUTES.index("Eyeglasses"), ATTRIBUTES.index("Male")
    probabilities[:, [eyes, male]] = [[0.85, 0.0], [0.95, 0.3]]
    thresholds = np.full(len(ATTRIBUTES), 0.5, dtype=np.float32)
    thresholds[eyes] = 0.9
    return GalleryIndex(probabilities=probabilities, image_ids=["a.jpg", "b.jpg"], paths=["/a", "/b"],
                        thresholds=thresholds)


def test_description_query_means_above_the_tuned_threshold() -> None:
    index = description_index()
    wanted = {"Eyeglasses": 1, "Male": 0}
    # On raw probabilities A (0.85, no glasses by its threshold) would come first: 0.15 < 0.30.
    raw = np.linalg.norm(index.probabilities[:, [ATTRIBUTES.index("Eyeglasses"), ATTRIBUTES.index("Male")]]
                         - np.array([1, 0]), axis=1)
    assert raw[0] < raw[1]
    results = index.query_attributes(wanted, k=2)
    assert results["image_id"].tolist() == ["b.jpg", "a.jpg"]
    assert results["differs"].tolist() == ["", "Eyeglasses"]
    truth = pd.DataFrame({"image_id": ["a.jpg", "b.jpg"], "Eyeglasses": [0, 1], "Male": [0, 0]})
    matches = description_matches(truth, wanted)
    assert matches.tolist() == [False, True]
    assert matches.reindex(results["image_id"].head(1)).mean() == 1.0


def test_description_query_is_more_precise_than_raw_probabilities() -> None:
    """A balanced model's inflated rare-attribute probabilities: the centred ranking finds the true matches."""
    rng = np.random.default_rng(3)
    n, eyes = 400, ATTRIBUTES.index("Eyeglasses")
    truth = (rng.random(n) < 0.07).astype(int)
    probabilities = rng.random((n, len(ATTRIBUTES))).astype(np.float32)
    # Negatives spread up to 0.88, positives from 0.8 up: the tuned threshold sits near 0.85.
    probabilities[:, eyes] = np.where(truth == 1, rng.uniform(0.8, 1.0, n), rng.uniform(0.3, 0.88, n))
    thresholds = np.full(len(ATTRIBUTES), 0.5, dtype=np.float32)
    thresholds[eyes] = 0.85
    index = GalleryIndex(probabilities=probabilities, image_ids=[f"{i}.jpg" for i in range(n)],
                         paths=[f"/{i}" for i in range(n)], thresholds=thresholds)
    table = pd.DataFrame({"image_id": index.image_ids, "Eyeglasses": truth,
                          "Smiling": (probabilities[:, ATTRIBUTES.index("Smiling")] >= 0.5).astype(int)})
    wanted = {"Eyeglasses": 1, "Smiling": 1}
    matches = description_matches(table, wanted)
    centred = matches.reindex(index.query_attributes(wanted, k=8)["image_id"]).mean()
    raw_found, _ = top_k(np.array([1.0, 1.0]), probabilities[:, [eyes, ATTRIBUTES.index("Smiling")]], 8)
    raw = matches.iloc[raw_found].mean()
    assert centred > raw
