"""What one visit to the app costs the visitor's browser, against the floor of any Voila page.

Serves the app's notebook, then a notebook that shows a single HTML widget (Voila's own page
and nothing more), each with a preheated pool large enough that no kernel starts while the
pages load, and opens them one after another in a running headless Chromium (one fresh
browser context per visit, as a new visitor). Prints, per notebook, the CPU seconds Chromium
used per visit and the seconds until the page was usable. On one machine, N visitors at once
cannot see the explorer sooner than N times the first figure divided by the cores.

    python benchmarks/bench_app_page.py --run RUN --visits 5
    python benchmarks/bench_app_page.py --run RUN -- --template=classic

Needs Chromium (``make browser``) and Playwright; the run needs an index (``celebalib index``).
Options after ``--`` go to Voila.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_app import K, browser_processes, cpu_seconds, free_port, running_browser, settle, used_since  # noqa: E402

from celebalib import app  # noqa: E402

ONE_WIDGET = """import ipywidgets
ipywidgets.HTML('<div class="celebalib-result">' + '<img alt="" width="96" height="96">' * {k} + '</div>')"""


def one_widget_notebook(folder: Path) -> Path:
    """A notebook whose page shows one HTML widget holding as many empty images as the explorer's results."""
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(ONE_WIDGET.format(k=K))])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "one_widget.ipynb"
    nbformat.write(notebook, path)
    return path


async def visits(url: str, server: psutil.Process, chromium: str, n: int) -> tuple[list, list]:
    """Open the page ``n`` times, one after another; CPU seconds of Chromium and seconds to usable, per visit."""
    from playwright.async_api import async_playwright

    cpu, usable = [], []
    async with async_playwright() as playwright:
        browser = await running_browser(playwright, chromium)
        for _ in range(n):
            before = cpu_seconds(browser_processes(server))
            start = time.perf_counter()
            context = await browser.new_context(viewport={"width": 1100, "height": 760})
            page = await context.new_page()
            await page.goto(url, timeout=120_000)
            await page.locator(".celebalib-result img").nth(K - 1).wait_for(state="visible", timeout=120_000)
            usable.append(time.perf_counter() - start)
            await asyncio.sleep(0.5)  # the last frames are drawn after the images arrive
            cpu.append(used_since(before, browser_processes(server)))
            await context.close()
        await browser.close()
    return cpu, usable


def measure(notebook: Path, run: Path, visits_n: int, chromium: str, voila_options: list[str]) -> None:
    """Serve ``notebook`` with a pool of ``visits_n`` kernels and print one line of figures."""
    port = free_port()
    command = app.voila_command(port, notebook, pool=visits_n) + voila_options
    env = {**os.environ, app.ENV_RUN: str(run), app.ENV_K: str(K)}
    log = Path(tempfile.mkdtemp(prefix="bench-app-page-")) / "voila.log"
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   cwd=log.parent)
    try:
        app.wait_until_serving(process, port, log)
        server = psutil.Process(process.pid)
        settle(server, visits_n)
        cpu, usable = asyncio.run(visits(f"http://127.0.0.1:{port}/", server, chromium, visits_n))
    finally:
        app.stop(process)
    print(f"| {notebook.name} | {visits_n} | {statistics.median(cpu):.2f} ({min(cpu):.2f}-{max(cpu):.2f}) | "
          f"{statistics.median(usable):.2f} ({min(usable):.2f}-{max(usable):.2f}) |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder with an index")
    parser.add_argument("--visits", type=int, default=5, help="visits per notebook, one after another")
    parser.add_argument("--chromium", default=os.environ.get("CELEBALIB_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("voila_options", nargs="*", help="more Voila options, after --")
    args = parser.parse_args()
    run = args.run.resolve()
    app.find_index(run)  # the app's notebook needs one; say so before starting anything
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs; load average before: {load}; Voila options: {' '.join(args.voila_options) or '-'}")
    print("| notebook | visits | browser CPU s per visit (Chromium and Playwright's driver), median (range) | "
          "usable after, s, median (range) |")
    print("| --- | --- | --- | --- |")
    # No pool refill while the pages load (a refill that still waits gives up when the app stops).
    options = ["--VisitorKernelManager.refill_quiet=600", "--VisitorKernelManager.refill_max_wait=600",
               *args.voila_options]
    measure(app.APP_NOTEBOOK, run, args.visits, args.chromium, options)
    with tempfile.TemporaryDirectory() as folder:
        measure(one_widget_notebook(Path(folder)), run, args.visits, args.chromium, options)


if __name__ == "__main__":
    main()
