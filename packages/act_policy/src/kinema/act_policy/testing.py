"""Tiny ACT configs, small episode datasets and fake simulator observations, for this package's tests and others'.

Everything is small enough for a 2-core CPU: a ResNet18 of width 8, a 32-wide transformer with one layer of each kind, 8-step chunks,
32x32 (or 48x64) images. Episodes are written in the real policy-episode layout by
``kinema.robot_data.testing`` (values in its docstring: qpos = 1000 * episode + t + j / 100, action = qpos + 0.5,
images of one grey level per step), so loading code is the code users run.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ._config import ACTConfig
from ._train import TrainConfig

TINY = {
    "backbone_width": 8,
    "chunk_size": 8,
    "n_action_steps": 8,
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "n_encoder_layers": 1,
    "n_decoder_layers": 1,
    "n_vae_encoder_layers": 1,
    "latent_dim": 4,
    "coord_embed_dim": 16,
    "coord_fourier_features": 2,
}


def tiny_config(**overrides) -> ACTConfig:
    """A real ACTConfig at a tiny size (see :data:`TINY`); ``overrides`` replace any field."""
    return ACTConfig(**{**TINY, **overrides})


def write_episodes(
    root: str | os.PathLike,
    num_episodes: int = 3,
    num_steps: int = 20,
    *,
    cameras: tuple[str, ...] = ("top",),
    image_size: tuple[int, int] = (32, 32),
    environment_state_dim: int | None = 2,
    state_dim: int = 14,
    action_dim: int = 14,
    task: str = "synthetic",
) -> Path:
    """``root/episode_<i>.hdf5`` in the policy-episode layout; returns ``root``."""
    from kinema.robot_data.testing import write_policy_dataset

    write_policy_dataset(
        root,
        num_episodes=num_episodes,
        num_steps=num_steps,
        cameras=cameras,
        image_size=image_size,
        qpos_dim=state_dim,
        action_dim=action_dim,
        environment_state_dim=environment_state_dim,
        task=task,
    )
    return Path(root)


def tiny_train_config(data: str | os.PathLike, out_dir: str | os.PathLike, **overrides) -> TrainConfig:
    """A TrainConfig that trains for a few CPU seconds (in-process data loading, no progress bar)."""
    values = {
        "data": str(data),
        "out_dir": str(out_dir),
        "batch_size": 4,
        "lr": 1e-3,
        "lr_backbone": 1e-3,
        "max_steps": 20,
        "val_every": 10,
        "val_samples": 8,
        "save_every": 10,
        "log_every": 5,
        "load_workers": 1,
        "val_fraction": 0.34,
        "progress": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def fake_observation(
    config: ACTConfig,
    num_envs: int,
    step,
    *,
    image_size: tuple[int, int] = (32, 32),
    seed: int = 0,
) -> dict:
    """A SimPolicy observation batch (kinema.robot_data.sim's keys) with random values; ``step`` (N,)."""
    rng = np.random.default_rng(seed)
    observation = {
        "qpos": rng.standard_normal((num_envs, config.state_dim)).astype(np.float32),
        "qvel": np.zeros((num_envs, config.state_dim), np.float32),
        "images": {
            c: rng.integers(0, 256, (num_envs, *image_size, 3), dtype=np.uint8) for c in config.camera_names
        },
        "environment_state": rng.uniform(0, 0.2, (num_envs, max(config.environment_state_dim, 2))).astype(
            np.float32
        ),
        "step": np.asarray(step, dtype=np.int64),
        "active": np.ones(num_envs, dtype=bool),
    }
    return observation
