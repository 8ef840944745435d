"""Tiny hybrid configs and fixtures, for this package's tests and others'.

Everything is small enough for a 2-core CPU: a ResNet18 of width 8, a 32-wide transformer with one layer of each
kind, 8-step chunks, 10 training timesteps. Episodes are the bundled docking task's real recordings (64x64
camera "top", qpos (2,), environment_state (4,)) or kinema.act_policy's synthetic ones, so loading code is the
code users run.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._config import HybridConfig
from ._train import TrainConfig

TINY = {
    "backbone_width": 8,
    "dim_model": 32,
    "n_heads": 2,
    "dim_feedforward": 64,
    "n_encoder_layers": 1,
    "n_denoiser_layers": 1,
    "n_posterior_layers": 1,
    "chunk_size": 8,
    "n_action_steps": 8,
    "latent_dim": 4,
    "num_train_timesteps": 10,
    "num_inference_steps": 5,
    "dropout": 0.0,
}
DOCK_DIMS = {"camera_names": ("top",), "state_dim": 2, "action_dim": 2, "environment_state_dim": 4}


def tiny_config(**overrides) -> HybridConfig:
    """A real HybridConfig at a tiny size for the docking task's dims (see :data:`TINY`); ``overrides`` replace
    any field."""
    return HybridConfig(**{**TINY, **DOCK_DIMS, **overrides})


def tiny_train_config(data: str | os.PathLike, out_dir: str | os.PathLike, **overrides) -> TrainConfig:
    """A TrainConfig that trains for a few CPU seconds (in-process loading, no progress bar, no warm-up)."""
    values = {
        "data": str(data),
        "out_dir": str(out_dir),
        "batch_size": 8,
        "lr": 1e-3,
        "lr_backbone": 1e-3,
        "warmup_steps": 0,
        "lr_schedule": "constant",
        "max_steps": 20,
        "val_every": 10,
        "val_samples": 8,
        "save_every": 10,
        "log_every": 5,
        "load_workers": 1,
        "val_fraction": 0.25,
        "progress": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def dock_episodes(root: str | os.PathLike, episodes: int = 4, seed: int = 0) -> Path:
    """``episodes`` scripted dock demonstrations (pairs of left and right) in ``root``; returns ``root``."""
    from kinema.robot_data.sim.dock import record_episodes

    record_episodes(root, episodes, seed=seed, progress=False)
    return Path(root)
