"""The README as a newcomer reads it: what each command takes is the measured table of
benchmarks/README.md, its result picture comes from a committed run summary, its links resolve,
no path of the maintainers' machine, a citation file, and about 1,600 words at most."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCHMARKS = ROOT / "benchmarks" / "README.md"
MAX_WORDS = 1_600
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _script(name: str):
    """scripts/<name>.py as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_the_benchmarks_table_of_what_each_command_takes() -> None:
    costs = _script("command_costs")
    shown = costs.split(README.read_text(encoding="utf-8"), README)[1]
    assert shown == costs.table(), "README's costs table is stale: python scripts/command_costs.py --write"
    for command in ("make demo", "make test", "make celeba-cpu", "predict"):
        assert f"| `{command}` |" in shown


def _unmeasured(text: str, path: Path) -> list[str]:
    """Figures of the costs block that appear nowhere else in ``text`` (the measured rows)."""
    head, block, tail = _script("command_costs").split(text, path)
    measured = set(NUMBER.findall(head + tail))
    return [figure for line in block.splitlines()[2:] for figure in NUMBER.findall(line) if figure not in measured]


def test_each_figure_of_the_costs_table_was_measured_in_a_row_of_benchmarks_readme() -> None:
    assert _unmeasured(BENCHMARKS.read_text(encoding="utf-8"), BENCHMARKS) == []


def test_an_unmeasured_figure_is_caught_and_the_copy_replaces_only_the_block(tmp_path: Path) -> None:
    costs = _script("command_costs")
    source, target = tmp_path / "bench.md", tmp_path / "README.md"
    source.write_text(f"{costs.START}\n| a | b |\n| - | - |\n| `make demo` | 5 min 31 s, 2.6 GiB |\n{costs.END}\n"
                      "| make demo, measured | 5 min 31 s |\n")
    assert _unmeasured(source.read_text(), source) == ["2.6"]
    target.write_text(f"intro\n{costs.START}\nold\n{costs.END}\noutro\n")
    costs.write(target, source)
    assert costs.split(target.read_text(), target)[1] == costs.table(source)
    assert target.read_text().startswith("intro\n") and target.read_text().endswith("outro\n")


def test_the_readme_stays_short() -> None:
    words = len(README.read_text(encoding="utf-8").split())
    assert words <= MAX_WORDS, f"README has {words} words; keep it to about {MAX_WORDS}"


def test_no_path_of_the_maintainers_machine_reaches_a_user() -> None:
    """User-facing text names real data by CELEBA_ROOT; only .ci/run knows where CI keeps it."""
    files = [README, ROOT / "Makefile", ROOT / "pyproject.toml", BENCHMARKS,
             ROOT / "environment.yml", ROOT / "data" / "README.md", *(ROOT / "notebooks").glob("*.ipynb"),
             *(ROOT / "docs").rglob("*.md"), *(ROOT / "docs").rglob("*.json"),
             *(ROOT / "celebalib").rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py")]
    for path in files:
        assert "shared/celeba" not in path.read_text(encoding="utf-8"), f"{path.relative_to(ROOT)} names ../shared/celeba"


def test_every_local_link_and_picture_of_the_readme_exists() -> None:
    for target in re.findall(r"\]\(([^)#\s]+)\)", README.read_text(encoding="utf-8")):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"README links {target}, which does not exist"


def test_the_result_picture_is_drawn_from_the_committed_real_data_summary() -> None:
    figure_script = _script("result_figure")
    result = figure_script.read_result(ROOT / "docs" / "results" / "celeba-cpu")
    assert result["split"] == "val" and result["n_images"] == 4_535
    table = figure_script.per_attribute(result)
    assert len(table) == 40 and table["balanced accuracy"].is_monotonic_decreasing
    rows = {row["attribute"]: row for row in result["per_attribute"]}
    assert table.loc["Male", "majority label"] == rows["Male"]["baseline"]
    assert table.loc["Male", "model, threshold 0.5"] == rows["Male"]["at_0.5"]["accuracy"]
    figure = figure_script.figure(result, "celeba-cpu")
    left, right = figure.axes[:2]
    assert [t.get_text() for t in left.get_yticklabels()] == list(table.index)
    assert "4,535 images" in figure._suptitle.get_text()
    picture = "docs/images/celeba_cpu_per_attribute.png"
    assert f"]({picture})" in README.read_text(encoding="utf-8")
    assert (ROOT / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_readme_cites_the_work_it_builds_on_and_states_the_licence_split() -> None:
    text = README.read_text(encoding="utf-8")
    references = text.split("## References", 1)[1].split("\n## ", 1)[0]
    for work in ("Deep Learning Face Attributes in the Wild", "MobileNetV2", "arXiv:1212.5701",
                 "Multitask Cascaded Convolutional Networks", "Grad-CAM"):
        assert work in references
    intended = " ".join(text.split("## Intended use", 1)[1].split("\n## ", 1)[0].split())
    assert "not for judging, screening or identifying people" in intended
    assert "MIT" in intended and "non-commercial" in intended and "trained on it" in intended


def test_citation_file_names_the_project_and_its_version() -> None:
    import yaml

    import celebalib

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["version"] == celebalib.__version__ and citation["license"] == "MIT"
    titles = [reference["title"] for reference in citation["references"]]
    assert "Deep Learning Face Attributes in the Wild" in titles and len(titles) == 5
    assert json.dumps(citation)  # plain data: strings, numbers, lists and mappings only


def test_the_result_pictures_caption_gives_the_runs_recorded_training_time() -> None:
    from celebalib import runs

    record = runs.load_record(ROOT / "docs" / "results" / "celeba-cpu" / "config.json")
    minutes = round(record.progress.seconds / 60)
    assert f"*The `celeba-cpu` model ({minutes} minutes of training" in README.read_text(encoding="utf-8")
