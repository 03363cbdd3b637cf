"""How much each attribute's labels agree across one person's train images (genuine CelebA).

For each attribute: the positive rate on the train split and the share of its label variance
that lies between identities (1 - pooled within-identity variance / total variance; the
within part divides the squared deviations from each identity's mean by images - identities).
1 means a person's photos always share the label; near 0, the label varies as much between one
person's photos as between people. Rows of unknown identity are left out; the val and test
splits are never read.

    python benchmarks/label_agreement.py [--data /path/to/celeba; default CELEBA_ROOT]
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path

import pandas as pd

from celebalib.attributes import ATTRIBUTES, PERSON_ATTRIBUTES
from celebalib.data import MissingImagesWarning, load_celeba, split_rows


def between_share(rows: pd.DataFrame) -> pd.DataFrame:
    """Positive rate and between-identity share of the label variance, per attribute."""
    labels = rows[list(ATTRIBUTES)].astype(float)
    identity = rows["identity"].to_numpy()
    deviations = labels - labels.groupby(identity).transform("mean")
    # Pooled within-identity variance: squared deviations over (images - identities).
    within = (deviations ** 2).sum() / (len(rows) - len(set(identity)))
    return pd.DataFrame({"positive_rate": labels.mean(), "between_share": 1 - within / labels.var()})


def main() -> None:
    """Print one row per attribute, the least person-consistent first."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=os.environ.get("CELEBA_ROOT") or None,
                        required=not os.environ.get("CELEBA_ROOT"), help="a CelebA root with identities (default: CELEBA_ROOT)")
    args = parser.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingImagesWarning)  # a partial root may hold a part of the images
        table = load_celeba(args.data)
    rows = split_rows(table, "train")
    rows = rows[rows["identity"] >= 0]
    print(f"train split: {len(rows):,} images of {rows['identity'].nunique():,} identities in {args.data}")
    shares = between_share(rows).sort_values("between_share")
    shares["person"] = ["yes" if name in PERSON_ATTRIBUTES else "" for name in shares.index]
    print(shares.to_string(float_format=lambda value: f"{value:.3f}"))


if __name__ == "__main__":
    main()
