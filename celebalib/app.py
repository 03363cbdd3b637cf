"""The ``app`` command: the retrieval explorer served in the browser, over a trained run and its index.

Voila serves the small notebook ``resources/app.ipynb``, which only reads: it opens the run
and the saved gallery index and shows :class:`~celebalib.widgets.RetrievalExplorer`. It
never trains, never predicts a split and never writes into the run folder, so a visit takes
seconds and the run's files stay as evaluation left them. The command checks the run and
the index before starting the server, and passes them to the notebook's kernel through
environment variables (kernels inherit Voila's environment).

Each visitor has one Jupyter kernel, started for the visit or taken from the pool below. Voila's
own settings end it: jupyter_server culls a kernel once no page has been connected to it for
``--idle-timeout`` seconds (a closed tab, or a fetch that never opened the page), and :mod:`celebalib.app_kernels` refuses kernels beyond
``--max-visitors`` with a one-line busy page. Voila's preheated pool keeps ``--pool`` kernels started
with the notebook already run, so a visitor's page arrives without waiting for a kernel; a refill
waits until visitors stop arriving (:mod:`celebalib.app_kernels`).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celebalib.config import PACKAGE_DIR, get_settings
from celebalib.errors import ConfigError, RunError

if TYPE_CHECKING:
    from celebalib.retrieval import GalleryIndex
    from celebalib.runs import Run

APP_NOTEBOOK = PACKAGE_DIR / "resources" / "app.ipynb"
ENV_RUN, ENV_INDEX, ENV_K = "CELEBALIB_APP_RUN", "CELEBALIB_APP_INDEX", "CELEBALIB_APP_K"
DEFAULT_PORT = 8866  # Voila's own default
DEFAULT_K = 8
DEFAULT_MAX_VISITORS = 8
DEFAULT_IDLE_TIMEOUT = 60  # seconds a kernel with no page connected to it is kept
DEFAULT_POOL = 4  # kernels kept ready with the explorer built, beyond the visitors' places
START_TIMEOUT = 90.0  # seconds for Voila to answer; it imports Jupyter's server stack first
# Seconds Voila waits for a cell's outputs after the kernel has replied (nbclient's default, 4, drops
# the explorer from the page of a kernel slowed down by a crowd of visitors).
IOPUB_TIMEOUT = 60


def default_run() -> Path:
    """The run that ``make demo`` trains for the settings' data: ``runs/<recipe name>`` under CELEBALIB_HOME."""
    from celebalib.recipes import recipe_name

    settings = get_settings()
    return settings.runs_dir / recipe_name(settings.data_root)


def find_index(run_dir: str | Path, index: str | Path | None = None) -> Path:
    """Return ``index``, else the run's ``index_test.npz`` or ``index_val.npz``; RunError saying how to build one."""
    if index is not None:
        path = Path(index).expanduser()
        if not path.is_file():
            raise RunError(f"{path}: index not found; build one with "
                           f"`python -m celebalib index --run {run_dir} --split val`")
        return path
    from celebalib.runs import RunFiles

    files = RunFiles(Path(run_dir))
    for split in ("test", "val"):
        if files.index(split).is_file():
            return files.index(split)
    raise RunError(f"{run_dir}: no {files.index('test').name} or {files.index('val').name}; build one with "
                   f"`python -m celebalib index --run {run_dir} --split val` (notebook 05 of `make demo` "
                   "builds the course's)")


def check_app(run_dir: str | Path, index: str | Path | None = None) -> tuple[Path, Path]:
    """Open the run and its index once, so a mistake is one line here, not a traceback in the browser."""
    run_path = Path(run_dir).expanduser()
    index_path = open_app(run_path, index)[2]
    return run_path.resolve(), index_path.resolve()


def open_app(run_dir: Path, index: str | Path | None = None) -> tuple[Run, GalleryIndex, Path]:
    """The run, its index (probabilities only: the explorer never reads the pooled features) and the
    index's path; RunError when either cannot be opened."""
    from celebalib.retrieval import GalleryIndex
    from celebalib.runs import open_run

    if not run_dir.is_dir():
        raise RunError(f"{run_dir}: run folder not found; train the course's with `python -m celebalib demo` "
                       "(or `make demo`), or pass --run runs/NAME")
    run = open_run(run_dir)
    index_path = find_index(run_dir, index)
    return run, GalleryIndex.load(index_path, run=run, features=False), index_path


def explorer(run_dir: str | Path | None = None, index: str | Path | None = None, k: int | None = None) -> Any:
    """The explorer widget over a run and its index (defaults: the app's environment variables, else
    the course run); a one-line message widget instead when they cannot be opened."""
    import ipywidgets as widgets

    from celebalib.widgets import RetrievalExplorer

    run_dir = Path(run_dir or os.environ.get(ENV_RUN) or default_run()).expanduser()
    index = index or os.environ.get(ENV_INDEX) or None
    k = int(k or os.environ.get(ENV_K) or DEFAULT_K)
    try:
        run, gallery, _ = open_app(run_dir, index)
    except (RunError, ConfigError) as error:
        return widgets.HTML(f"<p class='celebalib-app-error'>{_escape(str(error))}</p>")
    return RetrievalExplorer(gallery, run, k=min(k, len(gallery.image_ids)))


def port_in_use(port: int) -> bool:
    """True when something accepts connections on the loopback port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def voila_command(port: int, notebook: Path = APP_NOTEBOOK, *, max_visitors: int = DEFAULT_MAX_VISITORS,
                  idle_timeout: int = DEFAULT_IDLE_TIMEOUT, pool: int = DEFAULT_POOL) -> list[str]:
    """The Voila command line that serves ``notebook`` on loopback at ``port``.

    A kernel is shut down once no page has been connected to it for ``idle_timeout`` seconds
    (a closed tab, or a fetch that never opened the page); an open page keeps its kernel.
    ``pool`` kernels are started ahead with the notebook run (Voila's preheated kernels, never
    culled while they wait). At most ``max_visitors + pool`` kernels run at once: Voila refills
    the pool before it knows whether a visitor will come, so waiting kernels can hold at most
    ``pool`` places, and at least ``max_visitors`` visitors always get in. A page waits up to
    ``IOPUB_TIMEOUT`` seconds for the notebook's outputs, so a kernel slowed by many visitors
    still shows the explorer.
    """
    kernels = "VisitorKernelManager"
    command = [sys.executable, "-m", "voila", str(notebook), "--no-browser", f"--port={port}",
               "--Voila.ip=127.0.0.1", "--Voila.port_retries=0", "--Voila.log_level=WARN",
               f"--VoilaConfiguration.multi_kernel_manager_class=celebalib.app_kernels.{kernels}",
               f"--{kernels}.max_kernels={max_visitors + pool}",
               f"--{kernels}.cull_idle_timeout={idle_timeout}",
               f"--{kernels}.cull_interval={cull_interval(idle_timeout)}",
               f"--{kernels}.cull_connected=False", f"--{kernels}.cull_busy=False",
               f"--VoilaExecutor.iopub_timeout={IOPUB_TIMEOUT}"]
    if pool:
        command += ["--VoilaConfiguration.preheat_kernel=True", f"--VoilaConfiguration.default_pool_size={pool}"]
    return command


def cull_interval(idle_timeout: int) -> int:
    """How often, in seconds, to look for kernels to cull: a few times per timeout, at most every 10 s."""
    return max(1, min(10, idle_timeout // 3))


def wait_until_serving(process: subprocess.Popen, port: int, log: Path, timeout: float = START_TIMEOUT) -> None:
    """Poll a missing file until Voila answers 404 (requesting ``/`` would start a kernel)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
            raise RunError(f"voila exited with status {process.returncode} ({log}: {tail})")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/celebalib-ready-check.png", timeout=1)
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RunError(f"voila did not answer on port {port} within {timeout:.0f} s (log: {log})")


def serve(run_dir: Path, index: Path, *, port: int = DEFAULT_PORT, k: int = DEFAULT_K,
          max_visitors: int = DEFAULT_MAX_VISITORS, idle_timeout: int = DEFAULT_IDLE_TIMEOUT,
          pool: int = DEFAULT_POOL) -> int:
    """Serve the app until interrupted; print the URL once Voila answers."""
    import importlib.util

    if importlib.util.find_spec("voila") is None:
        raise ConfigError("Voila is not installed; in the celebalib folder run pip install -e '.[app]' (or make setup)")
    if port_in_use(port):
        raise ConfigError(f"--port {port}: something already listens there; pass another port")
    env = {**os.environ, ENV_RUN: str(run_dir), ENV_INDEX: str(index), ENV_K: str(k)}
    log = Path(tempfile.mkdtemp(prefix="celebalib-app-")) / "voila.log"
    with log.open("wb") as out:
        command = voila_command(port, max_visitors=max_visitors, idle_timeout=idle_timeout, pool=pool)
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    # A plain `kill` should stop Voila too, as Ctrl+C does (the finally below runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        wait_until_serving(process, port, log)
        print(f"Serving the retrieval explorer over {run_dir} ({index.name}) at http://127.0.0.1:{port}/", flush=True)
        print(f"Voila's log: {log}. Stop with Ctrl+C.", flush=True)
        return process.wait()
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    """Stop Voila (which shuts its kernels down): SIGTERM to its process group, SIGKILL after 15 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    except ProcessLookupError:
        pass


def _escape(text: str) -> str:
    """Escape text for HTML."""
    import html

    return html.escape(text, quote=True)


def _app_command(args: argparse.Namespace) -> int:
    """Check the run and index, then serve the app."""
    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port}: expected a port number from 1 to 65535")
    for name, value, least in (("-k", args.k, 1), ("--max-visitors", args.max_visitors, 1),
                               ("--idle-timeout", args.idle_timeout, 1), ("--pool", args.pool, 0)):
        if value < least:
            raise ConfigError(f"{name} {value}: expected at least {least}")
    from celebalib.runs import locate_run

    run_dir, index = check_app(locate_run(args.run) if args.run else default_run(), args.index)
    return serve(run_dir, index, port=args.port, k=args.k, max_visitors=args.max_visitors,
                 idle_timeout=args.idle_timeout, pool=args.pool)


def configure_app_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``app`` command's arguments."""
    parser.epilog = "example:\n  python -m celebalib app --run runs/course --port 8866"
    from celebalib.bundles import RUN_SOURCES

    parser.add_argument("--run", default=None, help=f"{RUN_SOURCES} (default: runs/course under CELEBALIB_HOME, "
                        "the one `make demo` trains)")
    parser.add_argument("--index", default=None, help=".npz index built by `celebalib index` "
                        "(default: RUN/index_test.npz, else RUN/index_val.npz)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="loopback port to serve on")
    parser.add_argument("-k", type=int, default=DEFAULT_K, help="how many results the explorer shows at first")
    parser.add_argument("--max-visitors", type=int, default=DEFAULT_MAX_VISITORS,
                        help="pages open at once (one Jupyter kernel each); more visitors get a one-line busy page")
    parser.add_argument("--idle-timeout", type=int, default=DEFAULT_IDLE_TIMEOUT, metavar="SECONDS",
                        help="shut a visitor's kernel down this long after its page closed or if it never connected")
    parser.add_argument("--pool", type=int, default=DEFAULT_POOL, metavar="N", help="kernels kept started with "
                        "the explorer built, so the next visitors need not wait for one: the app runs the notebook N "
                        "times as it starts, and each waiting kernel holds about 80 MiB; up to N visitors beyond "
                        "--max-visitors may take them; 0 turns the pool off")
    parser.set_defaults(handler=_app_command)
