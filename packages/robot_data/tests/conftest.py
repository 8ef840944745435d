"""Shared, read-only datasets built once per session from kinema.robot_data.testing."""

from __future__ import annotations

import pytest

from kinema.robot_data import testing


@pytest.fixture(scope="session")
def action_video(tmp_path_factory) -> testing.Fixture:
    """Two valid 9-frame clips (2 actions each) and one row of every broken kind."""
    return testing.write_action_video_dataset(
        tmp_path_factory.mktemp("action_video"), broken=testing.ACTION_VIDEO_BROKEN
    )


@pytest.fixture(scope="session")
def action_video_clean(tmp_path_factory) -> testing.Fixture:
    return testing.write_action_video_dataset(tmp_path_factory.mktemp("action_video_clean"), num_clips=3)


@pytest.fixture(scope="session")
def vace_e(tmp_path_factory) -> testing.Fixture:
    """Three valid 13-frame episodes and one episode of every broken kind."""
    return testing.write_vace_e_dataset(
        tmp_path_factory.mktemp("vace_e") / "base", broken=testing.VACE_E_BROKEN
    )


@pytest.fixture(scope="session")
def vace_e_clean(tmp_path_factory) -> testing.Fixture:
    return testing.write_vace_e_dataset(tmp_path_factory.mktemp("vace_e_clean") / "base")


@pytest.fixture(scope="session")
def policy(tmp_path_factory) -> testing.Fixture:
    """Three valid 20-step episodes (2 cameras, environment state) and one file of every broken kind."""
    return testing.write_policy_dataset(
        tmp_path_factory.mktemp("policy"),
        cameras=("top", "wrist"),
        environment_state_dim=2,
        broken=testing.POLICY_BROKEN,
    )


@pytest.fixture(scope="session")
def policy_clean(tmp_path_factory) -> testing.Fixture:
    return testing.write_policy_dataset(
        tmp_path_factory.mktemp("policy_clean"),
        num_episodes=6,
        cameras=("top", "wrist"),
        environment_state_dim=2,
    )


@pytest.fixture(scope="session")
def long_video(tmp_path_factory):
    """A 600-frame coded video at 30 fps with a keyframe every 30 frames."""
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return testing.write_coded_video(path, 600, 32, 32, fps=30, keyframe_interval=30)


def pytest_configure(config):
    # Small tensors: one intra-op thread is as fast, and far faster on a busy 2-core CI machine.
    import torch

    torch.set_num_threads(1)
