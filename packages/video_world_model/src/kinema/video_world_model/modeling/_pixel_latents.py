"""Pixel space as a Wan latent space: no autoencoder, no downloaded weights, lossless.

Like the Wan VAE, latent frame 0 stands for video frame 0 alone and latent frame k for video frames 4k-3..4k
(81 frames -> 21 latent frames). Each latent frame stacks its 4 video frames (frame 0 repeated 4 times) and folds
them by space-to-depth ``patch`` x ``patch``: 4 * 3 * patch^2 channels at 1/patch of the size (patch 4: 192
channels, 16x16 for a 64x64 clip), normalized per RGB channel. Decoding is the exact inverse (frame 0 is the
mean of its 4 copies). All frames are kept, not only every 4th: the action metric measures motion between
consecutive frames.

    space = PixelLatentSpace.fit(videos)          # videos (B, 3, T, H, W) in [-1, 1]; per-channel mean/std
    latents = space.encode(videos)                # (B, 12 p^2, (T - 1) / 4 + 1, H / p, W / p)
    video = space.decode(latents)                 # (B, 3, T, H, W) == videos (up to float rounding)
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .._atomic import write_json_atomic

TIME_STRIDE = 4
LATENT_SPACE_FILE = "latent_space.json"


@dataclass(frozen=True)
class PixelLatentSpace:
    patch: int = 4
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.patch < 1:
            raise ValueError(f"patch: expected >= 1, got {self.patch}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean, std: expected 3 values each, std > 0; got {self.mean}, {self.std}")

    @property
    def channels(self) -> int:
        return TIME_STRIDE * 3 * self.patch**2

    @classmethod
    def fit(cls, videos: torch.Tensor, patch: int = 4) -> PixelLatentSpace:
        """Per-channel mean and standard deviation of ``videos`` (B, 3, T, H, W) in [-1, 1]."""
        values = videos.float().transpose(0, 1).reshape(3, -1)
        return cls(patch, tuple(values.mean(1).tolist()), tuple(values.std(1).clamp_min(1e-3).tolist()))

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = torch.tensor(self.mean, device=like.device, dtype=torch.float32).view(1, 3, 1, 1, 1)
        std = torch.tensor(self.std, device=like.device, dtype=torch.float32).view(1, 3, 1, 1, 1)
        return mean, std

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video (B, 3, T, H, W) in [-1, 1] (or uint8), T = 4n+1 -> latents (B, 12p^2, n+1, H/p, W/p), float32.

        Channel order: (RGB, time within the latent frame, row in the patch, column in the patch)."""
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video: expected (B, 3, T, H, W), got {tuple(video.shape)}")
        b, _, t, h, w = video.shape
        p, s = self.patch, TIME_STRIDE
        if (t - 1) % s or h % p or w % p:
            raise ValueError(f"video: T={t} must be 4n+1 and H={h}, W={w} multiples of the patch {p}")
        video = video.float() / 127.5 - 1 if video.dtype == torch.uint8 else video.float()
        mean, std = self._stats(video)
        video = (video - mean) / std
        frames = torch.cat(
            [video[:, :, :1].expand(-1, -1, s, -1, -1), video[:, :, 1:]], dim=2
        )  # (B, 3, 4F, H, W)
        f = frames.shape[2] // s
        frames = frames.reshape(b, 3, f, s, h // p, p, w // p, p)
        return frames.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, self.channels, f, h // p, w // p)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, 12p^2, F, h, w) -> video (B, 3, 4(F-1)+1, h*p, w*p) in [-1, 1], float32."""
        b, c, f, h, w = latents.shape
        p, s = self.patch, TIME_STRIDE
        if c != self.channels:
            raise ValueError(f"latents: expected {self.channels} channels, got {c}")
        frames = latents.float().reshape(b, 3, s, p, p, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        frames = frames.reshape(b, 3, f * s, h * p, w * p)
        mean, std = self._stats(frames)
        frames = frames * std + mean
        first = frames[:, :, :s].mean(dim=2, keepdim=True)
        return torch.cat([first, frames[:, :, s:]], dim=2).clamp(-1, 1)

    def save(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / LATENT_SPACE_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_json_atomic(path, {"kind": "pixel_space_to_depth", **asdict(self)})

    @classmethod
    def load(cls, directory: str | os.PathLike) -> PixelLatentSpace:
        path = Path(directory) / LATENT_SPACE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"latent space: no {LATENT_SPACE_FILE} in {directory}")
        values = json.loads(path.read_text())
        if values.pop("kind", None) != "pixel_space_to_depth":
            raise ValueError(f"latent space: {path} does not describe a pixel space-to-depth latent space")
        return cls(int(values["patch"]), tuple(values["mean"]), tuple(values["std"]))
