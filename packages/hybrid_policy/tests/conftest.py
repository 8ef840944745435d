"""Shared fixtures: dock recordings and one tiny trained checkpoint (session-scoped: built once).

Tiny models run on one intra-op thread: on a loaded 2-core machine two threads spin against each other, and
models this small gain nothing from parallelism.
"""

from __future__ import annotations

import pytest
import torch

from kinema.hybrid_policy.testing import dock_episodes, tiny_config, tiny_train_config

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def dock_data(tmp_path_factory):
    """Four scripted dock episodes: scenes 0 and 1, each passed on the left and on the right."""
    return dock_episodes(tmp_path_factory.mktemp("dock"), 4)


@pytest.fixture(scope="session")
def trained(dock_data, tmp_path_factory):
    """(config, folder) of a tiny variant C trained for 12 steps on ``dock_data``."""
    from kinema.hybrid_policy import train

    config = tiny_config(variant="C")
    out = tmp_path_factory.mktemp("trained") / "run"
    train(config, tiny_train_config(dock_data, out, max_steps=12, save_every=6, val_every=6))
    return config, out
