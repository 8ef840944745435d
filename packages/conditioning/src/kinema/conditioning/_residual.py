"""Per-frame residual: x + scale * proj(cond of the token's frame)."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_batch, check_frames, check_module_inputs, check_same_device, check_tensor
from ._frames import add_per_frame


class ResidualInjector(nn.Module):
    """forward(x (B, F*HW, D), cond (B, F, Dc), num_frames, scale=None) -> (B, F*HW, D).

    The projection acts on the F condition vectors, never on the tokens; the per-frame result is broadcast over
    each frame's HW tokens in one elementwise add. ``initial_scale`` behaves as in
    :class:`PerFrameCrossAttention` (0.0: exact identity, and only the scale receives a gradient at first;
    None: no scale parameter, pass ``scale`` to forward).
    """

    def __init__(self, hidden_dim: int, cond_dim: int, initial_scale: float | None = 0.01):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.to_residual = nn.Linear(cond_dim, hidden_dim, bias=False)
        self.output_scale = (
            None if initial_scale is None else nn.Parameter(torch.tensor(float(initial_scale)))
        )

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        num_frames: int,
        scale: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        d, dc = self.hidden_dim, self.cond_dim
        check_tensor("x", x, f"(B, F*HW, {d})", 3, {-1: d})
        check_tensor("cond", cond, f"(B, F, {dc})", 3, {-1: dc})
        check_frames("x", x.shape[1], num_frames)
        if cond.shape[1] != num_frames:
            raise ValueError(f"cond: expected (B, F={num_frames}, {dc}), got {tuple(cond.shape)}")
        check_batch("cond", cond, x.shape[0], f"(B={x.shape[0]}, F, {dc})")
        check_same_device(("x", "cond"), x, cond)
        check_module_inputs(self, ("cond", cond))
        if scale is None:
            if self.output_scale is None:
                raise ValueError(
                    "scale: this layer was built with initial_scale=None, so forward needs scale"
                )
            scale = self.output_scale
        return add_per_frame(x, self.to_residual(cond), scale)  # (B, F*HW, D)
