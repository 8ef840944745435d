"""Per-frame discrete actions (binary, magnitude) -> condition vectors for the injectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._checks import check_module_inputs, check_tensor


class ActionEncoder(nn.Module):
    """(binary (B, F, A), magnitude (B, F, A)) -> (B, F, D).

    concat(binary, magnitude * magnitude_scale) -> Linear(2A, D) -> SiLU -> Linear(D, D), plus a learned temporal
    position embedding (1, num_frames, D); clips shorter than ``num_frames`` use its first F rows.

    ``magnitude_scale`` (A,) is applied here and nowhere else: the data layer hands over raw magnitudes and
    records the scale in its config, the encoder's config carries it into checkpoints, so training and inference
    cannot disagree. For the drone actions (Forward, Back, Left, Right, Yaw Left, Yaw Right, Pitch Up, Pitch Down)
    the scale is [100, 100, 100, 100, 1, 1, 1, 1]: translations are given in units 100x smaller than rotations.
    It is a non-persistent buffer, so state dicts hold only learned weights (``action_embed.0.*``,
    ``action_embed.2.*``, ``temporal_pos_embed``).
    """

    def __init__(
        self,
        num_actions: int = 8,
        hidden_dim: int = 3072,
        num_frames: int = 20,
        magnitude_scale: Sequence[float] | None = None,
    ):
        super().__init__()
        scale = [1.0] * num_actions if magnitude_scale is None else [float(s) for s in magnitude_scale]
        if len(scale) != num_actions:
            raise ValueError(
                f"magnitude_scale: expected {num_actions} values (one per action), got {len(scale)}"
            )
        self.num_actions = num_actions
        self.hidden_dim = hidden_dim
        self.num_frames = num_frames
        self.action_embed = nn.Sequential(
            nn.Linear(2 * num_actions, hidden_dim),
            nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim),
        )
        self.temporal_pos_embed = nn.Parameter(torch.randn(1, num_frames, hidden_dim) * 0.02)
        self.register_buffer("magnitude_scale", torch.tensor(scale, dtype=torch.float32), persistent=False)

    def encode(self, binary: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        """(B, F, A), (B, F, A) -> (B, F, D)."""
        a = self.num_actions
        check_tensor("action_binary", binary, f"(B, F, {a})", 3, {-1: a})
        check_tensor("action_magnitude", magnitude, f"(B, F, {a})", 3, {-1: a})
        if binary.shape != magnitude.shape:
            raise ValueError(
                f"action_magnitude: expected the shape of action_binary {tuple(binary.shape)}, "
                f"got {tuple(magnitude.shape)}"
            )
        frames = binary.shape[1]
        if frames > self.num_frames:
            raise ValueError(
                f"action_binary: {frames} frames, but the encoder has position embeddings for {self.num_frames}"
            )
        check_module_inputs(self, ("action_binary", binary), ("action_magnitude", magnitude))
        scaled = magnitude * self.magnitude_scale.to(magnitude.dtype)  # the one place the scale is applied
        emb = self.action_embed(torch.cat([binary, scaled], dim=-1))  # (B, F, D)
        return emb + self.temporal_pos_embed[:, :frames].to(emb.dtype)

    def forward(self, binary: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
        return self.encode(binary, magnitude)
