"""Clustering: k-means recovers separated groups, profiles name the right attributes, k is found."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from celebalib.attributes import ATTRIBUTES
from celebalib.clustering import cluster_lift, cluster_profiles, fit_kmeans, pca_map, suggest_k
from celebalib.errors import ConfigError


def blobs(k: int, per: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Probability-like vectors around k random binary profiles, and the true group of each."""
    rng = np.random.default_rng(seed)
    centres = rng.integers(0, 2, size=(k, len(ATTRIBUTES))).astype(float)
    groups = np.repeat(np.arange(k), per)
    vectors = np.clip(centres[groups] + rng.normal(0, 0.08, size=(k * per, len(ATTRIBUTES))), 0, 1)
    return vectors, groups


def test_kmeans_recovers_separated_groups() -> None:
    vectors, groups = blobs(4)
    labels = fit_kmeans(vectors, 4, seed=0).labels_
    assert adjusted_rand_score(groups, labels) == pytest.approx(1.0)


@pytest.mark.parametrize("true_k", [3, 5])
def test_suggest_k_finds_the_number_of_blobs(true_k: int) -> None:
    vectors, _ = blobs(true_k, seed=true_k)
    best, scores = suggest_k(vectors, range(2, 8), sample=200)
    assert best == true_k
    assert list(scores.index) == list(range(2, 8))
    assert scores.max() == scores[true_k]


def test_profiles_name_the_attributes_that_set_a_cluster_apart() -> None:
    vectors = np.full((100, len(ATTRIBUTES)), 0.5)
    labels = np.repeat([0, 1], [25, 75])
    glasses, smiling = ATTRIBUTES.index("Eyeglasses"), ATTRIBUTES.index("Smiling")
    vectors[:25, glasses] = 1.0  # cluster 0 all wear glasses ...
    vectors[:25, smiling] = 0.0  # ... and none smiles
    profiles = cluster_profiles(vectors, labels, top=1)
    assert profiles["size"].tolist() == [25, 75]
    assert profiles["share"].tolist() == [0.25, 0.75]
    # Gallery mean for Eyeglasses is 0.625: cluster 0 is 0.375 above, cluster 1 0.125 below.
    assert profiles.loc[0, "over"] == "Eyeglasses +0.38"
    assert profiles.loc[0, "under"] == "Smiling -0.38"
    assert profiles.loc[1, "under"] == "Eyeglasses -0.12"
    lift = cluster_lift(vectors, labels)
    assert lift.shape == (2, len(ATTRIBUTES))
    np.testing.assert_allclose((lift.T * [25, 75]).sum(axis=1), 0, atol=1e-12)


def test_pca_map_spreads_the_groups_apart() -> None:
    vectors, groups = blobs(3, seed=1)
    coords = pca_map(vectors)
    assert coords.shape == (len(vectors), 2)
    centres = np.array([coords[groups == g].mean(axis=0) for g in range(3)])
    spread = max(coords[groups == g].std(axis=0).max() for g in range(3))
    gaps = [np.linalg.norm(centres[a] - centres[b]) for a in range(3) for b in range(a + 1, 3)]
    assert min(gaps) > 3 * spread


def test_bad_input_raises_config_errors() -> None:
    vectors, _ = blobs(2, per=5)
    with pytest.raises(ConfigError, match="between 2"):
        fit_kmeans(vectors, 11)
    with pytest.raises(ConfigError, match="no usable k"):
        suggest_k(vectors[:3], range(5, 8))
    with pytest.raises(ConfigError, match="labels"):
        cluster_profiles(vectors, np.zeros(3))


def test_cluster_map_draws_every_point_in_its_cluster_colour() -> None:
    from celebalib.plots import cluster_map

    vectors, groups = blobs(3, per=20)
    fig = cluster_map(pca_map(vectors), groups)
    points = fig.axes[0].collections[0]
    assert len(points.get_offsets()) == 60
    assert len({tuple(c) for c in points.get_facecolors().round(4)}) == 3
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["0", "1", "2"]


def test_cluster_examples_gives_one_row_per_cluster(tmp_path) -> None:
    from PIL import Image

    from celebalib.plots import cluster_examples

    paths = []
    for i in range(7):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (10, 12), (30 * i, 0, 0)).save(paths[-1])
    labels = np.array([0, 0, 0, 0, 1, 1, 2])  # cluster 2 has one face: two blank cells pad its row
    fig = cluster_examples(paths, labels, per_cluster=3)
    axes = fig.axes
    assert len(axes) == 9
    captions = [ax.texts[0].get_text() if ax.texts else "" for ax in axes]
    assert captions == ["cluster 0"] * 3 + ["cluster 1"] * 2 + [""] + ["cluster 2"] + ["", ""]
