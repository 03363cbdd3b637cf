"""The command line: ``python -m celebalib COMMAND ...`` (also installed as ``celebalib``).

Each command lives beside the code it drives: the module named in :data:`COMMANDS`
defines ``configure_<command>_parser(parser)``, which adds the arguments, sets
``handler`` to a function ``(args) -> int`` and ``parser.epilog`` to an example. Only the
chosen command's module is imported, so ``--help`` and argument mistakes answer before
TensorFlow loads; :class:`HelpFormatter` shows every default.

Exit status: 0 done, 1 a user error (one line on stderr), 2 a usage mistake (one line
on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
import warnings
from typing import Any, NoReturn

from celebalib import __version__
from celebalib.errors import CelebalibError

COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("celebalib.data", "validate a CelebA root and print a summary"),
    "synth": ("celebalib.synthetic", "draw the procedural CelebA-format dataset"),
    "train": ("celebalib.train_cli", "train the MobileNetV2 attribute model"),
    "evaluate": ("celebalib.evaluate", "per-attribute evaluation of a trained run"),
    "index": ("celebalib.retrieval", "build a retrieval index over a split"),
    "query": ("celebalib.retrieval", "find the faces closest to a query"),
    "predict": ("celebalib.predict", "find, align and describe the faces in your own photos"),
    "export": ("celebalib.export", "write a trained run as one .zip bundle, or its model as ONNX"),
    "card": ("celebalib.model_card", "write a trained run's model card: its figures, fit uses and licence"),
    "demo": ("celebalib.demo", "run notebooks 01-05 headless and print the headline figures"),
    "app": ("celebalib.app", "serve the retrieval explorer over a trained run in the browser"),
}

EXIT_OK, EXIT_USER_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DESCRIPTION = "Predict the 40 CelebA face attributes, then retrieve and cluster faces by them."
EPILOG = """example:
  python -m celebalib demo --fast
  python -m celebalib evaluate --help

exit status: 0 done, 1 user error, 2 usage mistake, 130 interrupted"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show each option's default and keep the description's and example's line breaks."""

    def _get_help_string(self, action: argparse.Action) -> str:
        """Add "(default: X)" where there is a default worth showing: not for flags, which take no
        value (a --no-x flag's default True would read as if --no-x were on), nor for None; a 0 shows."""
        text = action.help or ""
        if action.nargs == 0 or action.default is None or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class ArgumentParser(argparse.ArgumentParser):
    """An argparse parser whose mistakes are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``PROG: error: MESSAGE (see PROG --help)`` and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _SilentStartup(importlib.abc.MetaPathFinder):
    """Run TensorFlow's first import with file descriptor 2 captured.

    TensorFlow's C++ libraries log a few lines while they load (oneDNN, "Could not find cuda
    drivers", CPU features) before absl's logging is initialised, so TF_CPP_MIN_LOG_LEVEL
    cannot hide them. What the import writes is dropped when it succeeds and replayed when it fails.
    """

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once is enough, and keeps find_spec below from recursing
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _SilentLoader(spec.loader)
        return spec


class _SilentLoader(importlib.abc.Loader):
    """Wrap a loader so executing the module happens with stderr's file descriptor captured."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                self.loader.exec_module(module)
            except BaseException:
                os.dup2(saved, 2)
                captured.seek(0)
                sys.stderr.write(captured.read().decode(errors="replace"))
                raise
            finally:
                os.dup2(saved, 2)
                os.close(saved)


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ start-up lines (oneDNN, CUDA, CPU features) before it loads.

    Sets TF_CPP_MIN_LOG_LEVEL (an explicit value is kept; kernels and subprocesses inherit it)
    and absl's verbosity, and captures what TensorFlow's first import writes to stderr. Python
    warnings and errors raised later still show.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if os.environ["TF_CPP_MIN_LOG_LEVEL"] != "0" and "tensorflow" not in sys.modules and not any(
            isinstance(finder, _SilentStartup) for finder in sys.meta_path):
        sys.meta_path.insert(0, _SilentStartup())
    try:
        from absl import logging as absl_logging
    except ImportError:
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Build the parser, importing only the module of ``command`` (if any)."""
    parser = ArgumentParser(prog="celebalib", description=DESCRIPTION, epilog=EPILOG,
                            formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"celebalib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    for name, (module_name, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary, formatter_class=HelpFormatter)
        if name == command:
            module = importlib.import_module(module_name)
            getattr(module, f"configure_{name}_parser")(sub)
    return parser


def _note_printer(command: str | None, shown: Any) -> Any:
    """A ``warnings.showwarning`` that prints celebalib's own warnings (e.g. images missing from a
    root) as one line, ``celebalib CMD: note: ...``, and leaves other warnings to ``shown``."""

    def show(message: Any, category: type[Warning], filename: str, lineno: int, file: Any = None,
             line: str | None = None) -> None:
        if category.__module__.startswith("celebalib"):
            print(f"celebalib {command}: note: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status (0, 1, 2 or 130; see the module docstring)."""
    quiet_tensorflow()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    with warnings.catch_warnings():  # restores showwarning afterwards, so repeated calls do not stack
        warnings.showwarning = _note_printer(command, warnings.showwarning)
        return _run(argv, command)


def _run(argv: list[str], command: str | None) -> int:
    """Parse and run, mapping errors to exit codes."""
    try:
        parser = build_parser(command if command in COMMANDS else None)
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help, --version, or a usage mistake already printed
            return done.code if isinstance(done.code, int) else EXIT_USAGE
        if args.command is None:
            parser.print_help()
            return EXIT_USAGE
        return int(args.handler(args) or 0)
    except CelebalibError as error:
        print(f"celebalib {command}: error: {error}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"celebalib {command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
