"""``kinema-wm cache``: VAE latents and text embeddings of an action-video dataset, computed once.

    <cache_dir>/index.json                 format, sizes, the magnitude scale, and per sample: shard, key, prompt,
                                           row, raw actions
    <cache_dir>/shard-00000.safetensors    "<key>.latents" (C, F, h, w), "<key>.prompt_embeds" (S, D)

Written beside the training output (never inside the dataset directory); each shard and the index atomically, the
index last, so a cache is either complete or absent. Training reads it with ``--cache_dir``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from ._loading import load_wan_components
from ._train_data import CACHE_FORMAT, CACHE_INDEX, build_dataset
from ._train_model import PromptEncoder
from ._vae import encode_video


def write_cache(
    config, cache_dir: str | os.PathLike, device: torch.device, dtype: torch.dtype, shard_size: int = 64
) -> Path:
    """Encodes every clip of ``config``'s dataset (a TrainConfig) into ``cache_dir``; returns the index path."""
    root = Path(cache_dir).resolve()
    base = Path(config.dataset_base_path).resolve()
    if root == base or base in root.parents:
        raise ValueError(
            f"--cache_dir: {root} is inside the dataset directory {base}; write the cache elsewhere"
        )
    if (root / CACHE_INDEX).exists():
        raise FileExistsError(f"--cache_dir: {root} already holds a cache")
    root.mkdir(parents=True, exist_ok=True)
    dataset, scale = build_dataset(config)
    components = load_wan_components(
        config.model_dir, dtype, config.text_encoder_path, config.tokenizer_path, config.vae_path
    )
    vae = components["vae"].to(device)
    prompt_encoder = PromptEncoder(
        components["tokenizer"], components["text_encoder"].to(device), vae, components["scheduler"]
    )
    rows, shard, shard_index = [], {}, 0

    def flush() -> None:
        nonlocal shard, shard_index
        if shard:
            name = f"shard-{shard_index:05d}.safetensors"
            tmp = root / f".{name}.tmp"
            save_file(shard, str(tmp))
            os.replace(tmp, root / name)
            shard, shard_index = {}, shard_index + 1

    clips = len(dataset.clips)  # one pass over the clips (repeat applies at training time)
    for i in tqdm(range(clips), desc="cache"):
        sample = dataset[i]
        video = sample["video"].unsqueeze(0).to(device)
        video = video.float() / 127.5 - 1 if video.dtype == torch.uint8 else video.float()
        key = f"{i:06d}"
        shard[f"{key}.latents"] = encode_video(vae, video)[0].to(dtype).cpu().contiguous()
        shard[f"{key}.prompt_embeds"] = (
            prompt_encoder([sample["prompt"]], device, dtype)[0].cpu().contiguous()
        )
        rows.append(
            {
                "shard": f"shard-{shard_index:05d}.safetensors",
                "key": key,
                "prompt": sample["prompt"],
                "row": sample["row"],
                "action_binary": sample["action_binary"].tolist(),
                "action_magnitude": sample["action_magnitude"].tolist(),
            }
        )
        if len(shard) >= 2 * shard_size:
            flush()
    flush()
    index = {
        "format": CACHE_FORMAT,
        "version": 1,
        "model_dir": str(config.model_dir),
        "dataset_base_path": str(base),
        "num_frames": config.num_frames,
        "dtype": str(dtype).removeprefix("torch."),
        "action_magnitude_scale": scale,
        "rows": rows,
    }
    tmp = root / f".{CACHE_INDEX}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, root / CACHE_INDEX)
    return root / CACHE_INDEX
