"""VACE-E hand and object trajectories (HDF5) -> arrays.

Hand file: groups ``left_wrist`` / ``right_wrist`` with ``positions`` (T, 3) and ``rotations_6d`` (T, 6), and
datasets ``left_hand_states`` / ``right_hand_states`` (T,). Output (T, 20), float32:

    [0:3] left wrist position   [3:9] left wrist 6D rotation
    [9:12] right wrist position [12:18] right wrist 6D rotation
    [18] left gripper           [19] right gripper        (binary: closed = 0, open = 1; raw > 0.5 is open)

A hand absent from the file (the legacy single-hand files hold only the right wrist) is all zeros. The 6D values
are passed through unchanged (see ``_rotation`` for their convention).

Object file: groups ``object_*`` with ``positions`` (T, 3), ``rotations_6d`` (T, 6) and an ``object_id``
attribute. Output (T, n_objects, 9) ordered by ``object_id`` and capped at ``max_objects``.

An optional root attribute ``fps`` gives the trajectory's sampling rate; without it a trajectory row is one video
frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from ._errors import RobotDataError, require_exists

HAND_MOTION_DIM = 20
OBJECT_POSE_DIM = 9


@dataclass
class Trajectory:
    """A loaded trajectory: ``data`` (T, ...) float32 and its sampling rate (None: one row per video frame)."""

    data: np.ndarray
    fps: float | None


def open_hdf5(path: str | os.PathLike, field: str) -> h5py.File:
    """Opens an HDF5 file read-only; missing, empty or truncated files raise naming ``field``."""
    path = require_exists(path, field)
    if Path(path).stat().st_size == 0:
        raise RobotDataError(path, field, "zero-byte file")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise RobotDataError(
            path, field, f"cannot be opened as HDF5 (truncated or corrupt?) ({error})"
        ) from error


def read_array(path, f: h5py.File, name: str, shape: tuple) -> np.ndarray:
    """Dataset ``name`` of ``f`` as float32, checked: present, shape (``None`` = any size), finite."""
    try:
        node = f.get(name)
    except (KeyError, OSError) as error:  # a dangling soft or external link
        raise RobotDataError(path, name, f"unreadable link ({error})") from error
    if node is None:
        raise RobotDataError(path, name, "missing")
    if not isinstance(node, h5py.Dataset):
        raise RobotDataError(path, name, "expected a dataset, found a group")
    if len(node.shape) != len(shape) or any(s is not None and s != n for s, n in zip(shape, node.shape)):
        expected = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
        raise RobotDataError(path, name, f"expected shape {expected}, got {node.shape}")
    try:
        data = np.asarray(node[()], dtype=np.float32)
    except (OSError, TypeError, ValueError) as error:
        raise RobotDataError(path, name, f"unreadable ({error})") from error
    if not np.all(np.isfinite(data)):
        raise RobotDataError(path, name, "holds NaN or Inf")
    return data


def _fps_attr(path, f: h5py.File) -> float | None:
    if "fps" not in f.attrs:
        return None
    value = f.attrs["fps"]
    try:
        fps = float(np.asarray(value).item())
    except (TypeError, ValueError) as error:
        raise RobotDataError(path, "attrs.fps", f"expected one positive number, got {value!r}") from error
    if not np.isfinite(fps) or fps <= 0:
        raise RobotDataError(path, "attrs.fps", f"expected a positive rate, got {fps}")
    return fps


def _object_id(path, name: str, node: h5py.Group) -> int:
    if "object_id" not in node.attrs:
        raise RobotDataError(path, f"{name}.attrs.object_id", "missing")
    value = node.attrs["object_id"]
    try:
        number = float(np.asarray(value).item())
    except (TypeError, ValueError) as error:
        raise RobotDataError(
            path, f"{name}.attrs.object_id", f"expected an integer, got {value!r}"
        ) from error
    if not np.isfinite(number) or number != int(number):
        raise RobotDataError(path, f"{name}.attrs.object_id", f"expected an integer, got {value!r}")
    return int(number)


def read_hand_motion(path: str | os.PathLike) -> Trajectory:
    """A hand-trajectory file -> (T, 20) float32 (layout in the module docstring)."""
    with open_hdf5(path, "hand_trajectories") as f:
        try:
            return _read_hand_motion(path, f)
        except (OSError, KeyError) as error:  # a broken link or chunk the checks above did not reach
            raise RobotDataError(path, "hand_trajectories", f"unreadable ({error})") from error


def _read_hand_motion(path, f: h5py.File) -> Trajectory:
    hands = {}
    for side in ("left", "right"):
        if f"{side}_wrist" not in f and f"{side}_hand_states" not in f:
            continue
        if not isinstance(f.get(f"{side}_wrist"), h5py.Group):
            raise RobotDataError(path, f"{side}_wrist", "missing group (the hand's states are present)")
        position = read_array(path, f, f"{side}_wrist/positions", (None, 3))
        rotation = read_array(path, f, f"{side}_wrist/rotations_6d", (None, 6))
        states = read_array(path, f, f"{side}_hand_states", (None,))
        lengths = {len(position), len(rotation), len(states)}
        if len(lengths) != 1:
            raise RobotDataError(
                path,
                f"{side}_wrist",
                f"positions, rotations_6d and {side}_hand_states disagree in length: "
                f"{len(position)}, {len(rotation)}, {len(states)}",
            )
        hands[side] = (position, rotation, (states > 0.5).astype(np.float32))
    if not hands:
        raise RobotDataError(
            path, "right_wrist", "missing group (neither left_wrist nor right_wrist present)"
        )
    lengths = {side: len(v[0]) for side, v in hands.items()}
    if len(set(lengths.values())) != 1:
        raise RobotDataError(path, "left_wrist", f"the hands disagree in length: {lengths}")
    steps = next(iter(lengths.values()))
    if steps == 0:
        raise RobotDataError(path, "right_wrist/positions", "holds no time steps")
    motion = np.zeros((steps, HAND_MOTION_DIM), dtype=np.float32)
    for side, offset, grip in (("left", 0, 18), ("right", 9, 19)):
        if side in hands:
            position, rotation, states = hands[side]
            motion[:, offset : offset + 3] = position
            motion[:, offset + 3 : offset + 9] = rotation
            motion[:, grip] = states
    return Trajectory(motion, _fps_attr(path, f))


def read_object_trajectories(path: str | os.PathLike, max_objects: int) -> Trajectory:
    """An object-trajectory file -> (T, n_objects, 9) float32, ordered by ``object_id``, at most ``max_objects``."""
    with open_hdf5(path, "object_trajectories") as f:
        try:
            return _read_object_trajectories(path, f, max_objects)
        except (OSError, KeyError) as error:  # a broken link or chunk the checks above did not reach
            raise RobotDataError(path, "object_trajectories", f"unreadable ({error})") from error


def _read_object_trajectories(path, f: h5py.File, max_objects: int) -> Trajectory:
    objects = []
    for name in f:
        if not name.startswith("object"):
            continue
        try:
            node = f[name]
        except (KeyError, OSError) as error:  # a dangling soft or external link
            raise RobotDataError(path, name, f"unreadable link ({error})") from error
        if not isinstance(node, h5py.Group):
            raise RobotDataError(path, name, "expected a group (positions, rotations_6d), found a dataset")
        object_id = _object_id(path, name, node)
        position = read_array(path, f, f"{name}/positions", (None, 3))
        rotation = read_array(path, f, f"{name}/rotations_6d", (None, 6))
        if len(position) != len(rotation):
            raise RobotDataError(
                path,
                name,
                f"positions and rotations_6d disagree in length: {len(position)}, {len(rotation)}",
            )
        objects.append((object_id, name, np.concatenate([position, rotation], axis=1)))
    if not objects:
        raise RobotDataError(path, "object_0", "missing group (no object_* group in the file)")
    objects.sort(key=lambda o: o[0])
    ids = [o[0] for o in objects]
    if len(set(ids)) != len(ids):
        raise RobotDataError(path, "object_id", f"repeated object ids {ids}")
    lengths = {o[1]: len(o[2]) for o in objects}
    if len(set(lengths.values())) != 1:
        raise RobotDataError(path, objects[0][1], f"objects disagree in length: {lengths}")
    data = np.stack([o[2] for o in objects[:max_objects]], axis=1)  # (T, n, 9)
    if data.shape[0] == 0:
        raise RobotDataError(path, f"{objects[0][1]}/positions", "holds no time steps")
    return Trajectory(data, _fps_attr(path, f))
