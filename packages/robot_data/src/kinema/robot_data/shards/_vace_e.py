"""VACE-E episodes as WebDataset shards: one sample per episode, its files as they are stored.

Members of a sample: ``video.mp4``, ``control_video.mp4``, ``mask.mp4``, ``hand_trajectories.hdf5`` and
``object_trajectories.hdf5`` when the episode has them, ``embodiment.jpg`` (its first ``end_effector_*.jpg``), and
``meta.json`` (task folder, episode folder, the sample's index). The task metadata JSON is copied beside the index
as ``task_metadata.json``; the index records each episode's frame count and rate, from which a reader knows its
windows for any ``num_frames`` and ``fps``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from pathlib import Path

from .._errors import RobotDataError, SkippedItem, require_exists
from .._sizes import wan_num_frames
from .._vace_e import VaceEConfig, VaceEEpisode, VaceEEpisodeDataset, episode_files
from .._video import probe_video
from ._stream import ShardStream, scratch_dir

KIND = "vace_e"
TASK_METADATA = "task_metadata.json"
MEMBERS = {  # member name -> the file's name inside episode_<n>/ (n = the episode's number)
    "video.mp4": "{name}.mp4",
    "control_video.mp4": "{name}_hands_masked.mp4",
    "mask.mp4": "{name}_hands_mask.mp4",
    "hand_trajectories.hdf5": "{name}_hand_trajectories.hdf5",
    "object_trajectories.hdf5": "{name}_object_trajectories.hdf5",
    "embodiment.jpg": "end_effector_0.jpg",
}


class VaceESource:
    """The episodes of a VACE-E folder as shard samples (indexed, and bad ones left out, by VaceEEpisodeDataset)."""

    kind = KIND
    info_keys = ("frames", "fps")

    def __init__(self, base: Path, metadata: Path, strict: bool):
        self.path = base
        dataset = VaceEEpisodeDataset(VaceEConfig(base_path=base, metadata_path=metadata, strict=strict))
        self.candidates: list[VaceEEpisode] = dataset.episodes
        self.skipped: list[SkippedItem] = dataset.skipped

    def settings(self) -> dict:
        return {"episodes": len(self.candidates)}

    def sample(self, episode: VaceEEpisode, index: int) -> tuple[dict, dict]:
        files = episode_files(episode.path)
        paths = {
            "video.mp4": episode.videos["video"],
            "control_video.mp4": episode.videos["control_video"],
            "mask.mp4": episode.videos["mask"],
            "hand_trajectories.hdf5": files["hand_trajectories"],
            "object_trajectories.hdf5": files["object_trajectories"],
            "embodiment.jpg": episode.embodiment_image,
        }
        sample = {"__key__": f"{index:08d}"}
        for member, path in paths.items():
            if path is not None and Path(path).is_file():
                sample[member] = Path(path).read_bytes()
        meta = {"index": index, "task": episode.path.parent.name, "episode": episode.path.name,
                "source": str(episode.path)}  # fmt: skip
        sample["meta.json"] = json.dumps(meta).encode()
        return sample, {"frames": len(episode.frame_indices), "fps": probe_video(episode.videos["video"]).fps}

    def statistics(self, index) -> dict:
        """Totals of the episodes the shards hold: samples, frames, episodes per task."""
        episodes = [self.candidates[p] for shard in index.shards for p in shard["positions"]]
        tasks: dict[str, int] = {}
        for episode in episodes:
            tasks[episode.path.parent.name] = tasks.get(episode.path.parent.name, 0) + 1
        frames = sum(len(episode.frame_indices) for episode in episodes)
        return {"samples": len(episodes), "frames": frames, "episodes_per_task": tasks}


def write_vace_e_shards(
    base_path: str | os.PathLike,
    metadata_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    max_shard_bytes: int = 512 * 2**20,
    max_shard_samples: int | None = None,
    strict: bool = False,
    progress: bool = True,
):
    """Writes the episodes of a VACE-E folder (``<base>/<task>/episode_<n>/``, with its task metadata JSON) into
    shards in ``out_dir``; the same options, resume and bad-item rules as
    :func:`~kinema.robot_data.shards.write_action_video_shards`. Returns the index."""
    from ._write import _check_limits, write_shards

    base = require_exists(base_path, "base_path")
    metadata = require_exists(metadata_path, "metadata_path")
    _check_limits(max_shard_bytes, max_shard_samples)
    source = VaceESource(base, metadata, strict)
    index = write_shards(
        source, out_dir, max_shard_bytes, max_shard_samples, strict=strict, progress=progress,
        extra_files={TASK_METADATA: metadata.read_bytes()},
    )  # fmt: skip
    return index


class ShardedVaceEEpisodeDataset(ShardStream):
    """Samples of :class:`~kinema.robot_data.VaceEEpisodeDataset` (the same keys, windows and options; batch them
    with :func:`~kinema.robot_data.collate_vace_e`) streamed from shards written by :func:`write_vace_e_shards`.

    ``shards``, ``index``, ``shuffle_shards``, ``shuffle_buffer``, ``loader_batch_size``, ``loader_workers``,
    ``rank``, ``world_size`` and ``set_epoch`` as for
    :class:`~kinema.robot_data.shards.ShardedActionVideoDataset`; ``metadata_path`` defaults to the task metadata
    copied beside the index; other :class:`VaceEConfig` options (``num_frames``, ``fps``, ``window``, sizes, ...)
    as keywords. ``episode`` of a sample is the episode's folder when it was sharded."""

    def _configure(self, index_path: Path | str, options: dict) -> None:
        for name in ("base_path", "repeat"):
            if name in options:
                raise ValueError(f"{name}: not an option of sharded datasets (the shards hold the episodes)")
        if self.index.kind != KIND:
            raise RobotDataError(index_path, "kind", f"expected {KIND} shards, got {self.index.kind}")
        folder = Path(index_path) if Path(index_path).is_dir() else Path(index_path).parent
        metadata = options.pop("metadata_path", None)
        metadata = Path(metadata) if metadata is not None else folder / TASK_METADATA
        require_exists(metadata, "metadata_path")
        self.config = VaceEConfig(base_path=folder, metadata_path=metadata, **options)

    def _entry_items(self, entry: dict) -> list[int]:
        cfg = self.config
        items = []
        for frames, fps in zip(entry["frames"], entry["fps"], strict=True):
            available = frames if cfg.fps is None else math.ceil(frames / fps * cfg.fps - 1e-6)
            usable = max(available, 1)
            positions = usable - min(cfg.num_frames, wan_num_frames(usable)) + 1
            items.append((positions - 1) // cfg.stride + 1 if cfg.window == "all" else 1)
        return items

    def _decode(self, raw: dict, window: int) -> dict:
        meta = json.loads(raw["meta.json"])
        with tempfile.TemporaryDirectory(prefix="kinema-shard-", dir=scratch_dir()) as scratch:
            # the episode's files under their own names, so that VaceEEpisodeDataset reads it as from its folder
            episode_dir = Path(scratch) / meta["task"] / meta["episode"]
            episode_dir.mkdir(parents=True)
            for member, pattern in MEMBERS.items():
                if member in raw:
                    (episode_dir / pattern.format(name=meta["episode"])).write_bytes(raw[member])
            one = VaceEEpisodeDataset(dataclasses.replace(self.config, base_path=Path(scratch), strict=True))
            one.set_epoch(self.epoch)
            # item: the window of an "all" episode; index: what "random" draws from, as the folder dataset does
            sample = one._load(window if self.config.window == "all" else 0, int(meta["index"]))
        sample["episode"] = meta["source"]
        sample["index"] = int(meta["index"])
        return sample
