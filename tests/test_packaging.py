"""environment.yml mirrors pyproject.toml: the same packages with the same version bounds."""

from __future__ import annotations

from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there.
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    """The parsed pyproject.toml."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(lines: list[str]) -> dict[str, SpecifierSet]:
    """Map normalised package names to their version bounds."""
    parsed = [Requirement(line) for line in lines]
    return {req.name.lower().replace("_", "-"): req.specifier for req in parsed}


def _environment_pip_lines() -> list[str]:
    """The entries of environment.yml's pip section, except the editable install."""
    lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    indent = len(lines[start + 1]) - len(lines[start + 1].lstrip())
    entries = []
    for line in lines[start + 1:]:
        if not line.strip() or len(line) - len(line.lstrip()) < indent:
            break
        entry = line.strip().removeprefix("- ").split(" #")[0].strip()
        if entry != "-e .":
            entries.append(entry)
    return entries


def _pyproject_lines() -> list[str]:
    """Runtime dependencies plus the test extra (what environment.yml installs)."""
    project = _pyproject()["project"]
    return project["dependencies"] + project["optional-dependencies"]["test"]


def test_environment_yml_names_the_same_packages_and_bounds() -> None:
    assert _requirements(_environment_pip_lines()) == _requirements(_pyproject_lines())


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    for name, spec in _requirements(_pyproject_lines()).items():
        operators = {s.operator for s in spec}
        assert operators & {">=", ">", "~=", "=="}, f"{name} has no lower bound"
        assert operators & {"<", "<=", "~=", "=="}, f"{name} has no upper bound"


def test_python_floor_agrees() -> None:
    conda_lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    python = next(line.strip()[2:] for line in conda_lines if line.strip().startswith("- python"))
    candidates = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")
    conda = SpecifierSet(python.removeprefix("python"))
    project = SpecifierSet(_pyproject()["project"]["requires-python"])
    assert next(v for v in candidates if v in conda) == next(v for v in candidates if v in project)


def test_console_script_points_at_the_cli() -> None:
    assert _pyproject()["project"]["scripts"]["celebalib"] == "celebalib.cli:main"
