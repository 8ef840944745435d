"""Training samples for the hybrid, from kinema.act_policy's in-memory episodes.

Episodes are read once by kinema.act_policy's ``load_episodes`` (the same loader, checks and data placement as
ACT). A sample is (observation at t, actions t..t+C-1); the hybrid pads past an episode's end with the
episode's LAST action (Diffusion Policy's padding: the denoiser learns to stop there) where ACT pads with
zeros, and ``is_pad`` marks those steps.

B batch, N cameras, H/W image size, D state dims, A action dims, E environment-state dims, C chunk steps.
"""

from __future__ import annotations

import torch


def chunk_batch(memory, indices: torch.Tensor, chunk_size: int, device: torch.device | None = None) -> dict:
    """Samples at global steps ``indices`` (B,) of an act_policy ``EpisodeMemory``: image (B, N, H, W, 3) uint8,
    qpos (B, D), action (B, C, A) with the last action repeated past each episode's end, is_pad (B, C),
    environment_state (B, E) when the memory holds it."""
    indices = indices.to(memory.device)
    end = memory.episode_end[indices].unsqueeze(1)  # (B, 1)
    steps = indices.unsqueeze(1) + torch.arange(chunk_size, device=memory.device)  # (B, C)
    batch = {
        "image": memory.images[indices],
        "qpos": memory.qpos[indices],
        "action": memory.action[torch.minimum(steps, end - 1)],  # (B, C, A)
        "is_pad": steps >= end,
    }
    if memory.environment_state is not None:
        batch["environment_state"] = memory.environment_state[indices]
    if device is not None and torch.device(device) != memory.device:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    return batch
