"""Policy episodes (ACT and the hybrid): one HDF5 file per episode.

Layout (T steps, D joint dims, A action dims, E environment-state dims; 14/14/14 for bimanual ALOHA)::

    /observations/qpos               (T, D)        float32
    /observations/qvel               (T, D)        float32
    /observations/images/<camera>    (T, H, W, 3)  uint8, chunked one frame per chunk, gzip level 4
    /observations/environment_state  (T, E)        float32, optional (e.g. the target's (x, y))
    /action                          (T, A)        float32
    root attributes: sim (bool), fps (float), task (str), and any others given

Readers also take the original ACT and ALOHA recorders' files (``_act_aloha``): without ``fps`` or ``task``
(stated defaults, one warning per folder), without ``qvel`` (no policy uses it), and with JPEG-compressed
images (root attribute ``compress``; (T, padded) uint8 rows, decoded to (H, W, 3) uint8).

Images use gzip because it is HDF5's built-in deflate filter: every HDF5 reader (h5py, the C tools, MATLAB,
h5dump) decodes it, unlike lzf, which only h5py and PyTables ship. One frame per chunk means reading a sample
decompresses only its own frame.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ._act_aloha import (
    check_compress_len,
    check_frame_size,
    is_compressed,
    read_jpeg_frame,
    read_jpeg_frames,
    recorder_defaults,
    warn_defaults,
)
from ._errors import RobotDataError
from ._trajectories import open_hdf5

REQUIRED_ATTRS = ("sim", "fps", "task")  # what the writer requires; readers require only sim (see above)
IMAGE_COMPRESSION = "gzip"
IMAGE_COMPRESSION_LEVEL = 4


def _check_matrix(name: str, value, steps: int | None) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
        raise ValueError(
            f"{name}: expected a numeric array of shape (T, dims), got shape {array.shape} {array.dtype}"
        )
    if steps is not None and array.shape[0] != steps:
        raise ValueError(f"{name}: expected {steps} time steps (the length of qpos), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.argwhere(~np.isfinite(array))[0][0])
        raise ValueError(f"{name}: holds NaN or Inf (first at step {bad})")
    return array.astype(np.float32)


def write_policy_episode(
    path: str | os.PathLike,
    *,
    qpos: np.ndarray,
    qvel: np.ndarray,
    action: np.ndarray,
    images: Mapping[str, np.ndarray],
    environment_state: np.ndarray | None = None,
    attrs: Mapping[str, object] | None = None,
) -> Path:
    """Writes one episode (layout in the module docstring) atomically and returns its path.

    qpos, qvel (T, D); action (T, A); images {camera: (T, H, W, 3) uint8}; environment_state (T, E) or None;
    attrs must hold at least ``sim`` (bool), ``fps`` (> 0) and ``task`` (str). Everything is checked before the
    file is created (shapes, dtypes, equal T, NaN/Inf), and a ``ValueError`` names the offending field. The file
    is written to a temporary name in the same folder and renamed, so an interrupted write leaves no episode.
    """
    path = Path(path)
    qpos = _check_matrix("qpos", qpos, None)
    steps = qpos.shape[0]
    if steps == 0:
        raise ValueError("qpos: expected at least one time step, got shape (0, ...)")
    qvel = _check_matrix("qvel", qvel, steps)
    if qvel.shape != qpos.shape:
        raise ValueError(f"qvel: expected the shape of qpos {qpos.shape}, got {qvel.shape}")
    action = _check_matrix("action", action, steps)
    if environment_state is not None:
        environment_state = _check_matrix("environment_state", environment_state, steps)
    if not isinstance(images, Mapping) or not images:
        raise ValueError("images: expected a non-empty dict camera name -> (T, H, W, 3) uint8 array")
    checked_images = {}
    for camera, frames in images.items():
        if not isinstance(camera, str) or not camera or "/" in camera:
            raise ValueError(f"images: camera names must be non-empty strings without '/', got {camera!r}")
        frames = np.asarray(frames)
        if frames.dtype != np.uint8:
            raise ValueError(f"images/{camera}: expected dtype uint8, got {frames.dtype}")
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] != steps:
            raise ValueError(f"images/{camera}: expected shape ({steps}, H, W, 3), got {frames.shape}")
        checked_images[camera] = frames
    attrs = dict(attrs or {})
    missing = [key for key in REQUIRED_ATTRS if key not in attrs]
    if missing:
        raise ValueError(f"attrs: missing {missing} (required: {list(REQUIRED_ATTRS)})")
    if not isinstance(attrs["sim"], bool | np.bool_):
        raise ValueError(f"attrs['sim']: expected a bool, got {attrs['sim']!r}")
    fps = attrs["fps"]
    if (
        isinstance(fps, bool)
        or not isinstance(fps, int | float | np.number)
        or not np.isfinite(fps)
        or fps <= 0
    ):
        raise ValueError(f"attrs['fps']: expected a positive number, got {fps!r}")
    if not isinstance(attrs["task"], str):
        raise ValueError(f"attrs['task']: expected a str, got {attrs['task']!r}")
    for key, value in attrs.items():
        allowed = str | bytes | bool | int | float | np.generic | np.ndarray | list | tuple
        if not isinstance(key, str) or not isinstance(value, allowed):
            raise ValueError(
                f"attrs[{key!r}]: expected a str, number, bool or array (HDF5 attribute), got {type(value).__name__}"
            )

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(tmp, "w") as f:
            for key, value in attrs.items():
                f.attrs[key] = value
            obs = f.create_group("observations")
            obs.create_dataset("qpos", data=qpos)
            obs.create_dataset("qvel", data=qvel)
            if environment_state is not None:
                obs.create_dataset("environment_state", data=environment_state)
            group = obs.create_group("images")
            for camera, frames in checked_images.items():
                group.create_dataset(
                    camera,
                    data=frames,
                    chunks=(1, *frames.shape[1:]),
                    compression=IMAGE_COMPRESSION,
                    compression_opts=IMAGE_COMPRESSION_LEVEL,
                )
            f.create_dataset("action", data=action)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


@dataclass(frozen=True)
class PolicyEpisodeInfo:
    """What :func:`check_policy_episode` found: steps, dims, cameras and image sizes, attributes (with the
    defaults filled in) and ``defaults``, the attributes the file lacked and the values used for them."""

    path: str
    num_steps: int
    qpos_dim: int
    action_dim: int
    environment_state_dim: int | None
    cameras: dict[str, tuple[int, int]]  # camera -> (H, W)
    attrs: dict
    defaults: dict = field(default_factory=dict)
    compressed: bool = False  # images are JPEG rows (ALOHA's compress)


def _attr_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _dataset(path, f: h5py.File, name: str) -> h5py.Dataset:
    parent = name.rsplit("/", 1)[0] if "/" in name else None
    if parent and parent not in f:
        raise RobotDataError(path, parent, "missing group")
    if name not in f:
        raise RobotDataError(path, name, "missing dataset")
    node = f[name]
    if not isinstance(node, h5py.Dataset):
        raise RobotDataError(path, name, "expected a dataset, found a group")
    return node


def _read_matrix(path, f: h5py.File, name: str, steps: int | None) -> np.ndarray:
    node = _dataset(path, f, name)
    if node.ndim != 2:
        raise RobotDataError(path, name, f"expected shape (T, dims), got {node.shape}")
    if steps is not None and node.shape[0] != steps:
        raise RobotDataError(
            path, name, f"expected {steps} steps (the length of qpos), got shape {node.shape}"
        )
    try:
        data = np.asarray(node[()], dtype=np.float32)
    except (OSError, TypeError, ValueError) as error:
        raise RobotDataError(path, name, f"unreadable ({error})") from error
    if not np.all(np.isfinite(data)):
        bad = int(np.argwhere(~np.isfinite(data))[0][0])
        raise RobotDataError(path, name, f"holds NaN or Inf (first at step {bad})")
    return data


def _check_open(path, f: h5py.File) -> tuple[PolicyEpisodeInfo, dict[str, np.ndarray]]:
    attrs = {key: _attr_value(value) for key, value in f.attrs.items()}
    if "sim" not in attrs:
        raise RobotDataError(path, "attrs", "missing ['sim']")
    defaults = recorder_defaults(path, attrs)
    attrs.update(defaults)
    compressed = is_compressed(path, attrs)
    qpos = _read_matrix(path, f, "observations/qpos", None)
    steps = qpos.shape[0]
    if steps == 0:
        raise RobotDataError(path, "observations/qpos", "holds no time steps")
    arrays = {"qpos": qpos}
    if "observations/qvel" in f:
        arrays["qvel"] = _read_matrix(path, f, "observations/qvel", steps)
        if arrays["qvel"].shape != qpos.shape:
            raise RobotDataError(
                path,
                "observations/qvel",
                f"expected the shape of qpos {qpos.shape}, got {arrays['qvel'].shape}",
            )
    arrays["action"] = _read_matrix(path, f, "action", steps)
    if "observations/environment_state" in f:
        arrays["environment_state"] = _read_matrix(path, f, "observations/environment_state", steps)
    if "observations/images" not in f or not isinstance(f["observations/images"], h5py.Group):
        raise RobotDataError(path, "observations/images", "missing group")
    cameras = {}
    for camera in f["observations/images"]:
        name = f"observations/images/{camera}"
        node = _dataset(path, f, name)
        if compressed:
            if node.dtype != np.uint8 or node.ndim != 2 or node.shape[0] != steps:
                raise RobotDataError(
                    path,
                    name,
                    f"expected ({steps}, bytes) uint8 JPEG rows (attribute compress is set), "
                    f"got {node.shape} {node.dtype}",
                )
            cameras[camera] = read_jpeg_frame(node, 0, path).shape[:2]  # the size the frames decode to
        elif node.dtype != np.uint8 or node.ndim != 4 or node.shape[-1] != 3 or node.shape[0] != steps:
            raise RobotDataError(
                path, name, f"expected ({steps}, H, W, 3) uint8, got {node.shape} {node.dtype}"
            )
        else:
            cameras[camera] = (int(node.shape[1]), int(node.shape[2]))
    if not cameras:
        raise RobotDataError(path, "observations/images", "holds no camera")
    if compressed:
        width = max(f[f"observations/images/{c}"].shape[1] for c in cameras)
        check_compress_len(path, f, list(cameras), steps, width)
    env = arrays.get("environment_state")
    info = PolicyEpisodeInfo(
        str(path),
        steps,
        qpos.shape[1],
        arrays["action"].shape[1],
        None if env is None else env.shape[1],
        cameras,
        attrs,
        defaults,
        compressed,
    )
    return info, arrays


def _lerobot_episode(path):
    """(LeRobotEpisodes, ref) when ``path`` names an episode of a LeRobot folder (``<root>#episode_<n>``), else
    None: the policy readers below accept those as they accept HDF5 files."""
    if isinstance(path, str | os.PathLike) and "#episode_" not in os.fspath(path):
        return None  # an HDF5 file: the common case, decided without importing the LeRobot reader
    from .lerobot._reader import episode_ref, lerobot_episodes  # imported here: it imports this module

    ref = episode_ref(path)
    return None if ref is None else (lerobot_episodes(ref.root), ref)


def check_policy_episode(path: str | os.PathLike, *, deep: bool = False) -> PolicyEpisodeInfo:
    """Checks an episode file without reading its images (``deep=True`` also decompresses every image chunk, and
    decodes every JPEG frame). JPEG-compressed files have their first frame decoded, for its size.

    Raises :class:`RobotDataError` naming the file and the field: unopenable or truncated file, missing
    group/dataset/attribute, wrong shape or dtype, steps that disagree, NaN or Inf. Warns once per folder when it
    fills in missing attributes (see :class:`PolicyEpisodeInfo`). An episode of a LeRobot folder
    (``<root>#episode_<n>``, see :mod:`kinema.robot_data.lerobot`) is checked from its metadata instead.
    """
    lerobot = _lerobot_episode(path)
    if lerobot is not None:
        episodes, ref = lerobot
        return episodes.check_episode(ref)
    with open_hdf5(path, "episode") as f:
        try:
            info, _ = _check_open(path, f)
            if deep:
                for camera, size in info.cameras.items():
                    name = f"observations/images/{camera}"
                    for t in range(info.num_steps):
                        if info.compressed:
                            check_frame_size(read_jpeg_frame(f[name], t, path), size, path, name, t)
                            continue
                        try:
                            f[name][t]
                        except OSError as error:
                            raise RobotDataError(path, name, f"frame {t} unreadable ({error})") from error
        except (OSError, KeyError) as error:
            raise RobotDataError(path, "episode", f"unreadable ({error})") from error
    warn_defaults(path, info.defaults)
    return info


def read_policy_episode(path: str | os.PathLike) -> dict:
    """A whole episode: ``qpos``, ``action``, optional ``qvel`` and ``environment_state`` (float32 (T, dims)),
    ``images`` {camera: (T, H, W, 3) uint8} (JPEG frames decoded) and ``attrs`` (Python values, with defaults
    for missing ``fps``/``task``). Checked like :func:`check_policy_episode`, which also says when defaults are
    used; this function does not, so that processes reading episodes checked elsewhere stay quiet."""
    lerobot = _lerobot_episode(path)
    if lerobot is not None:
        episodes, ref = lerobot
        return episodes.read_episode(ref)
    with open_hdf5(path, "episode") as f:
        try:
            info, arrays = _check_open(path, f)
            images = {}
            for camera, size in info.cameras.items():
                name = f"observations/images/{camera}"
                if info.compressed:
                    images[camera] = read_jpeg_frames(f[name], path, size)
                    continue
                try:
                    images[camera] = f[name][()]
                except OSError as error:
                    raise RobotDataError(path, name, f"unreadable ({error})") from error
        except (OSError, KeyError) as error:
            raise RobotDataError(path, "episode", f"unreadable ({error})") from error
    return {**arrays, "images": images, "attrs": info.attrs}
