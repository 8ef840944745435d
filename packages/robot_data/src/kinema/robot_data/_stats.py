"""Normalization statistics of policy episodes: computed once, saved beside the data, loaded by the policies.

``stats[field]`` for field in ``qpos``, ``action`` (and ``qvel``, ``environment_state`` when every episode has them)
holds float32 arrays (dims,) ``mean``, ``std``, ``min``, ``max``, ``q01``, ``q99`` (1st and 99th percentiles) and
``count`` (steps). ``std`` is clipped below at 0.01, as ACT does, so a joint that never moves is not divided by ~0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ._act_aloha import warn_defaults
from ._errors import MissingFileError, RobotDataError, require_exists
from ._lenient import index_items
from ._order import natural_key
from ._policy_io import _check_open, _lerobot_episode
from ._trajectories import open_hdf5

STATS_FILE_NAME = "policy_stats.json"
STAT_KEYS = ("mean", "std", "min", "max", "q01", "q99")
MIN_STD = 1e-2
_FORMAT = "kinema.policy_stats"
EPISODE_SUFFIXES = (".hdf5", ".h5")


def list_policy_episodes(root_or_files: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Episode files: a file, the ``*.hdf5``/``*.h5`` files of a folder (in numeric order, ``episode_2`` before
    ``episode_10``; hidden temp files ignored), a list of files (kept in its order), or the episodes of a LeRobot
    dataset folder as ``<root>#episode_<n>`` (which the policy readers accept). A root that does not exist
    raises :class:`MissingFileError`."""
    if isinstance(root_or_files, str | os.PathLike):
        root = require_exists(root_or_files, "root")
        if root.is_file():
            return [root]
        from .lerobot import (
            LeRobotEpisodes,
            is_lerobot_dataset,
        )  # here: the LeRobot reader imports this module

        if is_lerobot_dataset(root):  # its episodes as <root>#episode_<n>, which _policy_io reads
            return [Path(str(ref)) for ref in LeRobotEpisodes(root).episodes]
        return sorted(
            (
                p
                for p in root.iterdir()
                if p.suffix in EPISODE_SUFFIXES and p.is_file() and not p.name.startswith(".")
            ),
            key=natural_key,
        )
    return [Path(p) for p in root_or_files]


def summarize(values: np.ndarray) -> dict[str, np.ndarray | int]:
    """(N, dims) -> mean, std (clipped at 0.01), min, max, q01, q99 as float32 (dims,), and count N."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError(f"values: expected shape (N >= 1, dims), got {values.shape}")
    q01, q99 = np.quantile(values, [0.01, 0.99], axis=0)
    stats = {
        "mean": values.mean(axis=0),
        "std": np.maximum(values.std(axis=0), MIN_STD),
        "min": values.min(axis=0),
        "max": values.max(axis=0),
        "q01": q01,
        "q99": q99,
    }
    return {**{k: v.astype(np.float32) for k, v in stats.items()}, "count": int(values.shape[0])}


def compute_policy_stats(
    root_or_files: str | os.PathLike | Iterable[str | os.PathLike], *, strict: bool = False
) -> dict[str, dict]:
    """Statistics over every step of every readable episode (bad episodes: skipped with a warning, or raise when
    ``strict``). Computes; never writes (see :func:`save_stats`)."""
    files = list_policy_episodes(root_or_files)

    def read(path: Path) -> dict[str, np.ndarray]:
        lerobot = _lerobot_episode(path)
        if lerobot is not None:  # an episode of a LeRobot folder: its parquet rows (no video is decoded)
            episodes, ref = lerobot
            return episodes.read_arrays(ref)[0]
        if not path.exists():
            raise MissingFileError(path, "episode")
        with open_hdf5(path, "episode") as f:
            try:
                info, arrays = _check_open(path, f)
            except (OSError, KeyError) as error:
                raise RobotDataError(path, "episode", f"unreadable ({error})") from error
        warn_defaults(path, info.defaults)
        return arrays

    episodes, _ = index_items("policy episodes (stats)", files, read, strict=strict)
    if not episodes:
        raise RobotDataError(str(root_or_files), "episodes", "no readable episode to compute statistics from")
    always = ("qpos", "action")  # qvel and environment_state: when every episode has them
    fields = [
        name
        for name in ("qpos", "qvel", "action", "environment_state")
        if name in always or all(name in e for e in episodes)
    ]
    stats = {}
    for name in fields:
        dims = {e[name].shape[1] for e in episodes}
        if len(dims) != 1:
            raise RobotDataError(str(root_or_files), name, f"episodes disagree in dimension: {sorted(dims)}")
        stats[name] = summarize(np.concatenate([e[name] for e in episodes]))
    return stats


def save_stats(stats: dict[str, dict], path: str | os.PathLike) -> Path:
    """Writes statistics as JSON (atomically). A folder means ``<folder>/policy_stats.json``."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE_NAME
    fields = {}
    for name, values in stats.items():
        missing = [k for k in STAT_KEYS if k not in values]
        if missing:
            raise ValueError(f"stats[{name!r}]: missing {missing}")
        fields[name] = {k: np.asarray(values[k], dtype=np.float64).tolist() for k in STAT_KEYS}
        fields[name]["count"] = int(values.get("count", 0))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"format": _FORMAT, "version": 1, "fields": fields}, indent=2))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_stats(path: str | os.PathLike) -> dict[str, dict]:
    """Statistics written by :func:`save_stats` (a folder means ``<folder>/policy_stats.json``)."""
    path = Path(path)
    if path.is_dir():
        path = path / STATS_FILE_NAME
    require_exists(path, "stats")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RobotDataError(path, "stats", f"not valid JSON ({error})") from error
    if (
        not isinstance(data, dict)
        or data.get("format") != _FORMAT
        or not isinstance(data.get("fields"), dict)
    ):
        raise RobotDataError(path, "format", f"expected a {_FORMAT} file")
    stats = {}
    for name, values in data["fields"].items():
        missing = [k for k in STAT_KEYS if k not in values]
        if missing:
            raise RobotDataError(path, f"fields.{name}", f"missing {missing}")
        arrays = {k: np.asarray(values[k], dtype=np.float32) for k in STAT_KEYS}
        if len({a.shape for a in arrays.values()}) != 1 or arrays["mean"].ndim != 1:
            raise RobotDataError(path, f"fields.{name}", "statistics of different shapes")
        stats[name] = {**arrays, "count": int(values.get("count", 0))}
    return stats


def check_stats(stats: dict[str, dict], required: Sequence[tuple[str, int]]) -> None:
    """``ValueError`` unless ``stats`` has each (field, dims) in ``required``."""
    for name, dims in required:
        if name not in stats:
            raise ValueError(f"stats: missing the field {name!r} (has {sorted(stats)})")
        if np.asarray(stats[name]["mean"]).shape != (dims,):
            raise ValueError(
                f"stats[{name!r}]: expected {dims} dims, got {np.asarray(stats[name]['mean']).shape}"
            )
