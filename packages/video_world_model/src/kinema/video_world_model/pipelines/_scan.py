"""What do the actions do? Videos from the same noise at several action scales, and the with/without diagnostic.

- :func:`scan_actions`: one video per action scale (the magnitudes x scale, the binary flags unchanged; 0 means no
  action), optionally one row per action type (only that action, at the scanned magnitudes), all from the same
  initial noise.
- :func:`action_effect`: the mean absolute difference per latent frame between the videos generated with and
  without the actions from the same noise; near 0 for an untrained controller, growing as it learns to steer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kinema.robot_data import DRONE_ACTIONS

from ._pipeline import WanActionPipeline


@dataclass
class ScanResult:
    """videos[label] = (F, H, W, 3) float in [0, 1]; ``rows`` x ``columns`` labels, in grid order."""

    videos: dict[str, np.ndarray]
    rows: list[str]
    columns: list[str]

    def label(self, row: str, column: str) -> str:
        return column if row == "" else f"{row} x{column}"


def _generate(
    pipe: WanActionPipeline, latents: torch.Tensor, binary, magnitude, output_type: str, **call
) -> np.ndarray:
    out = pipe(
        action_binary=binary,
        action_magnitude=magnitude,
        latents=latents.clone(),
        output_type=output_type,
        **call,
    )
    return out.frames[0]


def initial_noise(
    pipe: WanActionPipeline, height: int, width: int, num_frames: int, seed: int
) -> torch.Tensor:
    latent_frames = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    shape = (
        1,
        pipe.transformer.config.in_channels,
        latent_frames,
        height // pipe.vae_scale_factor_spatial,
        width // pipe.vae_scale_factor_spatial,
    )
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def scan_actions(
    pipe: WanActionPipeline,
    image,
    prompt: str,
    binary: np.ndarray,
    magnitude: np.ndarray,
    scales: list[float],
    *,
    per_action: bool = False,
    height: int = 480,
    width: int = 832,
    num_frames: int = 81,
    seed: int = 0,
    **call,
) -> ScanResult:
    """binary, magnitude (T, 8) raw; one video per scale (and per action type with ``per_action``). A scale multiplies
    the magnitudes only: the binary flags stay 0/1, the only values training shows (all 0 at scale 0)."""
    if not scales:
        raise ValueError("scales: give at least one scale, e.g. 0,0.5,1,2")
    if any(s < 0 for s in scales):
        raise ValueError(f"scales: {scales} has a negative scale; magnitudes are >= 0 in training")
    if pipe.action_controller is None:
        raise ValueError("--controller: scanning actions needs a trained controller")
    noise = initial_noise(pipe, height, width, num_frames, seed)
    common = {
        "prompt": prompt,
        "input_image": image,
        "height": height,
        "width": width,
        "num_frames": num_frames,
    } | call
    columns = [f"{s:g}" for s in scales]
    rows = [""]
    inputs = {"": (np.asarray(binary, np.float32), np.asarray(magnitude, np.float32))}
    if per_action:
        rows = list(DRONE_ACTIONS)
        strength = np.where(binary > 0, magnitude, 0).max(
            axis=1, keepdims=True
        )  # the scanned magnitude per step
        strength = np.where(strength > 0, strength, 1.0)
        for index, name in enumerate(DRONE_ACTIONS):
            only = np.zeros_like(binary, dtype=np.float32)
            only[:, index] = 1.0
            inputs[name] = (only, only * strength)
    videos = {}
    for row in rows:
        row_binary, row_magnitude = inputs[row]
        for scale, column in zip(scales, columns):
            label = column if row == "" else f"{row} x{column}"
            # the scale is how hard, not which actions: flags stay 0/1 as in training (scale 0 turns them off)
            flags = row_binary if scale != 0 else np.zeros_like(row_binary)
            videos[label] = _generate(pipe, noise, flags, row_magnitude * scale, "np", **common)
    return ScanResult(videos, rows, columns)


def action_effect(
    pipe: WanActionPipeline,
    image,
    prompt: str,
    binary: np.ndarray,
    magnitude: np.ndarray,
    *,
    height: int = 480,
    width: int = 832,
    num_frames: int = 81,
    seed: int = 0,
    **call,
) -> np.ndarray:
    """Mean |latents with actions - latents without| per latent frame, (F,), from the same noise.

    "Without" is the pipeline with its controller detached, so it measures everything the controller adds. Frame 0
    is the given image in both and is always 0.
    """
    if pipe.action_controller is None:
        raise ValueError("--controller: the action-effect diagnostic needs a controller")
    noise = initial_noise(pipe, height, width, num_frames, seed)
    common = {
        "prompt": prompt,
        "input_image": image,
        "height": height,
        "width": width,
        "num_frames": num_frames,
    } | call
    with_actions = _generate(pipe, noise, binary, magnitude, "latent", **common)
    controller = pipe.action_model.controller
    pipe.action_model.controller = None
    try:
        without = _generate(pipe, noise, None, None, "latent", **common)
    finally:
        pipe.action_model.controller = controller
    return (
        (with_actions.float() - without.float()).abs().mean(dim=(0, 2, 3)).cpu().numpy()
    )  # (C, F, h, w) -> (F,)
