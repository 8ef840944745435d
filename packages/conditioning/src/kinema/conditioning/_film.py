"""FiLM: feature-wise linear modulation, gamma * x + beta, with gamma = 1 + delta (identity at init)."""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_batch, check_module_inputs, check_same_device, check_tensor


class FiLM(nn.Module):
    """Scales and shifts each channel of ``x`` by a condition.

    forward(x, cond) -> gamma * x + beta, gamma = 1 + delta.
    - conv feature maps: x (B, C, H, W) (any trailing spatial dims), ``channel_dim=1``;
    - token tensors: x (B, N, C), ``channel_dim=-1``; here cond may also be per token, (B, N, Dc).
    cond: (B, Dc). Computed as x + (x * delta + beta) in x's dtype: the small correction is formed on its own
    before it meets x, so a bf16 ``1 + delta`` never rounds small deltas away, and no fp32 copy of a large
    feature map is made.
    """

    def __init__(self, cond_dim: int, num_features: int, channel_dim: int = 1):
        super().__init__()
        if channel_dim not in (1, -1):
            raise ValueError(f"FiLM: channel_dim must be 1 (B, C, ...) or -1 (B, N, C), got {channel_dim}")
        self.cond_dim = cond_dim
        self.num_features = num_features
        self.channel_dim = channel_dim
        self.to_gamma_beta = nn.Linear(cond_dim, 2 * num_features)
        # Zero-init: delta = beta = 0, so gamma * x + beta = x exactly at step 0.
        nn.init.zeros_(self.to_gamma_beta.weight)
        nn.init.zeros_(self.to_gamma_beta.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.num_features
        if self.channel_dim == 1:
            check_tensor("x", x, f"(B, {c}, ...)", tuple(range(2, 6)), {1: c})
            check_tensor("cond", cond, f"(B, {self.cond_dim})", 2, {-1: self.cond_dim})
        else:
            check_tensor("x", x, f"(B, N, {c})", 3, {-1: c})
            check_tensor(
                "cond", cond, f"(B, {self.cond_dim}) or (B, N, {self.cond_dim})", (2, 3), {-1: self.cond_dim}
            )
            if cond.ndim == 3 and cond.shape[1] != x.shape[1]:
                raise ValueError(
                    f"cond: expected (B, {x.shape[1]}, {self.cond_dim}) per token, got {tuple(cond.shape)}"
                )
        check_batch("cond", cond, x.shape[0], f"(B={x.shape[0]}, {self.cond_dim})")
        check_same_device(("x", "cond"), x, cond)
        check_module_inputs(self, ("cond", cond))

        delta, beta = self.to_gamma_beta(cond).to(x.dtype).chunk(2, dim=-1)  # (B, [N,] C) each
        if self.channel_dim == 1:
            shape = (x.shape[0], c) + (1,) * (x.ndim - 2)  # (B, C, 1, 1)
        else:
            shape = (x.shape[0], -1 if cond.ndim == 3 else 1, c)  # (B, N or 1, C)
        return x + torch.addcmul(beta.view(shape), x, delta.view(shape))  # (1 + delta) * x + beta
