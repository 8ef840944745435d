"""Training data in memory: every step of every episode decoded once, sampled by index on the training device.

ACT trains on random (observation at t, actions t..t+C-1) samples. Reading each from HDF5 per step would bound
a GPU by decompression, so episodes are read once through ``kinema.robot_data.read_policy_episode`` (in
parallel worker processes), resized to ``ACTConfig.image_size`` if set, and kept as uint8 (S, N, H, W, 3) on
the GPU when they fit (50 ALOHA episodes at 480x640: 18 GB), else in CPU memory. A batch is then a gather.

S total steps, N cameras, H/W image size, D state dims, A action dims, E coordinate dims, C chunk steps.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kinema.robot_data import RobotDataError, check_policy_episode, read_policy_episode


def split_episodes(files: list[Path], val_fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, val) files: a seeded permutation; the first round(n * val_fraction) are validation (at least one
    and at most n - 1 when val_fraction > 0 and n >= 2)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected 0 <= val_fraction < 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = round(len(files) * val_fraction)
    if val_fraction > 0 and len(files) >= 2:
        n_val = min(max(n_val, 1), len(files) - 1)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [files[i] for i in train], [files[i] for i in val]


def check_episodes(files: list[Path], config) -> dict:
    """Checks every episode against the config without reading images: cameras, state / action / coordinate
    dims and image sizes. Returns {"image_size": (H, W) as stored, "attrs": first episode's attributes,
    "lengths": steps per episode}. Raises :class:`kinema.robot_data.RobotDataError` naming the file and what is missing."""
    if not files:
        raise RobotDataError(None, "episodes", "no episode files (*.hdf5) to train on")
    sizes = set()
    lengths = []
    attrs = None
    for path in files:
        info = check_policy_episode(path)
        missing = [c for c in config.camera_names if c not in info.cameras]
        if missing:
            raise RobotDataError(
                path,
                "observations/images",
                f"missing camera(s) {missing} that ACTConfig.camera_names asks for; the file has {sorted(info.cameras)}",
            )
        if info.qpos_dim != config.state_dim:
            raise RobotDataError(
                path,
                "observations/qpos",
                f"state has {info.qpos_dim} dims, ACTConfig.state_dim is {config.state_dim}",
            )
        if info.action_dim != config.action_dim:
            raise RobotDataError(
                path,
                "action",
                f"actions have {info.action_dim} dims, ACTConfig.action_dim is {config.action_dim} (mismatched action dimension)",
            )
        if config.use_environment_state:
            if info.environment_state_dim is None:
                raise RobotDataError(
                    path,
                    "observations/environment_state",
                    f"missing, but the config uses coordinates (environment_state_dim={config.environment_state_dim})",
                )
            if info.environment_state_dim != config.environment_state_dim:
                raise RobotDataError(
                    path,
                    "observations/environment_state",
                    f"{info.environment_state_dim} dims, ACTConfig.environment_state_dim is {config.environment_state_dim}",
                )
        sizes.update(info.cameras[c] for c in config.camera_names)
        lengths.append(info.num_steps)
        attrs = attrs if attrs is not None else info.attrs
    if len(sizes) != 1 and config.image_size is None:
        raise RobotDataError(
            None,
            "observations/images",
            f"cameras/episodes differ in size {sorted(sizes)}; set ACTConfig.image_size",
        )
    return {"image_size": sorted(sizes)[0], "attrs": attrs or {}, "lengths": lengths}


def _read(path: str, cameras: tuple[str, ...], size: tuple[int, int] | None, use_env: bool) -> dict:
    """One episode: images uint8 (T, N, H, W, 3) (resized to ``size``), qpos, action, environment_state."""
    episode = read_policy_episode(path)
    frames = np.stack([episode["images"][c] for c in cameras], axis=1)  # (T, N, H, W, 3)
    if size is not None and tuple(frames.shape[2:4]) != tuple(size):
        steps, n = frames.shape[:2]
        x = torch.from_numpy(frames).flatten(0, 1).permute(0, 3, 1, 2).float()  # (T*N, 3, H, W)
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        frames = x.reshape(steps, n, *size, 3).numpy()
    out = {"images": frames, "qpos": episode["qpos"], "action": episode["action"]}
    if use_env:
        out["environment_state"] = episode["environment_state"]
    return out


@dataclass
class EpisodeMemory:
    """Every step of a set of episodes, ready to be sampled.

    images (S, N, H, W, 3) uint8; qpos (S, D); action (S, A); environment_state (S, E) or None; episode_end (S,)
    the index one past the last step of each step's episode. All on one device.
    """

    files: list[Path]
    images: torch.Tensor
    qpos: torch.Tensor
    action: torch.Tensor
    environment_state: torch.Tensor | None
    episode_end: torch.Tensor

    def __len__(self) -> int:
        return int(self.qpos.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def batch(self, indices: torch.Tensor, chunk_size: int, device: torch.device | None = None) -> dict:
        """Samples at global steps ``indices`` (B,): image (B, N, H, W, 3) uint8, qpos (B, D), action (B, C, A)
        with zeros past each episode's end, is_pad (B, C), environment_state (B, E)."""
        indices = indices.to(self.device)
        end = self.episode_end[indices].unsqueeze(1)  # (B, 1)
        steps = indices.unsqueeze(1) + torch.arange(chunk_size, device=self.device)  # (B, C)
        is_pad = steps >= end
        action = self.action[torch.minimum(steps, end - 1)] * (~is_pad).unsqueeze(-1)  # (B, C, A)
        batch = {
            "image": self.images[indices],
            "qpos": self.qpos[indices],
            "action": action,
            "is_pad": is_pad,
        }
        if self.environment_state is not None:
            batch["environment_state"] = self.environment_state[indices]
        if device is not None and torch.device(device) != self.device:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return batch


def _storage_device(requested: str, nbytes: int, device: torch.device) -> torch.device:
    if requested == "cpu" or device.type != "cuda":
        return torch.device("cpu")
    if requested in ("cuda", "device"):
        return device
    free, _ = torch.cuda.mem_get_info(device)
    # leave room for the model, activations and the optimizer: the images may take 60% of what is free
    return device if nbytes < 0.6 * free else torch.device("cpu")


def load_episodes(
    files: list[Path],
    config,
    *,
    device: torch.device | str = "cpu",
    data_device: str = "auto",
    workers: int = 0,
    progress: bool = True,
) -> EpisodeMemory:
    """Reads ``files`` (checked with :func:`check_episodes` first) into an :class:`EpisodeMemory`.

    ``data_device``: "auto" (the training device when the images fit in 60% of its free memory, else CPU),
    "device" / "cuda", or "cpu". ``workers``: reader processes (0: up to the CPU count; 1: this process).
    """
    from tqdm import tqdm

    device = torch.device(device)
    found = check_episodes(files, config)
    size = config.image_size or found["image_size"]
    cameras = tuple(config.camera_names)
    lengths = found["lengths"]
    total = sum(lengths)
    shape = (total, len(cameras), size[0], size[1], 3)
    storage = _storage_device(data_device, int(np.prod(shape)), device)
    images = torch.empty(shape, dtype=torch.uint8, device=storage)
    qpos = torch.empty(total, config.state_dim)
    action = torch.empty(total, config.action_dim)
    env = torch.empty(total, config.environment_state_dim) if config.use_environment_state else None
    starts = np.concatenate([[0], np.cumsum(lengths)])
    workers = min(os.cpu_count() or 1, len(files)) if workers == 0 else min(workers, len(files))
    arguments = [(str(p), cameras, config.image_size, config.use_environment_state) for p in files]
    bar = tqdm(total=len(files), desc="loading episodes", unit="episode", disable=not progress)

    def place(index: int, episode: dict) -> None:
        a, b = starts[index], starts[index + 1]
        images[a:b] = torch.from_numpy(episode["images"]).to(storage)
        qpos[a:b] = torch.from_numpy(episode["qpos"])
        action[a:b] = torch.from_numpy(episode["action"])
        if env is not None:
            env[a:b] = torch.from_numpy(episode["environment_state"])
        bar.update(1)

    try:
        if workers <= 1:
            for index, args in enumerate(arguments):
                place(index, _read(*args))
        else:
            context = multiprocessing.get_context("spawn")  # safe whatever CUDA state this process has
            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
                for index, episode in enumerate(pool.map(_read, *zip(*arguments))):
                    place(index, episode)
    finally:
        bar.close()
    end = torch.from_numpy(np.repeat(starts[1:], lengths)).long()
    return EpisodeMemory(
        files=list(files),
        images=images,
        qpos=qpos.to(storage),
        action=action.to(storage),
        environment_state=None if env is None else env.to(storage),
        episode_end=end.to(storage),
    )
