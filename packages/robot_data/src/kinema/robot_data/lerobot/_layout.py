"""LeRobot dataset folders on disk: versions, path templates, metadata files and the key map to kinema's names.

Two layouts are read, the ones huggingface/lerobot writes:

- ``v3.0`` (lerobot >= 0.4, ``lerobot/datasets/utils.py`` with ``CODEBASE_VERSION = "v3.0"``)::

      meta/info.json                                   codebase_version, fps, features, chunks_size, data_path,
                                                       video_path ("videos/{video_key}/chunk-{chunk_index:03d}/
                                                       file-{file_index:03d}.mp4")
      meta/stats.json                                  {feature: {mean, std, min, max, count[, q01, q99, ...]}}
      meta/tasks.parquet                               task (the pandas index) -> task_index
      meta/episodes/chunk-000/file-000.parquet         a row per episode: episode_index, tasks, length,
                                                       data/chunk_index, data/file_index, dataset_from_index,
                                                       dataset_to_index, videos/<key>/{chunk_index, file_index,
                                                       from_timestamp, to_timestamp}, stats/<feature>/<stat>, ...
      data/chunk-000/file-000.parquet                  frames of many episodes: the non-video features, timestamp,
                                                       frame_index, episode_index, index, task_index
      videos/<key>/chunk-000/file-000.mp4              several episodes one after the other; an episode starts at
                                                       its from_timestamp

- ``v2.1`` (lerobot 0.1 - 0.3, ``CODEBASE_VERSION = "v2.1"``; v2.0 differs only by ``meta/stats.json`` in place of
  ``meta/episodes_stats.jsonl`` and is read the same way)::

      meta/info.json                                   data_path "data/chunk-{episode_chunk:03d}/
                                                       episode_{episode_index:06d}.parquet", video_path
                                                       "videos/chunk-{episode_chunk:03d}/{video_key}/
                                                       episode_{episode_index:06d}.mp4"
      meta/episodes.jsonl, meta/tasks.jsonl, meta/episodes_stats.jsonl
      data/chunk-000/episode_000000.parquet, videos/chunk-000/<key>/episode_000000.mp4  (one episode per file)

Key map: LeRobot feature name -> kinema's name (:data:`DEFAULT_KEY_MAP`). ``observation.images.<cam>`` maps to
``images/<cam>`` for every video feature unless the key map names cameras itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from .._errors import RobotDataError, require_exists

V30, V21, V20 = "v3.0", "v2.1", "v2.0"
VERSIONS = (V30, V21, V20)
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PARQUET = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
EPISODES_JSONL = "meta/episodes.jsonl"
TASKS_JSONL = "meta/tasks.jsonl"
EPISODES_STATS_JSONL = "meta/episodes_stats.jsonl"
# v3.0 defaults (lerobot/datasets/utils.py)
DEFAULT_CHUNK_SIZE = 1000
DATA_PATH_V30 = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH_V30 = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH_V30 = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
# the columns LeRobot adds to every frame
FRAME_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")

IMAGE_PREFIX = "observation.images."
DEFAULT_KEY_MAP = {
    "observation.state": "qpos",
    "observation.velocity": "qvel",
    "action": "action",
    "observation.environment_state": "environment_state",
}
KINEMA_ARRAYS = ("qpos", "qvel", "action", "environment_state")


def is_lerobot_dataset(path: str | os.PathLike) -> bool:
    """True for a folder holding ``meta/info.json`` with a ``codebase_version``."""
    info = Path(path) / INFO_PATH
    if not info.is_file():
        return False
    try:
        return "codebase_version" in json.loads(info.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return False


def read_json(path: Path) -> dict:
    require_exists(path, "metadata")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RobotDataError(path, "json", f"not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise RobotDataError(path, "json", f"expected an object, got {type(data).__name__}")
    return data


def read_jsonl(path: Path) -> list[dict]:
    require_exists(path, "metadata")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise RobotDataError(path, f"line {number}", f"not valid JSON ({error})") from error
    return rows


def read_info(root: Path) -> dict:
    """``meta/info.json``, checked: a known ``codebase_version``, ``fps`` > 0, ``features``, the path templates."""
    path = root / INFO_PATH
    info = read_json(path)
    version = info.get("codebase_version")
    if version not in VERSIONS:
        raise RobotDataError(path, "codebase_version", f"expected one of {VERSIONS}, got {version!r}")
    fps = info.get("fps")
    if isinstance(fps, bool) or not isinstance(fps, int | float) or fps <= 0:
        raise RobotDataError(path, "fps", f"expected a positive number, got {fps!r}")
    for key in ("features", "data_path"):
        if key not in info:
            raise RobotDataError(path, key, "missing")
    if not isinstance(info["features"], dict):
        raise RobotDataError(path, "features", "expected an object feature name -> {dtype, shape, ...}")
    return info


def resolve_key_map(features: Mapping[str, dict], key_map: Mapping[str, str] | None, where) -> dict[str, str]:
    """LeRobot feature -> kinema name for the features this dataset has. ``key_map`` None: the default map plus
    ``observation.images.<cam> -> images/<cam>`` for every video feature. A given key map is used as it is; it must
    name features the dataset has and kinema names (qpos, qvel, action, environment_state, images/<cam>)."""
    if key_map is None:
        mapped = {k: v for k, v in DEFAULT_KEY_MAP.items() if k in features}
        for name, feature in features.items():
            if feature.get("dtype") in ("video", "image"):
                camera = name[len(IMAGE_PREFIX) :] if name.startswith(IMAGE_PREFIX) else name
                mapped[name] = f"images/{camera.replace('/', '_')}"
    else:
        mapped = dict(key_map)
        missing = [k for k in mapped if k not in features]
        if missing:
            raise RobotDataError(
                where, "key_map", f"names feature(s) {missing} the dataset lacks; has {sorted(features)}"
            )
    for source, target in mapped.items():
        camera = target.startswith("images/") and len(target) > 7 and "/" not in target[7:]
        if target not in KINEMA_ARRAYS and not camera:
            raise RobotDataError(
                where,
                "key_map",
                f"{source!r} -> {target!r}: expected one of {KINEMA_ARRAYS} or images/<camera>",
            )
        is_image = features[source].get("dtype") in ("video", "image")
        if camera != is_image:
            raise RobotDataError(
                where,
                "key_map",
                f"{source!r} (dtype {features[source].get('dtype')}) cannot map to {target!r}",
            )
        if features[source].get("dtype") == "image":
            raise RobotDataError(
                where,
                f"features.{source}",
                "images stored in the parquet files (dtype image) are not read; only video features are",
            )
    targets = list(mapped.values())
    if len(set(targets)) != len(targets):
        raise RobotDataError(where, "key_map", f"two features map to one name: {mapped}")
    for required in ("qpos", "action"):
        if required not in targets:
            raise RobotDataError(where, "key_map", f"no feature maps to {required!r} (map: {mapped})")
    if not any(t.startswith("images/") for t in targets):
        raise RobotDataError(where, "key_map", "no video feature maps to images/<camera>")
    return mapped
