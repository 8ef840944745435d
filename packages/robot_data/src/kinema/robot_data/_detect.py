"""Which kind of dataset a path holds: policy episodes, action-video clips, VACE-E episodes or a LeRobot folder."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ._errors import RobotDataError, require_exists
from ._stats import EPISODE_SUFFIXES
from ._vace_e import _EPISODE
from .lerobot._layout import is_lerobot_dataset

POLICY, ACTION_VIDEO, VACE_E, LEROBOT = "policy-episodes", "action-video", "vace-e", "lerobot"
FORMATS = (POLICY, ACTION_VIDEO, VACE_E, LEROBOT)


@dataclass(frozen=True)
class DetectedDataset:
    """``format``; ``root`` (the dataset folder, or the episode file); ``metadata`` (CSV or task JSON) if any."""

    format: str
    root: Path
    metadata: Path | None


def detect_format(path: str | os.PathLike, metadata: str | os.PathLike | None = None) -> DetectedDataset:
    """Detects the format of ``path``:

    - an ``.hdf5``/``.h5`` file, or a folder holding such files: policy episodes;
    - a ``.csv`` file, a folder with ``metadata.csv`` (or exactly one CSV), or a folder with ``--metadata`` a CSV:
      action-video clips (file columns relative to the CSV's folder, or to ``path`` when it is a folder);
    - a folder of task folders holding ``episode_<n>/`` folders: VACE-E (``metadata`` is the task JSON);
    - a folder with ``meta/info.json`` naming a ``codebase_version``: a LeRobot dataset (v3.0, v2.1).
    """
    path = require_exists(path, "path")
    metadata = None if metadata is None else require_exists(metadata, "metadata")
    if path.is_file():
        if path.suffix in EPISODE_SUFFIXES:
            return DetectedDataset(POLICY, path, None)
        if path.suffix == ".csv":
            return DetectedDataset(ACTION_VIDEO, path.parent, path)
        raise RobotDataError(path, "format", "not a dataset: expected a folder, an .hdf5 episode or a .csv")
    if is_lerobot_dataset(path):
        return DetectedDataset(LEROBOT, path, None)
    if metadata is not None and metadata.suffix == ".csv":
        return DetectedDataset(ACTION_VIDEO, path, metadata)
    if (path / "metadata.csv").is_file():
        return DetectedDataset(ACTION_VIDEO, path, path / "metadata.csv")
    children = [p for p in path.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and p.suffix in EPISODE_SUFFIXES for p in children):
        return DetectedDataset(POLICY, path, None)
    csvs = [p for p in children if p.is_file() and p.suffix == ".csv"]
    if len(csvs) == 1:
        return DetectedDataset(ACTION_VIDEO, path, csvs[0])
    if any(p.is_dir() and any(c.is_dir() and _EPISODE.match(c.name) for c in p.iterdir()) for p in children):
        return DetectedDataset(VACE_E, path, metadata)
    raise RobotDataError(
        path,
        "format",
        "no dataset found: expected .hdf5 episodes, a metadata CSV, <task>/episode_<n>/ folders or a LeRobot "
        "folder (meta/info.json)",
    )
