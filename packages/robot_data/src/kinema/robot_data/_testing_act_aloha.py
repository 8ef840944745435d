"""Episodes written exactly as the original ACT and ALOHA recorders write them (re-exported by ``testing``).

- :func:`write_act_sim_episodes`: tonyzhaozh/act ``record_sim_episodes.py``. Root attribute ``sim`` only; images
  (T, H, W, 3) uint8 in chunks of one frame, no filter; ``qpos``/``qvel``/``action`` (T, 14) created without a
  dtype, so stored as float32 although the recorder fills them from float64 arrays (its docstring says float64).
- :func:`write_aloha_episodes`: the ALOHA real-robot recorder ``aloha_scripts/record_episodes.py`` (the versions
  with ``COMPRESS``: act-plus-plus, mobile-aloha, Physical-Intelligence/aloha). Root attributes ``sim`` (False)
  and ``compress``; ``effort`` beside ``qpos``/``qvel``. Compressed, each frame is ``cv2.imencode('.jpg', image,
  [IMWRITE_JPEG_QUALITY, 50])`` of the camera's array, zero-padded to the longest frame of the episode (all
  cameras), stored as (T, padded) uint8 rows, and ``/compress_len`` (cameras, T) holds the true lengths in the
  recorder's ``camera_names`` order.

The recorders' 480x640 frames are replaced by small ones. Values (float64 before storing):
``qpos[t, j] = 1000 * episode + t + j / 100``, ``qvel = 0.25``, ``effort = -1``, ``action = qpos + 0.5``; images
from :func:`recorder_image`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

ACT_SIM_CAMERAS = ("top",)
ALOHA_CAMERAS = ("cam_high", "cam_low", "cam_left_wrist", "cam_right_wrist")
"""The ALOHA recorder's ``camera_names`` (its TASK_CONFIGS): the row order of ``compress_len``. The images group
lists the same cameras alphabetically (cam_high, cam_left_wrist, cam_low, cam_right_wrist)."""
RED = (255, 0, 0)
F32 = "f4"  # the recorders pass no dtype for their number datasets: h5py's default then, float32


def recorder_image(episode: int, camera: int, t: int, size: tuple[int, int] = (48, 64)) -> np.ndarray:
    """(H, W, 3) uint8 RGB: the left half pure red, the right half one grey level ``(40 * camera + 10 * episode
    + 7 * t) % 200 + 28`` that identifies the frame. Both halves are flat and 16-pixel aligned (JPEG's 4:2:0
    blocks), so a decoded frame stays within a few levels of its source away from the border."""
    height, width = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = RED
    image[:, width // 2 :] = (40 * camera + 10 * episode + 7 * t) % 200 + 28
    return image


def recorder_episode(
    episode: int, num_steps: int, cameras: Sequence[str], image_size: tuple[int, int] = (48, 64)
) -> dict[str, np.ndarray]:
    """The arrays the recorders put in ``data_dict``, keyed by their HDF5 names (see the module docstring)."""
    t = np.arange(num_steps, dtype=np.float64)[:, None]
    qpos = 1000.0 * episode + t + np.arange(14)[None] / 100
    data = {
        "/observations/qpos": qpos,
        "/observations/qvel": np.full_like(qpos, 0.25),
        "/action": qpos + 0.5,
    }
    for c, camera in enumerate(cameras):
        frames = [recorder_image(episode, c, step, image_size) for step in range(num_steps)]
        data[f"/observations/images/{camera}"] = np.stack(frames)
    return data


def write_act_sim_episodes(
    root: str | os.PathLike,
    num_episodes: int = 2,
    num_steps: int = 10,
    *,
    cameras: Sequence[str] = ACT_SIM_CAMERAS,
    image_size: tuple[int, int] = (48, 64),
) -> Path:
    """``root/episode_<i>.hdf5`` as ``record_sim_episodes.py`` writes them; returns ``root``. ACT saves into
    ``<dataset_dir>/<task_name>/``, so name ``root`` after the task."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = image_size
    for i in range(num_episodes):
        data = recorder_episode(i, num_steps, cameras, image_size)
        with h5py.File(root / f"episode_{i}.hdf5", "w", rdcc_nbytes=1024**2 * 2) as f:
            f.attrs["sim"] = True
            obs = f.create_group("observations")
            image = obs.create_group("images")
            for camera in cameras:
                image.create_dataset(
                    camera, (num_steps, height, width, 3), dtype="uint8", chunks=(1, height, width, 3)
                )
            obs.create_dataset("qpos", (num_steps, 14), dtype=F32)
            obs.create_dataset("qvel", (num_steps, 14), dtype=F32)
            f.create_dataset("action", (num_steps, 14), dtype=F32)
            for name, array in data.items():
                f[name][...] = array
    return root


def write_aloha_episodes(
    root: str | os.PathLike,
    num_episodes: int = 2,
    num_steps: int = 10,
    *,
    cameras: Sequence[str] = ALOHA_CAMERAS,
    image_size: tuple[int, int] = (48, 64),
    compress: bool = True,
) -> Path:
    """``root/episode_<i>.hdf5`` as the ALOHA recorder writes them (JPEG rows when ``compress``); returns ``root``.
    Needs OpenCV (``opencv-python-headless``, in the test extra) to encode like the recorder."""
    import cv2

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    height, width = image_size
    for i in range(num_episodes):
        data = recorder_episode(i, num_steps, cameras, image_size)
        data["/observations/effort"] = np.full((num_steps, 14), -1.0)
        if compress:
            encode_param = [int(cv2.IMWRITE_JPEG_QUALITY), 50]
            compressed_len = []
            for camera in cameras:
                key = f"/observations/images/{camera}"
                encoded = [cv2.imencode(".jpg", image, encode_param)[1].ravel() for image in data[key]]
                compressed_len.append([len(e) for e in encoded])
                data[key] = encoded
            compressed_len = np.array(compressed_len)
            padded_size = compressed_len.max()
            for camera in cameras:
                key = f"/observations/images/{camera}"
                padded = np.zeros((num_steps, padded_size), dtype="uint8")
                for t, encoded in enumerate(data[key]):
                    padded[t, : len(encoded)] = encoded
                data[key] = padded
        with h5py.File(root / f"episode_{i}.hdf5", "w", rdcc_nbytes=1024**2 * 2) as f:
            f.attrs["sim"] = False
            f.attrs["compress"] = compress
            obs = f.create_group("observations")
            image = obs.create_group("images")
            for camera in cameras:
                if compress:
                    image.create_dataset(
                        camera, (num_steps, padded_size), dtype="uint8", chunks=(1, padded_size)
                    )
                else:
                    image.create_dataset(
                        camera, (num_steps, height, width, 3), dtype="uint8", chunks=(1, height, width, 3)
                    )
            obs.create_dataset("qpos", (num_steps, 14), dtype=F32)
            obs.create_dataset("qvel", (num_steps, 14), dtype=F32)
            obs.create_dataset("effort", (num_steps, 14), dtype=F32)
            f.create_dataset("action", (num_steps, 14), dtype=F32)
            for name, array in data.items():
                f[name][...] = array
            if compress:
                f.create_dataset("compress_len", (len(cameras), num_steps), dtype=F32)
                f["/compress_len"][...] = compressed_len
    return root
