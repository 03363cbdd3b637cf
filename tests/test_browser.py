"""The retrieval app in a real browser: ``python -m celebalib app`` serves it on loopback, Chromium drives it.

Needs Debian's Chromium (``sudo apt-get install chromium`` or ``make browser``) or a
Chromium named by ``CELEBALIB_CHROMIUM``; without one the test skips, except under
``CI=true`` where it fails. ``CELEBALIB_UPDATE_SCREENSHOT=1`` also copies the screenshot
(synthetic faces only) to ``docs/images/retrieval_widget.png`` for the README.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from celebalib import app

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


def folder_digest(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``, by relative path (names and contents)."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}


def read_url(process: subprocess.Popen, timeout: float = 120.0) -> str:
    """Read the app's stdout until it prints the URL it serves at."""
    found: list[str] = []

    def reader() -> None:
        for line in process.stdout:
            if match := re.search(r"http://127\.0\.0\.1:\d+/", line):
                found.append(match.group(0))
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    if not found:
        pytest.fail(f"the app printed no URL within {timeout:.0f} s (exit status {process.poll()})")
    return found[0]


@pytest.fixture
def served_app(tmp_path: Path, tiny_index, tiny_run) -> Iterator[str]:
    """``python -m celebalib app`` over the tiny run and its index on a free port; yield its URL.

    Afterwards the run folder must be byte-identical: the app only reads it.
    """
    pytest.importorskip("voila")
    index = tiny_index.save(tmp_path / "gallery.npz")
    run_dir = Path(tiny_run.path)
    before = folder_digest(run_dir)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "celebalib", "app", "--run", str(run_dir), "--index", str(index),
               "--port", str(port), "-k", str(K)]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        url = read_url(process)
        assert url == f"http://127.0.0.1:{port}/"
        yield url
    finally:
        app.stop(process)
    assert not port_open(port), f"port {port} still open after stopping the app"
    assert folder_digest(run_dir) == before, "the app changed the run folder"


@pytest.fixture
def chromium() -> str:
    """The Chromium to drive (looked up before Voila starts, so a skip costs nothing)."""
    pytest.importorskip("playwright.sync_api")
    return find_chromium()


def shown_ids(page) -> list[str]:
    """The image ids of the result grid, in rank order (each caption starts "#rank id")."""
    return [text.split()[1] for text in page.locator(".celebalib-result .widget-html").all_inner_texts()]


def test_changing_the_query_in_chromium_changes_the_results(
    chromium: str, served_app: str, tiny_index, tmp_path: Path
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
            page.goto(served_app, timeout=60_000)
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
