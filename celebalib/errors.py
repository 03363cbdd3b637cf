"""Exceptions that speak to the user: each names what was wrong and, for files, where.

Also the one range check that several settings share (``check_fraction``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class CelebalibError(Exception):
    """Base class for every error the command line reports in one line, without a traceback."""


class CelebAFormatError(CelebalibError, ValueError):
    """A dataset file is missing or does not follow the CelebA format."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.line = line
        self.message = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ConfigError(CelebalibError, ValueError):
    """A setting or command-line argument has a value the library cannot use."""


class RunError(CelebalibError, ValueError):
    """A run folder or index is missing, incomplete, or does not match the data."""


def check_fraction(name: str, value: Any) -> None:
    """Raise ConfigError unless ``value`` is a number from 0 up to (not including) 1."""
    if not (isinstance(value, (int, float)) and 0 <= value < 1):
        raise ConfigError(f"{name}={value!r}: expected a number from 0 up to (not including) 1")
