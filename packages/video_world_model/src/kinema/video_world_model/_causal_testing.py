"""Tiny causal-rollout fixtures over the tiny Wan models of :mod:`kinema.video_world_model.testing`.

pipe = tiny_causal_pipeline()                    # 2 latent frames per block, window 4, 2 denoising steps
noise = tiny_noise(num_frames=6)                 # (1, 6, 4, 4, 4): 3 blocks of 2x2 tokens per frame
video = pipe.inference(noise, ["a drone flies over hills"], {"action_features": torch.randn(1, 16)})
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from ._causal_config import CausalRolloutConfig
from ._causal_pipeline import ActionCausalInferencePipeline, WanPromptEncoder
from .testing import TINY_TRANSFORMER, tiny_text_encoder, tiny_tokenizer, tiny_transformer, tiny_vae

TINY_CAUSAL_CONFIG = CausalRolloutConfig(
    block_size=2,
    window_frames=4,
    denoising_steps=(1000, 500),
    height=64,
    width=64,
    num_blocks=3,
    max_sequence_length=8,
)
TINY_ACTION_DIM = 16


def tiny_causal_pipeline(
    config: CausalRolloutConfig | None = None,
    action_module: nn.Module | None = None,
    action_dim: int = TINY_ACTION_DIM,
    seed: int = 0,
    vae: bool = True,
    **config_changes,
) -> ActionCausalInferencePipeline:
    """A CPU float32 pipeline on the tiny transformer (2 layers, hidden 24), tiny VAE and tiny UMT5 encoder."""
    config = dataclasses.replace(config or TINY_CAUSAL_CONFIG, **config_changes)
    return ActionCausalInferencePipeline(
        config,
        "cpu",
        generator=tiny_transformer(seed),
        text_encoder=WanPromptEncoder(
            tiny_tokenizer(), tiny_text_encoder(seed + 2), config.max_sequence_length
        ),
        vae=tiny_vae(seed + 1) if vae else None,
        action_module=action_module,
        action_dim=action_dim,
    )


def randomize_projection(pipeline: ActionCausalInferencePipeline, std: float = 0.5, seed: int = 0) -> None:
    """Gives the zero-initialized action projection random weights, as if trained, so actions visibly matter."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in pipeline.action_projection.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * std)


def tiny_noise(num_frames: int = 6, batch: int = 1, seed: int = 0) -> torch.Tensor:
    """(B, F, C, h, w) = (batch, num_frames, 4, 4, 4) noise for the tiny model at 64x64."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, num_frames, TINY_TRANSFORMER["in_channels"], 4, 4, generator=generator)
