"""One place for paths and settings, with environment-variable overrides.

Every notebook, command and test reads its data location, image size, epochs and the
like from :func:`get_settings`, so the same code runs on a laptop, in CI and on a GPU box.

Environment variables:
    CELEBA_ROOT: a real CelebA root in any supported layout; unset means the embedded
        synthetic dataset, generated on first use.
    CELEBALIB_FAST: ``1`` shrinks images, epochs and galleries for headless runs.
    CELEBALIB_HOME: where ``data/``, ``runs/`` and ``reports/`` live (default: the project root).
    CELEBALIB_IMAGE_SIZE, CELEBALIB_EPOCHS, CELEBALIB_BATCH_SIZE: override single settings.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from celebalib.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent


def _default_home() -> Path:
    """Return the project root for a source checkout, else a per-user cache folder."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.home() / ".cache" / "celebalib"


def project_home() -> Path:
    """Return where data/, runs/ and reports/ live: CELEBALIB_HOME, else the default."""
    return Path(os.environ.get("CELEBALIB_HOME") or _default_home()).expanduser().resolve()


def display_path(path: str | Path) -> str:
    """Show a path relative to the project home when it lies inside it, else in full."""
    resolved = Path(path).expanduser().resolve()
    try:
        return str(resolved.relative_to(project_home()))
    except ValueError:
        return str(resolved)


def _env_int(name: str, default: int) -> int:
    """Read a positive integer from the environment, with a clear error for anything else."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {name}={raw!r}: expected a whole number") from None
    if value <= 0:
        raise ConfigError(f"environment variable {name}={raw!r}: expected a positive number")
    return value


def _env_flag(name: str) -> bool:
    """Read a yes/no switch from the environment (1, true, yes, on mean yes)."""
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


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
    def uses_real_data(self) -> bool:
        """True when CELEBA_ROOT points at a real CelebA root."""
        return self.celeba_root is not None

    @property
    def data_root(self) -> Path:
        """The dataset root in use: CELEBA_ROOT, or the embedded synthetic set."""
        return self.celeba_root if self.celeba_root is not None else self.synthetic_dir

    def describe(self) -> str:
        """One line saying which data and mode are in use, for notebooks and logs."""
        source = f"real CelebA at {self.celeba_root}" if self.uses_real_data else (
            f"the embedded synthetic dataset ({self.synthetic_size} faces, seed {self.synthetic_seed})"
        )
        mode = "fast mode" if self.fast else "full mode"
        return f"Data: {source}; {mode}, {self.image_size} px, {self.epochs} epochs, batch {self.batch_size}."


def gpu_available() -> bool:
    """True when TensorFlow sees a GPU (imports TensorFlow, so only asked for real data)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def recipe_default(name: str, *, fast: bool, real_data: bool) -> int:
    """Setting ``name`` (image_size, batch_size or epochs) of the recipe the data would train with
    (``recipes.resolve_recipe``): ``course`` for the synthetic set, ``celeba-gpu`` for real
    CelebA where a GPU is present, else ``celeba-cpu``; shrunk in fast mode."""
    from celebalib.recipes import FAST_CHANGES, RECIPES

    recipe = "course" if not real_data else "celeba-gpu" if gpu_available() else "celeba-cpu"
    config = RECIPES[recipe].replace(**FAST_CHANGES[recipe]) if fast else RECIPES[recipe]
    return getattr(config, name)


def get_settings() -> Settings:
    """Build the settings from defaults and environment variables."""
    fast = _env_flag("CELEBALIB_FAST")
    root = os.environ.get("CELEBA_ROOT", "").strip()
    size_override = os.environ.get("CELEBALIB_IMAGE_SIZE", "").strip()
    batch_override = os.environ.get("CELEBALIB_BATCH_SIZE", "").strip()
    home = project_home()
    data_dir = home / "data"
    synthetic_size = 1200 if fast else 6000
    return Settings(
        fast=fast,
        celeba_root=Path(root).expanduser().resolve() if root else None,
        data_dir=data_dir,
        runs_dir=home / ("runs-fast" if fast else "runs"),  # a fast run never replaces a full one
        reports_dir=home / "reports",
        synthetic_dir=data_dir / f"synthetic-{synthetic_size}",
        synthetic_size=synthetic_size,
        synthetic_seed=0,
        image_size=_env_int("CELEBALIB_IMAGE_SIZE", 0) if size_override else recipe_default(
            "image_size", fast=fast, real_data=bool(root)),
        batch_size=_env_int("CELEBALIB_BATCH_SIZE", 0) if batch_override else recipe_default(
            "batch_size", fast=fast, real_data=bool(root)),
        epochs=_env_int("CELEBALIB_EPOCHS", recipe_default("epochs", fast=fast, real_data=bool(root))),
        gallery_limit=400 if fast else None,
        seed=0,
    )


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow through Keras, so runs repeat."""
    import keras

    keras.utils.set_random_seed(seed)
