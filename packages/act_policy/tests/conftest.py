"""Shared fixtures: small episode folders and one tiny trained checkpoint (session-scoped: built once).

Tiny models run on one intra-op thread: on a loaded 2-core machine two threads spin against each other and
make each step ~50x slower, and models this small gain nothing from parallelism.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

from kinema.act_policy.testing import tiny_config, tiny_train_config, write_episodes

torch.set_num_threads(1)

_SIM_MODULES = ("mujoco", "dm_control", "gym_aloha", "gymnasium")


@pytest.fixture(scope="session")
def episodes(tmp_path_factory):
    """Three 20-step episodes, camera "top" 32x32, environment_state (2,)."""
    return write_episodes(tmp_path_factory.mktemp("episodes"), 3, 20)


@pytest.fixture(scope="session")
def trained(episodes, tmp_path_factory):
    """(config, folder) of a tiny ACT trained for 12 steps on ``episodes`` (coordinates on)."""
    from kinema.act_policy import train

    config = tiny_config(environment_state_dim=2)
    out = tmp_path_factory.mktemp("trained") / "run"
    train(config, tiny_train_config(episodes, out, max_steps=12, save_every=6, val_every=6))
    return config, out


@pytest.fixture(scope="session")
def sim_backend():
    """Skips, with the reason, when the sim extra or an OpenGL backend is missing."""
    missing = [name for name in _SIM_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"the sim extra is not installed (missing {', '.join(missing)}): pip install 'kinema-act-policy[sim]'"
        )
    from kinema.robot_data.sim import RenderBackendError, configure_rendering

    try:
        return configure_rendering()
    except RenderBackendError as error:
        pytest.skip(f"no OpenGL backend can render MuJoCo scenes here: {error}")
