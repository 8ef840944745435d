"""Wan2.2 TI2V first-frame conditioning, the same in training and generation.

The clean latent of the first image replaces latent frame 0, the tokens of frame 0 get timestep 0, and frame 0 is
excluded from the loss. (Noising the first frame makes the video drift from frame 2 on: a known regression of
other implementations, guarded against by a test that frame 0 is exactly clean at every denoising step.)
"""

from __future__ import annotations

import torch


def fuse_first_frame(latents: torch.Tensor, first_frame: torch.Tensor) -> torch.Tensor:
    """latents (B, C, F, h, w) with frame 0 replaced by the clean ``first_frame`` (B, C, 1, h, w), exactly."""
    if (
        first_frame.shape[2] != 1
        or first_frame.shape[:2] != latents.shape[:2]
        or first_frame.shape[3:] != latents.shape[3:]
    ):
        raise ValueError(
            f"first_frame: expected shape {(*latents.shape[:2], 1, *latents.shape[3:])}, got {tuple(first_frame.shape)}"
        )
    return torch.cat([first_frame.to(latents.dtype), latents[:, :, 1:]], dim=2)


def token_timesteps(timestep: torch.Tensor, num_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Per-token timesteps (B, F*HW): 0 for the tokens of frame 0, ``timestep`` (B,) for every other token."""
    timestep = timestep.reshape(-1, 1).float()  # (B, 1)
    per_frame = timestep.expand(-1, num_frames).clone()
    per_frame[:, 0] = 0
    return per_frame.repeat_interleave(tokens_per_frame, dim=1)  # (B, F*HW)
