"""VACE-E robot/human demonstration episodes.

Layout::

    <base>/<task folder>/episode_<n>/
        episode_<n>.mp4                      target video
        episode_<n>_hands_masked.mp4         control video (hands masked out)
        episode_<n>_hands_mask.mp4           mask video (white = hand region)
        episode_<n>_hand_trajectories.hdf5   optional, -> (T, 20)
        episode_<n>_object_trajectories.hdf5 optional, -> (T, n_objects, 9)
        end_effector_*.jpg                   optional embodiment image

plus a task metadata JSON whose ``per_task_attributes`` are keyed by the task folder name.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._action_video import load_image
from ._errors import RobotDataError, require_exists
from ._lenient import FallbackLoader, index_items
from ._order import natural_key
from ._sizes import check_wan_num_frames, resolve_size, wan_num_frames
from ._task_metadata import TaskAttributes, load_task_metadata, task_attributes
from ._trajectories import (
    HAND_MOTION_DIM,
    OBJECT_POSE_DIM,
    Trajectory,
    read_hand_motion,
    read_object_trajectories,
)
from ._video import probe_video, read_video_frames, source_frame_indices
from ._windows import Windows, check_window

_EPISODE = re.compile(r"^episode_(\d+)$")
UNKNOWN_TASK_POLICIES = ("skip", "default")


@dataclass
class VaceEConfig:
    """Options of :class:`VaceEEpisodeDataset`.

    - ``base_path``: the folder of task folders; ``metadata_path``: the task metadata JSON.
    - ``num_frames`` (4n+1): frames per sample (of the episode resampled to ``fps`` when given). A shorter
      episode gives the largest 4n+1 count it has, so T varies between episodes.
    - ``window``: which frames of a longer episode a sample takes: ``"first"`` (default: the first ones),
      ``"random"`` (a start drawn from ``seed``, the epoch (:meth:`VaceEEpisodeDataset.set_epoch`) and the sample
      index alone, so a resumed run draws the same windows) or ``"all"`` (every window, ``window_stride`` frames
      apart; the dataset has one sample per window). Trajectories and the mask are sliced to the same frames.
    - ``window_stride``: frames between the starts of ``"all"`` windows (default ``num_frames - 1``: consecutive
      windows share one frame); ``seed``: the seed of ``"random"`` windows.
    - ``height``/``width`` or ``max_pixels``: output size, as for the action-video clips.
    - ``max_hand_motion_length``, ``max_object_trajectory_length``: upper bounds of the motion sequences. The
      trajectories are sampled at the timestamps of the returned video frames, so their natural length is T, and
      ``num_frames`` may not exceed either bound.
    - ``max_objects``: objects kept per episode (lowest ``object_id`` first).
    - ``fallback_to_video_only``: an episode without trajectory files is kept (``hand_motion`` /
      ``object_trajectory`` None) instead of being a bad item. A trajectory file that exists but is broken is
      always a bad item.
    - ``unknown_task``: a task folder missing from the metadata is a bad item (``"skip"``) or gets
      ``default_prompt`` and embodiment ``"unknown"`` (``"default"``).
    - ``length_tolerance``: how many frames the three videos and the trajectories (converted to video frames)
      may disagree in length; beyond it the episode is a bad item. Within it, the shortest wins.
    - ``video_dtype``: ``"uint8"`` (default) or ``"float32"`` in [-1, 1], as for the action-video clips.
    """

    base_path: str | os.PathLike
    metadata_path: str | os.PathLike
    num_frames: int = 81
    height: int | None = None
    width: int | None = None
    max_pixels: int | None = 832 * 480
    fps: float | None = None
    max_hand_motion_length: int = 512
    max_object_trajectory_length: int = 512
    max_objects: int = 10
    fallback_to_video_only: bool = True
    unknown_task: str = "skip"
    default_prompt: str = ""
    length_tolerance: int = 2
    load_embodiment_image: bool = True
    repeat: int = 1
    video_dtype: str = "uint8"
    strict: bool = False
    window: str = "first"
    window_stride: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        self.base_path, self.metadata_path = Path(self.base_path), Path(self.metadata_path)
        check_wan_num_frames(self.num_frames)
        for name in ("max_hand_motion_length", "max_object_trajectory_length"):
            if getattr(self, name) < self.num_frames:
                raise ValueError(
                    f"{name}: trajectories are sampled at the returned video frames, so it must be >= "
                    f"num_frames={self.num_frames}, got {getattr(self, name)}"
                )
        if self.max_objects < 1:
            raise ValueError(f"max_objects: expected >= 1, got {self.max_objects}")
        if (self.height is None) != (self.width is None):
            raise ValueError(
                f"height, width: give both or neither, got height={self.height} width={self.width}"
            )
        if self.height is not None:
            resolve_size((self.height, self.width), (self.height, self.width))
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps: expected a positive frame rate, got {self.fps}")
        if self.unknown_task not in UNKNOWN_TASK_POLICIES:
            raise ValueError(
                f"unknown_task: expected one of {UNKNOWN_TASK_POLICIES}, got {self.unknown_task!r}"
            )
        if self.length_tolerance < 0:
            raise ValueError(f"length_tolerance: expected >= 0, got {self.length_tolerance}")
        if not isinstance(self.repeat, int) or self.repeat < 1:
            raise ValueError(f"repeat: expected an integer >= 1, got {self.repeat!r}")
        if self.video_dtype not in ("float32", "uint8"):
            raise ValueError(f"video_dtype: expected 'float32' or 'uint8', got {self.video_dtype!r}")
        check_window(self.window, self.window_stride, self.seed, 1)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.height is None else (self.height, self.width)

    @property
    def stride(self) -> int:
        """Frames between the starts of ``"all"`` windows."""
        return max(1, self.num_frames - 1) if self.window_stride is None else self.window_stride


@dataclass
class VaceEEpisode:
    """One indexed episode: its files, task, and every frame a window may use (N of them, N >= ``num_frames``)
    with the trajectories already sampled at those frames; a sample takes ``num_frames`` consecutive ones."""

    path: Path
    task: TaskAttributes
    prompt: str
    videos: dict[str, Path]  # "video", "control_video", "mask"
    frame_indices: np.ndarray  # (N,) source frame of each usable (resampled) frame
    hand_motion: np.ndarray | None  # (N, 20)
    object_trajectory: np.ndarray | None  # (N, n, 9)
    embodiment_image: Path | None
    notes: list[str] = field(default_factory=list)
    num_frames: int = 0  # T, frames per sample: num_frames, or the largest 4n+1 <= N


def find_episodes(base_path: Path) -> list[tuple[str, Path]]:
    """(task folder name, episode folder) for every ``<base>/<task>/episode_<n>/``, sorted by task then n (numbers
    in names compare as numbers: ``episode_2`` before ``episode_10``)."""
    found = []
    for task_dir in sorted((p for p in base_path.iterdir() if p.is_dir()), key=natural_key):
        episodes = [
            (int(m.group(1)), p) for p in task_dir.iterdir() if p.is_dir() and (m := _EPISODE.match(p.name))
        ]
        found.extend((task_dir.name, p) for _, p in sorted(episodes))
    return found


def episode_files(episode_dir: Path) -> dict[str, Path]:
    """The expected file paths of an episode folder (they may not exist)."""
    name = episode_dir.name
    return {
        "video": episode_dir / f"{name}.mp4",
        "control_video": episode_dir / f"{name}_hands_masked.mp4",
        "mask": episode_dir / f"{name}_hands_mask.mp4",
        "hand_trajectories": episode_dir / f"{name}_hand_trajectories.hdf5",
        "object_trajectories": episode_dir / f"{name}_object_trajectories.hdf5",
    }


class VaceEEpisodeDataset(torch.utils.data.Dataset):
    """VACE-E demonstration episodes; batch them with :func:`collate_vace_e`.

    ``VaceEEpisodeDataset(config)`` or ``VaceEEpisodeDataset(base_path=..., metadata_path=..., ...)``.
    A sample is a dict:

    - ``video``, ``control_video``: (3, T, H, W) uint8 (or float32 in [-1, 1], see ``video_dtype``);
      ``mask``: (1, T, H, W) bool, True in the hand region (the mask video thresholded at half brightness);
    - ``prompt`` (from the metadata), ``task`` (folder name), ``embodiment_type``, ``episode`` (folder path);
    - ``hand_motion``: (T, 20) float32 or None; ``object_trajectory``: (T, n_objects, 9) float32 or None: rows
      sampled at the same source timestamps as the video frames (``frame_indices`` (T,)), so they never drift;
    - ``embodiment_image``: (3, H, W) (the first ``end_effector_*.jpg``, resized to the video) or None.

    ``len(dataset)`` is the number of episodes (``window="all"``: of windows) times ``repeat``; :meth:`window`
    tells which frames a sample covers.
    """

    def __init__(self, config: VaceEConfig | None = None, **options):
        if config is None:
            config = VaceEConfig(**options)
        elif options:
            raise ValueError(f"options: give a config or keyword options, not both (got {sorted(options)})")
        self.config = config
        require_exists(config.base_path, "base_path")
        if not config.base_path.is_dir():
            raise RobotDataError(config.base_path, "base_path", "expected a directory of task folders")
        self.per_task = load_task_metadata(config.metadata_path)
        candidates = find_episodes(config.base_path)
        self.episodes, self.skipped = index_items(
            f"VACE-E episodes ({config.base_path})", candidates, self._check_episode, strict=config.strict
        )
        self._windows = Windows(
            config.window,
            [len(e.frame_indices) - e.num_frames + 1 for e in self.episodes],
            config.stride,
            config.seed,
        )
        self._fetch = FallbackLoader(f"VaceEEpisodeDataset({config.base_path})", config.strict)

    def _task(self, task_id: str, episode_dir: Path) -> tuple[TaskAttributes, str]:
        cfg = self.config
        if task_id not in self.per_task and cfg.unknown_task == "default":
            return TaskAttributes(task_id, "", "unknown", False, False, ""), cfg.default_prompt
        try:
            task = task_attributes(self.per_task, task_id, cfg.metadata_path)
        except RobotDataError as error:
            raise RobotDataError(episode_dir, "task", f"{error}") from error
        return task, task.prompt

    def _check_episode(self, candidate: tuple[str, Path]) -> VaceEEpisode:
        task_id, episode_dir = candidate
        cfg = self.config
        task, prompt = self._task(task_id, episode_dir)
        files = episode_files(episode_dir)
        infos = {key: probe_video(files[key]) for key in ("video", "control_video", "mask")}
        lengths = {key: info.num_frames for key, info in infos.items()}
        if max(lengths.values()) - min(lengths.values()) > cfg.length_tolerance:
            raise RobotDataError(
                episode_dir,
                "video",
                f"the three videos disagree in length beyond {cfg.length_tolerance}: {lengths}",
            )
        source_frames = min(lengths.values())
        source_fps = infos["video"].fps
        available = (
            source_frames if cfg.fps is None else math.ceil(source_frames / source_fps * cfg.fps - 1e-6)
        )
        count = min(cfg.num_frames, wan_num_frames(max(available, 1)))
        indices = source_frame_indices(source_frames, source_fps, np.arange(max(available, 1)), fps=cfg.fps)
        notes = []
        hand = objects = None
        for key in ("hand_trajectories", "object_trajectories"):
            path = files[key]
            if not path.exists():
                if not cfg.fallback_to_video_only:
                    raise RobotDataError(path, key, "missing (fallback_to_video_only=False)")
                notes.append(f"no {path.name}: video only")
                continue
            if key == "hand_trajectories":
                trajectory = read_hand_motion(path)
            else:
                trajectory = read_object_trajectories(path, cfg.max_objects)
            rows = self._trajectory_rows(path, key, trajectory, source_frames, source_fps, indices)
            if key == "hand_trajectories":
                hand = trajectory.data[rows]
            else:
                objects = trajectory.data[rows]
        images = sorted(episode_dir.glob("end_effector_*.jpg")) if cfg.load_embodiment_image else []
        return VaceEEpisode(
            episode_dir,
            task,
            prompt,
            {key: files[key] for key in infos},
            indices,
            hand,
            objects,
            images[0] if images else None,
            notes,
            count,
        )

    def _trajectory_rows(
        self,
        path: Path,
        key: str,
        trajectory: Trajectory,
        video_frames: int,
        video_fps: float,
        indices: np.ndarray,
    ) -> np.ndarray:
        rate = video_fps if trajectory.fps is None else trajectory.fps
        steps = len(trajectory.data)
        in_video_frames = steps * video_fps / rate
        if abs(in_video_frames - video_frames) > self.config.length_tolerance:
            raise RobotDataError(
                path,
                key,
                f"{steps} steps at {rate:g} Hz cover {in_video_frames:.4g} video frames, the video has {video_frames} "
                f"(tolerance {self.config.length_tolerance})",
            )
        return np.minimum(np.floor(indices / video_fps * rate + 1e-6).astype(np.int64), steps - 1)

    def __len__(self) -> int:
        return len(self._windows) * self.config.repeat

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch that ``window="random"`` draws depend on (call it before each epoch, as with a
        ``DistributedSampler``; DataLoader workers pick it up when the loader is iterated anew)."""
        self._windows.set_epoch(epoch)

    def window(self, index: int) -> tuple[int, int]:
        """(episode, first frame) of sample ``index`` this epoch, the frame counted in the (resampled) episode:
        the sample's source frames are ``self.episodes[episode].frame_indices[first : first + T]``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        return self._windows.locate(index % len(self._windows), index)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index: expected 0 <= index < {len(self)}, got {index}")
        items = len(self._windows)
        return self._fetch(index % items, items, lambda item: self._load(item, index))

    def _load(self, item: int, index: int) -> dict:
        i, first = self._windows.locate(item, index)
        episode = self.episodes[i]
        frames = slice(first, first + episode.num_frames)  # this sample's T frames
        indices = episode.frame_indices[frames]  # (T,) source frames
        cfg = self.config
        as_float = cfg.video_dtype == "float32"
        kwargs = {"size": cfg.size, "max_pixels": None if cfg.size else cfg.max_pixels}
        video = torch.from_numpy(
            read_video_frames(episode.videos["video"], indices, as_float=as_float, **kwargs)
        )
        control = torch.from_numpy(
            read_video_frames(episode.videos["control_video"], indices, as_float=as_float, **kwargs)
        )
        mask = read_video_frames(episode.videos["mask"], indices, **kwargs)  # (T, H, W, 3)
        if mask.shape[:3] != tuple(video.shape[:3]):
            raise RobotDataError(
                episode.videos["mask"], "mask", f"size {mask.shape[1:3]} differs from the video's"
            )
        mask = torch.from_numpy(mask[..., 0] >= 128)[None]  # (1, T, H, W) bool; the mask video is grey
        out_hw = tuple(video.shape[1:3])
        image = None
        if episode.embodiment_image is not None:
            image = load_image(episode.embodiment_image, out_hw, as_float=as_float)
        return {
            "video": video.permute(3, 0, 1, 2),  # (3, T, H, W)
            "control_video": control.permute(3, 0, 1, 2),
            "mask": mask,
            "prompt": episode.prompt,
            "task": episode.task.task_id,
            "embodiment_type": episode.task.embodiment_type,
            "episode": str(episode.path),
            "frame_indices": torch.from_numpy(indices.copy()),
            "hand_motion": None
            if episode.hand_motion is None
            else torch.from_numpy(episode.hand_motion[frames].copy()),
            "object_trajectory": (
                None
                if episode.object_trajectory is None
                else torch.from_numpy(episode.object_trajectory[frames].copy())
            ),
            "embodiment_image": image,
        }


def _pad_sequences(
    sequences: list[torch.Tensor | None], feature_shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """list of (T_i, *feature) or None -> padded (B, T_max, *feature), lengths (B,), mask (B, T_max) True = real."""
    lengths = torch.tensor([0 if s is None else s.shape[0] for s in sequences], dtype=torch.long)
    longest = int(lengths.max()) if len(sequences) else 0
    padded = torch.zeros(len(sequences), longest, *feature_shape, dtype=torch.float32)
    for b, sequence in enumerate(sequences):
        if sequence is not None:
            padded[b, : sequence.shape[0]] = sequence
    mask = torch.arange(longest)[None, :] < lengths[:, None]
    return padded, lengths, mask


def collate_vace_e(samples: list[dict]) -> dict:
    """Batches VACE-E samples (B = len(samples)).

    - ``video``, ``control_video`` (B, 3, T, H, W), ``mask`` (B, 1, T, H, W), ``frame_indices`` (B, T): stacked;
      every sample must have the same T, H, W (use batch size 1, or episodes of at least ``num_frames`` frames).
    - ``hand_motion`` (B, T_h, 20) zero-padded, ``hand_motion_lengths`` (B,), ``hand_motion_mask`` (B, T_h) bool,
      True at real steps (a sample without trajectories has length 0).
    - ``object_trajectory`` (B, T_o, N, 9) zero-padded, ``object_trajectory_lengths`` (B,),
      ``object_trajectory_mask`` (B, T_o) and ``object_mask`` (B, N) bool, True at real steps / objects.
    - ``embodiment_image`` (B, 3, H, W), zeros where missing, with ``has_embodiment_image`` (B,) bool.
    - ``prompt``, ``task``, ``embodiment_type``, ``episode``: lists of str.

    Masks are True where data is real: pass ``~mask`` as a PyTorch ``key_padding_mask``.
    """
    if not samples:
        raise ValueError("samples: expected at least one sample")
    shapes = {tuple(s["video"].shape) for s in samples}
    if len(shapes) != 1:
        raise ValueError(
            f"samples: videos of different shapes {sorted(shapes)} cannot be stacked; use batch_size=1 or "
            "episodes with at least num_frames frames"
        )
    batch = {
        key: torch.stack([s[key] for s in samples])
        for key in ("video", "control_video", "mask", "frame_indices")
    }
    for key in ("prompt", "task", "embodiment_type", "episode"):
        batch[key] = [s[key] for s in samples]
    hand = [s["hand_motion"] for s in samples]
    batch["hand_motion"], batch["hand_motion_lengths"], batch["hand_motion_mask"] = _pad_sequences(
        hand, (HAND_MOTION_DIM,)
    )
    objects = [s["object_trajectory"] for s in samples]
    counts = torch.tensor([0 if o is None else o.shape[1] for o in objects], dtype=torch.long)
    most = int(counts.max())
    padded_objects = [
        None if o is None else torch.nn.functional.pad(o, (0, 0, 0, most - o.shape[1])) for o in objects
    ]
    batch["object_trajectory"], batch["object_trajectory_lengths"], batch["object_trajectory_mask"] = (
        _pad_sequences(padded_objects, (most, OBJECT_POSE_DIM))
    )
    batch["object_mask"] = torch.arange(most)[None, :] < counts[:, None]
    video = batch["video"]
    images = torch.zeros(len(samples), 3, *video.shape[-2:], dtype=video.dtype)
    for b, sample in enumerate(samples):
        if sample["embodiment_image"] is not None:
            images[b] = sample["embodiment_image"]
    batch["embodiment_image"] = images
    batch["has_embodiment_image"] = torch.tensor([s["embodiment_image"] is not None for s in samples])
    return batch
