"""``kinema-wm cache``: VAE latents and text embeddings of an action-video dataset, computed once.

    <cache_dir>/index.json                 format, sizes, the window mode, the magnitude scale, and per sample:
                                           shard, key, prompt, row, first frame of its window, raw actions
    <cache_dir>/shard-00000.safetensors    "<key>.latents" (C, F, h, w), "<key>.prompt_embeds" (S, D)

Written beside the training output (never inside the dataset directory); each shard and the index atomically, the
index last, so a cache is either complete or absent. Training reads it with ``--cache_dir``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from .._atomic import write_atomic, write_json_atomic
from ..loading._wan import load_wan_components
from ..modeling._prompt import WanPromptEncoder
from ..modeling._vae import encode_video
from ._train_data import CACHE_FORMAT, CACHE_INDEX, build_dataset


class CacheWriter:
    """Writes samples into ``shard-XXXXX.safetensors`` files and, on :meth:`close`, the index (each atomically,
    the index last). Refuses a folder inside the dataset or one that already holds a cache."""

    def __init__(self, cache_dir: str | os.PathLike, dataset_dir: str | os.PathLike, shard_size: int = 64):
        self.root, self.base = Path(cache_dir).resolve(), Path(dataset_dir).resolve()
        if self.root == self.base or self.base in self.root.parents:
            raise ValueError(
                f"--cache_dir: {self.root} is inside the dataset directory {self.base}; write the cache elsewhere"
            )
        if (self.root / CACHE_INDEX).exists():
            raise FileExistsError(f"--cache_dir: {self.root} already holds a cache")
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        self.rows: list[dict] = []
        self._shard: dict[str, torch.Tensor] = {}
        self._index = 0

    def add(self, sample: dict, latents: torch.Tensor, prompt_embeds: torch.Tensor) -> None:
        """One dataset sample (prompt, row, raw actions, and ``frame_indices`` (T,) when it has them) with its
        latents (C, F, h, w) and embeddings (S, D)."""
        key = f"{len(self.rows):06d}"
        self._shard[f"{key}.latents"] = latents.cpu().contiguous()
        self._shard[f"{key}.prompt_embeds"] = prompt_embeds.cpu().contiguous()
        self.rows.append(
            {
                "shard": f"shard-{self._index:05d}.safetensors",
                "key": key,
                "prompt": sample["prompt"],
                "row": sample["row"],
                "action_binary": sample["action_binary"].tolist(),
                "action_magnitude": sample["action_magnitude"].tolist(),
            }
            | ({"frame_start": int(sample["frame_indices"][0])} if "frame_indices" in sample else {})
        )
        if len(self._shard) >= 2 * self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._shard:
            name = f"shard-{self._index:05d}.safetensors"
            write_atomic(self.root / name, lambda tmp: save_file(self._shard, str(tmp)))
            self._shard, self._index = {}, self._index + 1

    def close(self, **fields) -> Path:
        """Flushes the last shard and writes the index with ``fields`` (sizes, dtype, magnitude scale, ...)."""
        self._flush()
        index = {"format": CACHE_FORMAT, "version": 1, "dataset_base_path": str(self.base)} | fields
        index["rows"] = self.rows
        write_json_atomic(self.root / CACHE_INDEX, index, indent=None)
        return self.root / CACHE_INDEX


def write_cache(
    config, cache_dir: str | os.PathLike, device: torch.device, dtype: torch.dtype, shard_size: int = 64
) -> Path:
    """Encodes ``config``'s dataset (a TrainConfig) into ``cache_dir``, one pass (``repeat`` applies at training
    time): every window of every clip (``dataset_window`` "all", the default) or each clip's first window
    ("first"); returns the index path. Random windows are refused: a cache holds fixed ones."""
    if config.dataset_window == "random":
        raise ValueError(
            "--dataset_window: a cache holds fixed windows; use 'all' (every window, the default) or 'first'"
        )
    if config.dataset_shards is not None:
        raise ValueError(
            "--dataset_shards: `kinema-wm cache` encodes a folder of clips (--dataset_base_path); latent caches "
            "are not written from shards yet"
        )
    writer = CacheWriter(cache_dir, config.dataset_base_path, shard_size)
    dataset, scale = build_dataset(config, window="all")
    components = load_wan_components(
        config.model_dir, dtype, config.text_encoder_path, config.tokenizer_path, config.vae_path
    )
    vae = components["vae"].to(device)
    prompt_encoder = WanPromptEncoder(components["tokenizer"], components["text_encoder"].to(device))
    for i in tqdm(range(len(dataset) // dataset.config.repeat), desc="cache"):  # every clip or window, once
        sample = dataset[i]
        video = sample["video"].unsqueeze(0).to(device)
        video = video.float() / 127.5 - 1 if video.dtype == torch.uint8 else video.float()
        latents = encode_video(vae, video)[0].to(dtype)
        writer.add(sample, latents, prompt_encoder([sample["prompt"]], device, dtype)[0][0])
    return writer.close(
        model_dir=str(config.model_dir),
        num_frames=config.num_frames,
        window=dataset.config.window,
        dtype=str(dtype).removeprefix("torch."),
        action_magnitude_scale=scale,
    )
