"""Per-frame broadcasting: apply a (B, F, D) quantity to the F*HW frame-major tokens of (B, F*HW, D).

Viewing the tokens as (B, F, HW, D) and the quantity as (B, F, 1, D) makes the broadcast a single fused
elementwise kernel: no (B, F*HW, D) copy of the per-frame quantity is ever materialized.
"""

from __future__ import annotations

import torch

from ._checks import check_frames


def frames_view(x: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(B, F*HW, D) -> (B, F, HW, D), a view."""
    batch, tokens, dim = x.shape
    hw = check_frames("x", tokens, num_frames)
    return x.view(batch, num_frames, hw, dim)


def add_per_frame(
    x: torch.Tensor, delta: torch.Tensor, scale: torch.Tensor | float | None = None
) -> torch.Tensor:
    """x + scale * delta[frame of each token].

    x: (B, F*HW, D) tokens, frame-major. delta: (B, F, D). scale: a scalar (tensor or float) or None (1).
    The sum is taken in x's dtype (the backbone's residual stream), so a bf16 stream stays bf16.
    """
    if scale is not None:
        delta = delta * scale
    out = frames_view(x, delta.shape[1]) + delta.to(x.dtype).unsqueeze(2)  # (B, F, HW, D)
    return out.view(x.shape)


def per_frame(mod: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Aligns a modulation with tokens for broadcasting.

    mod: (B, D) for every token, or (B, F, D) for the tokens of each frame (F divides N).
    x:   (B, N, D).
    Returns (x viewed as (B, F, N/F, D), mod as (B, F, 1, D)); F = 1 for 2-D ``mod``.
    """
    if mod.ndim == 2:
        mod = mod.unsqueeze(1)
    return frames_view(x, mod.shape[1]), mod.unsqueeze(2)
