"""Episodes from the original ACT and ALOHA recorders: the attributes they leave out, and their JPEG frames.

kinema's policy-episode layout (``_policy_io``) is the layout of tonyzhaozh/act ``record_sim_episodes.py`` and of
the ALOHA real-robot recorder ``aloha_scripts/record_episodes.py``, plus two root attributes those recorders do
not write (they write ``sim``, and ALOHA ``compress``). Readers fill them in and say so once per folder:

- ``fps`` = 50: ACT's simulation steps at DT = 0.02 s, and the ALOHA recorder also runs at DT = 0.02 s (its
  ``constants.DT``);
- ``task`` = the name of the episode's folder: ACT saves to ``<dataset_dir>/<task_name>/episode_<i>.hdf5``.

ALOHA recordings made with ``compress`` True store each camera as (T, padded) uint8 rows: frame t is the JPEG that
``cv2.imencode('.jpg', image, [IMWRITE_JPEG_QUALITY, 50])`` made of the camera's array, zero-padded to the
longest frame of the episode, and ``/compress_len`` (cameras, T) holds each frame's true length.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from ._errors import RobotDataError, RobotDataWarning

DEFAULT_FPS = 50.0  # 1 / DT, DT = 0.02 s in ACT's sim and in the ALOHA recorder
_WARNED: set[tuple[str, tuple]] = set()  # (folder, defaults) this process has already warned about


def recorder_defaults(path: str | os.PathLike, attrs: dict) -> dict:
    """The values to use for the root attributes the recorders do not write (``{}`` for kinema's own files)."""
    defaults = {}
    if "fps" not in attrs:
        defaults["fps"] = DEFAULT_FPS
    if "task" not in attrs:
        defaults["task"] = Path(path).resolve().parent.name
    return defaults


def warn_defaults(path: str | os.PathLike, defaults: dict) -> None:
    """One :class:`RobotDataWarning` per folder and process naming the defaults in use (nothing when none).

    Per folder rather than per file: a training run checks every episode, some more than once (dims, statistics,
    samples), and each check would repeat the same sentence. A set rather than Python's once-per-location filter,
    which ``-W always`` (and pytest) turns off."""
    if not defaults:
        return
    folder = Path(path).resolve().parent
    key = (str(folder), tuple(sorted(defaults.items())))
    if key in _WARNED:
        return
    _WARNED.add(key)
    used = []
    if "fps" in defaults:
        used.append(
            f"fps={defaults['fps']:g} (ACT's simulation steps at DT = 0.02 s; the ALOHA real-robot recorder also "
            "records at 50 Hz)"
        )
    if "task" in defaults:
        used.append(f"task={defaults['task']!r} (the folder's name, as ACT's recorder names it)")
    warnings.warn(
        f"{folder}: episodes without the root attribute(s) {', '.join(defaults)}, as the original ACT and ALOHA "
        f"recorders write them: using {' and '.join(used)}. Write these attributes into the files to set them.",
        RobotDataWarning,
        stacklevel=3,
    )


def is_compressed(path, attrs: dict) -> bool:
    """The root attribute ``compress`` (False when absent)."""
    value = attrs.get("compress", False)
    if not isinstance(value, bool | int) or value not in (0, 1):
        raise RobotDataError(path, "attrs.compress", f"expected a bool, got {value!r}")
    return bool(value)


def decode_jpeg(row: np.ndarray, path, name: str, t: int) -> np.ndarray:
    """One zero-padded JPEG row (bytes,) uint8 -> (H, W, 3) uint8 in the channel order the recorder encoded.

    PIL, not OpenCV: Pillow is already a dependency and OpenCV is a large one, and both wrap libjpeg (the decoded
    pixels are the same). The padding needs no trimming: a JPEG ends at its end-of-image marker and the decoder
    reads no further, which is also how ACT's and LeRobot's loaders decode these rows (``cv2.imdecode(row, 1)``).

    Channel order: the recorder's images come from ROS (usb_cam publishes rgb8, read with ``passthrough``), so its
    arrays are RGB, and ``cv2.imencode`` takes every array as BGR: the JPEG holds the array's channel 0 as blue and
    channel 2 as red. ``cv2.imdecode`` hands back BGR, i.e. the array's own order (RGB), which is what ACT trained
    on. PIL hands back the JPEG's RGB, i.e. the array's channels reversed, so they are reversed once more here: the
    result is the recorder's array (RGB), like the frames of an uncompressed recording.
    """
    try:
        with Image.open(io.BytesIO(row.tobytes()), formats=("JPEG",)) as image:
            image = image.convert("RGB") if image.mode != "RGB" else image
            frame = np.asarray(image)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise RobotDataError(path, name, f"frame {t} is not a readable JPEG ({error})") from error
    return np.ascontiguousarray(frame[..., ::-1])


def read_jpeg_frame(images: h5py.Dataset, t: int, path) -> np.ndarray:
    """Frame ``t`` of a (T, padded) JPEG dataset -> (H, W, 3) uint8."""
    name = images.name.lstrip("/")
    try:
        row = images[t]
    except (OSError, KeyError) as error:
        raise RobotDataError(path, name, f"frame {t} unreadable ({error})") from error
    return decode_jpeg(row, path, name, t)


def read_jpeg_frames(images: h5py.Dataset, path, size: tuple[int, int]) -> np.ndarray:
    """Every frame of a (T, padded) JPEG dataset -> (T, H, W, 3) uint8; each must be ``size`` (H, W)."""
    frames = np.empty((images.shape[0], *size, 3), dtype=np.uint8)
    for t in range(images.shape[0]):
        frames[t] = check_frame_size(read_jpeg_frame(images, t, path), size, path, images.name.lstrip("/"), t)
    return frames


def check_frame_size(frame: np.ndarray, size: tuple[int, int], path, name: str, t: int) -> np.ndarray:
    if frame.shape != (*size, 3):
        raise RobotDataError(path, name, f"frame {t} is {frame.shape}, the episode's frame 0 is {(*size, 3)}")
    return frame


def check_compress_len(path, f: h5py.File, cameras: list[str], steps: int, width: int) -> None:
    """Checks ``/compress_len`` against the images: (cameras, T) whole byte counts within the padded width.

    Its rows follow the recorder's ``camera_names`` (e.g. cam_high, cam_low, cam_left_wrist, cam_right_wrist), an
    order the file does not keep: HDF5 lists the images group alphabetically. So a row cannot be matched to its
    camera, and decoding does not need it (see :func:`decode_jpeg`); it is checked, not used. Optional: a file
    without it decodes the same way."""
    node = f.get("compress_len")
    if node is None:
        return
    if not isinstance(node, h5py.Dataset):
        raise RobotDataError(path, "compress_len", "expected a dataset, found a group")
    expected = f"expected shape ({len(cameras)}, {steps}) (a row per camera, a length per step)"
    if node.ndim != 2:
        raise RobotDataError(path, "compress_len", f"{expected}, got {node.shape}")
    if node.shape[0] > len(cameras):
        raise RobotDataError(
            path,
            "observations/images",
            f"holds {len(cameras)} camera(s) {cameras}, but compress_len has {node.shape[0]} rows, one per "
            "recorded camera: a camera's dataset is missing",
        )
    if node.shape != (len(cameras), steps):
        raise RobotDataError(path, "compress_len", f"{expected}, got {node.shape}")
    try:
        lengths = np.asarray(node[()], dtype=np.float64)
    except (OSError, TypeError, ValueError) as error:
        raise RobotDataError(path, "compress_len", f"unreadable ({error})") from error
    if not np.all(
        np.isfinite(lengths) & (lengths == np.round(lengths)) & (lengths >= 1) & (lengths <= width)
    ):
        raise RobotDataError(
            path, "compress_len", f"expected whole byte counts from 1 to {width} (the padded row length)"
        )
