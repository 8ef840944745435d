"""kinema policy episodes (a folder of HDF5 files) -> a LeRobot v3.0 dataset folder (lerobot 0.4's layout,
see ``_layout``).

Names: qpos -> observation.state, qvel -> observation.velocity, action -> action, environment_state ->
observation.environment_state (each when every episode has it), images/<cam> -> observation.images.<cam>. Each
camera becomes one H.264 mp4 (``videos/observation.images.<cam>/chunk-000/file-000.mp4``) holding every episode
one after the other, encoded through PyAV with the settings of :func:`kinema.robot_data.write_video` (libx264,
yuv420p, crf 18) and a keyframe every 2 frames, as LeRobot's ``encode_video_frames`` (g=2) does, so that its
per-frame random access stays cheap. Frames and data rows go to ``chunk-000/file-000`` (LeRobot splits files at
100 MB of data / 200 MB of video; its readers take any split, this writer writes one file each).

The whole folder is written under a temporary name beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import json
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .._errors import RobotDataError
from .._policy_io import check_policy_episode, read_policy_episode
from .._stats import list_policy_episodes
from .._video import av
from ._layout import (
    DATA_PATH_V30,
    DEFAULT_CHUNK_SIZE,
    EPISODES_PATH_V30,
    IMAGE_PREFIX,
    INFO_PATH,
    STATS_PATH,
    TASKS_PARQUET,
    V30,
    VIDEO_PATH_V30,
)

EXPORT_NAMES = {
    "qpos": "observation.state",
    "qvel": "observation.velocity",
    "action": "action",
    "environment_state": "observation.environment_state",
}
CRF = 18  # kinema's write_video default
KEYFRAME_INTERVAL = 2  # LeRobot's encode_video_frames default (g=2)


def _pa():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise ImportError("writing LeRobot datasets needs pyarrow: pip install pyarrow") from error
    return pa, pq


class _VideoStream:
    """One mp4 that frames are appended to, episode after episode (the settings of ``write_video``)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]):
        if size[0] % 2 or size[1] % 2:
            raise ValueError(f"images: H and W must be even for H.264 yuv420p, got {size}")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(path), "w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"crf": str(CRF)}
        self.stream.codec_context.gop_size = KEYFRAME_INTERVAL
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in self.stream.encode(frame):
                self.container.mux(packet)
            self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()


def _summary(values: np.ndarray) -> dict:
    """LeRobot's per-feature statistics of (N, dims) values: min, max, mean, std, count (lists)."""
    values = np.asarray(values, dtype=np.float64)
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [int(values.shape[0])],
    }


class _ImageMoments:
    """Per-channel min, max, mean and std of frames in [0, 1], LeRobot's (3, 1, 1) image statistics."""

    def __init__(self):
        self.total = np.zeros(3)
        self.squares = np.zeros(3)
        self.low, self.high = np.full(3, np.inf), np.full(3, -np.inf)
        self.pixels = 0
        self.frames = 0

    def add(self, frames: np.ndarray) -> None:
        x = frames.reshape(-1, 3).astype(np.float64) / 255.0
        self.total += x.sum(0)
        self.squares += (x**2).sum(0)
        self.low, self.high = np.minimum(self.low, x.min(0)), np.maximum(self.high, x.max(0))
        self.pixels += x.shape[0]
        self.frames += frames.shape[0]

    def result(self) -> dict:
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.squares / self.pixels - mean**2, 0.0))
        shape = lambda v: np.asarray(v).reshape(3, 1, 1).tolist()  # noqa: E731
        return {
            "min": shape(self.low),
            "max": shape(self.high),
            "mean": shape(mean),
            "std": shape(std),
            "count": [self.frames],
        }


def _vector_column(pa, values: np.ndarray, dtype):
    """(N, dims) -> a fixed-size list column (what HF datasets writes for a Sequence of length dims), or a scalar
    column when dims == 1 (LeRobot stores shape (1,) features as scalars)."""
    values = np.ascontiguousarray(values)
    if values.shape[1] == 1:
        return pa.array(values[:, 0], type=dtype)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=dtype), values.shape[1])


def _tasks_table(pa, tasks: dict[str, int]):
    """meta/tasks.parquet as pandas writes LeRobot's DataFrame: column task_index, index ``task``."""
    table = pa.table(
        {
            "task_index": pa.array(list(tasks.values()), pa.int64()),
            "task": pa.array(list(tasks.keys()), pa.string()),
        }
    )
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [
            {
                "name": None,
                "field_name": None,
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": {"encoding": "UTF-8"},
            }
        ],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


def export_lerobot(src: str | os.PathLike, out: str | os.PathLike, *, progress: bool = True) -> Path:
    """Writes the policy episodes of ``src`` (a folder or file, as :func:`compute_policy_stats` takes) as a LeRobot
    v3.0 dataset at ``out`` (which must not exist); returns ``out``. Every episode must share fps, cameras, image
    sizes and dims; qvel and environment_state are exported when every episode has them. Strict: any unreadable
    episode raises :class:`RobotDataError` and nothing is written."""
    pa, pq = _pa()
    out = Path(out)
    if out.exists():
        raise ValueError(f"out: {out} already exists; choose a new folder")
    files = list_policy_episodes(src)
    if not files:
        raise RobotDataError(src, "episodes", "no policy episode (*.hdf5) to export")
    infos = [check_policy_episode(p) for p in files]
    first = infos[0]
    for info in infos[1:]:
        for what, mine, want in (
            ("cameras", info.cameras, first.cameras),
            ("qpos dims", info.qpos_dim, first.qpos_dim),
            ("action dims", info.action_dim, first.action_dim),
            ("fps", info.attrs["fps"], first.attrs["fps"]),
        ):
            if mine != want:
                raise RobotDataError(info.path, what, f"{mine}, the first episode ({first.path}) has {want}")
    fps = float(first.attrs["fps"])
    has_env = all(i.environment_state_dim is not None for i in infos)
    if has_env and len({i.environment_state_dim for i in infos}) != 1:
        raise RobotDataError(src, "environment_state", "episodes disagree in dimension")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    streams: dict[str, _VideoStream] = {}
    try:
        cameras = {c: f"{IMAGE_PREFIX}{c}" for c in first.cameras}
        for camera, key in cameras.items():
            path = tmp / VIDEO_PATH_V30.format(video_key=key, chunk_index=0, file_index=0)
            streams[camera] = _VideoStream(path, fps, first.cameras[camera])
        tasks: dict[str, int] = {}
        columns: dict[str, list[np.ndarray]] = {}
        episode_rows = []
        moments = {c: _ImageMoments() for c in cameras}
        total = 0
        has_qvel = None
        for index, path in enumerate(
            tqdm(files, desc="exporting episodes", unit="episode", disable=not progress)
        ):
            episode = read_policy_episode(path)
            if has_qvel is None:  # decided by the first episode; all must agree
                has_qvel = "qvel" in episode
            elif has_qvel != ("qvel" in episode):
                raise RobotDataError(path, "observations/qvel", "present in some episodes only")
            steps = episode["qpos"].shape[0]
            task = str(episode["attrs"].get("task", ""))
            task_index = tasks.setdefault(task, len(tasks))
            arrays = {"qpos": episode["qpos"], "action": episode["action"]}
            if has_qvel:
                arrays["qvel"] = episode["qvel"]
            if has_env:
                arrays["environment_state"] = episode["environment_state"]
            row = {
                "episode_index": index,
                "tasks": [task],
                "length": steps,
                "data/chunk_index": 0,
                "data/file_index": 0,
                "dataset_from_index": total,
                "dataset_to_index": total + steps,
            }
            for camera, key in cameras.items():
                start = streams[camera].frames
                streams[camera].add(episode["images"][camera])
                moments[camera].add(episode["images"][camera])
                row |= {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": 0,
                    f"videos/{key}/from_timestamp": start / fps,
                    f"videos/{key}/to_timestamp": (start + steps) / fps,
                }
            for name, values in arrays.items():
                columns.setdefault(EXPORT_NAMES[name], []).append(values)
                for stat, value in _summary(values).items():
                    row[f"stats/{EXPORT_NAMES[name]}/{stat}"] = value
            frame_index = np.arange(steps, dtype=np.int64)
            columns.setdefault("timestamp", []).append((frame_index / fps).astype(np.float32))
            columns.setdefault("frame_index", []).append(frame_index)
            columns.setdefault("episode_index", []).append(np.full(steps, index, np.int64))
            columns.setdefault("index", []).append(np.arange(total, total + steps, dtype=np.int64))
            columns.setdefault("task_index", []).append(np.full(steps, task_index, np.int64))
            row |= {"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
            episode_rows.append(row)
            total += steps
        for stream in streams.values():
            stream.close()
        streams = {}

        features, data = {}, {}
        for name in ("qpos", "qvel", "action", "environment_state"):
            key = EXPORT_NAMES[name]
            if key not in columns:
                continue
            values = np.concatenate(columns[key]).astype(np.float32)
            features[key] = {
                "dtype": "float32",
                "shape": [values.shape[1]],
                "names": [f"{name}_{i}" for i in range(values.shape[1])],
            }
            data[key] = _vector_column(pa, values, pa.float32())
        for camera, key in cameras.items():
            height, width = first.cameras[camera]
            features[key] = {
                "dtype": "video",
                "shape": [height, width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": height,
                    "video.width": width,
                    "video.codec": "h264",
                    "video.pix_fmt": "yuv420p",
                    "video.is_depth_map": False,
                    "video.fps": fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        for key, dtype in (
            ("timestamp", pa.float32()),
            ("frame_index", pa.int64()),
            ("episode_index", pa.int64()),
            ("index", pa.int64()),
            ("task_index", pa.int64()),
        ):
            data[key] = pa.array(np.concatenate(columns[key]), type=dtype)
            features[key] = {
                "dtype": "float32" if key == "timestamp" else "int64",
                "shape": [1],
                "names": None,
            }

        data_path = tmp / DATA_PATH_V30.format(chunk_index=0, file_index=0)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(data), data_path)
        episodes_path = tmp / EPISODES_PATH_V30.format(chunk_index=0, file_index=0)
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(episode_rows), episodes_path)
        pq.write_table(_tasks_table(pa, tasks), tmp / TASKS_PARQUET)

        stats = {
            EXPORT_NAMES[n]: _summary(np.concatenate(columns[EXPORT_NAMES[n]]))
            for n in ("qpos", "qvel", "action", "environment_state")
            if EXPORT_NAMES[n] in columns
        }
        stats |= {cameras[c]: m.result() for c, m in moments.items()}
        for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            stats[key] = _summary(np.concatenate(columns[key]).reshape(-1, 1))
        (tmp / STATS_PATH).write_text(json.dumps(stats, indent=2))
        info = {
            "codebase_version": V30,
            "robot_type": None,
            "total_episodes": len(files),
            "total_frames": total,
            "total_tasks": len(tasks),
            "chunks_size": DEFAULT_CHUNK_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": int(fps) if fps == int(fps) else fps,
            "splits": {"train": f"0:{len(files)}"},
            "data_path": DATA_PATH_V30,
            "video_path": VIDEO_PATH_V30,
            "features": features,
        }
        (tmp / INFO_PATH).write_text(json.dumps(info, indent=4))
        os.replace(tmp, out)
    finally:
        for stream in streams.values():
            stream.container.close()
        if tmp.exists():
            shutil.rmtree(tmp)
    return out
