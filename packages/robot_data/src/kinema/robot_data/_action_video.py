"""Action-video clips: the training data of the drone world model.

A metadata CSV with the columns ``video``, ``prompt``, ``action`` (and any other file columns named in
``data_file_keys``); paths are relative to ``base_path``. ``action`` is JSON (A, 2, 8): action k steers latent frame
k + 1, i.e. video frames 4k + 1 .. 4k + 4 (frame 0 is the first image), so a row's A actions cover its first
4A + 1 frames. A sample of T = num_frames frames needs (T - 1) / 4 of them; a longer clip with more actions offers
several windows, which start on multiples of 4 frames so that their actions stay aligned: the window starting at
frame 4m has the actions m .. m + (T - 1) / 4 - 1.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ._actions import DEFAULT_MAGNITUDE_SCALE, DRONE_ACTIONS, parse_action_json
from ._errors import MissingFileError, RobotDataError, require_exists
from ._lenient import FallbackLoader, index_items
from ._sizes import TIME_COMPRESSION, check_wan_num_frames, cover_size, num_action_steps, resolve_size
from ._video import probe_video, read_video_frames
from ._windows import Windows, check_window

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
REQUIRED_COLUMNS = ("video", "prompt", "action")


@dataclass
class ActionVideoConfig:
    """Options of :class:`ActionVideoDataset` (the reference training script's dataset flags).

    - ``base_path``: folder the CSV's file columns are relative to.
    - ``metadata_path``: the CSV (default ``<base_path>/metadata.csv``).
    - ``repeat``: the dataset is ``repeat`` times as long (one epoch sees every clip ``repeat`` times).
    - ``num_frames``: frames per sample, 4n+1 (81 -> 20 actions). A row needs at least (num_frames - 1) / 4
      actions; its A actions cover its first 4A + 1 frames, which its video must hold.
    - ``window``: which ``num_frames`` frames of a longer row a sample takes: ``"first"`` (default: the first
      ones), ``"random"`` (a start drawn from ``seed``, the epoch (:meth:`ActionVideoDataset.set_epoch`) and the
      sample index alone, so a resumed run draws the same windows) or ``"all"`` (every window, ``window_stride``
      frames apart; the dataset has one sample per window). Starts are multiples of 4 frames, which keeps the
      actions aligned with the frames they steer.
    - ``window_stride``: frames between the starts of ``"all"`` windows, a multiple of 4 (default
      ``num_frames - 1``: consecutive windows share one frame and every action is used exactly once).
    - ``seed``: the seed of ``"random"`` windows.
    - ``height``, ``width``: fixed output size (both or neither, divisible by 16); otherwise ``max_pixels`` scales
      each clip down to at most that many pixels, sides floored to multiples of 16.
    - ``data_file_keys``: CSV columns holding file paths; videos are read like ``video``, images resized to the
      clip's size. Must include ``"video"``.
    - ``action_magnitude_scale`` (8,): the magnitude scale of the actions, [100, 100, 100, 100, 1, 1, 1, 1] for
      the drone data. The dataset does NOT apply it: samples hold raw magnitudes, and the scale is applied in
      exactly one place, the model's action encoder (``kinema.conditioning.ActionEncoder(magnitude_scale=...)``);
      the trainer copies this field into the model config, so training and inference cannot disagree.
    - ``video_dtype``: ``"uint8"`` (default: what the decoder gives, 4x less memory through DataLoader workers;
      convert on the GPU with ``video.float() / 127.5 - 1``) or ``"float32"`` (values in [-1, 1], what the VAE
      takes; the conversion and the 4x larger arrays cost more than the decoding on a CPU, see BENCHMARKS.md).
    - ``strict``: raise on the first bad row instead of skipping it; ``check_videos``: open every video at index
      time (finds missing, empty, truncated and too-short files before training starts).
    """

    base_path: str | os.PathLike
    metadata_path: str | os.PathLike | None = None
    repeat: int = 1
    num_frames: int = 81
    height: int | None = None
    width: int | None = None
    max_pixels: int | None = 1920 * 1080
    data_file_keys: Sequence[str] = ("video",)
    action_magnitude_scale: Sequence[float] = field(default_factory=lambda: list(DEFAULT_MAGNITUDE_SCALE))
    video_dtype: str = "uint8"
    strict: bool = False
    check_videos: bool = True
    window: str = "first"
    window_stride: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.base_path = Path(self.base_path)
        self.metadata_path = (
            self.base_path / "metadata.csv" if self.metadata_path is None else Path(self.metadata_path)
        )
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise ValueError(f"repeat: expected an integer >= 1, got {self.repeat!r}")
        check_wan_num_frames(self.num_frames)
        if (self.height is None) != (self.width is None):
            raise ValueError(
                f"height, width: give both or neither, got height={self.height} width={self.width}"
            )
        if self.height is not None:
            resolve_size((self.height, self.width), (self.height, self.width))  # checks divisibility by 16
        elif self.max_pixels is not None:
            resolve_size((1024, 1024), max_pixels=self.max_pixels)
        if isinstance(self.data_file_keys, str):
            self.data_file_keys = tuple(k.strip() for k in self.data_file_keys.split(",") if k.strip())
        self.data_file_keys = tuple(self.data_file_keys)
        if "video" not in self.data_file_keys:
            raise ValueError(f"data_file_keys: expected to include 'video', got {self.data_file_keys}")
        scale = [float(s) for s in self.action_magnitude_scale]
        if len(scale) != len(DRONE_ACTIONS) or not all(np.isfinite(scale)):
            raise ValueError(
                f"action_magnitude_scale: expected {len(DRONE_ACTIONS)} finite values (one per action "
                f"{', '.join(DRONE_ACTIONS)}), got {list(self.action_magnitude_scale)}"
            )
        self.action_magnitude_scale = scale
        if self.video_dtype not in ("float32", "uint8"):
            raise ValueError(f"video_dtype: expected 'float32' or 'uint8', got {self.video_dtype!r}")
        check_window(self.window, self.window_stride, self.seed, TIME_COMPRESSION)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.height is None else (self.height, self.width)

    @property
    def stride_steps(self) -> int:
        """Action steps between the starts of ``"all"`` windows."""
        stride = self.num_frames - 1 if self.window_stride is None else self.window_stride
        return max(1, stride // TIME_COMPRESSION)


@dataclass
class _Clip:
    row: str
    files: dict[str, Path]
    prompt: str
    binary: np.ndarray  # (A, 8), every action of the row
    magnitude: np.ndarray  # (A, 8), raw


def row_file(base: Path, values: dict[str, str], key: str, source: Path, row: str) -> Path:
    """The file a CSV row names in column ``key`` (relative to ``base``); an empty cell or a missing file raises,
    naming the row and column."""
    name = (values.get(key) or "").strip()
    if not name:
        raise RobotDataError(source, f"row {row}: {key}", "empty path")
    path = base / name
    if not path.is_file():
        raise MissingFileError(path, f"row {row}: {key}")
    return path


def read_metadata_csv(path: Path, required: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """The rows of a metadata CSV as (``"<i> (line <n>)"``, row dict); a missing file or column raises."""
    require_exists(path, "metadata")
    if path.is_dir():
        raise RobotDataError(path, "metadata", "is a directory, expected a CSV file")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            missing = [c for c in required if c not in columns]
            if missing:
                raise RobotDataError(path, "columns", f"missing {missing}; the header has {list(columns)}")
            rows = []
            for i, row in enumerate(reader):
                rows.append((f"{i} (line {reader.line_num})", row))
    except (UnicodeDecodeError, csv.Error) as error:
        raise RobotDataError(path, "metadata", f"not a readable CSV ({error})") from error
    return rows


class ActionVideoDataset(torch.utils.data.Dataset):
    """Action-video clips for the world model.

    ``ActionVideoDataset(config)`` or ``ActionVideoDataset(base_path=..., num_frames=81, ...)`` (the fields of
    :class:`ActionVideoConfig`). A sample is a dict:

    - ``video``: (3, T, H, W), T = num_frames, uint8 (or float32 in [-1, 1], see ``video_dtype``);
    - ``input_image``: (3, H, W), frame 0 of ``video``;
    - ``prompt``: str;
    - ``action_binary``: (A, 8) float32 in {0, 1}, A = (T - 1) / 4, action k steers latent frame k + 1 of the
      sample (the row's actions sliced to the window);
    - ``action_magnitude``: (A, 8) float32, RAW (unscaled; see ``action_magnitude_scale``);
    - one entry per extra key of ``data_file_keys``: (3, T, H, W) for videos (the same frames), (3, H, W) for
      images;
    - ``frame_indices``: (T,) int64, the row's frames in ``video`` (``start .. start + T - 1``);
    - ``row``: the CSV row (``"<i> (line <n>)"``).

    Rows are checked at construction (action JSON and shape, files present, videos long enough); bad rows raise
    (``strict``) or are skipped with one warning listing them (``skipped``). ``len(dataset)`` is the number of
    rows (``window="all"``: of windows) times ``repeat``; :meth:`window` tells which frames a sample covers.
    """

    def __init__(self, config: ActionVideoConfig | None = None, **options):
        if config is None:
            config = ActionVideoConfig(**options)
        elif options:
            raise ValueError(f"options: give a config or keyword options, not both (got {sorted(options)})")
        self.config = config
        require_exists(config.base_path, "base_path")
        rows = read_metadata_csv(config.metadata_path, (*REQUIRED_COLUMNS, *config.data_file_keys))
        self.num_actions = num_action_steps(config.num_frames)
        self.clips, self.skipped = index_items(
            f"action-video clips ({config.metadata_path})", rows, self._check_row, strict=config.strict
        )
        self._windows = Windows(
            config.window,
            [len(clip.binary) - self.num_actions + 1 for clip in self.clips],
            config.stride_steps,
            config.seed,
        )
        self._fetch = FallbackLoader(f"ActionVideoDataset({config.metadata_path})", config.strict)

    def _check_row(self, numbered: tuple[str, dict[str, str]]) -> _Clip:
        row, values = numbered
        source = self.config.metadata_path
        binary, magnitude = parse_action_json(values["action"], source=str(source), row=row)
        steps = len(binary)
        if steps < self.num_actions:
            raise RobotDataError(
                source,
                f"row {row}: action",
                f"expected {self.num_actions} action steps ((num_frames - 1) / 4) or more, got {steps}",
            )
        needed = TIME_COMPRESSION * steps + 1  # frames the row's actions cover
        files = {}
        for key in self.config.data_file_keys:
            path = row_file(self.config.base_path, values, key, source, row)
            name = values[key].strip()
            if self.config.check_videos and path.suffix.lower() in VIDEO_SUFFIXES:
                try:
                    info = probe_video(path)
                except RobotDataError as error:
                    raise RobotDataError(path, f"row {row}: {key}", error.reason) from error
                if info.num_frames < self.config.num_frames:
                    raise RobotDataError(
                        path,
                        f"row {row}: {key}",
                        f"has {info.num_frames} frames, num_frames={self.config.num_frames} are needed",
                    )
                if info.num_frames < needed:
                    raise RobotDataError(
                        source,
                        f"row {row}: action",
                        f"{steps} action steps cover {needed} frames, but {key} {name} has {info.num_frames} "
                        f"(num_frames={self.config.num_frames} takes {self.num_actions} steps)",
                    )
            files[key] = path
        return _Clip(row, files, values.get("prompt") or "", binary, magnitude)

    def __len__(self) -> int:
        return len(self._windows) * self.config.repeat

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that ``window="random"`` draws depend on (call it before each epoch, as with a
        ``DistributedSampler``; DataLoader workers pick it up when the loader is iterated anew)."""
        self._windows.set_epoch(epoch)

    def window(self, index: int) -> tuple[int, int]:
        """(clip, first frame) of sample ``index`` this epoch: ``self.clips[clip]`` from that frame on."""
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        clip, step = self._windows.locate(index % len(self._windows), index)
        return clip, TIME_COMPRESSION * step

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        items = len(self._windows)
        return self._fetch(index % items, items, lambda item: self._load(item, index))

    def _load(self, item: int, index: int) -> dict:
        i, step = self._windows.locate(item, index)  # the clip and its first action step
        clip = self.clips[i]
        return load_clip_sample(
            self.config, clip.files, clip.prompt, clip.binary, clip.magnitude, clip.row, step
        )


def load_clip_sample(
    config: ActionVideoConfig,
    files: dict[str, Path],
    prompt: str,
    binary: np.ndarray,
    magnitude: np.ndarray,
    row: str,
    step: int,
) -> dict:
    """The sample of one clip's window starting at action ``step``: ``video`` (3, T, H, W), ``input_image``
    (3, H, W), ``prompt``, ``action_binary`` / ``action_magnitude`` (A, 8), ``frame_indices`` (T,), ``row`` and one
    tensor per extra file column. ``files`` maps the config's ``data_file_keys`` to local files."""
    cfg = config
    as_float = cfg.video_dtype == "float32"
    frames = np.arange(cfg.num_frames) + TIME_COMPRESSION * step
    actions = slice(step, step + num_action_steps(cfg.num_frames))
    video = read_video_frames(
        files["video"],
        frames,
        size=cfg.size,
        max_pixels=None if cfg.size else cfg.max_pixels,
        as_float=as_float,
    )  # (T, H, W, 3)
    video = torch.from_numpy(video).permute(3, 0, 1, 2)  # (3, T, H, W)
    sample = {
        "video": video,
        "input_image": video[:, 0].clone(),
        "prompt": prompt,
        "action_binary": torch.from_numpy(binary[actions].copy()),
        "action_magnitude": torch.from_numpy(magnitude[actions].copy()),
        "frame_indices": torch.from_numpy(frames),
        "row": row,
    }
    out_hw = tuple(video.shape[2:])
    for key, path in files.items():
        if key == "video":
            continue
        if path.suffix.lower() in VIDEO_SUFFIXES:
            extra = read_video_frames(path, frames, size=out_hw, as_float=as_float)
            sample[key] = torch.from_numpy(extra).permute(3, 0, 1, 2)
        else:
            sample[key] = load_image(path, out_hw, as_float=as_float)
    return sample


def load_image(path: Path, size_hw: tuple[int, int], *, as_float: bool) -> torch.Tensor:
    """An image file -> (3, H, W), resized to cover ``size_hw`` and centre-cropped; float in [-1, 1] or uint8."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            rh, rw = cover_size((image.height, image.width), size_hw)
            image = image.resize((rw, rh), Image.BILINEAR)
            top, left = (rh - size_hw[0]) // 2, (rw - size_hw[1]) // 2
            array = np.array(image)[top : top + size_hw[0], left : left + size_hw[1]]
    except (OSError, ValueError) as error:
        raise RobotDataError(path, "image", f"cannot be read as an image ({error})") from error
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
    return tensor.float().div_(127.5).sub_(1.0) if as_float else tensor
