"""Tests for the shared foundations: settings (celebalib.config), errors and atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from celebalib import config, io
from celebalib.errors import CelebAFormatError, CelebalibError, ConfigError

ENV = ("CELEBA_ROOT", "CELEBALIB_FAST", "CELEBALIB_HOME", "CELEBALIB_IMAGE_SIZE", "CELEBALIB_EPOCHS",
       "CELEBALIB_BATCH_SIZE")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No settings from the environment, and a throwaway home."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CELEBALIB_HOME", str(tmp_path))
    return monkeypatch


def test_full_and_fast_defaults(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    full = config.get_settings()
    assert (full.fast, full.image_size, full.epochs, full.batch_size, full.gallery_limit) == (
        False, 64, 24, 32, None)
    assert full.synthetic_dir == tmp_path.resolve() / "data" / "synthetic-6000"
    clean_env.setenv("CELEBALIB_FAST", "1")
    fast = config.get_settings()
    assert (fast.fast, fast.image_size, fast.epochs, fast.batch_size, fast.gallery_limit) == (True, 64, 2, 32, 400)
    assert fast.synthetic_size < full.synthetic_size
    assert fast.synthetic_dir.name == f"synthetic-{fast.synthetic_size}"


def test_home_places_data_runs_and_reports(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    settings = config.get_settings()
    home = tmp_path.resolve()
    assert (settings.data_dir, settings.runs_dir, settings.reports_dir) == (
        home / "data", home / "runs", home / "reports")
    assert not settings.uses_real_data and settings.data_root == settings.synthetic_dir
    assert "synthetic" in settings.describe()
    clean_env.setenv("CELEBALIB_FAST", "1")  # fast runs go elsewhere, so they never replace a full one
    assert config.get_settings().runs_dir == home / "runs-fast"


def test_celeba_root_selects_real_data(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("CELEBA_ROOT", str(tmp_path / "celeba"))
    settings = config.get_settings()
    assert settings.uses_real_data and settings.data_root == tmp_path.resolve() / "celeba"
    assert "real CelebA" in settings.describe()
    # Real data takes the image size and batch of its recipe: celeba-gpu where a GPU is present, else celeba-cpu.
    from celebalib.recipes import RECIPES

    recipe = RECIPES["celeba-gpu" if config.gpu_available() else "celeba-cpu"]
    assert (settings.image_size, settings.batch_size) == (recipe.image_size, recipe.batch_size)


def test_whole_number_overrides(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CELEBALIB_IMAGE_SIZE", "128")
    clean_env.setenv("CELEBALIB_EPOCHS", " 3")
    clean_env.setenv("CELEBALIB_BATCH_SIZE", "")
    settings = config.get_settings()
    assert (settings.image_size, settings.epochs, settings.batch_size) == (128, 3, 32)


@pytest.mark.parametrize("value", ["big", "0", "-4", "1.5"])
def test_bad_override_is_a_config_error_naming_the_variable(clean_env: pytest.MonkeyPatch, value: str) -> None:
    clean_env.setenv("CELEBALIB_EPOCHS", value)
    with pytest.raises(ConfigError, match=f"CELEBALIB_EPOCHS={value!r}"):
        config.get_settings()


def test_seed_everything_repeats_random_draws() -> None:
    config.seed_everything(3)
    first = np.random.rand(4)
    config.seed_everything(3)
    np.testing.assert_array_equal(np.random.rand(4), first)


def test_format_error_names_file_and_line() -> None:
    error = CelebAFormatError("data/list_attr_celeba.txt", "expected -1 or 1", line=7)
    assert str(error) == "data/list_attr_celeba.txt:7: expected -1 or 1"
    assert str(CelebAFormatError("x.txt", "file not found")) == "x.txt: file not found"
    assert isinstance(error, ValueError) and isinstance(error, CelebalibError)


def test_atomic_write_replaces_whole_or_not_at_all(tmp_path: Path) -> None:
    target = tmp_path / "out" / "config.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


def test_atomic_write_gives_the_usual_file_mode(tmp_path: Path) -> None:
    import os

    umask = os.umask(0o022)
    try:
        io.write_text(tmp_path / "out.txt", "x")
    finally:
        os.umask(umask)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_write_leaves_the_process_umask_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    # os.umask sets the mask for every thread at once, so an atomic write must never call it.
    def refuse(mask: int) -> int:
        raise AssertionError(f"os.umask({mask:o}) called")

    monkeypatch.setattr(os, "umask", refuse)
    io.write_text(tmp_path / "a" / "best.keras", "x")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["best.keras"]


def test_display_path_is_relative_inside_the_home_only(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert config.display_path(tmp_path / "data" / "synthetic-6000") == str(Path("data") / "synthetic-6000")
    outside = tmp_path.parent / "elsewhere"
    assert config.display_path(outside) == str(outside.resolve())
