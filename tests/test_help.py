"""Every command's ``--help`` reads right: flags show no default, a 0 default shows, and ``train``
shows what each recipe sets (the values its own recipe table lists), not TrainConfig's defaults.
The README's claims about which commands take an option agree with the help."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from celebalib import cli

ROOT = Path(__file__).resolve().parents[1]
APPENDED = re.compile(r"\(default: ([^()]*)\)$")


def _parser(command: str) -> argparse.ArgumentParser:
    """The command's own parser, as ``python -m celebalib COMMAND`` builds it."""
    top = cli.build_parser(command)
    subparsers = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[command]


def _help(command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    """``celebalib COMMAND --help`` as printed, one option per line (a wide terminal: no wrapping)."""
    monkeypatch.setenv("COLUMNS", "1000")
    assert cli.main([command, "--help"]) == 0
    return capsys.readouterr().out


def _entries(text: str) -> dict[str, str]:
    """Each option's help text, by its first option string (``--seed``); a long option string puts
    its text on the next line."""
    found: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        match = re.match(r"^  (-{1,2}[\w-]+)(?:[ ,][^ ].*?)?(?: {2,}(.*))?$", line)
        if match:
            current = match.group(1)
            found[current] = match.group(2) or ""
        elif current and line.startswith("   "):
            found[current] = f"{found[current]} {line.strip()}".strip()
        else:
            current = None
    return found


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_default_shown_is_the_real_one_and_flags_show_none(
        command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    entries = _entries(_help(command, monkeypatch, capsys))
    for action in _parser(command)._actions:
        if action.help == argparse.SUPPRESS or not action.option_strings or action.dest == "help":
            continue
        text = entries[action.option_strings[0]]
        appended = APPENDED.search(text)
        if action.nargs == 0:  # a flag: "--no-align ... (default: True)" would read as if it were on
            assert appended is None, f"{command} {action.option_strings[0]}: a flag shows a default: {text}"
        elif action.default is not None:
            assert "default" in text, f"{command} {action.option_strings[0]} hides its default {action.default!r}"
            if appended and "(default: " not in (action.help or ""):
                assert appended.group(1) == str(action.default), f"{command} {action.option_strings[0]}: {text}"


def test_a_zero_default_is_shown(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert _entries(_help("synth", monkeypatch, capsys))["--seed"].endswith("(default: 0)")


def _recipe_table(text: str) -> dict[str, dict[str, str]]:
    """The epilog's recipe lines, ``  NAME: key=value, ...``, as {recipe: {option: value}}."""
    table = {}
    for name, settings in re.findall(r"^  ([\w-]+): (\w+=.*)$", text, re.M):
        pairs = (item.split("=", 1) for item in settings.split(", "))
        table[name] = {f"--{k.replace('_', '-')}": {"True": "on", "False": "off"}.get(v, v) for k, v in pairs}
    return table


def test_train_shows_what_each_recipe_sets(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from celebalib.recipes import RECIPES

    text = _help("train", monkeypatch, capsys)
    assert "TrainConfig default" not in text
    entries, table = _entries(text), _recipe_table(text)
    assert set(table) == set(RECIPES) and table["celeba-cpu"]["--image-size"] == "96"
    for recipe, settings in table.items():
        for option, value in settings.items():
            assert f"{recipe} {value}" in entries[option], f"train {option}: {recipe} sets {value}: {entries[option]}"
    # Settings no recipe changes show one value; a zero reads as a number, never as "off".
    assert entries["--seed"].endswith("(every recipe: 0)")
    assert entries["--label-smoothing"].endswith("(every recipe: 0.0)")
    assert entries["--test-time-shift"].endswith("(course 0, celeba-cpu 3, celeba-gpu 0)")
    assert entries["--test-time-flip"].endswith("(course off, celeba-cpu on, celeba-gpu on)")


def _commands_with(option: str) -> set[str]:
    """The commands whose parser has ``option``."""
    return {name for name in cli.COMMANDS
            if any(option in action.option_strings for action in _parser(name)._actions)}


@pytest.mark.parametrize("option", ["--quiet", "--test-time-flip"])
def test_the_readme_names_the_commands_that_take_an_option(option: str) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    claim = re.search(rf"`{option}`[^(]*\(([^)]*)\)", readme)
    assert claim, f"README: no `{option}` (COMMAND, ...) line"
    named = {word.strip("` ") for word in re.split(r",|\band\b", claim.group(1)) if word.strip("` ")}
    assert named == _commands_with(option)
