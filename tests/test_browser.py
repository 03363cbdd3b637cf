"""The retrieval app in a real browser: ``python -m celebalib app`` serves it on loopback, Chromium drives it.

Needs Debian's Chromium (``sudo apt-get install chromium`` or ``make browser``) or a
Chromium named by ``CELEBALIB_CHROMIUM``; without one the test skips, except under
``CI=true`` where it fails. Every run writes the explorer's screenshot (synthetic faces only) to
``build/screenshots/retrieval_widget.png``; ``CELEBALIB_UPDATE_SCREENSHOT=1`` also copies it to
``docs/images/retrieval_widget.png``, the README's picture, which is made this way and no other;
``CELEBALIB_SCREENSHOT_RUN=RUN`` serves that run (trained on the synthetic faces) instead of the
tiny one, whose two-epoch model ranks every face at about the same distance.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from celebalib import app, synthetic

pytestmark = pytest.mark.browser

PROJECT = Path(__file__).resolve().parents[1]
K = 6  # results shown by the served explorer
SCREENSHOT = PROJECT / "build" / "screenshots" / "retrieval_widget.png"  # written by every run
README_SCREENSHOT = PROJECT / "docs" / "images" / "retrieval_widget.png"  # with CELEBALIB_UPDATE_SCREENSHOT=1
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


@contextlib.contextmanager
def serving(tmp_path: Path, gallery, run, *options: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """``python -m celebalib app`` over a run and its index on a free port; yield its URL and process.

    Afterwards the port must be closed and the run folder byte-identical: the app only reads it.
    """
    pytest.importorskip("voila")
    index = gallery.save(tmp_path / "gallery.npz")
    run_dir = Path(run.path)
    before = folder_digest(run_dir)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "celebalib", "app", "--run", str(run_dir), "--index", str(index),
               "--port", str(port), "-k", str(K), *options]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        url = read_url(process)
        assert url == f"http://127.0.0.1:{port}/"
        yield url, process
    finally:
        app.stop(process)
    assert not port_open(port), f"port {port} still open after stopping the app"
    assert folder_digest(run_dir) == before, "the app changed the run folder"


@pytest.fixture
def pictured(request: pytest.FixtureRequest) -> tuple:
    """The run and index whose explorer is pictured: the tiny run's, or those of the run that
    ``CELEBALIB_SCREENSHOT_RUN`` names (a run trained on the synthetic faces, such as `make demo`'s)."""
    named = os.environ.get("CELEBALIB_SCREENSHOT_RUN")
    if not named:
        return request.getfixturevalue("tiny_run"), request.getfixturevalue("tiny_index")
    run, gallery, _ = app.open_app(Path(named).expanduser())
    return run, gallery


@pytest.fixture
def served_app(tmp_path: Path, pictured: tuple) -> Iterator[str]:
    """The app with its default settings over the pictured run; yield its URL."""
    run, gallery = pictured
    with serving(tmp_path, gallery, run) as (url, _):
        yield url


@pytest.fixture
def chromium() -> str:
    """The Chromium to drive (looked up before Voila starts, so a skip costs nothing)."""
    pytest.importorskip("playwright.sync_api")
    return find_chromium()


def shown_ids(page) -> list[str]:
    """The image ids of the result grid, in rank order (each caption starts "#rank id")."""
    return [text.split()[1] for text in page.locator(".celebalib-result .widget-html").all_inner_texts()]


def test_changing_the_query_in_chromium_changes_the_results(
    chromium: str, served_app: str, pictured: tuple, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    gallery = pictured[1]

    first = list(gallery.query_id(gallery.image_ids[0], k=K)["image_id"])
    # Another gallery image whose neighbours differ from the first's, so the grid must change.
    chosen, expected = next(
        (image_id, ids) for image_id in gallery.image_ids[1:]
        if (ids := list(gallery.query_id(image_id, k=K)["image_id"])) != first
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
    # The README's picture comes from here, so it shows the explorer as it is now, on synthetic faces only.
    roots = {Path(path).parents[1] for path in gallery.paths}  # ROOT/img_align_celeba/ID.jpg
    assert all((root / synthetic.MARKER).is_file() for root in roots), "only synthetic faces may be pictured"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(screenshot, SCREENSHOT)
    if os.environ.get("CELEBALIB_UPDATE_SCREENSHOT") == "1":
        README_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(screenshot, README_SCREENSHOT)

def kernels_of(process: subprocess.Popen) -> int:
    """How many Jupyter kernels run under the app's process."""
    import psutil  # installed with ipykernel, which the app extra requires

    count = 0
    for child in psutil.Process(process.pid).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            count += "ipykernel_launcher" in " ".join(child.cmdline())
    return count


def wait_for_kernels(process: subprocess.Popen, count: int, timeout: float, steady: float = 0.0) -> float:
    """Seconds until exactly ``count`` kernels run under the app and have for ``steady`` seconds;
    fails after ``timeout``."""
    start = since = time.monotonic()
    while (found := kernels_of(process)) != count or time.monotonic() - since < steady:
        if found != count:
            since = time.monotonic()
        if time.monotonic() - start > timeout:
            pytest.fail(f"{found} kernels alive {timeout:.0f} s later; expected {count} for {steady:.0f} s")
        time.sleep(0.25)
    return time.monotonic() - start


def fetch(url: str) -> tuple[int, str]:
    """GET a page as ``curl`` would (no websocket, so no page ever connects to its kernel): status and text."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def open_explorers(chromium: str, url: str, n: int, ready: asyncio.Event, leave: asyncio.Event
                         ) -> list[list[str]]:
    """Open ``n`` pages at once, one visitor each; once all show results set ``ready``, and close them on ``leave``."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
        try:
            pages = [await (await browser.new_context()).new_page() for _ in range(n)]
            await asyncio.gather(*(page.goto(url, timeout=90_000) for page in pages))
            captions = [page.locator(".celebalib-result .widget-html") for page in pages]
            await asyncio.gather(*(caption.nth(K - 1).wait_for(timeout=90_000) for caption in captions))
            shown = [[text.split()[1] for text in await caption.all_inner_texts()] for caption in captions]
            ready.set()
            await leave.wait()
            return shown
        finally:
            await browser.close()


def test_four_visitors_at_once_then_a_busy_page_and_their_kernels_end_when_they_leave(
    chromium: str, tiny_index, tiny_run, tmp_path: Path
) -> None:
    from celebalib.app_kernels import BUSY_MESSAGE

    idle = 10  # seconds, short for the test (the app's default is a minute), long enough for a page to connect
    expected = list(tiny_index.query_id(tiny_index.image_ids[0], k=K)["image_id"])
    with serving(tmp_path, tiny_index, tiny_run, "--max-visitors", "5", "--idle-timeout", str(idle),
                 "--pool", "0") as (url, process):
        assert kernels_of(process) == 0

        async def visitors_come_and_go() -> tuple[list[list[str]], tuple[int, str], int, tuple[int, str]]:
            ready, leave = asyncio.Event(), asyncio.Event()
            visitors = asyncio.create_task(open_explorers(chromium, url, 4, ready, leave))
            await asyncio.wait([visitors, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if visitors.done():
                return await visitors, (0, ""), 0, (0, "")  # a page failed: its exception is raised here
            # A fetch that never opens the page's websocket (a link preview, curl) takes the fifth place...
            plain = await asyncio.to_thread(fetch, url)
            alive = kernels_of(process)
            busy = await asyncio.to_thread(fetch, url)  # ...so a sixth visitor finds none
            leave.set()
            return await visitors, plain, alive, busy

        shown, plain, alive, (status, page) = asyncio.run(visitors_come_and_go())
        assert shown == [expected] * 4
        assert plain[0] == 200 and "application/vnd.jupyter.widget-view+json" in plain[1] and alive == 5
        assert status == 503 and BUSY_MESSAGE in page
        # Closed tabs and the fetch's kernel alike end within the idle timeout and a cull interval or two.
        wait_for_kernels(process, 0, timeout=idle + 2 * app.cull_interval(idle) + 5)


def test_with_a_pool_four_visitors_take_ready_kernels_and_the_pool_is_back_when_they_leave(
    chromium: str, tiny_index, tiny_run, tmp_path: Path
) -> None:
    from celebalib.app_kernels import BUSY_MESSAGE

    idle, pool, places = 10, 2, 4
    expected = list(tiny_index.query_id(tiny_index.image_ids[0], k=K)["image_id"])
    with serving(tmp_path, tiny_index, tiny_run, "--max-visitors", str(places), "--idle-timeout", str(idle),
                 "--pool", str(pool)) as (url, process):
        wait_for_kernels(process, pool, timeout=60)  # started before anyone visits

        async def visitors_come_and_go() -> tuple[list[list[str]], list[tuple[int, str]]]:
            ready, leave = asyncio.Event(), asyncio.Event()
            visitors = asyncio.create_task(open_explorers(chromium, url, places, ready, leave))
            await asyncio.wait([visitors, asyncio.create_task(ready.wait())], return_when=asyncio.FIRST_COMPLETED)
            if visitors.done():
                return await visitors, []  # a page failed: its exception is raised here
            # The refilled pool takes two more (fetches that never connect), then every place is taken.
            more = [await asyncio.to_thread(fetch, url) for _ in range(pool + 1)]
            leave.set()
            return await visitors, more

        shown, more = asyncio.run(visitors_come_and_go())
        assert shown == [expected] * places
        assert [status for status, _ in more] == [200] * pool + [503] and BUSY_MESSAGE in more[-1][1]
        # The visitors' kernels end; once they are quiet the pool is refilled (the count may dip below
        # the pool size meanwhile), and its kernels wait, unculled, for the next visitors.
        hold = idle + 2 * app.cull_interval(idle)
        wait_for_kernels(process, pool, timeout=idle + 3 * app.cull_interval(idle) + 60 + hold, steady=hold)
        status, page = fetch(url)
        assert status == 200 and "application/vnd.jupyter.widget-view+json" in page
