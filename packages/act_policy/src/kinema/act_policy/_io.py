"""Atomic writes: every file goes to a temporary name in its folder, then ``os.replace`` puts it in place."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Calls ``write(temporary_path)`` then renames the temporary file to ``path`` (same folder, same disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, payload) -> Path:
    text = json.dumps(payload, indent=2) + "\n"
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_torch_atomic(path: str | os.PathLike, obj) -> Path:
    """``torch.save`` through a temporary file (for optimizer / scheduler state; weights go to safetensors)."""
    import torch

    return write_atomic(path, lambda tmp: torch.save(obj, tmp))


def load_torch(path: str | os.PathLike):
    """``torch.load(path, weights_only=True)`` on the CPU, with an error naming the file."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which one
        raise ValueError(f"{path}: unreadable with torch.load(weights_only=True) ({error})") from error
