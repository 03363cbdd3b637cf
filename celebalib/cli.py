"""The command line: ``python -m celebalib COMMAND ...`` (also installed as ``celebalib``).

Each command lives beside the code it drives: the module named in :data:`COMMANDS`
defines ``configure_<command>_parser(parser)``, which adds the arguments and sets
``handler`` to a function ``(args) -> int``. Only the chosen command's module is
imported, so ``celebalib check`` starts without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from celebalib import __version__
from celebalib.errors import CelebalibError

COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("celebalib.data", "validate a CelebA root and print a summary"),
    "synth": ("celebalib.synthetic", "draw the procedural CelebA-format dataset"),
    "train": ("celebalib.train", "train the MobileNetV2 attribute model"),
    "evaluate": ("celebalib.evaluate", "per-attribute evaluation of a trained run"),
    "index": ("celebalib.retrieval", "build a retrieval index over a split"),
    "query": ("celebalib.retrieval", "find the faces closest to a query"),
    "predict": ("celebalib.predict", "find, align and describe the faces in your own photos"),
    "demo": ("celebalib.demo", "run notebooks 01-05 headless and print the headline figures"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Build the parser, importing only the module of ``command`` (if any)."""
    parser = argparse.ArgumentParser(prog="celebalib", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"celebalib {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, summary) in COMMANDS.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if name == command:
            module = importlib.import_module(module_name)
            getattr(module, f"configure_{name}_parser")(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; user mistakes become a one-line error and exit status 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        parser = build_parser(command if command in COMMANDS else None)
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.handler(args) or 0)
    except CelebalibError as error:
        print(f"celebalib {command}: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"celebalib {command}: interrupted", file=sys.stderr)
        return 130
