"""Training data: action-video clips (decoded per step) or a latent cache, in a resumable order.

The order is a permutation of the dataset drawn from (seed, epoch), and a clip's random window is drawn from
(seed, epoch, index), so a run resumed at (epoch, position) sees exactly the samples the uninterrupted run would
have seen.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch.utils.data import Dataset, Sampler

from kinema.robot_data import ActionVideoConfig, ActionVideoDataset
from kinema.robot_data.shards import ShardedActionVideoDataset

CACHE_FORMAT = "kinema-wm-cache"
CACHE_INDEX = "index.json"


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch, started at ``start`` (samples already consumed in this epoch)."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed = size, seed
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        return iter(order[self.start :])

    def __len__(self) -> int:
        return self.size - self.start


class CachedLatentDataset(Dataset):
    """Samples of a cache written by ``kinema-wm cache``: ``latents`` (C, F, h, w) normalized VAE latents,
    ``prompt_embeds`` (S, D), ``action_binary`` / ``action_magnitude`` (F - 1, 8) raw, ``prompt``, ``row``.

    Shards are opened lazily in each worker (safe with spawn and forkserver workers)."""

    def __init__(self, cache_dir: str | Path, repeat: int = 1):
        self.root = Path(cache_dir)
        index_path = self.root / CACHE_INDEX
        if not index_path.is_file():
            raise FileNotFoundError(
                f"--cache_dir: {index_path} does not exist (write it with `kinema-wm cache`)"
            )
        self.index = json.loads(index_path.read_text())
        if self.index.get("format") != CACHE_FORMAT:
            raise ValueError(f"--cache_dir: {index_path} is not a kinema-wm cache index")
        self.rows = self.index["rows"]
        if not self.rows:
            raise ValueError(f"--cache_dir: {index_path} lists no samples")
        self.repeat = repeat
        self._handles: dict[str, Any] = {}

    @property
    def action_magnitude_scale(self) -> list[float]:
        return self.index["action_magnitude_scale"]

    def __len__(self) -> int:
        return len(self.rows) * self.repeat

    def _shard(self, name: str):
        if name not in self._handles:
            self._handles[name] = safe_open(str(self.root / name), framework="pt", device="cpu")
        return self._handles[name]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index % len(self.rows)]
        shard = self._shard(row["shard"])
        return {
            "latents": shard.get_tensor(f"{row['key']}.latents"),
            "prompt_embeds": shard.get_tensor(f"{row['key']}.prompt_embeds"),
            "action_binary": torch.tensor(row["action_binary"], dtype=torch.float32),
            "action_magnitude": torch.tensor(row["action_magnitude"], dtype=torch.float32),
            "prompt": row["prompt"],
            "row": row["row"],
        }

    def __getstate__(self):  # handles are per process
        return {k: v for k, v in self.__dict__.items() if k != "_handles"} | {"_handles": {}}


def build_dataset(config, window: str = "random") -> tuple[Dataset, list[float]]:
    """(dataset, action magnitude scale) for a TrainConfig: the cache when given, else the clips (from a folder or
    WebDataset shards), whose samples are windows of ``config.dataset_window`` frames, or of ``window`` when that
    is unset ("random" for training: a start per sample drawn from (``config.seed``, epoch, index); the loop's
    BatchStream sets the epoch)."""
    if config.cache_dir is not None:
        dataset = CachedLatentDataset(config.cache_dir, repeat=config.dataset_repeat)
        return dataset, dataset.action_magnitude_scale
    clip_options = {
        "num_frames": config.num_frames,
        "height": config.height,
        "width": config.width,
        "max_pixels": None if config.height else config.max_pixels,
        "data_file_keys": config.data_file_keys,
        "window": config.dataset_window or window,
        "seed": config.seed,
    }
    if config.dataset_shards is not None:
        if config.dataset_repeat != 1:
            raise ValueError(
                "--dataset_repeat: shards are read once per epoch; leave it at 1 with --dataset_shards"
            )
        dataset = ShardedActionVideoDataset(
            config.dataset_shards,
            index=config.dataset_shards_index,
            shuffle_buffer=config.dataset_shuffle_buffer,
            # the plan of an epoch follows the loader: whole batches, the same count on every process
            loader_batch_size=config.batch_size,
            loader_workers=config.dataset_num_workers,
            **clip_options,
        )
        return dataset, list(dataset.config.action_magnitude_scale)
    dataset = ActionVideoDataset(
        ActionVideoConfig(
            base_path=config.dataset_base_path,
            metadata_path=config.dataset_metadata_path,
            repeat=config.dataset_repeat,
            **clip_options,
        )
    )
    if len(dataset) == 0:
        raise ValueError(
            f"--dataset_base_path: no usable clip in {config.dataset_base_path} (see the warning above)"
        )
    return dataset, list(dataset.config.action_magnitude_scale)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stacks tensors (shapes must agree: give --height/--width for batches > 1) and lists the rest."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            shapes = {tuple(v.shape) for v in values}
            if len(shapes) > 1:
                raise ValueError(
                    f"batch: {key} shapes differ {sorted(shapes)}; fix --height/--width for batch_size > 1"
                )
            out[key] = torch.stack(values)
        else:
            out[key] = values
    return out
