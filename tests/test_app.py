"""The app command's checks and the explorer it serves, without a browser (test_browser.py has one)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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


def voila_settings(command: list[str]):
    """The traitlets configuration that Voila reads from ``command``'s options."""
    from traitlets.config.loader import KVArgParseConfigLoader

    return KVArgParseConfigLoader([arg for arg in command if arg.startswith("--") and "=" in arg]).load_config()


def test_voila_culls_and_bounds_kernels_with_its_own_settings() -> None:
    pytest.importorskip("voila")
    from voila.configuration import VoilaConfiguration

    from celebalib.app_kernels import VisitorKernelManager

    config = voila_settings(app.voila_command(8123, max_visitors=3, idle_timeout=20, pool=0))
    voila = VoilaConfiguration(config=config)
    assert voila.multi_kernel_manager_class is VisitorKernelManager
    # The names are real traits of the class Voila instantiates: a typo would leave the defaults.
    kernels = VisitorKernelManager(config=config)
    assert kernels.max_kernels == 3
    assert kernels.cull_idle_timeout == 20 and kernels.cull_interval == app.cull_interval(20) == 6
    assert not kernels.cull_connected and not kernels.cull_busy  # an open page keeps its kernel
    defaults = VisitorKernelManager(config=voila_settings(app.voila_command(8123)))
    assert (defaults.max_kernels, defaults.cull_idle_timeout) == (app.DEFAULT_MAX_VISITORS + app.DEFAULT_POOL,
                                                                  app.DEFAULT_IDLE_TIMEOUT)
    assert [app.cull_interval(t) for t in (1, 5, 30, 600)] == [1, 1, 10, 10]
    # A page waits for its notebook's outputs longer than nbclient's 4 s, which a crowd of visitors exceeds.
    import nbformat
    from voila.execute import VoilaExecutor

    assert VoilaExecutor(nbformat.v4.new_notebook(), config=config).iopub_timeout == app.IOPUB_TIMEOUT > 4


def test_kernels_beyond_the_bound_are_refused_even_when_requested_together() -> None:
    pytest.importorskip("voila")
    from tornado.web import HTTPError

    from celebalib.app_kernels import BUSY_MESSAGE, VisitorKernelManager

    async def start_three() -> tuple[list, int]:
        kernels = VisitorKernelManager(max_kernels=2)
        try:
            outcomes = await asyncio.gather(*(kernels.start_kernel() for _ in range(3)), return_exceptions=True)
            return outcomes, len(kernels.list_kernel_ids())
        finally:
            await kernels.shutdown_all(now=True)

    outcomes, alive = asyncio.run(start_three())
    refused = [outcome for outcome in outcomes if isinstance(outcome, HTTPError)]
    assert alive == 2 and len(refused) == 1
    assert refused[0].status_code == 503 and refused[0].reason == BUSY_MESSAGE


@pytest.mark.parametrize(("option", "value"), [("--max-visitors", "0"), ("--idle-timeout", "0"), ("-k", "0")])
def test_bad_app_options_are_one_line(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["app", option, value]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{option} {value}: expected at least 1" in err


def test_a_negative_pool_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["app", "--pool", "-1"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--pool -1: expected at least 0" in err


def test_the_pool_is_voilas_preheated_kernels_beside_the_visitors_places() -> None:
    pytest.importorskip("voila")
    from voila.configuration import VoilaConfiguration

    from celebalib.app_kernels import VisitorKernelManager

    config = voila_settings(app.voila_command(8123, max_visitors=5, pool=3))
    voila = VoilaConfiguration(config=config)
    assert voila.preheat_kernel and voila.default_pool_size == 3
    # Voila refills the pool before a visitor comes: its kernels get places of their own.
    assert VisitorKernelManager(config=config).max_kernels == 5 + 3
    assert not VoilaConfiguration(config=voila_settings(app.voila_command(8123, pool=0))).preheat_kernel
    assert app.voila_command(8123) == app.voila_command(8123, pool=app.DEFAULT_POOL)


def test_a_kernel_is_culled_only_a_full_timeout_after_the_culler_first_sees_it() -> None:
    """A pooled kernel ran its notebook long before a visitor takes it: its page still gets time to connect."""
    pytest.importorskip("voila")
    from datetime import datetime, timedelta, timezone

    from celebalib.app_kernels import VisitorKernelManager

    async def cull_twice() -> tuple[bool, bool]:
        kernels = VisitorKernelManager(cull_idle_timeout=1)
        try:
            kernel_id = await kernels.start_kernel()
            kernel = kernels.get_kernel(kernel_id)
            kernel.last_activity = datetime.now(timezone.utc) - timedelta(hours=1)  # ran its notebook long ago
            await kernels.cull_kernel_if_idle(kernel_id)
            kept = kernel_id in kernels
            await asyncio.sleep(1.2)
            kernel.last_activity = datetime.now(timezone.utc) - timedelta(hours=1)  # its start-up messages moved it
            await kernels.cull_kernel_if_idle(kernel_id)
            return kept, kernel_id in kernels
        finally:
            await kernels.shutdown_all(now=True)

    assert asyncio.run(cull_twice()) == (True, False)


def test_the_served_explorer_loads_neither_tensorflow_nor_the_pooled_features(tiny_run, tiny_index,
                                                                             tmp_path: Path) -> None:
    """What every visit pays for: TensorFlow waits for an upload, and the features stay on disk."""
    index = tiny_index.save(tmp_path / "gallery.npz")  # the tiny index has no features: add some
    with_features = tmp_path / "with_features.npz"
    arrays = dict(np.load(index))
    arrays["features"] = np.ones((len(tiny_index), 16), dtype=np.float32)
    np.savez(with_features, **arrays)
    code = ("import sys; from celebalib import app; e = app.explorer(sys.argv[1], sys.argv[2]); "
            "print(len(e.results), e.index.features is None, 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tiny_run.path), str(with_features)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == [str(app.DEFAULT_K), "True", "False", "False"]


def test_a_pool_refill_waits_for_quiet_unless_a_visitor_waits_for_it() -> None:
    """Voila's pool is a list of tasks, one per place; a visitor who finds none ready takes the first and waits."""
    pytest.importorskip("voila")
    from datetime import datetime, timezone

    from celebalib.app_kernels import PREHEAT_VARIABLE, VisitorKernelManager

    async def in_pool(kernels: VisitorKernelManager, work) -> asyncio.Task:
        task = asyncio.create_task(work)
        kernels._pools["app.ipynb"].append(task)  # what Voila's pooled subclass keeps
        return task

    async def scenes() -> dict[str, object]:
        kernels = VisitorKernelManager(refill_quiet=3.0, refill_max_wait=30)
        kernels._pools = {"app.ipynb": []}
        seen: dict[str, object] = {}
        try:
            first = await in_pool(kernels, kernels.wait_for_quiet())
            seen["first pool"] = await first  # no kernel alive yet: the app's first pool starts at once
            visitor = await kernels.start_kernel()
            asked = time.monotonic()
            refill = await in_pool(kernels, kernels.start_kernel(env={**os.environ, PREHEAT_VARIABLE: "True"}))
            await asyncio.sleep(1.5)
            seen["kernels while quiet is awaited"] = len(kernels.list_kernel_ids())
            await refill
            seen["refill after"] = time.monotonic() - asked
            seen["kernels after"] = len(kernels.list_kernel_ids())
            # A busy kernel (a notebook running, a page's request) holds a refill past the quiet time...
            kernels.refill_quiet = 0.2
            kernels.get_kernel(visitor).execution_state = "busy"
            held = await in_pool(kernels, kernels.wait_for_quiet())
            await asyncio.sleep(1.0)
            seen["held while busy"] = not held.done()
            kernels.get_kernel(visitor).execution_state = "idle"
            seen["held for"] = await held
            # ...and so does a kernel active a moment ago (a page's message), for the quiet time after it.
            kernels.refill_quiet = 1.0
            kernels.get_kernel(visitor).last_activity = datetime.now(timezone.utc)
            seen["after activity"] = await (await in_pool(kernels, kernels.wait_for_quiet()))
            # A refill a visitor takes starts at once, quiet or not.
            kernels.refill_quiet, kernels._last_asked = 3.0, time.monotonic()
            taken = await in_pool(kernels, kernels.wait_for_quiet())
            await asyncio.sleep(0.3)
            kernels._pools["app.ipynb"].remove(taken)
            seen["taken after"] = await taken
            # Never longer than refill_max_wait.
            kernels.refill_quiet, kernels.refill_max_wait, kernels._last_asked = 5.0, 1.0, time.monotonic()
            seen["capped at"] = await (await in_pool(kernels, kernels.wait_for_quiet()))
            # Stopping the app: a waiting refill gives up instead of starting a kernel.
            kernels.refill_max_wait, kernels._last_asked = 30.0, time.monotonic()
            stopped = await in_pool(kernels, kernels.wait_for_quiet())
            await asyncio.sleep(0.3)
        finally:
            await kernels.shutdown_all(now=True)
        seen["stopped"] = type((await asyncio.gather(stopped, return_exceptions=True))[0]).__name__
        return seen

    seen = asyncio.run(scenes())
    assert seen["first pool"] == 0.0
    assert seen["kernels while quiet is awaited"] == 1 and seen["kernels after"] == 2
    assert 3.0 <= seen["refill after"] < 10.0
    assert seen["held while busy"] and seen["held for"] >= 1.0
    assert 0.9 <= seen["after activity"] < 1.5
    assert 0.3 <= seen["taken after"] < 0.8
    assert 1.0 <= seen["capped at"] < 1.5
    assert seen["stopped"] == "RuntimeError"
