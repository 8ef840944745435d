"""Action inputs for generation: tensors, lists, action JSON files and a compact text form.

Compact form: comma-separated segments ``ACTIONS x COUNT``, where ACTIONS is ``name[:magnitude]`` joined by ``+``
(several actions at once) or ``idle``. Magnitudes are raw (the controller applies its magnitude scale): never
multiply them by [100, 100, 100, 100, 1, 1, 1, 1] first, as the design's inference code does.

    forward:0.5x10,yaw_left:0.3x10        10 steps forward at 0.5, then 10 steps of yaw left at 0.3
    forward:0.5+pitch_up:0.2x4,idlex16    forward and pitch up together for 4 steps, then nothing for 16
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from kinema.robot_data import DRONE_ACTIONS, RobotDataError, parse_action_json


def parse_compact_actions(spec: str, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``"forward:0.5x10,yaw_left:0.3x10"`` -> (binary (T, 8), magnitude (T, 8)) float32, T = num_steps."""
    binary_rows, magnitude_rows = [], []
    for segment in (part.strip() for part in spec.split(",")):
        if not segment:
            continue
        body, sep, count_text = segment.rpartition("x")
        if not sep or not count_text.strip().isdigit() or not body:
            raise ValueError(f"actions: segment {segment!r} is not ACTIONSxCOUNT (e.g. forward:0.5x10)")
        binary, magnitude = np.zeros(len(DRONE_ACTIONS), np.float32), np.zeros(len(DRONE_ACTIONS), np.float32)
        for item in body.split("+"):
            name, _, value = item.strip().partition(":")
            if name == "idle":
                continue
            if name not in DRONE_ACTIONS:
                raise ValueError(
                    f"actions: unknown action {name!r} in {segment!r}; expected idle or {DRONE_ACTIONS}"
                )
            try:
                amount = float(value) if value else 1.0
            except ValueError:
                raise ValueError(f"actions: magnitude {value!r} of {name!r} is not a number") from None
            if not math.isfinite(amount):
                raise ValueError(f"actions: magnitude of {name!r} must be finite, got {value!r}")
            index = DRONE_ACTIONS.index(name)
            binary[index], magnitude[index] = 1.0, amount
        repeat = int(count_text)
        binary_rows += [binary] * repeat
        magnitude_rows += [magnitude] * repeat
    if len(binary_rows) != num_steps:
        raise ValueError(
            f"actions: {spec!r} gives {len(binary_rows)} steps, expected {num_steps} (latent frames - 1)"
        )
    return np.stack(binary_rows), np.stack(magnitude_rows)


def load_actions(source: str | Path, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Actions from a JSON file or a compact spec.

    A JSON file holds either the action-video format (shape (T, 2, 8)) or an object with ``action_binary`` and
    ``action_magnitude`` (each (T, 8)). Anything that is not an existing ``.json`` path is read as compact text.
    """
    path = Path(source)
    if path.suffix == ".json":
        if not path.is_file():
            raise FileNotFoundError(f"actions: no file at {path}")
        text = path.read_text()
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"actions: {path} is not valid JSON ({error.msg})") from None
        if isinstance(value, dict):
            missing = {"action_binary", "action_magnitude"} - set(value)
            if missing:
                raise ValueError(f"actions: {path} lacks {sorted(missing)}")
            binary = np.asarray(value["action_binary"], np.float32)
            magnitude = np.asarray(value["action_magnitude"], np.float32)
            check_action_arrays(binary, magnitude, num_steps, str(path))
            return binary, magnitude
        try:
            return parse_action_json(text, num_steps, source=str(path))
        except RobotDataError as error:
            raise ValueError(str(error)) from None
    return parse_compact_actions(str(source), num_steps)


def check_action_arrays(
    binary: np.ndarray, magnitude: np.ndarray, num_steps: int, name: str = "actions"
) -> None:
    expected = (num_steps, len(DRONE_ACTIONS))
    for label, array in (("action_binary", binary), ("action_magnitude", magnitude)):
        if array.shape != expected:
            raise ValueError(f"{name}: {label} has shape {array.shape}, expected {expected}")
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{name}: {label} holds NaN or Inf")


def prepare_actions(
    action_binary,
    action_magnitude,
    num_latent_frames: int,
    action_dim: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lists, arrays or tensors, (T, A) or (B, T, A) -> two (B, T, A) tensors on ``device`` in ``dtype``.

    ``action_magnitude`` None means all zero. T must be ``num_latent_frames - 1`` (latent frame 0 is the first
    image), the last dimension ``action_dim``, every value finite; otherwise a ValueError naming the argument.
    """
    binary = torch.as_tensor(
        np.asarray(action_binary, dtype=np.float32) if not torch.is_tensor(action_binary) else action_binary
    )
    magnitude = (
        torch.zeros_like(binary, dtype=torch.float32)
        if action_magnitude is None
        else torch.as_tensor(
            np.asarray(action_magnitude, dtype=np.float32)
            if not torch.is_tensor(action_magnitude)
            else action_magnitude
        )
    )
    steps = num_latent_frames - 1
    prepared = []
    for name, tensor in (("action_binary", binary), ("action_magnitude", magnitude)):
        if tensor.ndim == 2:
            tensor = tensor.unsqueeze(0)
        if tensor.ndim != 3 or tensor.shape[-1] != action_dim:
            raise ValueError(
                f"{name}: expected shape (B, {steps}, {action_dim}) or ({steps}, {action_dim}), got {tuple(tensor.shape)}"
            )
        if tensor.shape[1] != steps:
            raise ValueError(
                f"{name}: {tensor.shape[1]} action steps for {num_latent_frames} latent frames "
                f"(action_len must be latent_frames - 1 = {steps})"
            )
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{name}: holds NaN or Inf")
        prepared.append(tensor)
    if prepared[0].shape != prepared[1].shape:
        raise ValueError(
            f"action_magnitude: shape {tuple(prepared[1].shape)} differs from action_binary {tuple(prepared[0].shape)}"
        )
    return prepared[0].to(device=device, dtype=dtype), prepared[1].to(device=device, dtype=dtype)


def warn_if_prescaled(magnitude: torch.Tensor, scale: torch.Tensor, stacklevel: int = 2) -> bool:
    """Warns once when raw magnitudes (..., A) look already multiplied by ``scale`` (A,); returns whether it did.

    The bound comes from the scale. The scale brings every action to the order of the unscaled ones: for the drone,
    translations (kilometres per latent step) x 100 ~ rotations (radians per latent step). A scaled magnitude above
    the largest scale is a raw magnitude above 1 on a scaled action (1 km per latent step), far outside any data a
    controller is trained on: kinema's drone flights move 0.001-0.003, the design's own example 0.5 (scaled: 50).
    Pre-scaled input arrives 100 x too large and is scaled again, so the bound is crossed from raw 0.01 up (0.5 ->
    50 -> 5000, 50 x the bound); pre-scaled values below that cannot be told from raw ones. Only actions whose
    scale is above 1 are checked: pre-scaling leaves the others unchanged.
    """
    scale = scale.detach().float().cpu()
    peak = float(scale.max()) if scale.numel() else 1.0
    if peak <= 1.0 or not torch.is_tensor(magnitude) or magnitude.numel() == 0:
        return False
    largest = magnitude.detach().abs().float().reshape(-1, scale.numel()).amax(dim=0).cpu()  # (A,) raw
    scaled = largest * scale
    over = [i for i in range(scale.numel()) if scale[i] > 1.0 and scaled[i] > peak]
    if not over:
        return False
    names = (
        DRONE_ACTIONS
        if scale.numel() == len(DRONE_ACTIONS)
        else [f"action {i}" for i in range(scale.numel())]
    )
    found = ", ".join(f"{names[i]} {float(largest[i]):g} (scaled {float(scaled[i]):g})" for i in over)
    warnings.warn(
        f"action_magnitude: {found} exceed the scaled bound {peak:g}: magnitudes must be raw, the controller "
        f"multiplies them by its magnitude_scale {[float(s) for s in scale]} itself; input already multiplied by "
        "it (as the design's inference code does) reaches the model scaled twice",
        stacklevel=stacklevel + 1,
    )
    return True
