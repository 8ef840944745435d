"""The one atomic file writer of this package: a file is written under a temporary name beside its target and
renamed into place, so a reader never sees half a file and a crash leaves the previous file (or none)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(temporary)`` and renames the temporary file to ``path``; on failure the temporary file is
    removed and ``path`` is untouched. The temporary name ends with ``path``'s suffix, for writers that read the
    format from it (matplotlib, PIL)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text))


def write_json_atomic(path: str | os.PathLike, value: Any, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(value, indent=indent))


def write_dir_atomic(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Calls ``write(temporary folder)`` (``.<name>.tmp`` beside ``path``, removed first if a crash left one) and
    renames it to ``path``; a folder already there is moved aside and removed once the new one is in place. A
    failed write leaves the temporary folder, which no reader picks up and the next call removes."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
    return path
