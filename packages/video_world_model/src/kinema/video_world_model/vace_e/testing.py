"""Tiny random VACE models (diffusers layout) and a tiny CLIP vision model, for VACE-E tests.

model_dir = write_tiny_vace(tmp_path / "vace")          # WanVACEPipeline.save_pretrained layout
clip_dir = write_tiny_clip(tmp_path / "clip")           # CLIPVisionModel + CLIPImageProcessor
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanVACEPipeline, WanVACETransformer3DModel
from transformers import CLIPVisionConfig, CLIPVisionModel

from ..testing import tiny_text_encoder, tiny_tokenizer

TINY_VACE_VAE = {  # Wan2.1-style (VACE-1.3B's VAE): 8x spatial, 16 channels there, 4 here
    "base_dim": 8,
    "z_dim": 4,
    "dim_mult": [1, 1, 1, 1],
    "num_res_blocks": 1,
    "attn_scales": [],
    "temperal_downsample": [False, True, True],
    "latents_mean": [0.1, -0.2, 0.0, 0.3],
    "latents_std": [1.5, 2.0, 0.5, 1.0],
}
TINY_VACE = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 16,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 4,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "rope_max_seq_len": 32,
    "vace_layers": [0, 2],
    "vace_in_channels": 4 + 4 + 64,  # inactive + reactive latents + the 8x8 space-to-depth mask
}
TINY_CLIP = {
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 16,
}
TINY_VACE_SIZE = {"height": 32, "width": 32}  # 8x VAE, 2x2 patches: 2x2 tokens per latent frame


def tiny_vace(seed: int = 0, **overrides: Any) -> WanVACETransformer3DModel:
    torch.manual_seed(seed)
    return WanVACETransformer3DModel(**(TINY_VACE | overrides)).eval()


def tiny_vace_vae(seed: int = 1) -> AutoencoderKLWan:
    torch.manual_seed(seed)
    return AutoencoderKLWan(**TINY_VACE_VAE).eval()


def write_tiny_vace(out_dir: str | os.PathLike, seed: int = 0) -> Path:
    """A tiny random Wan2.1-VACE model in the diffusers layout (WanVACEPipeline.save_pretrained)."""
    root = Path(out_dir)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    pipe = WanVACEPipeline(
        tiny_tokenizer(),
        tiny_text_encoder(seed + 2),
        tiny_vace_vae(seed + 1),
        scheduler,
        transformer=tiny_vace(seed),
    )
    pipe.save_pretrained(root, safe_serialization=True)
    return root


def write_tiny_clip(out_dir: str | os.PathLike, seed: int = 3) -> Path:
    """A tiny random CLIPVisionModel with its image processor (32x32 input), as a local transformers directory."""
    root = Path(out_dir)
    torch.manual_seed(seed)
    CLIPVisionModel(CLIPVisionConfig(**TINY_CLIP)).save_pretrained(root)
    size = TINY_CLIP["image_size"]
    try:  # the PIL processor where transformers has it (torchvision cannot be installed beside kinema's CPU torch)
        from transformers import CLIPImageProcessorPil as processor_cls
    except ImportError:
        from transformers import CLIPImageProcessor as processor_cls
    processor_cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        root
    )
    return root
