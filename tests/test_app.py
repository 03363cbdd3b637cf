"""The app command's checks and the explorer it serves, without a browser (test_browser.py has one)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from celebalib import app, cli
from celebalib.errors import RunError


def test_the_app_notebook_only_calls_the_explorer() -> None:
    notebook = json.loads(app.APP_NOTEBOOK.read_text(encoding="utf-8"))
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code == ["from celebalib import app\n\napp.explorer()"]
    assert not app.APP_NOTEBOOK.name[:2].isdigit(), "the course and demo globs take NN-*.ipynb"


def test_find_index_prefers_test_then_val(tmp_path: Path) -> None:
    with pytest.raises(RunError, match=r"celebalib index --run .* --split val"):
        app.find_index(tmp_path)
    (tmp_path / "index_val.npz").write_bytes(b"")
    assert app.find_index(tmp_path) == tmp_path / "index_val.npz"
    (tmp_path / "index_test.npz").write_bytes(b"")
    assert app.find_index(tmp_path) == tmp_path / "index_test.npz"
    with pytest.raises(RunError, match="index not found"):
        app.find_index(tmp_path, tmp_path / "other.npz")


def test_a_run_without_an_index_is_one_line_naming_the_command(
    tiny_run, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bare = tmp_path / "bare"
    shutil.copytree(tiny_run.path, bare, ignore=shutil.ignore_patterns("index_*.npz"))
    assert cli.main(["app", "--run", str(bare)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"python -m celebalib index --run {bare} --split val" in err


def test_an_index_of_another_run_is_refused(tiny_run, tiny_index, tmp_path: Path) -> None:
    other = tmp_path / "other"
    shutil.copytree(tiny_run.path, other)
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "run_id": "someone-else"}))
    index = tiny_index.save(tmp_path / "gallery.npz")
    with pytest.raises(RunError):
        app.check_app(other, index)


def test_explorer_shows_the_gallery_and_a_message_when_there_is_none(
    tiny_run, tiny_index, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tiny_index.save(tmp_path / "gallery.npz")
    monkeypatch.setenv(app.ENV_RUN, str(tiny_run.path))
    monkeypatch.setenv(app.ENV_INDEX, str(index))
    monkeypatch.setenv(app.ENV_K, "5")
    explorer = app.explorer()
    assert list(explorer.results["image_id"]) == list(tiny_index.query_id(tiny_index.image_ids[0], k=5)["image_id"])
    message = app.explorer(run_dir=tmp_path / "missing")
    assert "run folder not found" in message.value and "celebalib demo" in message.value


def test_voila_serves_only_on_loopback_at_the_chosen_port() -> None:
    command = app.voila_command(8123)
    assert str(app.APP_NOTEBOOK) in command
    assert "--port=8123" in command and "--Voila.ip=127.0.0.1" in command and "--no-browser" in command
