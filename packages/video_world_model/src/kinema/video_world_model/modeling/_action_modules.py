"""Action modules: where the action features of a block come from (the three kinds of the adaLN-Zero guide).

Each maps something available when a block starts to action features (B, action_dim), which
``ActionModulationProjection`` turns into the block's [shift, scale, gate] modulation:

- :class:`HistoryActionModule`: the latents generated so far (B, F, C, h, w), 3-D convolutions over time and space;
- :class:`ActionSequenceEncoder`: an external sequence of discrete action ids (B, T), embedding + LSTM (the last
  hidden state summarizes the actions up to and including the current block);
- :class:`MultimodalActionModule`: generated latents and a text feature vector (B, text_dim), fused by an MLP.

``ACTION_MODULES`` maps the kind written in a checkpoint ("history", "sequence", "multimodal") to the class;
``module.config`` holds the constructor arguments, so :func:`build_action_module` rebuilds it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kinema.robot_data import DRONE_ACTIONS

PLAY_ACTIONS = ("idle", *DRONE_ACTIONS)
"""Discrete action ids of ``kinema-wm play``: 0 idle, then the eight drone actions in the reference order."""


def _frames_to_channels(frames: torch.Tensor, channels: int, name: str) -> torch.Tensor:
    """(B, F, C, h, w) -> (B, C, F, h, w), checking the shape."""
    if frames.ndim != 5 or frames.shape[2] != channels:
        raise ValueError(f"{name}: expected (B, F, {channels}, h, w) latents, got {tuple(frames.shape)}")
    return frames.permute(0, 2, 1, 3, 4)


class HistoryActionModule(nn.Module):
    """Generated latents (B, F, C, h, w) -> action features (B, action_dim).

    Conv3d (3x3x3) -> ReLU -> MaxPool3d(2) -> Conv3d -> ReLU -> global average -> Linear. ``history_frames`` keeps
    only the most recent frames (None: all), so the cost does not grow with the rollout. Pooling uses
    ``ceil_mode`` so one latent frame or a 1x1 grid is still a valid input.
    """

    kind = "history"

    def __init__(
        self,
        latent_dim: int = 48,
        action_dim: int = 512,
        hidden_dims: tuple[int, int] = (64, 128),
        history_frames: int | None = None,
    ):
        super().__init__()
        if history_frames is not None and history_frames < 1:
            raise ValueError(f"history_frames: expected >= 1 or None, got {history_frames}")
        self.latent_dim, self.action_dim = latent_dim, action_dim
        self.hidden_dims, self.history_frames = tuple(hidden_dims), history_frames
        first, second = self.hidden_dims
        self.encoder = nn.Sequential(
            nn.Conv3d(latent_dim, first, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool3d(kernel_size=2, ceil_mode=True),
            nn.Conv3d(first, second, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(second, action_dim),
        )

    @property
    def config(self) -> dict[str, Any]:
        return {
            "latent_dim": self.latent_dim,
            "action_dim": self.action_dim,
            "hidden_dims": list(self.hidden_dims),
            "history_frames": self.history_frames,
        }

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if self.history_frames is not None:
            frames = frames[:, -self.history_frames :]
        x = _frames_to_channels(frames, self.latent_dim, "frames")  # (B, C, F, h, w)
        return self.encoder(x.to(self.encoder[0].weight.dtype))  # (B, action_dim)


class ActionSequenceEncoder(nn.Module):
    """Discrete action ids (B, T) -> action features (B, action_dim): embedding -> LSTM -> last hidden -> Linear.

    The pipeline passes the actions of blocks 0..k for block k, so a block's features depend on its own action
    and the earlier ones, never on later ones. Default vocabulary: :data:`PLAY_ACTIONS` (idle + 8 drone actions).
    """

    kind = "sequence"

    def __init__(
        self,
        action_vocab_size: int = len(PLAY_ACTIONS),
        action_dim: int = 512,
        embed_dim: int = 128,
        hidden_dim: int = 256,
    ):
        super().__init__()
        if action_vocab_size < 1:
            raise ValueError(f"action_vocab_size: expected >= 1, got {action_vocab_size}")
        self.action_vocab_size, self.action_dim = action_vocab_size, action_dim
        self.embed_dim, self.hidden_dim = embed_dim, hidden_dim
        self.embedding = nn.Embedding(action_vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.fc = nn.Linear(hidden_dim, action_dim)

    @property
    def config(self) -> dict[str, Any]:
        return {
            "action_vocab_size": self.action_vocab_size,
            "action_dim": self.action_dim,
            "embed_dim": self.embed_dim,
            "hidden_dim": self.hidden_dim,
        }

    def check_ids(self, action_sequence: torch.Tensor, name: str = "action_sequence") -> None:
        if (
            action_sequence.ndim != 2
            or action_sequence.dtype.is_floating_point
            or action_sequence.is_complex()
        ):
            raise ValueError(
                f"{name}: expected integer action ids of shape (B, T), got {tuple(action_sequence.shape)} "
                f"{action_sequence.dtype}"
            )
        if action_sequence.numel() and (
            action_sequence.min() < 0 or action_sequence.max() >= self.action_vocab_size
        ):
            raise ValueError(
                f"{name}: action ids must lie in [0, {self.action_vocab_size}), got "
                f"[{int(action_sequence.min())}, {int(action_sequence.max())}]"
            )

    def forward(self, action_sequence: torch.Tensor) -> torch.Tensor:
        x = self.embedding(action_sequence.long())  # (B, T, E)
        _, (hidden, _) = self.lstm(x)  # hidden (1, B, H)
        return self.fc(hidden[-1])  # (B, action_dim)


class MultimodalActionModule(nn.Module):
    """Generated latents (B, F, C, h, w) or None, and text features (B, text_dim) -> action features (B, action_dim).

    Visual: Conv3d + global average (zeros when there is no history yet, at the first block); text: Linear; the two
    are concatenated and fused by a two-layer MLP. The pipeline's text features are the mean of the prompt's
    text-encoder states over its tokens, unless ``action_inputs['control_signals']`` gives them.
    """

    kind = "multimodal"

    def __init__(
        self,
        visual_dim: int = 48,
        text_dim: int = 4096,
        action_dim: int = 512,
        visual_hidden: int = 128,
        text_hidden: int = 256,
        fusion_hidden: int = 512,
    ):
        super().__init__()
        self.visual_dim, self.text_dim, self.action_dim = visual_dim, text_dim, action_dim
        self.visual_hidden, self.text_hidden, self.fusion_hidden = visual_hidden, text_hidden, fusion_hidden
        self.visual_encoder = nn.Conv3d(visual_dim, visual_hidden, kernel_size=3, padding=1)
        self.text_encoder = nn.Linear(text_dim, text_hidden)
        self.fusion = nn.Sequential(
            nn.Linear(visual_hidden + text_hidden, fusion_hidden),
            nn.ReLU(),
            nn.Linear(fusion_hidden, action_dim),
        )

    @property
    def config(self) -> dict[str, Any]:
        return {
            "visual_dim": self.visual_dim,
            "text_dim": self.text_dim,
            "action_dim": self.action_dim,
            "visual_hidden": self.visual_hidden,
            "text_hidden": self.text_hidden,
            "fusion_hidden": self.fusion_hidden,
        }

    def forward(self, frames: torch.Tensor | None, text_features: torch.Tensor) -> torch.Tensor:
        if text_features.ndim != 2 or text_features.shape[1] != self.text_dim:
            raise ValueError(
                f"text_features: expected (B, {self.text_dim}), got {tuple(text_features.shape)}"
            )
        dtype = self.text_encoder.weight.dtype
        if frames is None:
            visual = text_features.new_zeros(text_features.shape[0], self.visual_hidden, dtype=dtype)
        else:
            x = _frames_to_channels(frames, self.visual_dim, "frames").to(dtype)
            visual = F.adaptive_avg_pool3d(self.visual_encoder(x), 1).flatten(1)  # (B, visual_hidden)
        text = self.text_encoder(text_features.to(dtype))  # (B, text_hidden)
        return self.fusion(torch.cat([visual, text], dim=1))  # (B, action_dim)


ACTION_MODULES: dict[str, type[nn.Module]] = {
    "history": HistoryActionModule,
    "sequence": ActionSequenceEncoder,
    "multimodal": MultimodalActionModule,
}


def build_action_module(kind: str, config: dict[str, Any]) -> nn.Module:
    """An action module from its checkpoint kind and constructor arguments."""
    if kind not in ACTION_MODULES:
        raise ValueError(f"action module kind: expected one of {sorted(ACTION_MODULES)}, got {kind!r}")
    cls = ACTION_MODULES[kind]
    try:
        return cls(**config)
    except TypeError as error:
        raise ValueError(f"action module config for {kind!r}: {error}") from None


def action_module_kind(module: nn.Module) -> str | None:
    """The checkpoint kind of a shipped module, None for any other module."""
    for kind, cls in ACTION_MODULES.items():
        if type(module) is cls:
            return kind
    return None
