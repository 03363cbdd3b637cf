"""Exceptions that speak to the user: each names what was wrong and, for files, where."""

from __future__ import annotations

from pathlib import Path


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
