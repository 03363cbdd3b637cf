"""Derive the label statistics of the synthetic dataset from the genuine CelebA annotations.

Reads ``list_attr_celeba.txt`` of the CelebA release and writes two small tables into
``celebalib/resources/``: the 40 positive rates and the latent (tetrachoric) correlation
matrix of a Gaussian copula whose thresholded samples reproduce every pairwise
co-occurrence rate. The annotation file itself never enters the repository.

Needs SciPy, which the test extra installs (`pip install -e ".[test]"` from the clone).

Usage: python scripts/derive_label_stats.py [--attr /path/to/celeba/list_attr_celeba.txt; default: CELEBA_ROOT's]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, stats

from celebalib.attributes import ATTRIBUTES
from celebalib.io import atomic_path

PROJECT = Path(__file__).resolve().parents[1]
RESOURCES = PROJECT / "celebalib" / "resources"


def read_labels(path: Path) -> np.ndarray:
    """Read the -1/1 attribute file into an (N, 40) boolean array."""
    table = pd.read_csv(path, sep=r"\s+", skiprows=1, header=0)
    if list(table.columns) != list(ATTRIBUTES):
        raise SystemExit(f"{path}: header does not list the 40 CelebA attributes in order")
    return table.to_numpy() > 0


def tetrachoric(p_a: float, p_b: float, p_ab: float) -> float:
    """Return the latent normal correlation whose thresholds give P(A), P(B) and P(A and B)."""
    t_a, t_b = stats.norm.ppf(p_a), stats.norm.ppf(p_b)

    def gap(rho: float) -> float:
        # P(Z_a < t_a, Z_b < t_b) equals P(A and B) when A is "Z_a < t_a".
        cov = [[1.0, rho], [rho, 1.0]]
        return stats.multivariate_normal.cdf([t_a, t_b], cov=cov) - p_ab

    return optimize.brentq(gap, -0.999, 0.999, xtol=1e-5)


def nearest_correlation(matrix: np.ndarray, floor: float = 1e-3) -> np.ndarray:
    """Clip negative eigenvalues and rescale to a unit diagonal, so the copula can be sampled."""
    values, vectors = np.linalg.eigh(matrix)
    fixed = vectors @ np.diag(np.maximum(values, floor)) @ vectors.T
    scale = np.sqrt(np.diag(fixed))
    return fixed / np.outer(scale, scale)


def derive(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the positive rates and the positive-definite latent correlation matrix."""
    rates = labels.mean(axis=0)
    joint = (labels.T.astype(np.float64) @ labels) / len(labels)
    k = labels.shape[1]
    corr = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            corr[i, j] = corr[j, i] = tetrachoric(rates[i], rates[j], joint[i, j])
    return rates, nearest_correlation(corr)


def main() -> None:
    """Derive the statistics and write them atomically into celebalib/resources/."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.environ.get("CELEBA_ROOT")
    parser.add_argument("--attr", type=Path, default=Path(root) / "list_attr_celeba.txt" if root else None,
                        required=not root, help="list_attr_celeba.txt (default: the one in CELEBA_ROOT)")
    args = parser.parse_args()
    labels = read_labels(args.attr)
    rates, corr = derive(labels)
    rate_table = pd.DataFrame({"attribute": ATTRIBUTES, "positive_rate": rates.round(6)})
    with atomic_path(RESOURCES / "label_rates.csv") as tmp:
        rate_table.to_csv(tmp, index=False, lineterminator="\n")
    with atomic_path(RESOURCES / "label_correlation.csv") as tmp:
        pd.DataFrame(corr.round(6), index=ATTRIBUTES, columns=ATTRIBUTES).to_csv(tmp, lineterminator="\n")
    print(f"derived from {len(labels)} rows of {args.attr}: wrote {RESOURCES}/label_rates.csv "
          f"and label_correlation.csv")


if __name__ == "__main__":
    main()
