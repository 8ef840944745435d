"""The drone action vocabulary and the action JSON of action-video clips.

An action string is JSON of shape (A, 2, 8): for each latent frame 1..A (frame 0 is the first image), the pair
[binary (8), magnitude (8)] over :data:`DRONE_ACTIONS`. An 81-frame clip has 21 latent frames, so A = 20.
"""

from __future__ import annotations

import json

import numpy as np

from ._errors import RobotDataError

DRONE_ACTIONS = ("forward", "back", "left", "right", "yaw_left", "yaw_right", "pitch_up", "pitch_down")

DEFAULT_MAGNITUDE_SCALE = (100.0, 100.0, 100.0, 100.0, 1.0, 1.0, 1.0, 1.0)
"""Forward/Back/Left/Right magnitudes are ~100x smaller than the yaw/pitch ones; this brings them level.

Stored in the dataset config, applied once, in the model's action encoder (``kinema.conditioning.ActionEncoder``).
"""


def parse_action_json(
    text: str,
    num_steps: int | None = None,
    *,
    source: str | None = None,
    row: int | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """An action JSON string (A, 2, 8) -> (binary (A, 8), magnitude (A, 8)), float32, magnitudes RAW.

    ``num_steps`` is the required A ((num_frames - 1) / 4). Errors are :class:`RobotDataError` with
    ``path=source`` and ``field="row <row>: action"`` (``row`` may be a number or a text such as ``"3 (line 5)"``), so a bad row is named exactly. Binary entries must be 0 or 1
    and every value finite.
    """
    field = "action" if row is None else f"row {row}: action"
    if not isinstance(text, str):
        raise RobotDataError(source, field, f"expected a JSON string, got {type(text).__name__}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        preview = text if len(text) <= 40 else text[:37] + "..."
        raise RobotDataError(source, field, f"not valid JSON ({error.msg}): {preview!r}") from error
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise RobotDataError(source, field, "expected a nested list of numbers of shape (A, 2, 8)") from error
    if array.ndim != 3 or array.shape[1:] != (2, len(DRONE_ACTIONS)):
        raise RobotDataError(source, field, f"expected shape (A, 2, 8), got {array.shape}")
    if num_steps is not None and array.shape[0] != num_steps:
        raise RobotDataError(
            source,
            field,
            f"expected {num_steps} action steps ((num_frames - 1) / 4), got {array.shape[0]}",
        )
    if not np.all(np.isfinite(array)):
        raise RobotDataError(source, field, "holds NaN or Inf")
    binary, magnitude = array[:, 0], array[:, 1]
    if not np.all((binary == 0) | (binary == 1)):
        raise RobotDataError(source, field, "binary entries (index [:, 0, :]) must be 0 or 1")
    return np.ascontiguousarray(binary), np.ascontiguousarray(magnitude)


def format_action_json(binary: np.ndarray, magnitude: np.ndarray) -> str:
    """(binary (A, 8), magnitude (A, 8)) -> the JSON string of shape (A, 2, 8) that :func:`parse_action_json` reads."""
    binary, magnitude = np.asarray(binary, dtype=np.float64), np.asarray(magnitude, dtype=np.float64)
    if binary.shape != magnitude.shape or binary.ndim != 2 or binary.shape[1] != len(DRONE_ACTIONS):
        raise ValueError(
            f"binary, magnitude: expected two arrays of shape (A, 8), got {binary.shape}, {magnitude.shape}"
        )
    return json.dumps(np.stack([binary, magnitude], axis=1).tolist())
