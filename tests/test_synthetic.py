"""The embedded synthetic dataset: format, determinism, label statistics and visual cues."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from celebalib import synthetic
from celebalib.attributes import ATTRIBUTE_INDEX, ATTRIBUTES
from celebalib.errors import ConfigError


@pytest.fixture(scope="module")
def plan() -> synthetic.Plan:
    """Labels, identities and splits of 3,000 faces, without drawing them."""
    return synthetic.make_plan(3000, seed=1)


def _column(labels: np.ndarray, name: str) -> np.ndarray:
    return labels[:, ATTRIBUTE_INDEX[name]].astype(bool)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path: Path) -> None:
    one = synthetic.generate(tmp_path / "one", 24, seed=5, workers=1, progress=False)
    two = synthetic.generate(tmp_path / "two", 24, seed=5, workers=2, progress=False)
    other = synthetic.generate(tmp_path / "other", 24, seed=6, workers=1, progress=False)
    assert len(_files(one)) == 24 + 4
    assert _files(one) == _files(two)
    assert _files(one)["img_align_celeba/000001.jpg"] != _files(other)["img_align_celeba/000001.jpg"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left


def test_root_passes_strict_loading(synthetic_root: Path) -> None:
    from celebalib.data import load_celeba

    table = load_celeba(synthetic_root, strict=True)
    assert len(table) == 240 and table.attrs["missing_images"] == 0
    # Contiguous train, val, test blocks of about 80/10/10, and no person in two splits.
    assert list(dict.fromkeys(table["split"])) == ["train", "val", "test"]
    assert abs((table["split"] == "train").mean() - 0.8) < 0.05
    assert table.groupby("identity")["split"].nunique().max() == 1
    with __import__("PIL.Image").Image.open(table["path"].iloc[0]) as image:
        assert (image.size, image.mode, image.format) == ((178, 218), "RGB", "JPEG")


def test_attribute_file_uses_the_official_spacing(synthetic_root: Path) -> None:
    lines = (synthetic_root / "list_attr_celeba.txt").read_text().splitlines()
    assert lines[0] == "240" and lines[1].split() == list(ATTRIBUTES)
    row = re.compile(r"^\d{6}\.jpg( (-1| 1)){40}$")
    assert all(row.match(line) for line in lines[2:]) and len(lines) == 242


def test_label_rates_follow_celeba(plan: synthetic.Plan) -> None:
    target = synthetic.load_label_model().rates
    rates = plan.labels.mean(axis=0)
    assert np.abs(rates - target).max() < 0.05
    assert np.abs(rates - target).mean() < 0.015


def test_labels_keep_celeba_co_occurrences(plan: synthetic.Plan) -> None:
    labels = plan.labels
    male, lipstick = _column(labels, "Male"), _column(labels, "Wearing_Lipstick")
    smiling, cheekbones = _column(labels, "Smiling"), _column(labels, "High_Cheekbones")
    assert lipstick[~male].mean() > 0.6 and lipstick[male].mean() == 0
    # Smiling and High_Cheekbones go together in CelebA (latent correlation about 0.8).
    assert cheekbones[smiling].mean() > 2 * cheekbones[~smiling].mean()


def test_logical_rules_hold_on_every_row(plan: synthetic.Plan) -> None:
    labels = plan.labels
    male, bald = _column(labels, "Male"), _column(labels, "Bald")
    beard = np.column_stack([_column(labels, n) for n in synthetic.BEARDS]).any(axis=1)
    assert not (beard & ~male).any() and not (beard & _column(labels, "No_Beard")).any()
    assert _column(labels, "No_Beard")[~male].all()
    assert not (male & (_column(labels, "Heavy_Makeup") | _column(labels, "Wearing_Lipstick"))).any()
    hair = np.column_stack([_column(labels, n) for n in synthetic.HAIR_COLOURS])
    assert hair.sum(axis=1).max() == 1
    for name in (*synthetic.HAIR_COLOURS, "Bangs", "Straight_Hair", "Wavy_Hair"):
        assert not (bald & _column(labels, name)).any(), name
    assert not (_column(labels, "Straight_Hair") & _column(labels, "Wavy_Hair")).any()


def test_identities_keep_their_stable_attributes(plan: synthetic.Plan) -> None:
    stable = [ATTRIBUTE_INDEX[n] for n in synthetic.STABLE]
    varying = [ATTRIBUTE_INDEX[n] for n in ("Smiling", "Eyeglasses", "Mouth_Slightly_Open")]
    sizes = np.bincount(plan.identity)
    assert sizes.min() >= 1 and 2 <= sizes.mean() <= 6
    for person in range(50):
        rows = plan.labels[plan.identity == person]
        assert (rows[:, stable] == rows[0, stable]).all()
    changes = [len(np.unique(plan.labels[plan.identity == p][:, varying], axis=0)) > 1 for p in range(200)]
    assert np.mean(changes) > 0.3


def _plain_labels() -> np.ndarray:
    """A young, beardless woman with no accessories: the base for switching one cue."""
    labels = np.zeros(len(ATTRIBUTES), dtype=np.int8)
    for name in ("Young", "No_Beard", "Brown_Hair", "Straight_Hair"):
        labels[ATTRIBUTE_INDEX[name]] = 1
    return labels


@pytest.mark.parametrize(("name", "rows", "cols"), [
    ("Eyeglasses", (75, 130), (0, 178)),
    ("Wearing_Hat", (0, 100), (0, 178)),
    ("Smiling", (120, 165), (45, 135)),
    ("Wearing_Necktie", (160, 218), (40, 140)),
    ("Narrow_Eyes", (80, 125), (40, 140)),
    ("Bangs", (40, 105), (30, 150)),
])
def test_switching_one_attribute_changes_its_region(name: str, rows: tuple, cols: tuple) -> None:
    base = _plain_labels()
    switched = base.copy()
    switched[ATTRIBUTE_INDEX[name]] = 1
    before = np.asarray(synthetic.render_face(base, identity=3, index=7), dtype=np.float64)
    after = np.asarray(synthetic.render_face(switched, identity=3, index=7), dtype=np.float64)
    change = np.abs(after - before).sum(axis=2)
    inside = change[rows[0]:rows[1], cols[0]:cols[1]].sum()
    assert change.sum() > 5000  # the cue is drawn at all
    assert inside / change.sum() > 0.9


def test_ensure_generated_reuses_a_finished_set(synthetic_root: Path) -> None:
    first = synthetic_root / "img_align_celeba" / "000001.jpg"
    stamp = first.stat().st_mtime_ns
    assert synthetic.ensure_generated(synthetic_root, 240, seed=0, progress=False) == synthetic_root
    assert first.stat().st_mtime_ns == stamp
    assert not synthetic.is_generated(synthetic_root, 241, seed=0)
    assert not synthetic.is_generated(synthetic_root, 240, seed=1)


def test_refuses_to_overwrite_a_foreign_folder_or_tiny_sizes(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a synthetic dataset"):
        synthetic.generate(tmp_path / "mine", 24, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ConfigError, match="at least"):
        synthetic.generate(tmp_path / "tiny", 3, progress=False)


def test_synth_command_writes_a_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from celebalib.cli import main

    assert main(["synth", "--out", str(tmp_path / "s"), "--n", "20", "--seed", "2", "--quiet"]) == 0
    assert "20 synthetic faces" in capsys.readouterr().out
    assert synthetic.is_generated(tmp_path / "s", 20, seed=2)
    assert main(["synth", "--out", str(tmp_path / "t"), "--n", "2"]) == 1


def _derive_script():
    """Import scripts/derive_label_stats.py, which is a tool rather than part of the package."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "scripts" / "derive_label_stats.py"
    spec = importlib.util.spec_from_file_location("derive_label_stats", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_statistics_form_a_valid_correlation_model() -> None:
    model = synthetic.load_label_model()
    corr = model.correlation
    assert corr.shape == (40, 40) and np.allclose(corr, corr.T) and np.allclose(np.diag(corr), 1)
    assert np.linalg.eigvalsh(corr).min() > 0
    assert ((model.rates > 0) & (model.rates < 1)).all()
    at = ATTRIBUTE_INDEX
    assert corr[at["Male"], at["Wearing_Lipstick"]] < -0.8
    assert corr[at["Smiling"], at["High_Cheekbones"]] > 0.6


def test_tetrachoric_recovers_a_known_latent_correlation() -> None:
    rng = np.random.default_rng(0)
    z = rng.multivariate_normal([0, 0], [[1, 0.6], [0.6, 1]], size=50_000)
    a, b = z[:, 0] < -0.5, z[:, 1] < 0.8
    estimate = _derive_script().tetrachoric(a.mean(), b.mean(), (a & b).mean())
    assert abs(estimate - 0.6) < 0.03


@pytest.mark.celeba
def test_committed_rates_are_those_of_the_genuine_file(celeba_shared: Path) -> None:
    labels = _derive_script().read_labels(celeba_shared / "list_attr_celeba.txt")
    assert labels.shape == (202_599, 40)
    assert np.abs(labels.mean(axis=0) - synthetic.load_label_model().rates).max() < 1e-5
