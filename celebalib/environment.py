"""The environment, read in one place: the variables celebalib answers to, and the machine.

Environment variables:
    CELEBA_ROOT: a real CelebA root in any supported layout; unset means the embedded
        synthetic dataset, generated on first use.
    CELEBALIB_FAST: ``1`` shrinks images, epochs and galleries for headless runs.
    CELEBALIB_HOME: where ``data/``, ``runs/`` and ``reports/`` live (default: the project root).
    CELEBALIB_IMAGE_SIZE, CELEBALIB_EPOCHS, CELEBALIB_BATCH_SIZE: override single training settings.
    CELEBALIB_RUN: the trained run notebooks 04 and 05 use (a run folder, a ``.zip`` bundle or an
        ``https://.../NAME.zip#sha256=HEX`` address); unset means the one notebook 03 trains.

Nothing here knows about recipes or datasets; :mod:`celebalib.config` builds the settings
every notebook shares on top of it.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from celebalib.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
# The single training settings the environment may override, by variable.
OVERRIDES = {"CELEBALIB_EPOCHS": "epochs", "CELEBALIB_IMAGE_SIZE": "image_size", "CELEBALIB_BATCH_SIZE": "batch_size"}


def _default_home() -> Path:
    """Return the project root for a source checkout, else a per-user cache folder."""
    checkout = PACKAGE_DIR.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout
    return Path.home() / ".cache" / "celebalib"


def project_home() -> Path:
    """Return where data/, runs/ and reports/ live: CELEBALIB_HOME, else the default."""
    return Path(os.environ.get("CELEBALIB_HOME") or _default_home()).expanduser().resolve()


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
class Environment:
    """What the environment variables say, checked."""

    fast: bool
    celeba_root: Path | None  # None: the synthetic set
    home: Path
    overrides: dict[str, int]  # training settings given by CELEBALIB_EPOCHS and the like
    run: str | None = None  # CELEBALIB_RUN, as given

    @property
    def data_dir(self) -> Path:
        """Where downloaded and generated datasets live."""
        return self.home / "data"

    @property
    def synthetic_size(self) -> int:
        """Faces in the synthetic set (fewer in fast mode)."""
        return 1200 if self.fast else 6000

    @property
    def synthetic_seed(self) -> int:
        """The seed the synthetic set is drawn with."""
        return 0

    @property
    def synthetic_dir(self) -> Path:
        """The folder the synthetic set is drawn into."""
        return self.data_dir / f"synthetic-{self.synthetic_size}"

    @property
    def data_root(self) -> Path:
        """CELEBA_ROOT, or the synthetic set's folder (which may not be drawn yet)."""
        return self.celeba_root if self.celeba_root is not None else self.synthetic_dir


def read_environment() -> Environment:
    """Read and check celebalib's environment variables."""
    root = os.environ.get("CELEBA_ROOT", "").strip()
    overrides = {field: _env_int(var, 1) for var, field in OVERRIDES.items() if os.environ.get(var, "").strip()}
    run = os.environ.get("CELEBALIB_RUN", "").strip() or None
    return Environment(fast=_env_flag("CELEBALIB_FAST"), celeba_root=Path(root).expanduser().resolve() if root else None,
                       home=project_home(), overrides=overrides, run=run)


def gpu_available() -> bool:
    """True when TensorFlow sees a GPU (imports TensorFlow, so only asked for real data)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))
