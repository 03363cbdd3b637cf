"""Copy the table of what each command takes from benchmarks/README.md into the README.

The table lives between ``<!-- costs:start -->`` and ``<!-- costs:end -->`` in both files;
benchmarks/README.md holds the measurements it summarises. tests/test_readme.py checks
that the README's copy is current and that each figure in it was measured.

    python scripts/command_costs.py            # print the table
    python scripts/command_costs.py --write    # replace the README's block
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from celebalib.io import write_text

ROOT = Path(__file__).resolve().parents[1]
SOURCE, TARGET = ROOT / "benchmarks" / "README.md", ROOT / "README.md"
START, END = "<!-- costs:start -->", "<!-- costs:end -->"


def split(text: str, path: Path) -> tuple[str, str, str]:
    """The text before the block, the block, and the text after it."""
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    block, tail = rest.split(END, 1)
    return head, block.strip(), tail


def table(source: Path = SOURCE) -> str:
    """The block as benchmarks/README.md has it."""
    return split(source.read_text(encoding="utf-8"), source)[1]


def write(target: Path = TARGET, source: Path = SOURCE) -> None:
    """Replace the target's block with the source's."""
    head, _, tail = split(target.read_text(encoding="utf-8"), target)
    write_text(target, f"{head}{START}\n{table(source)}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    """Print the table, or write it into the README."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the block in {TARGET.name}")
    args = parser.parse_args(argv)
    if args.write:
        write()
        print(f"wrote the table of {SOURCE.relative_to(ROOT)} into {TARGET.name}")
    else:
        print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
