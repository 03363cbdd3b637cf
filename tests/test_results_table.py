"""The README's results table agrees with the committed run summaries in docs/results/.

The README's block between ``<!-- results:start -->`` and ``<!-- results:end -->`` must be
what ``scripts/results_table.py`` prints for its ``README_RUNS`` in docs/results/, figure for figure within
TOLERANCE (so a hand-typed or stale figure fails), and the script must read run folders as
``celebalib evaluate`` and notebook 05 write them.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"
TOLERANCE = 0.0015  # figures are printed to 3 decimals; a re-rounded copy may differ by one in the last
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _script():
    """scripts/results_table.py as a module."""
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(text: str, path: Path) -> str:
    """The lines between the markers."""
    assert START in text and END in text, f"{path}: no {START} ... {END} block"
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def _numbers(text: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(text)]


def assert_same_figures(shown: str, expected: str) -> None:
    """Same words, same count of figures, each within TOLERANCE."""
    assert NUMBER.sub("#", shown) == NUMBER.sub("#", expected), "the table's text differs from the generated one"
    for got, want in zip(_numbers(shown), _numbers(expected), strict=True):
        assert abs(got - want) <= TOLERANCE, f"README shows {got}, the run files give {want}"


def readmes() -> list[Path]:
    """The READMEs that carry the results block (the draft README.new.md until it is renamed)."""
    return [p for p in (ROOT / "README.md", ROOT / "README.new.md") if p.is_file() and START in p.read_text()]


def test_a_readme_carries_the_results_block() -> None:
    assert readmes(), f"neither README.md nor README.new.md has a {START} block"


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: p.name)
def test_readme_results_match_the_committed_run_summaries(readme: Path) -> None:
    runs = [RESULTS / name for name in _script().README_RUNS]
    assert all(run.is_dir() for run in runs), f"{RESULTS}: a run of README_RUNS has no committed summaries"
    assert_same_figures(_block(readme.read_text(encoding="utf-8"), readme), _script().table(runs))


def _fake_run(folder: Path, accuracy: float) -> Path:
    """A run folder with the JSON files evaluate and notebook 05 write, two attributes only."""
    folder.mkdir(parents=True)
    means = {"accuracy": accuracy, "balanced_accuracy": 0.75, "roc_auc": 0.8125, "baseline": 0.5}
    per_attribute = [{"attribute": name, "tuned": {"balanced_accuracy": value}}
                     for name, value in (("Smiling", 0.9), ("Male", 0.6), ("Bald", 0.7), ("Young", 0.8))]
    (folder / "eval_val.json").write_text(json.dumps({"split": "val", "n_images": 1234, "means": {
        "at_0.5": means, "tuned": {**means, "accuracy": accuracy + 0.01}}, "per_attribute": per_attribute}))
    (folder / "retrieval_val.json").write_text(json.dumps({"rankings": [
        {"ranking": "predicted", "k": 10, "precision_at_k": 0.25, "same_person_at_k": 0.5},
        {"ranking": "random", "k": 10, "precision_at_k": 0.015, "same_person_at_k": 0.01}]}))
    (folder / "config.json").write_text(json.dumps({"data_root": "/data/synthetic-6000"}))
    (folder / "about.json").write_text(json.dumps({"hardware": "2 CPU cores", "command": "make demo"}))
    return folder


def test_the_script_reads_the_run_files(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "course", 0.8)
    text = _script().table([run])
    assert ("| `course` | synthetic (6,000 faces), val split, 1,234 images | 0.800 at 0.5, 0.810 tuned (0.500) | "
            "0.750 at 0.5, 0.750 tuned (0.500) | 0.812 | 0.250 (random 0.015) | 0.500 (random 0.010) | 2 CPU cores | "
            "`make demo` |") in text
    assert "best Smiling 0.900, Young 0.800, Bald 0.700; worst Male 0.600, Bald 0.700, Young 0.800." in text


def test_a_figure_off_by_more_than_the_tolerance_fails(tmp_path: Path) -> None:
    script = _script()
    expected = script.table([_fake_run(tmp_path / "a", 0.8)])
    assert_same_figures(expected.replace("0.800 at 0.5", "0.801 at 0.5"), expected)
    with pytest.raises(AssertionError, match="README shows 0.81"):
        assert_same_figures(expected.replace("0.800 at 0.5", "0.810 at 0.5"), expected)


def test_copies_keep_only_the_small_json_files(tmp_path: Path) -> None:
    run = _fake_run(tmp_path / "run", 0.8)
    (run / "model.keras").write_bytes(b"weights")
    copied = _script().copy_summaries(run, tmp_path / "copy")
    assert sorted(p.name for p in copied) == ["about.json", "config.json", "eval_val.json", "retrieval_val.json"]


def test_write_replaces_only_the_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{START}\nstale figures\n{END}\noutro\n")
    run = _fake_run(tmp_path / "course", 0.8)
    _script().main([str(run), "--write", str(readme)])
    text = readme.read_text()
    assert text.startswith("intro\n") and text.endswith("outro\n") and "stale" not in text
    assert_same_figures(_block(text, readme), _script().table([run]))


def test_the_results_log_gives_the_course_run_s_committed_figures() -> None:
    """docs/experiments/results-log.md's synthetic rows are the figures of docs/results/course."""
    log = (ROOT / "docs" / "experiments" / "results-log.md").read_text(encoding="utf-8")
    result = json.loads((RESULTS / "course" / "eval_test.json").read_text(encoding="utf-8"))
    at, tuned = result["means"]["at_0.5"], result["means"]["tuned"]
    assert (f"{at['accuracy']:.3f} at threshold 0.5, {tuned['accuracy']:.3f} at val-tuned thresholds; "
            f"majority baseline {at['baseline']:.3f}") in log
    assert (f"{at['balanced_accuracy']:.3f} at threshold 0.5, {tuned['balanced_accuracy']:.3f} at val-tuned thresholds "
            f"(baseline 0.500); mean ROC-AUC {at['roc_auc']:.3f}") in log
    rankings = json.loads((RESULTS / "course" / "retrieval_test.json").read_text(encoding="utf-8"))["rankings"]
    predicted = next(r for r in rankings if r["ranking"] == "predicted" and int(r["k"]) == 10)
    assert f"{predicted['precision_at_k']:.3f} on predicted probabilities" in log
    assert f"{predicted['same_person_at_k']:.3f} predicted" in log
