"""Load on the retrieval app: N visitors open the explorer at once in Chromium, then leave.

For each N it starts ``python -m celebalib app`` afresh over a trained run, opens N pages
at the same moment (one browser context each, as N people would), and reports the time
until each page shows a usable explorer (its first results drawn), when each page's HTML
had fully arrived (the server's part: starting the kernel and running the app notebook),
the Jupyter kernels alive and their memory (proportional set size) while the pages are open,
the same again ``--after`` seconds after every page has closed, when the kernels were back to
the idle count, the CPU seconds the server (Voila and its kernels) and Chromium used, and each
page's own JavaScript and main-thread seconds (Chrome DevTools' Performance metrics). On a
2-core machine the browsers share the server's cores; ``--browser-nice 19`` lets the server
go first. ``--plain`` more visitors fetch the page without a browser (as ``curl`` or a link
preview would), so no page ever connects to their kernels. Visitors beyond the app's bound get
its busy page; they are counted. Options after ``--`` go to ``celebalib app``.

    python benchmarks/bench_app.py --run RUN
    python benchmarks/bench_app.py --run RUN --visitors 1 4 8 16 --after 30 -- --max-visitors 16 --idle-timeout 20

Needs Chromium (``make browser``) and Playwright; the run needs an index (``celebalib index``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil  # installed with ipykernel, which the app extra requires

from celebalib import app

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-breakpad",
    "--disable-crash-reporter",
]
K = 8  # results the explorer shows: the page is usable once all are drawn


@dataclass
class Visit:
    """One visitor's outcome."""

    usable: float | None = None  # seconds from opening the page to the drawn results
    html: float | None = None  # seconds until the page's HTML had fully arrived
    busy: bool = False  # got the app's busy page
    error: str = ""
    script: float = 0.0  # seconds the page's renderer spent running JavaScript (CDP Performance metrics)
    task: float = 0.0  # seconds of all the renderer's main-thread tasks (script, style, layout, parsing)


@dataclass
class Row:
    """The figures of one round of N visitors."""

    visitors: int
    visits: list[Visit] = field(default_factory=list)
    open_kernels: int = 0
    open_pss: float = 0.0
    idle_kernels: int = 0
    after_kernels: int = 0
    after_pss: float = 0.0
    back_after: float | None = None  # seconds after the pages closed until kernels were back to idle for good
    server_cpu: float = 0.0  # CPU seconds of Voila and its kernels while the pages opened
    kernel_cpu: float = 0.0  # the kernels' part of it
    browser_cpu: float = 0.0  # CPU seconds of Chromium meanwhile
    load: float = 0.0  # the machine's 1-minute load average as the pages opened


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def kernels(root: psutil.Process) -> list[psutil.Process]:
    """The Jupyter kernel processes under the app's process."""
    found = []
    for child in root.children(recursive=True):
        try:
            if "ipykernel_launcher" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            pass
    return found


def kernel_memory(root: psutil.Process) -> tuple[int, float]:
    """How many kernels run under ``root`` and their summed proportional set size, in MiB."""
    count, pss = 0, 0
    for process in kernels(root):
        try:
            pss += process.memory_full_info().pss
            count += 1
        except psutil.Error:
            pass
    return count, pss / 2**20


def cpu_seconds(processes: list[psutil.Process]) -> dict[int, float]:
    """CPU seconds (user and system) used so far by each process, by pid."""
    used = {}
    for process in processes:
        try:
            times = process.cpu_times()
            used[process.pid] = times.user + times.system
        except psutil.Error:
            pass
    return used


def tree(root: psutil.Process) -> list[psutil.Process]:
    """A process and all its descendants."""
    try:
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def browser_processes(server: psutil.Process) -> list[psutil.Process]:
    """Chromium and Playwright's driver: this process's descendants, less the app's server (also a child)."""
    me, theirs = psutil.Process(), {process.pid for process in tree(server)}
    return [process for process in tree(me) if process.pid != me.pid and process.pid not in theirs]


def used_since(before: dict[int, float], processes: list[psutil.Process]) -> float:
    """CPU seconds the processes used since ``before`` (new processes count from zero)."""
    return sum(now - before.get(pid, 0.0) for pid, now in cpu_seconds(processes).items())


def start_app(run: Path, index: Path | None, port: int, options: list[str]) -> subprocess.Popen:
    """``python -m celebalib app`` on ``port``; returns once it prints its URL."""
    command = [sys.executable, "-m", "celebalib", "app", "--run", str(run), "--port", str(port), "-k", str(K),
               *(["--index", str(index)] if index else []), *options]
    # From an empty folder: `python -m` would import celebalib from the working directory first.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=tempfile.mkdtemp(prefix="bench-app-"), start_new_session=True)
    found = threading.Event()

    def reader() -> None:
        for line in process.stdout:
            if re.search(r"http://127\.0\.0\.1:\d+/", line):
                found.set()
            if not found.is_set():
                print("  app:", line.rstrip())

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + 120
    while not found.wait(0.5) and process.poll() is None and time.monotonic() < deadline:
        pass
    if not found.is_set():
        app.stop(process)
        raise SystemExit(f"the app did not start on port {port} (exit status {process.poll()})")
    return process


def settle(root: psutil.Process, pool: int, quiet: float = 3.0, timeout: float = 120.0) -> None:
    """Wait until the preheated pool has its ``pool`` kernels and their count has not changed for ``quiet`` s."""
    start = time.monotonic()
    count, since = kernel_memory(root)[0], time.monotonic()
    while (time.monotonic() - since < quiet or count < pool) and time.monotonic() - start < timeout:
        time.sleep(0.5)
        now = kernel_memory(root)[0]
        if now != count:
            count, since = now, time.monotonic()
    time.sleep(1)  # the last kernel started may still be running the notebook


async def running_browser(playwright, chromium: str):
    """Chromium launched, with a blank page opened and closed: a visitor's browser is running before they
    open the explorer, so its helper processes have started."""
    browser = await playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_FLAGS)
    blank = await browser.new_context()
    await (await blank.new_page()).goto("about:blank")
    await blank.close()
    await asyncio.sleep(1)
    return browser


async def visit(browser, url: str, start: float) -> tuple[Visit, object]:
    """Open the explorer in a fresh context; return the outcome and the context (left open)."""
    context = await browser.new_context(viewport={"width": 1100, "height": 760})
    page = await context.new_page()
    cdp = await context.new_cdp_session(page)
    await cdp.send("Performance.enable")
    outcome = Visit()
    try:
        response = await page.goto(url, timeout=120_000, wait_until="commit")
        if response is None or response.status == 503:
            outcome.busy = response is not None
            return outcome, context
        await response.finished()  # Voila streams the page as the kernel runs the notebook
        outcome.html = time.perf_counter() - start
        await page.locator(".celebalib-result img").nth(K - 1).wait_for(state="visible", timeout=120_000)
        outcome.usable = time.perf_counter() - start
        metrics = {m["name"]: m["value"] for m in (await cdp.send("Performance.getMetrics"))["metrics"]}
        outcome.script, outcome.task = metrics["ScriptDuration"], metrics["TaskDuration"]
    except Exception as error:  # a timeout or a crash of one page is a figure, not the end of the run
        outcome.error = str(error).splitlines()[0]
    return outcome, context


def fetch_plain(url: str) -> None:
    """Fetch the page as ``curl`` would: the kernel starts and the notebook runs, no page ever connects."""
    try:
        urllib.request.urlopen(url, timeout=120).read()
    except urllib.error.HTTPError:
        pass


async def round_of(n: int, url: str, process: subprocess.Popen, chromium: str, plain: int,
                   after: float, watch: float) -> Row:
    """Open ``n`` pages at once (and ``plain`` fetches), measure, close them, measure again."""
    from playwright.async_api import async_playwright

    root = psutil.Process(process.pid)
    row = Row(visitors=n)
    row.idle_kernels = kernel_memory(root)[0]
    async with async_playwright() as playwright:
        browser = await running_browser(playwright, chromium)
        server_before = cpu_seconds(tree(root))
        browser_before = cpu_seconds(browser_processes(root))
        row.load = os.getloadavg()[0]
        start = time.perf_counter()
        plain_fetches = [asyncio.to_thread(fetch_plain, url) for _ in range(plain)]
        results = await asyncio.gather(*(visit(browser, url, start) for _ in range(n)), *plain_fetches)
        pairs = results[:n]
        row.visits = [outcome for outcome, _ in pairs]
        row.server_cpu = used_since(server_before, tree(root))
        row.kernel_cpu = used_since(server_before, kernels(root))
        row.browser_cpu = used_since(browser_before, browser_processes(root))
        await asyncio.sleep(1)
        row.open_kernels, row.open_pss = kernel_memory(root)
        for _, context in pairs:
            await context.close()
        await browser.close()
    # Watch the whole time: with a pool the kernels may rise again (its refill) before they fall back.
    closed, measured, above = time.perf_counter(), False, 0.0
    while (elapsed := time.perf_counter() - closed) < max(watch, after):
        count, pss = kernel_memory(root)
        if not measured and elapsed >= after:
            row.after_kernels, row.after_pss = count, pss
            measured = True
        if count > row.idle_kernels:
            above = elapsed
        await asyncio.sleep(0.5)
    count, pss = kernel_memory(root)
    if not measured:
        row.after_kernels, row.after_pss = count, pss
    row.back_after = None if count > row.idle_kernels else above
    return row


def pool_size(options: list[str]) -> int:
    """The ``--pool`` among the app's options, else the app's default."""
    from celebalib import cli

    return cli.build_parser("app").parse_args(["app", *options]).pool


def seconds(values: list[float]) -> str:
    """Median and maximum of some seconds, or a dash."""
    return f"{statistics.median(values):.1f} / {max(values):.1f}" if values else "-"


def page_seconds(visits: list[Visit]) -> str:
    """Median seconds of JavaScript and of all main-thread work per shown page, or a dash."""
    shown = [v for v in visits if v.usable is not None]
    if not shown:
        return "-"
    return f"{statistics.median(v.script for v in shown):.1f} / {statistics.median(v.task for v in shown):.1f}"


def print_row(row: Row, watch: float) -> None:
    """One line of the results table (markdown)."""
    usable = [v.usable for v in row.visits if v.usable is not None]
    html = [v.html for v in row.visits if v.html is not None]
    busy = sum(v.busy for v in row.visits)
    errors = [v.error for v in row.visits if v.error]
    back = f"{row.back_after:.0f} s" if row.back_after is not None else f"not within {watch:.0f} s"
    print(f"| {row.visitors} | {len(usable)} | {busy} | {seconds(html)} | {seconds(usable)} | "
          f"{row.open_kernels}, {row.open_pss:.0f} MiB | {row.after_kernels}, {row.after_pss:.0f} MiB | "
          f"{row.idle_kernels} | {back} | {row.server_cpu:.1f} ({row.kernel_cpu:.1f}) | {row.browser_cpu:.1f} | "
          f"{page_seconds(row.visits)} | {row.load:.1f} |", flush=True)
    for error in errors:
        print(f"  page error: {error}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder with an index")
    parser.add_argument("--index", type=Path, default=None, help="index .npz (default: the run's)")
    parser.add_argument("--visitors", type=int, nargs="+", default=[1, 4, 8, 16], help="rounds of N visitors")
    parser.add_argument("--plain", type=int, default=0, help="extra page fetches without a browser, per round")
    parser.add_argument("--after", type=float, default=30.0, help="measure the kernels this long after the pages close")
    parser.add_argument("--watch", type=float, default=90.0, help="watch the kernels this long after the pages "
                        "close: when were they back to the idle count for good")
    parser.add_argument("--chromium", default=os.environ.get("CELEBALIB_CHROMIUM", "/usr/bin/chromium"))
    parser.add_argument("--browser-nice", type=int, default=0, help="run Chromium at this niceness (19: the "
                        "server's processes come first, as if the visitors' browsers ran on their own machines)")
    parser.add_argument("app_options", nargs="*", help="more `celebalib app` options, after --")
    args = parser.parse_args()
    args.run = args.run.resolve()  # the app runs in an empty folder
    args.index = args.index.resolve() if args.index else None
    print(f"app over {args.run} ({args.index or 'its own index'}), options: {' '.join(args.app_options) or 'defaults'}"
          f"; Chromium at niceness {args.browser_nice}")
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print("| visitors | explorers shown | busy pages | page HTML in, s (median / max) | usable explorer, s "
          "(median / max) | kernels and PSS, pages open | kernels and PSS, "
          f"{args.after:.0f} s after closing | idle kernels | back to idle | server CPU s (kernels) | browser CPU s | "
          "per page: script / main thread s (median) | load |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    chromium = args.chromium
    if args.browser_nice:
        wrapper = Path(tempfile.mkdtemp(prefix="bench-app-")) / "chromium"
        wrapper.write_text(f'#!/bin/sh\nexec nice -n {args.browser_nice} "{args.chromium}" "$@"\n')
        wrapper.chmod(0o755)
        chromium = str(wrapper)
    for n in args.visitors:
        port = free_port()
        process = start_app(args.run, args.index, port, args.app_options)
        try:
            settle(psutil.Process(process.pid), pool_size(args.app_options))
            row = asyncio.run(round_of(n, f"http://127.0.0.1:{port}/", process, chromium, args.plain,
                                       args.after, args.watch))
        finally:
            app.stop(process)
        print_row(row, args.watch)


if __name__ == "__main__":
    main()
