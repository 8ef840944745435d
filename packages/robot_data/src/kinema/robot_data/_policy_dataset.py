"""Training samples from policy episodes: (observation at t, actions t..t+chunk-1, is_pad)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

try:  # ISA-L's inflate: the same output as zlib's, ~4x faster on x86-64 and aarch64
    from isal.isal_zlib import decompress as _inflate
    from isal.isal_zlib import error as _InflateError
except ImportError:  # a platform without isal wheels: the standard library's zlib
    from zlib import decompress as _inflate
    from zlib import error as _InflateError

from ._act_aloha import check_frame_size, read_jpeg_frame, warn_defaults
from ._errors import MissingFileError, RobotDataError, SkippedItem, warn_skipped
from ._lenient import FallbackLoader, index_items
from ._policy_io import _check_open
from ._stats import check_stats, list_policy_episodes, load_stats
from ._trajectories import open_hdf5

SPLITS = ("train", "val", "all")


def _one_gzip_frame_per_chunk(images: h5py.Dataset) -> bool:
    return (
        images.chunks == (1, *images.shape[1:])
        and images.compression == "gzip"
        and not images.shuffle
        and not images.fletcher32
        and images.scaleoffset is None
    )


def read_frame(images: h5py.Dataset, t: int, path: Path) -> np.ndarray:
    """Frame ``t`` of an image dataset (T, H, W, 3) -> (H, W, 3) uint8 (possibly a read-only array).

    JPEG rows (T, bytes) of a compressed ALOHA recording (which ``_check_open`` accepted) are decoded. The layout
    :func:`write_policy_episode` writes (one gzip chunk per frame) is read with one direct chunk read
    and one inflate (ISA-L's when installed, else zlib's), skipping HDF5's filter pipeline, chunk cache and
    selection (about 2x faster than ``images[t]`` with ISA-L); any other layout, and any chunk the fast path cannot
    read, goes through ``images[t]``.
    """
    if images.ndim == 2:
        return read_jpeg_frame(images, t, path)
    if _one_gzip_frame_per_chunk(images):
        try:
            filter_mask, raw = images.id.read_direct_chunk((t, 0, 0, 0))
            data = raw if filter_mask & 1 else _inflate(raw)  # bit 0 set: deflate was skipped for this chunk
            frame = np.frombuffer(data, dtype=np.uint8)  # read-only view of the inflated bytes
            if frame.size == int(np.prod(images.shape[1:])):
                return frame.reshape(images.shape[1:])
        except (OSError, KeyError, ValueError, _InflateError):
            pass  # the regular read below raises a proper error if the chunk is really broken
    try:
        return images[t]
    except (OSError, KeyError) as error:
        raise RobotDataError(path, images.name.lstrip("/"), f"frame {t} unreadable ({error})") from error


def split_episodes(num_episodes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, val) episode indices: a seeded permutation, the first round(n * val_fraction) are validation
    (at least 1 and at most n - 1 when val_fraction > 0 and n >= 2). Sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected 0 <= val_fraction < 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(num_episodes)
    n_val = round(num_episodes * val_fraction)
    if val_fraction > 0 and num_episodes >= 2:
        n_val = min(max(n_val, 1), num_episodes - 1)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


@dataclass
class _Episode:
    path: Path
    num_steps: int
    qpos: np.ndarray  # (T, D), normalized when stats are given
    action: np.ndarray  # (T, A), normalized when stats are given
    environment_state: np.ndarray | None  # (T, E)
    image_size: tuple[int, int]  # (H, W) of every camera's frames


class PolicyEpisodeDataset(torch.utils.data.Dataset):
    """Every step of every episode of one split, as an ACT training sample.

    - ``root_or_files``: a folder of episode files (``*.hdf5``), one file, or a list of files.
    - ``camera_names``: cameras to return, in this order; ``chunk_size``: actions per sample.
    - ``split``: ``"train"``, ``"val"`` or ``"all"``; episodes are split (never steps), by a seeded permutation
      of the file list (numerically sorted for a folder: ``episode_2`` before ``episode_10``) with
      ``val_fraction`` of them for validation (a bad file does not move the split).
    - ``use_environment_state``: also return ``environment_state`` (episodes without it are bad items).
    - ``stats``: None, a statistics dict (:func:`compute_policy_stats`), or a stats file/folder; when given,
      qpos, action and environment_state are normalized as (x - mean) / std.

    A sample (N cameras, D joints, A action dims, E environment dims, C = chunk_size):

    - ``image``: (N, 3, H, W) float32 in [0, 1];
    - ``qpos``: (D,) float32; ``environment_state``: (E,) float32 (only with ``use_environment_state``);
    - ``action``: (C, A) float32, steps t..t+C-1, zeros past the episode end; ``is_pad``: (C,) bool, True there;
    - ``episode``: index into ``self.files``; ``timestep``: t.

    qpos/action are read once at construction; images are read per sample from HDF5 files opened lazily in each
    process (DataLoader workers with fork, spawn or forkserver each open their own handles).
    """

    def __init__(
        self,
        root_or_files: str | os.PathLike | Iterable[str | os.PathLike],
        camera_names: Sequence[str],
        chunk_size: int,
        split: str = "train",
        val_fraction: float = 0.2,
        seed: int = 0,
        use_environment_state: bool = False,
        stats: dict | str | os.PathLike | None = None,
        strict: bool = False,
    ):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        if isinstance(camera_names, str) or not camera_names:
            raise ValueError(f"camera_names: expected a non-empty list of camera names, got {camera_names!r}")
        if not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected an integer >= 1, got {chunk_size!r}")
        self.camera_names = list(camera_names)
        self.chunk_size = chunk_size
        self.split = split
        self.use_environment_state = use_environment_state
        all_files = list_policy_episodes(root_or_files)
        train, val = split_episodes(len(all_files), val_fraction, seed)
        chosen = {"train": train, "val": val, "all": list(range(len(all_files)))}[split]
        self.stats = load_stats(stats) if isinstance(stats, str | os.PathLike) else stats
        episodes, self.skipped = index_items(
            f"policy episodes ({split})", [all_files[i] for i in chosen], self._check, strict=strict
        )
        self._dims_consistent(episodes, strict)
        self.files = [e.path for e in self.episodes]
        if self.stats is not None and self.episodes:
            required = [
                ("qpos", self.episodes[0].qpos.shape[1]),
                ("action", self.episodes[0].action.shape[1]),
            ]
            if use_environment_state:
                required.append(("environment_state", self.episodes[0].environment_state.shape[1]))
            check_stats(self.stats, required)
            for e in self.episodes:
                e.qpos = self._normalize("qpos", e.qpos)
                e.action = self._normalize("action", e.action)
                if use_environment_state:
                    e.environment_state = self._normalize("environment_state", e.environment_state)
        lengths = np.array([e.num_steps for e in self.episodes], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(lengths)])
        self._fetch = FallbackLoader(f"PolicyEpisodeDataset({split})", strict)
        self._handles: dict[int, tuple[h5py.File, list[h5py.Dataset]]] = {}
        self._pid = os.getpid()

    def _check(self, path: Path) -> _Episode:
        if not path.exists():
            raise MissingFileError(path, "episode")
        with open_hdf5(path, "episode") as f:
            try:
                info, arrays = _check_open(path, f)
            except (OSError, KeyError) as error:
                raise RobotDataError(path, "episode", f"unreadable ({error})") from error
        missing = [c for c in self.camera_names if c not in info.cameras]
        if missing:
            raise RobotDataError(
                path, "observations/images", f"missing camera(s) {missing}; has {sorted(info.cameras)}"
            )
        sizes = {info.cameras[c] for c in self.camera_names}
        if len(sizes) != 1:
            raise RobotDataError(path, "observations/images", f"cameras differ in size {sorted(sizes)}")
        env = arrays.get("environment_state")
        if self.use_environment_state and env is None:
            raise RobotDataError(
                path, "observations/environment_state", "missing (use_environment_state=True)"
            )
        warn_defaults(path, info.defaults)
        return _Episode(path, info.num_steps, arrays["qpos"], arrays["action"], env, sizes.pop())

    def _dims_consistent(self, episodes: list[_Episode], strict: bool) -> None:
        """Keeps the episodes whose dims match the first episode's (the others are bad items)."""
        self.episodes = []
        if not episodes:
            return
        first = episodes[0]
        want = (
            first.qpos.shape[1],
            first.action.shape[1],
            None if first.environment_state is None else first.environment_state.shape[1],
        )
        for e in episodes:
            got = (
                e.qpos.shape[1],
                e.action.shape[1],
                None if e.environment_state is None else e.environment_state.shape[1],
            )
            if got[:2] != want[:2] or (self.use_environment_state and got[2] != want[2]):
                error = RobotDataError(
                    e.path, "dims", f"(qpos, action, environment_state) dims {got}, expected {want}"
                )
                if strict:
                    raise error
                item = SkippedItem.from_error(error)
                self.skipped.append(item)
                warn_skipped(f"policy episodes ({self.split})", [item], len(episodes))
                continue
            self.episodes.append(e)

    def _normalize(self, name: str, values: np.ndarray) -> np.ndarray:
        stats = self.stats[name]
        return ((values - stats["mean"]) / stats["std"]).astype(np.float32)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = {}  # h5py handles never cross processes; each worker opens its own
        return state

    def _images(self, episode: int) -> list[h5py.Dataset]:
        """This process's image datasets of ``episode``, in ``camera_names`` order (opened on first use)."""
        if self._pid != os.getpid():  # a forked worker: the parent's handles are not ours
            self._handles, self._pid = {}, os.getpid()
        entry = self._handles.get(episode)
        if entry is None:
            handle = open_hdf5(self.episodes[episode].path, "episode")
            entry = (handle, [handle[f"observations/images/{c}"] for c in self.camera_names])
            self._handles[episode] = entry
        return entry[1]

    def locate(self, index: int) -> tuple[int, int]:
        """Sample ``index`` -> (episode, timestep)."""
        episode = int(np.searchsorted(self._starts, index, side="right")) - 1
        return episode, index - int(self._starts[episode])

    def __getitem__(self, index: int) -> dict:
        return self._fetch(int(index), len(self), self._load)

    def _load(self, index: int) -> dict:
        k, t = self.locate(index)
        episode = self.episodes[k]
        frames = [  # each (H, W, 3) uint8; a JPEG frame may decode to another size than the episode's frame 0
            check_frame_size(
                read_frame(images, t, episode.path), episode.image_size, episode.path, images.name[1:], t
            )
            for images in self._images(k)
        ]
        pixels = np.empty((len(frames), *frames[0].shape), dtype=np.float32)  # (N, H, W, 3)
        for n, frame in enumerate(frames):
            pixels[n] = frame  # uint8 -> float32 in the same pass as the copy
        image = (
            torch.from_numpy(pixels).mul_(1 / 255).permute(0, 3, 1, 2)
        )  # (N, 3, H, W), channels-last memory
        action = episode.action[t : t + self.chunk_size]
        padded = np.zeros((self.chunk_size, action.shape[1]), dtype=np.float32)
        padded[: len(action)] = action
        sample = {
            "image": image,
            "qpos": torch.from_numpy(episode.qpos[t].copy()),
            "action": torch.from_numpy(padded),
            "is_pad": torch.arange(self.chunk_size) >= len(action),
            "episode": k,
            "timestep": t,
        }
        if self.use_environment_state:
            sample["environment_state"] = torch.from_numpy(episode.environment_state[t].copy())
        return sample

    def close(self) -> None:
        """Closes this process's open HDF5 handles (they are reopened on the next sample)."""
        for handle, _ in self._handles.values():
            handle.close()
        self._handles = {}
