"""CausalRolloutConfig: how a block-causal rollout is cut into blocks, cached and sampled.

Defaults follow the causal video generators the rollout is modelled on (CausVid / Self-Forcing: 3 latent frames per
block, 4 denoising timesteps 1000, 750, 500, 250 warped through the shifted flow schedule, the denoised block
re-encoded into the cache at timestep 0) and Wan2.2-TI2V-5B (480x832, flow shift 5, 512 text tokens).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ..modeling._flow_matching import FlowMatchingObjective

SAMPLERS = ("euler", "renoise")

# Names the Self-Forcing / CausVid configs use for the same settings, accepted by ``from_args``.
_ALIASES = {
    "num_frame_per_block": "block_size",
    "local_attn_size": "window_frames",
    "denoising_step_list": "denoising_steps",
    "warp_denoising_step": "warp_denoising_steps",
    "context_noise": "context_timestep",
    "timestep_shift": "shift",
}


@dataclass
class CausalRolloutConfig:
    """Settings of :class:`ActionCausalInferencePipeline` (its ``args``).

    block_size: latent frames per block (3 latent frames = 12 video frames). Every block attends to itself and to
        earlier blocks; the actions are set per block.
    window_frames: the self-attention window in latent frames, the current block included (Self-Forcing's
        ``local_attn_size``); the rolling KV cache holds at most ``window_frames - block_size`` context frames.
        ``None`` keeps every earlier frame. Default 21: the 81-frame clip length Wan2.2-TI2V was trained on.
    denoising_steps: timesteps in (0, num_train_timesteps], strictly descending; one model call each per block.
    warp_denoising_steps: map step t to the shifted sigma of training index ``num_train_timesteps - t`` (as
        Self-Forcing's ``warp_denoising_step``); False uses sigma = t / num_train_timesteps.
    shift, num_train_timesteps: the flow schedule (diffusers' ``FlowMatchEulerDiscreteScheduler(shift=5.0)``).
    sampler: "euler" integrates the flow ODE between the steps (deterministic); "renoise" predicts x0 and noises it
        again with fresh noise to the next step (CausVid / Self-Forcing few-step sampling, for distilled models).
    context_timestep: timestep at which a denoised block is re-encoded into the cache (0 = clean; Self-Forcing's
        ``context_noise``).
    height, width: video size in pixels; num_blocks: blocks of a rollout (7 x 3 = 21 latent frames = 81 frames).
        Used to shape the noise (:meth:`latent_shape`) by ``kinema-wm play`` and the benchmark.
    max_sequence_length: text tokens of the prompt encoder (UMT5), as Wan.
    """

    block_size: int = 3
    window_frames: int | None = 21
    denoising_steps: tuple[int, ...] = (1000, 750, 500, 250)
    warp_denoising_steps: bool = True
    shift: float = 5.0
    num_train_timesteps: int = 1000
    sampler: str = "euler"
    context_timestep: float = 0.0
    height: int = 480
    width: int = 832
    num_blocks: int = 7
    max_sequence_length: int = 512
    _sigmas: torch.Tensor | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.denoising_steps = tuple(int(s) for s in self.denoising_steps)
        if self.block_size < 1:
            raise ValueError(f"block_size: expected >= 1 latent frame, got {self.block_size}")
        if self.window_frames is not None and self.window_frames < self.block_size:
            raise ValueError(
                f"window_frames: a cache window of {self.window_frames} latent frames is smaller than one block "
                f"(block_size={self.block_size}); use window_frames >= block_size or None (unbounded)"
            )
        steps = self.denoising_steps
        if not steps or any(not 0 < s <= self.num_train_timesteps for s in steps):
            raise ValueError(
                f"denoising_steps: expected timesteps in (0, {self.num_train_timesteps}], got {list(steps)}"
            )
        if any(a <= b for a, b in itertools.pairwise(steps)):
            raise ValueError(f"denoising_steps: expected strictly descending timesteps, got {list(steps)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, got {self.sampler!r}")
        if not 0 <= self.context_timestep < self.num_train_timesteps:
            raise ValueError(
                f"context_timestep: expected 0 <= t < {self.num_train_timesteps}, got {self.context_timestep}"
            )
        for name in ("height", "width", "num_blocks", "max_sequence_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive value, got {getattr(self, name)}")

    @classmethod
    def from_args(cls, args: Any) -> CausalRolloutConfig:
        """A config from ``args``: this class, None (the defaults), a mapping, or a namespace (argparse, OmegaConf).

        Self-Forcing / CausVid names are understood (``num_frame_per_block``, ``local_attn_size`` with -1 meaning
        unbounded, ``denoising_step_list``, ``warp_denoising_step``, ``context_noise``, ``timestep_shift``); other
        attributes of a larger namespace are not settings of the rollout and are left alone.
        """
        if isinstance(args, cls):
            return args
        if args is None:
            return cls()
        if isinstance(args, Mapping):
            source = dict(args)
        elif hasattr(args, "__dict__"):
            source = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        else:
            raise TypeError(
                f"args: expected a CausalRolloutConfig, a mapping or a namespace, got {type(args).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls) if f.init}
        values: dict[str, Any] = {}
        for key, value in source.items():
            name = _ALIASES.get(key, key)
            if name in names:
                values[name] = value
        if values.get("window_frames") is not None and values["window_frames"] < 0:
            values["window_frames"] = None  # Self-Forcing's local_attn_size = -1: global attention
        return cls(**values)

    def sigmas(self) -> torch.Tensor:
        """(len(denoising_steps) + 1,) float32 sigmas of the steps, then 0 (the clean end)."""
        if self._sigmas is None:
            n = self.num_train_timesteps
            if self.warp_denoising_steps:
                table = FlowMatchingObjective(n, self.shift).sigmas  # (n,) descending, index 0 = pure noise
                values = [float(table[n - s]) for s in self.denoising_steps]
            else:
                values = [s / n for s in self.denoising_steps]
            self._sigmas = torch.tensor([*values, 0.0], dtype=torch.float32)
        return self._sigmas

    @property
    def num_latent_frames(self) -> int:
        return self.num_blocks * self.block_size

    def latent_shape(
        self, channels: int, batch: int = 1, spatial_scale: int = 16
    ) -> tuple[int, int, int, int, int]:
        """(B, F, C, h, w) of the noise for ``num_blocks`` blocks at ``height`` x ``width``."""
        for name in ("height", "width"):
            if getattr(self, name) % spatial_scale:
                raise ValueError(
                    f"{name}: {getattr(self, name)} is not a multiple of the VAE's spatial scale {spatial_scale}"
                )
        return (
            batch,
            self.num_latent_frames,
            channels,
            self.height // spatial_scale,
            self.width // spatial_scale,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (written beside trained action weights)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init} | {
            "denoising_steps": list(self.denoising_steps)
        }
