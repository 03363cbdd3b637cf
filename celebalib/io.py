"""Atomic file writes (write to a temporary name beside the target, then rename), and reading a JSON file that may be absent."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celebalib.errors import RunError


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The temporary name ends with the target's whole name, so writers that check a suffix
    (Keras's ``.keras`` and ``.weights.h5``) accept it. On error the temporary file is
    removed, so a reader never sees a half-written file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _create_beside(target: Path) -> Path:
    """Create a new empty hidden file beside ``target`` and return its path.

    Opened with mode 0o666, so the kernel applies the process's umask, as for any new file,
    without the process-wide ``os.umask`` round trip that would race other threads.
    """
    for _ in range(100):
        tmp = target.with_name(f".tmp-{secrets.token_hex(4)}.{target.name}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"{target.parent}: no free temporary name for {target.name}")


def write_text(path: str | Path, text: str) -> None:
    """Write text atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Write pretty JSON atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file's contents, or None where the file is absent; a damaged file is a RunError."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise RunError(f"{path}:{error.lineno}: expected JSON ({error.msg})") from None
