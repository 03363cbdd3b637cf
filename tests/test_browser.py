"""The retrieval explorer in a real browser: Voila serves it on loopback, Chromium drives it.

Needs Debian's Chromium (``sudo apt-get install chromium`` or ``make browser``) or a
Chromium named by ``CELEBALIB_CHROMIUM``; without one the test skips, except under
``CI=true`` where it fails. ``CELEBALIB_UPDATE_SCREENSHOT=1`` also copies the screenshot
(synthetic faces only) to ``docs/images/retrieval_widget.png`` for the README.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

PROJECT = Path(__file__).resolve().parents[1]
K = 6  # results shown by the served explorer
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-breakpad",
    "--disable-crash-reporter",
]


def find_chromium() -> str:
    """Return a Chromium executable, or skip (fail under CI=true) saying how to get one."""
    named = os.environ.get("CELEBALIB_CHROMIUM")
    if named and Path(named).is_file() and os.access(named, os.X_OK):
        return named
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found and not named:
        return found
    message = (
        f"CELEBALIB_CHROMIUM={named!r} is not an executable file" if named else
        "no Chromium found: install it with 'sudo apt-get install chromium' (or 'make browser'), "
        "or set CELEBALIB_CHROMIUM to a Chromium executable"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int) -> bool:
    """True when something accepts connections on the loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def write_notebook(path: Path, index_path: Path, run_path: Path) -> Path:
    """Write a notebook that loads the index and its run and shows the explorer."""
    sources = [
        "from celebalib.retrieval import GalleryIndex\nfrom celebalib.runs import open_run\n"
        "from celebalib.widgets import RetrievalExplorer",
        f"index = GalleryIndex.load({str(index_path)!r})\nrun = open_run({str(run_path)!r})",
        f"RetrievalExplorer(index, run, k={K}, thumbnail_size=80)",
    ]
    cells = [
        {"cell_type": "code", "id": f"cell-{i}", "execution_count": None, "metadata": {}, "outputs": [],
         "source": source}
        for i, source in enumerate(sources)
    ]
    notebook = {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook), encoding="utf-8")
    return path


def wait_until_serving(process: subprocess.Popen, port: int, log: Path, timeout: float = 60.0) -> None:
    """Poll a missing file until Voila answers 404 (``/`` would start a kernel).

    Serving one notebook, Voila redirects unknown paths to its file handler, which answers
    403 for names outside its allowlist; a missing ``.png`` gets a plain 404.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"voila exited with status {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/celebalib-ready-check.png", timeout=1)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"voila did not start within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """Stop Voila and its kernel: SIGTERM to the process group, SIGKILL after 15 s."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


@pytest.fixture
def voila_app(tmp_path: Path, saved_index: tuple[Path, Path]) -> Iterator[str]:
    """Serve the explorer notebook with Voila on a free loopback port; yield its URL."""
    pytest.importorskip("voila")
    notebook = write_notebook(tmp_path / "explorer.ipynb", *saved_index)
    port, log = free_port(), tmp_path / "voila.log"
    command = [sys.executable, "-m", "voila", notebook.name, "--no-browser", f"--port={port}", "--Voila.ip=127.0.0.1"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_serving(process, port, log)
        yield f"http://127.0.0.1:{port}/"
    finally:
        stop(process)
    assert not port_open(port), f"port {port} still open after stopping voila"


@pytest.fixture
def saved_index(tmp_path: Path, tiny_index, tiny_run) -> tuple[Path, Path]:
    """The tiny gallery index saved beside the notebook, and its run folder."""
    path = tmp_path / "gallery.npz"
    tiny_index.save(path)
    return path, Path(tiny_run.path)


@pytest.fixture
def chromium() -> str:
    """The Chromium to drive (looked up before Voila starts, so a skip costs nothing)."""
    pytest.importorskip("playwright.sync_api")
    return find_chromium()


def shown_ids(page) -> list[str]:
    """The image ids of the result grid, in rank order (each caption starts "#rank id")."""
    return [text.split()[1] for text in page.locator(".celebalib-result .widget-html").all_inner_texts()]


def test_changing_the_query_in_chromium_changes_the_results(
    chromium: str, voila_app: str, tiny_index, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    first = list(tiny_index.query_id(tiny_index.image_ids[0], k=K)["image_id"])
    # Another gallery image whose neighbours differ from the first's, so the grid must change.
    chosen, expected = next(
        (image_id, ids) for image_id in tiny_index.image_ids[1:]
        if (ids := list(tiny_index.query_id(image_id, k=K)["image_id"])) != first
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            page.goto(voila_app, timeout=60_000)
            captions = page.locator(".celebalib-result .widget-html")
            expect(captions.nth(K - 1)).to_contain_text(first[-1], timeout=60_000)
            assert shown_ids(page) == first
            page.locator(".celebalib-image-picker select").select_option(label=chosen)
            expect(page.locator(".celebalib-query-caption")).to_contain_text(chosen)
            expect(captions.nth(K - 1)).to_contain_text(expected[-1])
            expect(captions.first).to_contain_text(expected[0])
            assert shown_ids(page) == expected
            assert page.locator(".celebalib-result img").count() == K
            screenshot = tmp_path / "retrieval_widget.png"
            page.locator(".celebalib-retrieval").screenshot(path=str(screenshot))
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("CELEBALIB_UPDATE_SCREENSHOT") == "1":
        target = PROJECT / "docs" / "images" / "retrieval_widget.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, target)
