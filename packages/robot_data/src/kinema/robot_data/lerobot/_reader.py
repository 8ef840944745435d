"""A LeRobot dataset folder (v3.0 or v2.1, see ``_layout``) as kinema policy episodes.

:class:`LeRobotEpisodes` gives, per episode, what :func:`kinema.robot_data.check_policy_episode` and
:func:`kinema.robot_data.read_policy_episode` give for an HDF5 file: a :class:`PolicyEpisodeInfo` and a dict
``qpos``, ``action`` (float32 (T, dims)), optional ``qvel`` / ``environment_state``, ``images`` {camera: (T, H, W, 3)
uint8} and ``attrs`` (``fps``, ``task``, ``sim``). Frames come from kinema's video reader: frame t of an episode is
video frame round((from_timestamp + timestamp_t) * fps) of its file (from_timestamp is 0 in v2.1, one file per
episode). Episodes never mix: an episode's rows are those with its ``episode_index``, checked against its length
(and, in v3.0, against ``dataset_from_index``..``dataset_to_index``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._errors import RobotDataError, require_exists
from .._policy_io import PolicyEpisodeInfo
from .._stats import MIN_STD, STAT_KEYS, summarize
from .._video import probe_video, read_video_frames
from ._layout import (
    EPISODES_DIR,
    EPISODES_JSONL,
    EPISODES_STATS_JSONL,
    INFO_PATH,
    STATS_PATH,
    TASKS_JSONL,
    TASKS_PARQUET,
    V30,
    read_info,
    read_json,
    read_jsonl,
    resolve_key_map,
)


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError("reading LeRobot datasets needs pyarrow: pip install pyarrow") from error
    return pq


def column_array(table, name: str, path) -> np.ndarray:
    """A parquet column -> (N, dims) float32 (list columns) or (N,) (scalar columns)."""
    column = table.column(name).combine_chunks()
    try:
        if hasattr(column, "flatten") and column.type.num_fields == 1:  # list / fixed-size list
            values = column.flatten().to_numpy(zero_copy_only=False)
            return values.reshape(len(column), -1) if len(column) else values.reshape(0, 0)
        return column.to_numpy(zero_copy_only=False)
    except (ValueError, TypeError) as error:
        raise RobotDataError(path, name, f"not a numeric column ({error})") from error


@dataclass(frozen=True)
class LeRobotEpisodeRef:
    """One episode of a LeRobot folder (picklable, for reader processes); ``str()`` is ``<root>#episode_<index>``."""

    root: str
    episode_index: int

    def __str__(self) -> str:
        return f"{self.root}#episode_{self.episode_index:06d}"


class LeRobotEpisodes:
    """The episodes of a LeRobot dataset folder, read as kinema policy episodes.

    - ``root``: the folder holding ``meta/info.json`` (codebase_version v3.0, v2.1 or v2.0);
    - ``key_map``: LeRobot feature -> kinema name (``_layout.DEFAULT_KEY_MAP``: observation.state -> qpos,
      action -> action, observation.environment_state -> environment_state, observation.velocity -> qvel, and
      observation.images.<cam> -> images/<cam>); qpos, action and one camera are required.

    Metadata is read and checked at construction (no parquet data, no video); ``episodes`` lists the episodes in
    ``episode_index`` order. Loaders never write into the folder.
    """

    def __init__(self, root: str | os.PathLike, key_map: Mapping[str, str] | None = None):
        self.root = require_exists(root, "root")
        self.info = read_info(self.root)
        self.version = self.info["codebase_version"]
        self.fps = float(self.info["fps"])
        self.features = self.info["features"]
        self.key_map = resolve_key_map(self.features, key_map, self.root / INFO_PATH)
        self.arrays = {
            v: k for k, v in self.key_map.items() if not v.startswith("images/")
        }  # kinema -> lerobot
        self.cameras = {v[7:]: k for k, v in self.key_map.items() if v.startswith("images/")}  # camera -> key
        for key in self.cameras.values():
            if self.features[key].get("dtype") != "video":
                raise RobotDataError(self.root / "meta/info.json", f"features.{key}", "expected dtype video")
        if "video_path" not in self.info or not self.info["video_path"]:
            raise RobotDataError(
                self.root / "meta/info.json", "video_path", "missing (the dataset has videos)"
            )
        self.tasks = self._read_tasks()
        self._rows = self._read_episodes()
        self.episodes = [LeRobotEpisodeRef(str(self.root), int(r["episode_index"])) for r in self._rows]
        self._by_index = {int(r["episode_index"]): r for r in self._rows}
        self._stats_source: dict[str, str] = {}

    # ---- metadata ---------------------------------------------------------------------------------------------
    def _read_tasks(self) -> dict[int, str]:
        if self.version == V30:
            path = require_exists(self.root / TASKS_PARQUET, "tasks")
            table = _parquet().read_table(path)
            names = table.column_names
            task_column = "task" if "task" in names else "__index_level_0__"
            if "task_index" not in names or task_column not in names:
                raise RobotDataError(path, "columns", f"expected task and task_index, got {names}")
            return dict(zip(table.column("task_index").to_pylist(), table.column(task_column).to_pylist()))
        path = self.root / TASKS_JSONL
        rows = read_jsonl(path)
        try:
            return {int(r["task_index"]): str(r["task"]) for r in rows}
        except (KeyError, TypeError, ValueError) as error:
            raise RobotDataError(
                path, "task_index", f"expected task_index and task on each line ({error})"
            ) from error

    def _read_episodes(self) -> list[dict]:
        if self.version == V30:
            files = sorted((self.root / EPISODES_DIR).glob("chunk-*/file-*.parquet"))
            if not files:
                raise RobotDataError(self.root / EPISODES_DIR, "episodes", "holds no chunk-*/file-*.parquet")
            rows = []
            for path in files:
                table = _parquet().read_table(path)
                keep = [c for c in table.column_names if not c.startswith("stats/")]
                rows += table.select(keep).to_pylist()
            required = [
                "episode_index",
                "length",
                "data/chunk_index",
                "data/file_index",
                "dataset_from_index",
                "dataset_to_index",
            ]
            for key in self.cameras.values():
                required += [
                    f"videos/{key}/chunk_index",
                    f"videos/{key}/file_index",
                    f"videos/{key}/from_timestamp",
                ]
        else:
            rows = read_jsonl(self.root / EPISODES_JSONL)
            required = ["episode_index", "length"]
            files = [self.root / EPISODES_JSONL]
        for row in rows:
            missing = [k for k in required if k not in row]
            if missing:
                raise RobotDataError(files[0], f"episode {row.get('episode_index')}", f"missing {missing}")
            if int(row["length"]) < 1:
                raise RobotDataError(files[0], f"episode {row['episode_index']}", "length < 1")
        rows.sort(key=lambda r: int(r["episode_index"]))
        if len({int(r["episode_index"]) for r in rows}) != len(rows):
            raise RobotDataError(files[0], "episode_index", "an episode is listed twice")
        return rows

    def __len__(self) -> int:
        return len(self.episodes)

    def _row(self, episode: int | LeRobotEpisodeRef) -> dict:
        index = episode.episode_index if isinstance(episode, LeRobotEpisodeRef) else int(episode)
        if index not in self._by_index:
            raise RobotDataError(self.root, "episode_index", f"no episode {index}")
        return self._by_index[index]

    def _chunk(self, index: int) -> int:
        return index // int(self.info.get("chunks_size", 1000))

    def data_path(self, row: dict) -> Path:
        template = self.info["data_path"]
        if self.version == V30:
            return self.root / template.format(
                chunk_index=row["data/chunk_index"], file_index=row["data/file_index"]
            )
        index = int(row["episode_index"])
        return self.root / template.format(episode_chunk=self._chunk(index), episode_index=index)

    def video_path(self, row: dict, key: str) -> tuple[Path, float]:
        """(file, the episode's first timestamp in it)."""
        template = self.info["video_path"]
        if self.version == V30:
            path = template.format(
                video_key=key,
                chunk_index=row[f"videos/{key}/chunk_index"],
                file_index=row[f"videos/{key}/file_index"],
            )
            return self.root / path, float(row[f"videos/{key}/from_timestamp"])
        index = int(row["episode_index"])
        return self.root / template.format(
            episode_chunk=self._chunk(index), video_key=key, episode_index=index
        ), 0.0

    def _task(self, row: dict) -> str:
        tasks = row.get("tasks")
        if isinstance(tasks, list | tuple) and tasks:
            return str(tasks[0]) if len(tasks) == 1 else " | ".join(map(str, tasks))
        return ""

    def _image_size(self, key: str) -> tuple[int, int]:
        feature = self.features[key]
        shape, names = list(feature.get("shape", [])), feature.get("names") or []
        if len(shape) != 3:
            raise RobotDataError(
                self.root / "meta/info.json", f"features.{key}.shape", f"expected 3 dims, got {shape}"
            )
        if "height" in names and "width" in names:
            return int(shape[names.index("height")]), int(shape[names.index("width")])
        return (int(shape[0]), int(shape[1])) if shape[2] in (1, 3, 4) else (int(shape[1]), int(shape[2]))

    def _dims(self, name: str) -> int | None:
        key = self.arrays.get(name)
        if key is None:
            return None
        shape = self.features[key].get("shape", [1])
        return int(np.prod(shape))

    # ---- per episode ------------------------------------------------------------------------------------------
    def check_episode(self, episode: int | LeRobotEpisodeRef) -> PolicyEpisodeInfo:
        """What :func:`check_policy_episode` says about an HDF5 episode, from the metadata alone."""
        row = self._row(episode)
        ref = LeRobotEpisodeRef(str(self.root), int(row["episode_index"]))
        return PolicyEpisodeInfo(
            path=str(ref),
            num_steps=int(row["length"]),
            qpos_dim=self._dims("qpos"),
            action_dim=self._dims("action"),
            environment_state_dim=self._dims("environment_state"),
            cameras={camera: self._image_size(key) for camera, key in self.cameras.items()},
            attrs=self._attrs(row),
        )

    def _attrs(self, row: dict) -> dict:
        return {
            "fps": self.fps,
            "task": self._task(row),
            "sim": False,  # LeRobot does not record it; kinema's readers only need it present
            "lerobot_episode_index": int(row["episode_index"]),
            "lerobot_version": self.version,
            "robot_type": self.info.get("robot_type") or "",
        }

    def read_arrays(self, episode: int | LeRobotEpisodeRef) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The episode's mapped arrays (float32 (T, dims)) and its timestamps (T,) float64, from its parquet rows."""
        row = self._row(episode)
        index, length = int(row["episode_index"]), int(row["length"])
        path = require_exists(self.data_path(row), "data")
        columns = [*self.arrays.values(), "timestamp", "frame_index", "episode_index"]
        if self.version == V30:
            columns.append("index")
        try:
            table = _parquet().read_table(path, columns=columns, filters=[("episode_index", "=", index)])
        except (OSError, ValueError, KeyError) as error:  # pyarrow's errors derive from these
            raise RobotDataError(path, "parquet", f"unreadable ({error})") from error
        where = f"episode {index}"
        if table.num_rows != length:
            raise RobotDataError(path, where, f"{table.num_rows} rows, the episode's length is {length}")
        order = np.argsort(column_array(table, "frame_index", path), kind="stable")
        frame_index = column_array(table, "frame_index", path)[order]
        if not np.array_equal(frame_index, np.arange(length)):
            raise RobotDataError(path, f"{where}: frame_index", "expected 0..length-1, each once")
        if self.version == V30:
            start, stop = int(row["dataset_from_index"]), int(row["dataset_to_index"])
            if stop - start != length or not np.array_equal(
                column_array(table, "index", path)[order], np.arange(start, stop)
            ):
                raise RobotDataError(
                    path, f"{where}: index", f"expected dataset_from_index..to_index {start}..{stop}"
                )
        arrays = {}
        for name, key in self.arrays.items():
            values = np.asarray(column_array(table, key, path)[order], dtype=np.float32).reshape(length, -1)
            if not np.all(np.isfinite(values)):
                bad = int(np.argwhere(~np.isfinite(values))[0][0])
                raise RobotDataError(path, f"{where}: {key}", f"holds NaN or Inf (first at frame {bad})")
            arrays[name] = values
        timestamps = np.asarray(column_array(table, "timestamp", path)[order], dtype=np.float64).reshape(-1)
        return arrays, timestamps

    def frame_indices(self, row: dict, key: str, timestamps: np.ndarray) -> tuple[Path, np.ndarray]:
        path, start = self.video_path(row, key)
        return path, np.round((start + timestamps) * self.fps).astype(np.int64)

    def read_episode(self, episode: int | LeRobotEpisodeRef) -> dict:
        """The whole episode, as :func:`read_policy_episode` returns an HDF5 episode."""
        row = self._row(episode)
        arrays, timestamps = self.read_arrays(row["episode_index"])
        images = {}
        for camera, key in self.cameras.items():
            path, indices = self.frame_indices(row, key, timestamps)
            images[camera] = read_video_frames(require_exists(path, "video"), indices)
            want = self._image_size(key)
            if images[camera].shape[1:3] != want:
                raise RobotDataError(
                    path, key, f"frames are {images[camera].shape[1:3]}, info.json says {want}"
                )
        return {**arrays, "images": images, "attrs": self._attrs(row)}

    def check_videos(self, episode: int | LeRobotEpisodeRef) -> None:
        """Probes each camera's file of an episode and decodes the episode's last frame (for ``validate``)."""
        row = self._row(episode)
        length = int(row["length"])
        for key in self.cameras.values():
            path, start = self.video_path(row, key)
            info = probe_video(path)
            last = round((start + (length - 1) / self.fps) * self.fps)
            if last >= info.num_frames:
                raise RobotDataError(
                    path,
                    key,
                    f"episode {row['episode_index']} needs frame {last}, the file has {info.num_frames}",
                )
            read_video_frames(path, [last])

    # ---- statistics -------------------------------------------------------------------------------------------
    def stats(self) -> dict[str, dict]:
        """kinema statistics (``mean std min max q01 q99 count``, std clipped at 0.01) of every mapped array.

        Uses the dataset's own statistics when it has them: ``meta/stats.json`` (v3.0, v2.0), else the
        per-episode ``meta/episodes_stats.jsonl`` aggregated (v2.1). Quantiles come from the file when it has
        ``q01``/``q99`` (recent LeRobot writes them), else from the data; a field without statistics is computed
        from the data. :attr:`stats_source` says, per field, which was used.
        """
        given = self._given_stats()
        needed = [name for name in self.arrays if name not in given or not {"q01", "q99"} <= set(given[name])]
        data = {}
        if needed:
            parts = {name: [] for name in needed}
            for ref in self.episodes:
                arrays, _ = self.read_arrays(ref)
                for name in needed:
                    parts[name].append(arrays[name])
            data = {name: summarize(np.concatenate(parts[name])) for name in needed}
        stats, self._stats_source = {}, {}
        for name in self.arrays:
            if name not in given:
                stats[name] = data[name]
                self._stats_source[name] = "computed from the data"
                continue
            values = dict(given[name])
            source = self._given_source
            if "q01" not in values or "q99" not in values:
                values["q01"], values["q99"] = data[name]["q01"], data[name]["q99"]
                source += " (q01/q99 computed from the data)"
            values["std"] = np.maximum(values["std"], MIN_STD)
            stats[name] = {
                **{k: np.asarray(values[k], dtype=np.float32).reshape(-1) for k in STAT_KEYS},
                "count": int(values.get("count", 0)),
            }
            self._stats_source[name] = source
        return stats

    @property
    def stats_source(self) -> dict[str, str]:
        """Per field, where :meth:`stats` took its values from (filled by :meth:`stats`)."""
        return dict(self._stats_source)

    def _given_stats(self) -> dict[str, dict]:
        path = self.root / STATS_PATH
        per_feature: dict[str, dict] = {}
        if path.is_file():
            per_feature = read_json(path)
            self._given_source = "meta/stats.json"
        elif (self.root / EPISODES_STATS_JSONL).is_file():
            per_feature = _aggregate(
                read_jsonl(self.root / EPISODES_STATS_JSONL), self.root / EPISODES_STATS_JSONL
            )
            self._given_source = "meta/episodes_stats.jsonl (aggregated)"
        given = {}
        for name, key in self.arrays.items():
            entry = per_feature.get(key)
            if not isinstance(entry, dict) or not {"mean", "std", "min", "max"} <= set(entry):
                continue
            dims = self._dims(name)
            values = {
                k: np.asarray(v, dtype=np.float64).reshape(-1)
                for k, v in entry.items()
                if k in (*STAT_KEYS, "count")
            }
            if any(values[k].shape != (dims,) for k in ("mean", "std", "min", "max")):
                raise RobotDataError(path, key, f"statistics do not have {dims} dims")
            count = values.get("count")
            values["count"] = int(count[0]) if count is not None and count.size else 0
            given[name] = values
        return given


def _aggregate(rows: list[dict], path: Path) -> dict[str, dict]:
    """Per-episode statistics (v2.1's episodes_stats.jsonl) -> dataset statistics: count-weighted mean, the pooled
    variance, min of mins, max of maxes (LeRobot's ``aggregate_stats`` does the same)."""
    merged: dict[str, list[dict]] = {}
    for row in rows:
        for key, entry in (row.get("stats") or {}).items():
            if isinstance(entry, dict) and {"mean", "std", "min", "max", "count"} <= set(entry):
                merged.setdefault(key, []).append(entry)
    out = {}
    for key, entries in merged.items():
        try:
            counts = np.array([float(np.asarray(e["count"]).reshape(-1)[0]) for e in entries])
            means = np.stack([np.asarray(e["mean"], dtype=np.float64).reshape(-1) for e in entries])
            stds = np.stack([np.asarray(e["std"], dtype=np.float64).reshape(-1) for e in entries])
            mins = np.stack([np.asarray(e["min"], dtype=np.float64).reshape(-1) for e in entries])
            maxs = np.stack([np.asarray(e["max"], dtype=np.float64).reshape(-1) for e in entries])
        except (ValueError, TypeError) as error:
            raise RobotDataError(path, key, f"statistics of different shapes ({error})") from error
        weights = counts[:, None] / counts.sum()
        mean = (weights * means).sum(0)
        variance = (weights * (stds**2 + (means - mean) ** 2)).sum(0)
        out[key] = {
            "mean": mean,
            "std": np.sqrt(variance),
            "min": mins.min(0),
            "max": maxs.max(0),
            "count": [int(counts.sum())],
        }
    return out


def episode_ref(path: str | os.PathLike | LeRobotEpisodeRef) -> LeRobotEpisodeRef | None:
    """``path`` as a LeRobot episode when it is one (a ref, or its ``str()``: ``<root>#episode_<index>``), else None.
    The text form lets the policy code, which passes episode paths around as strings and Paths (also to reader
    processes), carry LeRobot episodes unchanged."""
    if isinstance(path, LeRobotEpisodeRef):
        return path
    root, separator, index = os.fspath(path).rpartition("#episode_")
    if not separator or not index.isdigit() or not (Path(root) / INFO_PATH).is_file():
        return None
    return LeRobotEpisodeRef(root, int(index))


@functools.lru_cache(maxsize=8)
def lerobot_episodes(root: str) -> LeRobotEpisodes:
    """The (cached, per process) :class:`LeRobotEpisodes` of ``root`` with the default key map."""
    return LeRobotEpisodes(root)


def read_lerobot_episode(ref: LeRobotEpisodeRef, key_map: Mapping[str, str] | None = None) -> dict:
    """One episode of a LeRobot folder, as :func:`read_policy_episode` returns one (for reader processes)."""
    return LeRobotEpisodes(ref.root, key_map).read_episode(ref)
