"""adaLN-Zero (DiT): a condition predicts shift/scale/gate for a block's attention and FFN.

    x = x + gate_attn * Attention(LN(x) * (1 + scale_attn) + shift_attn)
    x = x + gate_ffn  * FFN(LN(x) * (1 + scale_ffn) + shift_ffn)

With the projection zero-initialized every shift, scale and gate is 0 at step 0, so a block that adds this
modulation to its own (or uses it as its only modulation, with gates at 0) is unchanged: a pretrained
backbone is not disturbed, and the projection still receives gradients (they flow into the zero weights).
"""

from __future__ import annotations

import torch
from torch import nn

from ._checks import check_tensor
from ._frames import per_frame

MODULATION_CHUNKS = ("shift_attn", "scale_attn", "gate_attn", "shift_ffn", "scale_ffn", "gate_ffn")


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift, computed in fp32 (as Wan and DiT do) and returned in x's dtype.

    x: (B, N, D). shift, scale: (B, D) for every token or (B, F, D) per frame (F divides N, frame-major).
    """
    xf, shift = per_frame(shift, x)
    _, scale = per_frame(scale, x)
    out = xf.float() * (1 + scale.float()) + shift.float()  # (B, F, HW, D)
    return out.to(x.dtype).view(x.shape)


def apply_gate(x: torch.Tensor, gate: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """x + gate * branch, the gated residual of adaLN-Zero, in fp32 and returned in x's dtype.

    x, branch: (B, N, D). gate: (B, D) or (B, F, D) per frame.
    """
    xf, g = per_frame(gate, x)
    out = xf.float() + g.float() * branch.view(xf.shape).float()
    return out.to(x.dtype).view(x.shape)


class AdaLNZero(nn.Module):
    """Condition -> ``num_chunks`` modulation vectors per frame, exactly zero at init.

    cond (B, Dc) -> (B, 1, num_chunks, D); cond (B, F, Dc) -> (B, F, num_chunks, D).
    With ``num_chunks=6`` the chunks are, in order, ``MODULATION_CHUNKS``.

    The projection runs in its parameters' dtype; apply the result with :func:`modulate` and :func:`apply_gate`,
    which do the arithmetic in fp32 as the backbone does.
    """

    def __init__(self, cond_dim: int, hidden_dim: int, num_chunks: int = 6, zero_init: bool = True):
        super().__init__()
        if cond_dim < 1 or hidden_dim < 1 or num_chunks < 1:
            raise ValueError(
                f"AdaLNZero: cond_dim, hidden_dim and num_chunks must be positive, "
                f"got {cond_dim}, {hidden_dim}, {num_chunks}"
            )
        self.cond_dim = cond_dim
        self.hidden_dim = hidden_dim
        self.num_chunks = num_chunks
        # Named as in DiT so its users recognize it: SiLU, then the linear that predicts all chunks at once.
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(cond_dim, num_chunks * hidden_dim))
        if zero_init:
            # Zero-out the modulation: every shift/scale/gate starts at 0, the identity of adaLN-Zero.
            nn.init.zeros_(self.adaLN_modulation[1].weight)
            nn.init.zeros_(self.adaLN_modulation[1].bias)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        check_tensor(
            "cond", cond, f"(B, {self.cond_dim}) or (B, F, {self.cond_dim})", (2, 3), {-1: self.cond_dim}
        )
        if cond.ndim == 2:
            cond = cond.unsqueeze(1)  # (B, 1, Dc)
        out = self.adaLN_modulation(cond)  # (B, F, C*D)
        return out.unflatten(-1, (self.num_chunks, self.hidden_dim))  # (B, F, C, D)


class ActionModulationProjection(nn.Module):
    """Action features -> [shift_attn, scale_attn, gate_attn, shift_ffn, scale_ffn, gate_ffn] per frame.

    The API of the action-conditioning guide:
        forward(action_features (B, action_dim), num_frames=None) -> (B, num_frames, 6, hidden_dim)
    One feature vector for the whole clip is broadcast to every frame; per-frame features (B, F, action_dim)
    give each frame its own modulation. Add the result to the backbone's time modulation in every block.
    Zero-initialized by default (adaLN-Zero), so the actions change nothing at step 0.
    """

    def __init__(self, action_dim: int, hidden_dim: int, num_frames: int = 1, zero_init: bool = True):
        super().__init__()
        if num_frames < 1:
            raise ValueError(f"ActionModulationProjection: num_frames must be >= 1, got {num_frames}")
        self.action_dim = action_dim
        self.hidden_dim = hidden_dim
        self.num_frames = num_frames
        self.proj = AdaLNZero(action_dim, hidden_dim, num_chunks=6, zero_init=zero_init)

    def forward(self, action_features: torch.Tensor, num_frames: int | None = None) -> torch.Tensor:
        expected = f"(B, {self.action_dim}) or (B, F, {self.action_dim})"
        check_tensor("action_features", action_features, expected, (2, 3), {-1: self.action_dim})
        frames = self.num_frames if num_frames is None else num_frames
        if not isinstance(frames, int) or frames < 1:
            raise ValueError(f"num_frames: expected a positive int, got {frames!r}")
        if action_features.ndim == 3 and action_features.shape[1] != frames:
            if num_frames is not None:
                raise ValueError(
                    f"action_features: per-frame features have {action_features.shape[1]} frames "
                    f"but num_frames={num_frames}"
                )
            frames = action_features.shape[1]
        modulation = self.proj(action_features)  # (B, 1 or F, 6, D)
        return modulation.expand(-1, frames, -1, -1)  # (B, F, 6, D)
