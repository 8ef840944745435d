"""Streaming action-video samples from WebDataset shards (the plan of an epoch: :mod:`._stream`)."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .._action_video import ActionVideoConfig, load_clip_sample
from .._actions import parse_action_json
from .._errors import RobotDataError, RobotDataWarning
from .._sizes import num_action_steps
from ._stream import ShardStream, scratch_dir


class ShardedActionVideoDataset(ShardStream):
    """Samples of :class:`~kinema.robot_data.ActionVideoDataset` (the same keys, windows and options) streamed
    from shards written by ``kinema-data shard``.

    ``shards``: a shard folder, or a WebDataset URL pattern (``/data/shard-{000000..000099}.tar``,
    ``pipe:aws s3 cp s3://bucket/shard-{000000..000099}.tar -``); ``index``: index.json or its folder, on local
    disk (default: the shard folder, or the folder of a local pattern; remote shards need a local copy of it). Options of :class:`ActionVideoConfig` other than
    ``base_path`` / ``metadata_path`` / ``repeat`` / ``check_videos`` are accepted as keywords. ``rank`` and
    ``world_size`` default to torch.distributed's. ``set_epoch`` must be called before each epoch (as with a
    ``DistributedSampler``); ``len()`` is this process's items left in the epoch. ``loader_batch_size`` and
    ``loader_workers``: the ``batch_size`` and ``num_workers`` of the DataLoader that iterates it (its workers hand
    over whole batches in turn): the plan of an epoch depends on them, so every batch is whole, every process
    yields the same number, and a resume position is exact.
    """

    def _configure(self, index_path: Path | str, options: dict) -> None:
        for name in ("base_path", "metadata_path", "repeat", "check_videos"):
            if name in options:
                raise ValueError(f"{name}: not an option of sharded datasets (the shards hold the rows)")
        if self.index.kind != "action_video":
            raise RobotDataError(index_path, "kind", f"expected action_video shards, got {self.index.kind}")
        self.config = ActionVideoConfig(base_path=Path(index_path), check_videos=False, **options)
        self.num_actions = num_action_steps(self.config.num_frames)
        short = sum(
            1 for _, shard in self.shards for steps in shard["action_steps"] if steps < self.num_actions
        )
        if short:
            message = (
                f"{short} sample(s) have fewer than {self.num_actions} action steps (num_frames="
                f"{self.config.num_frames}) and give no window"
            )
            if self.config.strict:
                raise RobotDataError(index_path, "num_frames", message)
            warnings.warn(
                f"ShardedActionVideoDataset: {message}; they are left out", RobotDataWarning, stacklevel=3
            )

    def _entry_items(self, entry: dict) -> list[int]:
        """Windows of each sample of a shard: one (``first``, ``random``) or every ``all`` window of its
        action steps; none when it has fewer steps than a window."""
        items = []
        for steps in entry["action_steps"]:
            if steps < self.num_actions:
                items.append(0)
            elif self.config.window != "all":
                items.append(1)
            else:
                items.append((steps - self.num_actions) // self.config.stride_steps + 1)
        return items

    def _decode(self, raw: dict, window: int) -> dict:
        meta = json.loads(raw["meta.json"])
        binary, magnitude = parse_action_json(
            raw["action.json"].decode(), source=str(raw.get("__url__")), row=raw["__key__"]
        )
        if self.config.window == "all":
            step = window * self.config.stride_steps
        elif self.config.window == "random":
            generator = np.random.default_rng([self.config.seed, self.epoch, int(meta["index"])])
            step = int(generator.integers(len(binary) - self.num_actions + 1))
        else:
            step = 0
        with tempfile.TemporaryDirectory(prefix="kinema-shard-", dir=scratch_dir()) as scratch:
            files = {}
            for column in self.config.data_file_keys:
                member = next((k for k in raw if k.startswith(f"{column}.")), None)
                if member is None:
                    raise RobotDataError(
                        raw.get("__url__"), f"sample {raw['__key__']}", f"no {column}.* member"
                    )
                path = Path(scratch) / member
                path.write_bytes(raw[member])
                files[column] = path
            sample = load_clip_sample(
                self.config, files, raw["prompt.txt"].decode(), binary, magnitude, meta["row"], step
            )
        sample["index"] = int(meta["index"])
        return sample
