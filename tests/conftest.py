"""Shared fixtures: a small synthetic CelebA root, a tiny trained run, the genuine files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Keep TensorFlow quiet and small on 2-core machines; set before any test imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CELEBALIB_FAST", "1")

# Fixtures that train a model: every test that uses one, directly or through another fixture, is slow.
TRAINING_FIXTURES = ("tiny_run",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark slow every test that needs a trained fixture, so ``-m "not slow"`` leaves them out."""
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in TRAINING_FIXTURES):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def celeba_shared() -> Path:
    """The genuine CelebA files (flat layout) named by CELEBALIB_TEST_CELEBA, or a skip.

    ``make test`` sets it from CELEBA_ROOT, which it clears for the tests themselves so that
    they run on synthetic data.
    """
    named = os.environ.get("CELEBALIB_TEST_CELEBA", "").strip()
    if not named:
        pytest.skip("genuine CelebA not named: make test CELEBA_ROOT=/path/to/celeba runs these tests")
    root = Path(named)
    if not (root / "list_attr_celeba.txt").is_file():
        pytest.skip(f"genuine CelebA files not found at {root}")
    return root


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 240-face synthetic CelebA root (flat layout), generated once per session."""
    from celebalib import synthetic

    out = tmp_path_factory.mktemp("synthetic") / "celeba"
    synthetic.generate(out, n=240, seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def synthetic_table(synthetic_root: Path):
    """The loaded table of :func:`synthetic_root`."""
    from celebalib.data import load_celeba

    return load_celeba(synthetic_root)


@pytest.fixture(scope="session")
def tiny_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run trained for two short epochs at 32 px on the synthetic root, shared by tests."""
    from celebalib import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    return train.fit(
        out, data_root=synthetic_root, epochs=2, image_size=32, batch_size=32,
        alpha=0.35, optimizer="adam", learning_rate=1e-3, seed=0, progress=False,
        run_eagerly=True,  # tracing the training graph costs more than these 16 steps
    )


@pytest.fixture(scope="session")
def tiny_index(tiny_run, synthetic_table):
    """A gallery index of the synthetic test split predicted by :func:`tiny_run`."""
    from celebalib.retrieval import GalleryIndex

    return GalleryIndex.build(tiny_run, synthetic_table, "test", progress=False)
