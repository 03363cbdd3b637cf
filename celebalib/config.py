"""One place for paths and settings, with environment-variable overrides.

Every notebook, command and test reads its data location, image size, epochs and the
like from :func:`get_settings`, so the same code runs on a laptop, in CI and on a GPU box.
The environment variables are read by :mod:`celebalib.environment` (see there); the image
size, batch and epochs are those of the recipe the data would train with
(``recipes.default_config``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from celebalib import recipes
from celebalib.environment import PACKAGE_DIR, gpu_available, project_home, read_environment

__all__ = ["PACKAGE_DIR", "Settings", "display_path", "get_settings", "gpu_available", "project_home",
           "seed_everything"]


def display_path(path: str | Path) -> str:
    """Show a path relative to the project home when it lies inside it, else in full."""
    resolved = Path(path).expanduser().resolve()
    try:
        return str(resolved.relative_to(project_home()))
    except ValueError:
        return str(resolved)


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings every notebook and command shares."""

    fast: bool
    celeba_root: Path | None
    data_dir: Path
    runs_dir: Path
    reports_dir: Path
    synthetic_dir: Path
    synthetic_size: int
    synthetic_seed: int
    image_size: int
    batch_size: int
    epochs: int
    gallery_limit: int | None
    seed: int

    @property
    def data_root(self) -> Path:
        """The dataset root in use: CELEBA_ROOT, or the embedded synthetic set."""
        return self.celeba_root if self.celeba_root is not None else self.synthetic_dir

    @property
    def uses_real_data(self) -> bool:
        """True when the data root is real CelebA (``recipes.is_synthetic``, the one test)."""
        return not recipes.is_synthetic(self.data_root)

    def describe(self) -> str:
        """One line saying which data and mode are in use, for notebooks and logs."""
        source = f"real CelebA at {self.celeba_root}" if self.uses_real_data else (
            f"the embedded synthetic dataset ({self.synthetic_size} faces, seed {self.synthetic_seed})"
            if self.celeba_root is None else f"the synthetic faces at {self.celeba_root}"
        )
        mode = "fast mode" if self.fast else "full mode"
        return f"Data: {source}; {mode}, {self.image_size} px, {self.epochs} epochs, batch {self.batch_size}."


def get_settings() -> Settings:
    """Build the settings from defaults and environment variables."""
    env = read_environment()
    config = recipes.default_config(env)
    return Settings(
        fast=env.fast,
        celeba_root=env.celeba_root,
        data_dir=env.data_dir,
        runs_dir=env.home / ("runs-fast" if env.fast else "runs"),  # a fast run never replaces a full one
        reports_dir=env.home / "reports",
        synthetic_dir=env.synthetic_dir,
        synthetic_size=env.synthetic_size,
        synthetic_seed=env.synthetic_seed,
        image_size=config.image_size,
        batch_size=config.batch_size,
        epochs=config.epochs,
        gallery_limit=400 if env.fast else None,
        seed=0,
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow through Keras, so runs repeat."""
    import keras

    keras.utils.set_random_seed(seed)
