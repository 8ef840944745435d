"""Estimating the camera motion of each latent step from video frames: optical flow + a small learned readout.

Per latent step k, the dense optical flow (OpenCV's Farnebäck) of the 4 frame pairs from video frame 4(k-1) to
frame 4k (grey, resized to ``size``), summed, is averaged over a ``grid`` x ``grid`` layout and divided by the
image width: a (2 * grid^2,) motion descriptor that does not depend on colour, texture or resolution.
(Consecutive frames, not frames 4(k-1) and 4k directly: at 64x64 a step moves the image up to ~15 pixels, too
far for the flow; chaining scored clearly better on rendered flights, see BENCHMARKS.md.) An MLP reads it: 8
logits (one per drone action: active or not) and the 4 signed axis motions (forward, left, yaw left, pitch up)
in scaled units (raw magnitude x the magnitude scale), from which the magnitude of the active action of each axis
is read.

Why flow and a readout: flow is what a camera move does to an image, whatever the texture, blur or colours of a
generated clip, so the readout cannot key on rendering details a generator does not copy; but turning flow into
forward vs pitch or sideways vs yaw depends on the depth of what is seen (near ground moves more under a
translation, a rotation moves everything alike), which the MLP learns from rendered flights whose actions are
known. Saved as ``action_estimator.safetensors`` (weights, descriptor mean/std) + ``action_estimator.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kinema.robot_data import DEFAULT_MAGNITUDE_SCALE, DRONE_ACTIONS
from kinema.robot_data.drone import AXIS_INDEX, FRAMES_PER_STEP, axis_values

from .._atomic import write_atomic, write_json_atomic

WEIGHTS = "action_estimator.safetensors"
CONFIG = "action_estimator.json"
AXIS_SCALE = np.array([DEFAULT_MAGNITUDE_SCALE[p] for p, _ in AXIS_INDEX])  # raw -> scaled per axis


def _cv2():
    try:
        import cv2
    except ImportError:
        raise ImportError(
            "the action estimator needs OpenCV: pip install 'kinema-video-world-model[drone]'"
        ) from None
    return cv2


@dataclass(frozen=True)
class EstimatorConfig:
    size: int = 64  # frames are resized to size x size before the flow
    grid: int = 8
    hidden: int = 256
    flow_levels: int = 4
    flow_window: int = 9

    @property
    def num_features(self) -> int:
        return 2 * self.grid * self.grid


def step_features(frames: np.ndarray, config: EstimatorConfig = EstimatorConfig()) -> np.ndarray:
    """frames (T, H, W, 3) uint8, T = 4A + 1 (at least) -> (A, 2 * grid^2) float32 motion descriptors."""
    cv2 = _cv2()
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected (T, H, W, 3), got {frames.shape}")
    steps = (frames.shape[0] - 1) // FRAMES_PER_STEP
    if steps < 1:
        raise ValueError(f"frames: {frames.shape[0]} frames hold no latent step (need 4A + 1, A >= 1)")
    greys = []
    for frame in frames[: steps * FRAMES_PER_STEP + 1]:
        if frame.dtype != np.uint8:
            frame = np.clip((frame.astype(np.float32) + 1) * 127.5, 0, 255).astype(np.uint8)
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)
        if grey.shape != (config.size, config.size):
            grey = cv2.resize(grey, (config.size, config.size), interpolation=cv2.INTER_AREA)
        greys.append(grey)
    g, cell = config.grid, config.size // config.grid
    out = np.empty((steps, config.num_features), np.float32)
    for k in range(steps):
        flow = np.zeros((config.size, config.size, 2), np.float32)
        for j in range(k * FRAMES_PER_STEP + 1, (k + 1) * FRAMES_PER_STEP + 1):
            flow += cv2.calcOpticalFlowFarneback(
                greys[j - 1], greys[j], None, 0.5, config.flow_levels, config.flow_window, 3, 5, 1.1, 0
            )  # (S, S, 2) pixels, frame j-1 -> j
        pooled = flow[: g * cell, : g * cell].reshape(g, cell, g, cell, 2).mean(axis=(1, 3))
        out[k] = (pooled / config.size).reshape(-1)
    return out


def step_targets(binary: np.ndarray, magnitude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(binary (A, 8), raw magnitude (A, 8)) -> (active (A, 8), signed scaled axis motion (A, 4)), float32."""
    return np.asarray(binary, np.float32), (axis_values(binary, magnitude) * AXIS_SCALE).astype(np.float32)


class _Readout(nn.Module):
    def __init__(self, config: EstimatorConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(config.num_features, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, config.hidden),
            nn.GELU(),
            nn.Linear(config.hidden, len(DRONE_ACTIONS) + len(AXIS_INDEX)),
        )

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, D) normalized descriptors -> (logits (N, 8), signed scaled axis motion (N, 4))."""
        out = self.net(features)
        return out[:, : len(DRONE_ACTIONS)], out[:, len(DRONE_ACTIONS) :]


class ActionEstimator:
    """``estimate(frames) -> (binary (A, 8), magnitude (A, 8) raw)``; ``fit`` / ``save`` / ``load``."""

    def __init__(self, config: EstimatorConfig, readout: _Readout, mean: torch.Tensor, std: torch.Tensor):
        self.config, self.readout, self.mean, self.std = config, readout.eval(), mean, std

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        active: np.ndarray,
        motion: np.ndarray,
        config: EstimatorConfig = EstimatorConfig(),
        *,
        steps: int = 3000,
        batch_size: int = 256,
        learning_rate: float = 2e-3,
        seed: int = 0,
    ) -> ActionEstimator:
        """features (N, D), active (N, 8), motion (N, 4) (see :func:`step_targets`) -> a fitted estimator.

        AdamW on binary cross-entropy + squared error of the scaled motion (x10, so both count alike)."""
        x = torch.as_tensor(features, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != config.num_features or len(x) == 0:
            raise ValueError(
                f"features: expected (N, {config.num_features}) with N >= 1, got {tuple(x.shape)}"
            )
        y_active = torch.as_tensor(active, dtype=torch.float32)
        y_motion = torch.as_tensor(motion, dtype=torch.float32)
        mean, std = x.mean(0), x.std(0).clamp_min(1e-6) if len(x) > 1 else torch.ones(x.shape[1])
        x = (x - mean) / std
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        readout = _Readout(config)
        optimizer = torch.optim.AdamW(readout.parameters(), lr=learning_rate, weight_decay=1e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        for _ in range(steps):
            index = torch.randint(len(x), (min(batch_size, len(x)),), generator=generator)
            logits, predicted = readout(x[index])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y_active[index])
            loss = loss + (10 * (predicted - y_motion[index])).pow(2).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        return cls(config, readout, mean, std)

    @torch.no_grad()
    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """features (N, D) -> (binary (N, 8) in {0, 1}, raw magnitude (N, 8), 0 where binary is 0)."""
        x = (torch.as_tensor(features, dtype=torch.float32) - self.mean) / self.std
        logits, motion = self.readout(x)
        binary = (logits > 0).float().numpy()
        motion = motion.numpy() / AXIS_SCALE  # raw units, signed
        magnitude = np.zeros_like(binary)
        for axis, (positive, negative) in enumerate(AXIS_INDEX):
            magnitude[:, positive] = np.abs(motion[:, axis])
            magnitude[:, negative] = np.abs(motion[:, axis])
        return binary, (magnitude * binary).astype(np.float32)

    def estimate(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """frames (T, H, W, 3) -> (binary (A, 8), raw magnitude (A, 8)) per latent step, A = (T - 1) // 4."""
        return self.predict(step_features(frames, self.config))

    def save(self, directory: str | os.PathLike, extra: dict | None = None) -> Path:
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        state = {f"readout.{k}": v.contiguous() for k, v in self.readout.state_dict().items()}
        state["feature_mean"], state["feature_std"] = self.mean.contiguous(), self.std.contiguous()
        write_atomic(root / WEIGHTS, lambda tmp: save_file(state, str(tmp)))
        description = {
            "kind": "flow_readout",
            "config": asdict(self.config),
            "actions": list(DRONE_ACTIONS),
            "outputs": "8 action logits, then signed scaled motion of forward, left, yaw_left, pitch_up",
            **(extra or {}),
        }
        write_json_atomic(root / CONFIG, description)
        return root

    @classmethod
    def load(cls, directory: str | os.PathLike) -> ActionEstimator:
        root = Path(directory)
        for name in (CONFIG, WEIGHTS):
            if not (root / name).is_file():
                raise FileNotFoundError(
                    f"--estimator: {root / name} does not exist (fit one with `kinema-wm fit-action-estimator`)"
                )
        description = json.loads((root / CONFIG).read_text())
        if description.get("kind") != "flow_readout":
            raise ValueError(
                f"--estimator: {root / CONFIG} does not describe a flow-readout action estimator"
            )
        config = EstimatorConfig(**description["config"])
        state = load_file(str(root / WEIGHTS))
        readout = _Readout(config)
        readout.load_state_dict(
            {k.removeprefix("readout."): v for k, v in state.items() if k.startswith("readout.")}
        )
        return cls(config, readout, state["feature_mean"], state["feature_std"])
