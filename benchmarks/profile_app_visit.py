"""Where the server's part of one app visit goes: kernel start, the app cell's imports, opening the run and
the index, building the explorer.

Starts a Jupyter kernel as Voila does (``jupyter_client``, the ``python3`` kernel spec), waits until it
answers, then runs the app notebook's work in it step by step, timing each step inside the kernel in CPU
seconds (``time.process_time``) and wall seconds. Repeats ``--repeat`` times with a fresh kernel and prints
the median of each step, then the modules the cell imports that cost most (``python -X importtime`` in a
child process, self time). The browser's part is measured by ``bench_app.py`` (its CDP columns).

    python benchmarks/profile_app_visit.py --run RUN
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil  # installed with ipykernel, which the app extra requires

from celebalib import app

# Run in the kernel: the app cell's work, one step at a time, each timed in CPU and wall seconds.
STEPS = """
import json as _json, time as _time
_steps = []
def _step(name, work):
    cpu, wall = _time.process_time(), _time.perf_counter()
    result = work()
    _steps.append((name, _time.process_time() - cpu, _time.perf_counter() - wall))
    return result
_step("import celebalib.app", lambda: __import__("celebalib.app"))
_step("import ipywidgets", lambda: __import__("ipywidgets"))
_step("import numpy, pandas", lambda: (__import__("numpy"), __import__("pandas")))
_step("import celebalib.widgets (PIL, faces)", lambda: __import__("celebalib.widgets"))
_step("import celebalib.retrieval, celebalib.runs", lambda: (__import__("celebalib.retrieval"),
                                                             __import__("celebalib.runs")))
from celebalib import app as _app
from pathlib import Path as _Path
_opened = _step("open the run and the index", lambda: _app.open_app(_Path({run!r}), {index!r}))
from celebalib.widgets import RetrievalExplorer as _Explorer
_step("build the explorer (widgets, first query, thumbnails)", lambda: _Explorer(_opened[1], _opened[0], k={k}))
print(_json.dumps(_steps))
"""


async def one_kernel(run: Path, index: Path | None, k: int) -> list[tuple[str, float, float]]:
    """Start a kernel, run the steps in it; the rows (step, CPU s, wall s), kernel start first."""
    from jupyter_client.manager import AsyncKernelManager

    manager = AsyncKernelManager(kernel_name="python3")
    wall = time.perf_counter()
    await manager.start_kernel(env={**os.environ})
    client = manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        start_wall = time.perf_counter() - wall
        times = psutil.Process(manager.provisioner.pid).cpu_times()
        rows = [("kernel start (process, ipykernel imports, ready)", times.user + times.system, start_wall)]
        code = STEPS.format(run=str(run), index=str(index) if index else None, k=k)
        printed: list[str] = []
        reply = await client.execute_interactive(
            code, timeout=120,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")) if msg["msg_type"] == "stream" else None)
        if reply["content"]["status"] != "ok":
            raise SystemExit(f"the steps failed in the kernel: {reply['content'].get('evalue')}")
        rows += [tuple(row) for row in json.loads("".join(printed).strip().splitlines()[-1])]
        return rows
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(now=True)


def top_imports(run: Path, index: Path | None, limit: int) -> list[tuple[str, float]]:
    """Top-level packages the app cell imports beyond a bare kernel, by summed self time (ms)."""
    kernel = "import ipykernel.kernelapp"
    cell = f"{kernel}; from celebalib import app; app.explorer({str(run)!r}, {str(index) if index else None!r})"
    python = [sys.executable, "-X", "importtime", "-c"]
    bare = subprocess.run([*python, kernel], capture_output=True, text=True, check=True).stderr
    full = subprocess.run([*python, cell], capture_output=True, text=True, check=True).stderr
    pattern = re.compile(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)")
    seen = {match[2] for match in pattern.finditer(bare)}
    totals: dict[str, float] = {}
    for match in pattern.finditer(full):
        if match[2] not in seen:
            package = match[2].split(".")[0]
            totals[package] = totals.get(package, 0.0) + int(match[1]) / 1000
    return sorted(totals.items(), key=lambda item: -item[1])[:limit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="trained run folder with an index")
    parser.add_argument("--index", type=Path, default=None, help="index .npz (default: the run's)")
    parser.add_argument("-k", type=int, default=8, help="results the explorer shows")
    parser.add_argument("--repeat", type=int, default=3, help="fresh kernels to time (medians are printed)")
    args = parser.parse_args()
    run, index = app.check_app(args.run, args.index)
    print(f"{os.cpu_count()} CPUs; load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rounds = [asyncio.run(one_kernel(run, index, args.k)) for _ in range(args.repeat)]
    print(f"| step (median of {args.repeat} fresh kernels) | CPU s | wall s |")
    print("| --- | --- | --- |")
    for i, (name, _, _) in enumerate(rounds[0]):
        cpu = statistics.median(r[i][1] for r in rounds)
        wall = statistics.median(r[i][2] for r in rounds)
        print(f"| {name} | {cpu:.2f} | {wall:.2f} |")
    cpu = statistics.median(sum(row[1] for row in r) for r in rounds)
    wall = statistics.median(sum(row[2] for row in r) for r in rounds)
    print(f"| total | {cpu:.2f} | {wall:.2f} |")
    print("modules the cell imports beyond a bare kernel, self time under -X importtime (inflated by it), ms: "
          + ", ".join(f"{name} {ms:.0f}" for name, ms in top_imports(run, index, 8)))
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
