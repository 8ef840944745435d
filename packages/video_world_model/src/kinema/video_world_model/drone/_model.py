"""A small Wan world model trained from scratch on drone flights, in :class:`PixelLatentSpace`.

- :func:`drone_transformer`: a random diffusers ``WanTransformer3DModel`` (TI2V layout: per-token timesteps)
  with 192 input/output channels (the pixel latents of 4 frames, 4x4 space-to-depth). Its patches are 1x1: a
  token then carries 192 values, no more than the model's width. (With 2x2 patches a token carries 768 values
  through a 128-384 wide model; measured on the drone data, such models copied the first frame as coarse blocks
  and their flow-predicting samples stayed noisy.);
- :func:`write_pixel_cache`: an action-video dataset -> the latent cache ``kinema-wm train --cache_dir`` reads
  (the same index and shard format as ``kinema-wm cache``), with pixel latents and a constant prompt embedding
  (every flight's prompt describes the same kind of scene; the first frame shows which);
- :class:`DroneWorldModelTrainer`: ``WorldModelTrainer`` that also trains the transformer (random init: there is
  no pretrained backbone to freeze) and exports it beside the controller, as ``<output>/transformer/``;
- :func:`generate_latents`: Euler flow-matching sampling with TI2V first-frame conditioning, the same sigmas
  (shift 5) as training.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
from tqdm.auto import tqdm

from kinema.robot_data import ActionVideoConfig, ActionVideoDataset

from .._atomic import write_dir_atomic
from ..modeling._first_frame import fuse_first_frame, token_timesteps
from ..modeling._flow_matching import flow_from_prediction
from ..modeling._pixel_latents import PixelLatentSpace
from ..modeling._transformer import WanActionTransformer
from ..training._cache import CacheWriter
from ..training._train_config import TrainConfig
from ..training._trainer import WorldModelTrainer

TRANSFORMER_DIR = "transformer"
PROMPT_TOKENS = 1

DRONE_TRANSFORMERS: dict[str, dict[str, Any]] = {
    # the GPU experiment: 5376 tokens per 64x64x81 clip (21 latent frames x 16 x 16)
    "small": {
        "patch_size": (1, 1, 1),
        "num_attention_heads": 6,
        "attention_head_dim": 64,
        "in_channels": 192,
        "out_channels": 192,
        "text_dim": 16,
        "freq_dim": 256,
        "ffn_dim": 1536,
        "num_layers": 8,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
    },
    # the CPU experiment (kinema-wm demo): 192 tokens per 32x32x9 clip (3 latent frames x 8 x 8)
    "cpu": {
        "patch_size": (1, 1, 1),
        "num_attention_heads": 3,
        "attention_head_dim": 64,
        "in_channels": 192,
        "out_channels": 192,
        "text_dim": 16,
        "freq_dim": 64,
        "ffn_dim": 512,
        "num_layers": 4,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
    },
    # smoke runs and unit tests
    "tiny": {
        "patch_size": (1, 2, 2),
        "num_attention_heads": 2,
        "attention_head_dim": 16,
        "in_channels": 192,
        "out_channels": 192,
        "text_dim": 16,
        "freq_dim": 32,
        "ffn_dim": 64,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 256,
    },
}


def drone_transformer(size: str = "small", seed: int = 0) -> WanTransformer3DModel:
    """A randomly initialized WanTransformer3DModel of preset ``size`` (a key of :data:`DRONE_TRANSFORMERS`)."""
    if size not in DRONE_TRANSFORMERS:
        raise ValueError(f"size: expected one of {sorted(DRONE_TRANSFORMERS)}, got {size!r}")
    torch.manual_seed(seed)
    return WanTransformer3DModel(**DRONE_TRANSFORMERS[size])


def prompt_embedding(text_dim: int) -> torch.Tensor:
    """The constant prompt embedding (PROMPT_TOKENS, text_dim) of every clip: zeros."""
    return torch.zeros(PROMPT_TOKENS, text_dim)


def write_pixel_cache(
    dataset_dir: str | os.PathLike,
    cache_dir: str | os.PathLike,
    latent_space: PixelLatentSpace | None,
    *,
    num_frames: int,
    text_dim: int,
    shard_size: int = 64,
    fit_clips: int = 64,
    progress: bool = True,
) -> PixelLatentSpace:
    """Encodes every clip of the action-video dataset in ``dataset_dir`` into a ``kinema-wm train --cache_dir``
    cache (bf16 latents (C, F, h, w), prompt embeddings (1, text_dim), raw actions). ``latent_space`` None fits
    the normalization on the first ``fit_clips`` clips. The cache is written beside the dataset, never into it;
    shards and the index atomically, the index last. Returns the latent space (also saved in ``cache_dir``)."""
    writer = CacheWriter(cache_dir, dataset_dir, shard_size)
    dataset = ActionVideoDataset(
        ActionVideoConfig(base_path=writer.base, num_frames=num_frames, max_pixels=None, strict=True)
    )
    if latent_space is None:
        count = min(fit_clips, len(dataset.clips))
        videos = torch.stack([dataset[i]["video"] for i in range(count)])
        latent_space = PixelLatentSpace.fit(videos.float() / 127.5 - 1)
    latent_space.save(writer.root)
    embedding = prompt_embedding(text_dim).to(torch.bfloat16)
    for i in tqdm(range(len(dataset.clips)), desc="cache", disable=not progress):
        sample = dataset[i]
        latents = latent_space.encode(sample["video"].unsqueeze(0))[0]
        writer.add(sample, latents.to(torch.bfloat16), embedding.clone())
    writer.close(
        model_dir="pixel-space",
        num_frames=num_frames,
        dtype="bfloat16",
        action_magnitude_scale=list(dataset.config.action_magnitude_scale),
        latent_space=json.loads((writer.root / "latent_space.json").read_text()),
    )
    return latent_space


class DroneWorldModelTrainer(WorldModelTrainer):
    """``kinema-wm train``'s loop for a transformer trained from scratch: the transformer trains with the
    controller (``train_backbone``), or the controller is frozen at output scale 0 (``train_controller=False``:
    an action-free base model). Exports ``<output>/transformer/`` (diffusers layout) beside the controller."""

    def __init__(
        self,
        config: TrainConfig,
        transformer: WanTransformer3DModel,
        *,
        train_backbone: bool = True,
        train_controller: bool = True,
        accelerator=None,
    ):
        if config.cache_dir is None:
            raise ValueError("cache_dir: the drone model trains on a pixel-latent cache (write_pixel_cache)")
        self.train_backbone, self.train_controller = train_backbone, train_controller
        super().__init__(config, accelerator, components={"transformer": transformer})

    def build(self):
        dataset, module = super().build()
        module.model.transformer.requires_grad_(self.train_backbone)
        if not self.train_controller:
            module.model.controller.requires_grad_(False)
        return dataset, module

    def export(self, step: int) -> None:
        super().export(step)
        transformer = self.raw.model.transformer
        write_dir_atomic(
            self.output / TRANSFORMER_DIR,
            lambda tmp: transformer.save_pretrained(tmp, safe_serialization=True),
        )


@torch.no_grad()
def generate_latents(
    model: WanActionTransformer,
    first_frame: torch.Tensor,
    action_binary: torch.Tensor | None,
    action_magnitude: torch.Tensor | None,
    num_latent_frames: int,
    *,
    num_inference_steps: int = 30,
    shift: float = 5.0,
    prediction_type: str = "flow",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """first_frame (B, C, 1, h, w) clean latents, actions (B, F-1, 8) raw -> latents (B, C, F, h, w), float32.

    Euler steps of the rectified flow from pure noise, frame 0 replaced by ``first_frame`` before every step.
    ``shift`` and ``prediction_type`` must be those the model was trained with (``flow_shift``,
    ``prediction_type`` of its training config)."""
    device, dtype = model.device, model.dtype
    batch, channels, _, h, w = first_frame.shape
    first = first_frame.to(device, torch.float32)
    shape = (batch, channels, num_latent_frames, h, w)
    noise_device = generator.device if generator is not None else device
    latents = torch.randn(shape, generator=generator, device=noise_device).to(device)
    latents = fuse_first_frame(latents, first)
    patch = model.transformer.config.patch_size
    tokens_per_frame = (h // patch[1]) * (w // patch[2])
    text = prompt_embedding(model.transformer.config.text_dim).to(device, dtype).expand(batch, -1, -1)
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    scheduler.set_timesteps(num_inference_steps, device=device)
    for t in scheduler.timesteps:
        timestep = token_timesteps(t.expand(batch), num_latent_frames, tokens_per_frame).to(device)
        prediction = model(latents.to(dtype), timestep, text, action_binary, action_magnitude)
        flow = flow_from_prediction(prediction, latents, timestep, patch, prediction_type)
        latents = scheduler.step(flow, t, latents, return_dict=False)[0]
        latents = fuse_first_frame(latents, first)
    return latents
