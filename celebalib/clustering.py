"""Group faces by their predicted attribute vectors: k-means, cluster profiles, a choice of k.

The vectors are the 40 predicted probabilities of a :class:`celebalib.retrieval.GalleryIndex`
(or any (N, D) array). Charts of the clusters live in :mod:`celebalib.plots`
(``cluster_map``, ``cluster_examples``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import silhouette_score

from celebalib.attributes import ATTRIBUTES
from celebalib.errors import ConfigError


def _vectors(values: Any, at_least: int = 2) -> np.ndarray:
    """A finite (N, D) float array with at least ``at_least`` rows, or ConfigError."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or len(array) < at_least or not np.isfinite(array).all():
        raise ConfigError(f"expected a finite (N, D) array with N >= {at_least}, got shape {array.shape}")
    return array


def fit_kmeans(vectors: Any, k: int, *, seed: int = 0, n_init: int = 4) -> KMeans:
    """Fit scikit-learn k-means with ``k`` clusters; ``model.labels_`` holds each row's cluster."""
    array = _vectors(vectors)
    if not 2 <= k <= len(array):
        raise ConfigError(f"k = {k}: expected between 2 and the number of vectors ({len(array)})")
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(array)


def suggest_k(vectors: Any, k_range: Iterable[int] = range(2, 11), *, sample: int = 2000,
              seed: int = 0) -> tuple[int, pd.Series]:
    """Pick k by the mean silhouette of k-means on a random sample of the vectors.

    Returns:
        ``(best_k, scores)`` with ``scores`` a Series of silhouettes indexed by k.
    """
    array = _vectors(vectors, at_least=3)
    rng = np.random.default_rng(seed)
    # The silhouette costs O(n^2); a few thousand rows estimate it well.
    subset = array[rng.choice(len(array), sample, replace=False)] if len(array) > sample else array
    candidates = [k for k in k_range if 2 <= k < len(subset)]
    if not candidates:
        raise ConfigError(f"no usable k in the range for {len(subset)} vectors; expected 2 <= k < N")
    scores = {k: silhouette_score(subset, fit_kmeans(subset, k, seed=seed).labels_) for k in candidates}
    series = pd.Series(scores, name="silhouette").rename_axis("k")
    return int(series.idxmax()), series


def cluster_profiles(vectors: Any, labels: Any, attributes: Sequence[str] = ATTRIBUTES, *,
                     top: int = 3) -> pd.DataFrame:
    """Per cluster: size, share, and the attributes most over- and under-represented.

    The lift of an attribute is the cluster's mean probability minus the whole gallery's.

    Returns:
        One row per cluster with ``size``, ``share``, ``over`` and ``under`` (strings such as
        ``"Eyeglasses +0.62"``), ordered by cluster number.
    """
    lift = cluster_lift(vectors, labels, attributes)
    sizes = pd.Series(np.asarray(labels)).value_counts().sort_index()

    def describe(row: pd.Series) -> str:
        return ", ".join(f"{name} {value:+.2f}" for name, value in row.items())

    return pd.DataFrame({
        "size": sizes,
        "share": sizes / sizes.sum(),
        "over": [describe(lift.loc[c].nlargest(top)) for c in sizes.index],
        "under": [describe(lift.loc[c].nsmallest(top)) for c in sizes.index],
    }).rename_axis("cluster")


def cluster_lift(vectors: Any, labels: Any, attributes: Sequence[str] = ATTRIBUTES) -> pd.DataFrame:
    """Cluster mean minus gallery mean, per attribute: a (clusters x attributes) table."""
    array = _vectors(vectors, at_least=1)
    labels = np.asarray(labels)
    if len(labels) != len(array) or array.shape[1] != len(attributes):
        raise ConfigError(f"{len(labels)} labels and {len(attributes)} names for vectors of shape {array.shape}")
    means = pd.DataFrame(array, columns=list(attributes)).groupby(labels).mean()
    return (means - array.mean(axis=0)).rename_axis("cluster")


def pca_map(vectors: Any, *, seed: int = 0) -> np.ndarray:
    """Project the vectors onto their first two principal components, shape (N, 2)."""
    return PCA(n_components=2, random_state=seed).fit_transform(_vectors(vectors))
