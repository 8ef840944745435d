"""Fixtures of the sim tests: a checked rendering backend and one small shared recording.

Tests that need the simulator take ``sim_backend``; it skips them, with the reason, only when the ``sim``
extra is not installed or no OpenGL backend can render here. Everything runs small: 48x64 images, 200-step
episodes (the scripts squeezed to 4 s) and ``render_quality="fast"``.
"""

from __future__ import annotations

import importlib.util

import pytest

SMALL = {"image_size": (48, 64), "episode_length": 200, "render_quality": "fast"}
_SIM_MODULES = ("mujoco", "dm_control", "gym_aloha", "gymnasium")


@pytest.fixture(scope="session")
def sim_backend():
    missing = [name for name in _SIM_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(
            f"the sim extra is not installed (missing {', '.join(missing)}): pip install 'kinema-robot-data[sim]'"
        )
    from kinema.robot_data.sim import RenderBackendError, configure_rendering

    try:
        return configure_rendering()
    except RenderBackendError as error:
        pytest.skip(f"no OpenGL backend can render MuJoCo scenes on this machine: {error}")


@pytest.fixture(scope="session")
def small() -> dict:
    """Keyword arguments that keep a simulated episode cheap on a 2-core machine without a GPU."""
    return dict(SMALL)


@pytest.fixture(scope="session")
def transfer_recording(sim_backend, tmp_path_factory):
    """Two transfer_cube episodes recorded in this process (seeds 0 and 1): (summary, folder)."""
    from kinema.robot_data.sim import record_episodes

    folder = tmp_path_factory.mktemp("transfer_cube")
    summary = record_episodes("transfer_cube", 2, folder, workers=1, seed=0, progress=False, **SMALL)
    return summary, folder
