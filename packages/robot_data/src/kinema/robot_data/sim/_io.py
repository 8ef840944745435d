"""Small file helpers of the sim subpackage: atomic JSON and the files that make a recording."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

EPISODE_PATTERN = "episode_*.hdf5"
RECORDING_MANIFEST = "recording.json"  # written last: its absence marks an interrupted recording
PARTIAL_DIR = ".recording-partial"  # attempts land here (complete files only) until their index is known


def write_json_atomic(path: Path, payload) -> Path:
    """Writes ``payload`` as indented JSON through a temporary file and ``os.replace``."""
    return write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def write_text_atomic(path: Path, text: str) -> Path:
    """Writes ``text`` (UTF-8) through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def recording_files(out_dir: Path) -> list[Path]:
    """Files of an earlier recording in ``out_dir``: episodes, the manifest, the partial folder."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = sorted(out_dir.glob(EPISODE_PATTERN), key=lambda path: (episode_index(path), path.name))
    for name in (RECORDING_MANIFEST, PARTIAL_DIR):
        if (out_dir / name).exists():
            found.append(out_dir / name)
    return found


def episode_index(path: Path) -> int:
    """n of ``episode_<n>.hdf5`` (-1 when the name has no number)."""
    stem = Path(path).stem
    number = stem.rsplit("_", 1)[-1]
    return int(number) if number.isdigit() else -1
