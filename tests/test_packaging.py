"""Packaging: the library's runtime set is lean and imported, the extras are complete, environment.yml
mirrors pyproject.toml, one Python range and one version source, an SPDX licence with its file."""

from __future__ import annotations

import ast
import re
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
        entry = line.strip().removeprefix("- ").split("#")[0].strip()
        if entry and entry != "-e .":
            entries.append(entry)
    return entries


def _extra(name: str) -> list[str]:
    """One extra's requirements, without its references to other extras (``celebalib[...]``)."""
    return [line for line in _pyproject()["project"]["optional-dependencies"][name]
            if Requirement(line).name != "celebalib"]


def _pyproject_lines() -> list[str]:
    """Runtime dependencies plus the course, app, export and test extras (what environment.yml installs)."""
    project = _pyproject()["project"]
    return project["dependencies"] + _extra("course") + _extra("app") + _extra("export") + _extra("test")


def test_environment_yml_names_the_same_packages_and_bounds() -> None:
    assert _requirements(_environment_pip_lines()) == _requirements(_pyproject_lines())


def test_every_dependency_has_a_lower_and_an_upper_bound() -> None:
    for name, spec in _requirements(_pyproject_lines()).items():
        operators = {s.operator for s in spec}
        assert operators & {">=", ">", "~=", "=="}, f"{name} has no lower bound"
        assert operators & {"<", "<=", "~=", "=="}, f"{name} has no upper bound"


PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14", "3.15")


def _supported(spec: SpecifierSet) -> list[str]:
    """The minor Pythons (of PYTHONS) a specifier admits."""
    return [v for v in PYTHONS if spec.contains(f"{v}.0")]


def test_one_python_range_in_pyproject_environment_yml_and_readme() -> None:
    project = _supported(SpecifierSet(_pyproject()["project"]["requires-python"]))
    conda_lines = (ROOT / "environment.yml").read_text(encoding="utf-8").splitlines()
    python = next(line.strip()[2:] for line in conda_lines if line.strip().startswith("- python"))
    assert _supported(SpecifierSet(python.removeprefix("python"))) == project
    stated = re.findall(r"Python (3\.\d+) to (3\.\d+)", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert stated == [(project[0], project[-1])], f"README states {stated}; pyproject admits {project}"
    classifiers = {c.rsplit(" :: ", 1)[1] for c in _pyproject()["project"]["classifiers"]
                   if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert sorted(classifiers, key=PYTHONS.index) == project


def test_the_python_range_has_an_upper_bound() -> None:
    assert _supported(SpecifierSet(_pyproject()["project"]["requires-python"]))[-1] != PYTHONS[-1]


IMPORT_NAMES = {"pillow": "PIL", "scikit-learn": "sklearn", "scikit-image": "skimage"}


def _imported(folder: Path) -> set[str]:
    """Top-level module names imported anywhere (module level or inside functions) under ``folder``."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def test_every_runtime_dependency_is_imported_by_the_library() -> None:
    imported = _imported(ROOT / "celebalib")
    for name in _requirements(_pyproject()["project"]["dependencies"]):
        assert IMPORT_NAMES.get(name, name.replace("-", "_")) in imported, f"{name} is declared but celebalib never imports it"


def test_install_hints_work_from_a_clone() -> None:
    """No hint to install celebalib from an index it is not on: extras come from the clone (pip install -e)."""
    for path in [*(ROOT / "celebalib").rglob("*.py"), ROOT / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"pip install[^\n]*?['\" ]celebalib(\[|['\" ]|$)", text, re.M), f"{path}: pip install celebalib"


def test_project_metadata_names_its_urls() -> None:
    urls = _pyproject()["project"]["urls"]
    assert {"Repository", "Dataset"} <= set(urls) and all(u.startswith("https://") for u in urls.values())


def test_console_script_points_at_the_cli() -> None:
    assert _pyproject()["project"]["scripts"]["celebalib"] == "celebalib.cli:main"


def test_the_library_itself_needs_no_notebook_server_app_or_test_tools() -> None:
    runtime = _requirements(_pyproject()["project"]["dependencies"])
    for tool in ("jupyterlab", "nbval", "nbconvert", "nbclient", "voila", "pytest", "playwright", "tensorboard",
                 "tf2onnx", "onnxruntime"):
        assert tool not in runtime, f"{tool} is a runtime dependency"
    assert {"tensorflow", "keras", "numpy", "pandas", "scikit-learn", "pillow", "ipywidgets"} <= set(runtime)


def test_each_extra_holds_what_its_commands_import() -> None:
    assert {"jupyterlab", "ipykernel", "nbconvert", "nbclient", "nbformat"} <= set(_requirements(_extra("course")))
    assert "voila" in _requirements(_extra("app"))
    assert {"tf2onnx", "onnx", "onnxruntime"} <= set(_requirements(_extra("export")))
    test = _pyproject()["project"]["optional-dependencies"]["test"]
    assert {"pytest", "nbval", "playwright"} <= set(_requirements(_extra("test")))
    included = next(Requirement(line) for line in test if Requirement(line).name == "celebalib")
    assert {"course", "app", "export"} <= included.extras


def test_the_version_has_one_source() -> None:
    import celebalib

    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "celebalib.__version__"}
    assert SpecifierSet(f"=={celebalib.__version__}").contains(celebalib.__version__)


def test_license_file_is_the_mit_license_pyproject_names() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License") and "Copyright (c) 2026 celebalib authors" in text
    project = _pyproject()["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert not any(c.startswith("License ::") for c in project["classifiers"]), "PEP 639: the expression replaces classifiers"
    # setuptools reads an SPDX expression and license-files from version 77 on.
    setuptools = next(Requirement(r) for r in _pyproject()["build-system"]["requires"] if Requirement(r).name == "setuptools")
    assert not setuptools.specifier.contains("76.9") and setuptools.specifier.contains("77.0")
