"""AutoencoderKLWan helpers: encode video to normalized latents and back (Wan2.2 latent mean/std normalization).

normalized = (latent - latents_mean) / latents_std, per latent channel, as diffusers' Wan pipelines do.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan


def _device(vae: AutoencoderKLWan) -> torch.device:
    """Where the VAE computes: accelerate's execution device under diffusers' CPU offload (the weights then wait on
    the CPU or the meta device), else its weights' device."""
    for module in vae.modules():
        device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
        if device is not None:
            return torch.device(device)
    return vae.device


def _stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=torch.float32).view(shape)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=torch.float32).view(shape)
    return mean, std


@torch.no_grad()
def encode_video(vae: AutoencoderKLWan, video: torch.Tensor) -> torch.Tensor:
    """video (B, 3, F, H, W) in [-1, 1] -> normalized latents (B, z, (F-1)/4+1, H/s, W/s), float32 (the mode)."""
    latents = vae.encode(video.to(_device(vae), vae.dtype)).latent_dist.mode().float()
    mean, std = _stats(vae, latents)
    return (latents - mean) / std


@torch.no_grad()
def decode_latents(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """normalized latents (B, z, f, h, w) -> video (B, 3, F, H, W) in [-1, 1], float32."""
    mean, std = _stats(vae, latents)
    raw = latents.float() * std + mean
    return vae.decode(raw.to(_device(vae), vae.dtype)).sample.float().clamp(-1, 1)
