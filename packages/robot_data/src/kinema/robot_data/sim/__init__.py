"""ALOHA bimanual simulation: scripted demonstrations and the policy evaluation harness.

Needs the ``sim`` extra (``pip install 'kinema-robot-data[sim]'``: gymnasium, gym-aloha, MuJoCo,
dm_control) to run; importing this module does not, so the CLI and the docs work without it. Tasks:
``transfer_cube``, ``insertion`` and ``transfer_cube_confuser`` (a second, identical cube; only the target,
whose (x, y) is the ``environment_state``, counts).

    from kinema.robot_data.sim import record_episodes, evaluate, ReplayPolicy

    summary = record_episodes("transfer_cube", 50, "data/transfer_cube", workers=8, seed=0)
    print(summary.describe())
    policy = ReplayPolicy.from_episode("data/transfer_cube/episode_0.hdf5")  # any SimPolicy
    result = evaluate(policy, "transfer_cube", seeds=[policy.seed], out_dir="eval", videos=1)
    print(result.describe())

Rendering: ``MUJOCO_GL=egl`` where an NVIDIA GPU is present, otherwise software rendering (Mesa EGL, else
OSMesa), chosen and checked by :func:`configure_rendering` before any work starts.
"""

from __future__ import annotations

from ._evaluate import EvalResult, EvaluationError, evaluate
from ._policy import (
    PolicyError,
    ReplayPolicy,
    SimPolicy,
    load_policy,
    load_replay_policy,
    write_policy_manifest,
)
from ._record import RecordingError, RecordingSummary, record_episodes
from ._rendering import RenderBackendError, configure_rendering
from ._tasks import (
    DEFAULT_EPISODE_LENGTH,
    DEFAULT_IMAGE_SIZE,
    EVAL_SEED_START,
    FPS,
    TASK_NAMES,
    environment_state,
    sample_object_poses,
)


def make_env(task: str = "transfer_cube", **kwargs):
    """The joint-space gymnasium environment of ``task`` (an ``AlohaSimEnv``; keyword arguments:
    image_size, cameras, episode_length, terminate_on_success). Configures rendering first."""
    from ._rendering import require_sim_extra

    require_sim_extra()
    configure_rendering()
    from ._env import AlohaSimEnv

    return AlohaSimEnv(task, **kwargs)


__all__ = [
    "DEFAULT_EPISODE_LENGTH",
    "DEFAULT_IMAGE_SIZE",
    "EVAL_SEED_START",
    "FPS",
    "TASK_NAMES",
    "EvalResult",
    "EvaluationError",
    "PolicyError",
    "RecordingError",
    "RecordingSummary",
    "RenderBackendError",
    "ReplayPolicy",
    "SimPolicy",
    "configure_rendering",
    "environment_state",
    "evaluate",
    "load_policy",
    "load_replay_policy",
    "make_env",
    "record_episodes",
    "sample_object_poses",
    "write_policy_manifest",
]
