"""The model card (celebalib.model_card): its figures are those of the run's files, it names the
sensitive attributes and the licence, says so when the run saw only synthetic faces, and the
``card`` command refuses a folder without a record in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from celebalib.attributes import ATTRIBUTES
from celebalib.model_card import MARK, SENSITIVE, render_model_card

PROJECT = Path(__file__).resolve().parents[1]
RESULTS = PROJECT / "docs" / "results"


def section(card: str, title: str) -> str:
    """The text of the card's section headed ``title`` (## or ###), up to the next heading of any level."""
    start = next(i for i, line in enumerate(card.splitlines()) if line.lstrip("#").strip() == title)
    lines = card.splitlines()[start + 1:]
    end = next((i for i, line in enumerate(lines) if line.startswith("#")), len(lines))
    return "\n".join(lines[:end])


def table(text: str, first: str) -> dict[str, list[str]]:
    """The rows of the Markdown table whose header begins with ``first``: first cell -> the other cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first} |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        rows[cells[0].removesuffix(f" {MARK}")] = cells[1:]
    return rows


def three(value: float | None) -> str:
    """A figure as the card prints it (an attribute a split never shows has no ROC-AUC: "-")."""
    return "-" if value is None else f"{value:.3f}"


def assert_split_figures(card: str, report: dict) -> None:
    """The card's section of the report's split shows its means and every attribute's figures."""
    text = section(card, f"{report['split']} split: {report['n_images']:,} images")
    means = table(text, "mean over the 40 attributes")
    for block, label in (("at_0.5", "at threshold 0.5"), ("tuned", "at the tuned thresholds")):
        expected = report["means"][block]
        assert means[label] == [three(expected[k]) for k in ("accuracy", "baseline", "balanced_accuracy", "roc_auc")]
    rows = table(text, "attribute")
    assert list(rows) == list(ATTRIBUTES)
    for row in report["per_attribute"]:
        tuned = row["tuned"]
        assert rows[row["attribute"]] == [f"{100 * row['positive_rate']:.1f}%", three(row["baseline"]),
                                          three(row["roc_auc"]), three(tuned["accuracy"]),
                                          three(tuned["balanced_accuracy"]), three(tuned["threshold"])]
    weakest = min(report["per_attribute"], key=lambda row: row["tuned"]["balanced_accuracy"])
    lowest = three(weakest["tuned"]["balanced_accuracy"])
    assert f"Weakest by balanced accuracy: {weakest['attribute']} {lowest}" in text


def assert_cares_and_terms(card: str) -> None:
    """The card names the sensitive attributes, CelebA's label noise, the unfit uses and the licence."""
    care = section(card, "Attributes that need care")
    for name in ("Attractive", "Male", "Young", "Pale_Skin", "Chubby", "Big_Nose", "Heavy_Makeup"):
        assert f"| {name} |" in care
    assert "noisy" in care
    assert "judging, screening or identifying people" in section(card, "Not fit for").lower()
    licence = " ".join(section(card, "Licence").split())
    assert "non-commercial research" in licence
    assert "\n![" not in card and "data:image" not in card  # no picture, so no face


def test_the_card_of_the_committed_real_run_shows_its_files_figures() -> None:
    folder = RESULTS / "opt-adadelta"
    card = render_model_card(folder)
    report = json.loads((folder / "eval_val.json").read_text())
    assert_split_figures(card, report)
    rates = pd.read_csv(folder / "label_rates_train.csv", index_col="attribute")
    data = section(card, "Training data")
    assert f"Train split: {int(rates['images'].iloc[0]):,} images" in data and "Genuine CelebA" in data
    config = json.loads((folder / "config.json").read_text())
    assert f"each epoch drew {config['epoch_images']:,}" in data
    care = table(section(card, "Attributes that need care"), "attribute")
    assert care["Pale_Skin"][1] == f"{100 * rates.at['Pale_Skin', 'positive_rate']:.1f}%"
    retrieval = {row["ranking"]: row for row in json.loads((folder / "retrieval_val.json").read_text())["rankings"]}
    assert f"a share of {three(retrieval['predicted']['precision_at_k'])}" in card
    assert_cares_and_terms(card)
    licence = " ".join(section(card, "Licence").split())
    assert "This model was trained on CelebA" in licence and "bind the model" in licence
    assert "procedural" not in card and "synthetic" not in card.lower()


def test_the_card_of_the_synthetic_course_run_says_so_and_holds_its_test_figures() -> None:
    folder = RESULTS / "course"
    card = render_model_card(folder)
    assert_split_figures(card, json.loads((folder / "eval_test.json").read_text()))
    head = section(card, "Model card: course")
    assert "trained on procedural faces drawn by celebalib, not on photographs" in head
    assert "fit only for the course" in head
    assert_cares_and_terms(card)


@pytest.mark.parametrize("name", sorted(path.parent.name for path in RESULTS.glob("*/MODEL_CARD.md")))
def test_each_committed_card_is_what_its_files_give(name: str) -> None:
    committed = (RESULTS / name / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert committed == render_model_card(RESULTS / name), (
        f"docs/results/{name}/MODEL_CARD.md is stale: python -m celebalib card --run docs/results/{name}")


def test_the_card_of_a_tiny_synthetic_run_holds_both_splits(tiny_run, synthetic_table, tmp_path: Path) -> None:
    from celebalib import evaluate, model_card, runs

    # A copy: evaluating val stores tuned thresholds in the run, and tiny_run is shared.
    shutil.copytree(tiny_run.path, tmp_path / "run")
    run = runs.open_run(tmp_path / "run")
    for split in ("val", "test"):
        evaluate.write_evaluation(evaluate.evaluate_run(run, synthetic_table, split, progress=False), run.path)
        run = runs.open_run(run.path)
    written = model_card.write_model_card(run.path)
    assert written == run.files.model_card
    card = written.read_text(encoding="utf-8")
    for split in ("val", "test"):
        assert_split_figures(card, json.loads(run.files.evaluation(split).read_text()))
    train = int((synthetic_table["split"] == "train").sum())
    assert run.record.facts.images["train"] == train
    assert f"Train split: {train:,} images" in section(card, "Training data")
    assert "trained on procedural faces drawn by celebalib" in card and "fit only for the course" in card
    # The headline sentence speaks of the last split evaluated: test.
    assert f"On the test split ({json.loads(run.files.evaluation('test').read_text())['n_images']:,} images)" in card
    assert_cares_and_terms(card)


def test_a_run_not_yet_evaluated_gets_a_card_without_figures(tmp_path: Path) -> None:
    record = json.loads((RESULTS / "course" / "config.json").read_text())
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(record))
    card = render_model_card(tmp_path / "run")
    assert "Not evaluated yet" in card and "No evaluation is recorded" in card
    assert "| mean over the 40 attributes |" not in card


def test_the_sensitive_attributes_are_celeba_attributes() -> None:
    assert set(SENSITIVE) <= set(ATTRIBUTES)


def run_card(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "celebalib", "card", *argv], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=120)


def test_the_command_refuses_a_folder_without_a_record_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = run_card("--run", "empty", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("celebalib card: error: empty/config.json: not found")
    assert not (tmp_path / "empty" / "MODEL_CARD.md").exists()
    missing = run_card("--run", "nowhere", cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "nowhere: folder not found" in missing.stderr


def test_the_command_refuses_a_damaged_record_naming_the_line(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{\n  "run_id": \n}\n')
    done = run_card("--run", "run", "--out", "card.md", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "run/config.json:3: invalid JSON" in done.stderr
    assert not (tmp_path / "card.md").exists()


def test_the_command_writes_the_card_where_asked(tmp_path: Path) -> None:
    shutil.copytree(RESULTS / "course", tmp_path / "course")
    (tmp_path / "course" / "MODEL_CARD.md").unlink()
    done = run_card("--run", "course", "--out", "out/card.md", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "card.md").read_text() == render_model_card(tmp_path / "course")
    assert not (tmp_path / "course" / "MODEL_CARD.md").exists()
    default = run_card("--run", "course", cwd=tmp_path)
    assert default.returncode == 0 and (tmp_path / "course" / "MODEL_CARD.md").is_file()


def test_a_damaged_label_rates_file_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    from celebalib.errors import RunError

    shutil.copytree(RESULTS / "opt-adadelta", tmp_path / "run")
    (tmp_path / "run" / "label_rates_train.csv").write_text("attribute,positives\nBald,3\n")
    with pytest.raises(RunError, match=r"label_rates_train.csv: no column images, positive_rate"):
        render_model_card(tmp_path / "run")


def test_an_evaluation_report_without_its_figures_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    shutil.copytree(RESULTS / "course", tmp_path / "course")
    (tmp_path / "course" / "eval_test.json").write_text('{"split": "test"}\n')
    done = run_card("--run", "course", "--out", "card.md", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "course/eval_test.json: no n_images, means, per_attribute" in done.stderr
    assert not (tmp_path / "card.md").exists()
