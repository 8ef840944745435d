"""The bundled multimodal task: a point agent reaches a dock above a wall, passing it on the left or the right.

A small deterministic 2-D simulation in numpy (no simulator, no GPU): the scripted expert demonstrates every
scene twice, once on each side, so demonstrations are exactly bimodal and their average drives into the wall.
Demonstrations are kinema.robot_data policy episodes (qpos = agent (x, y), action = the next (x, y),
environment_state = dock and wall centre, a 64x64 ``top`` image); evaluation runs any SimPolicy on N
environments stepped as one batch.

    from kinema.robot_data.sim.dock import evaluate, record_episodes

    record_episodes("data/dock", 50, seed=0)  # scripted demonstrations: 25 scenes, each left and right
    result = evaluate(policy, episodes=100)  # seeds 100000..; success, collisions, modes, smoothness
    print(result.describe())
"""

from ._confuser import (
    CONFUSER_CAMERAS,
    CONFUSER_MAX_STEPS,
    CONFUSER_TASK,
    ConfuserDockEnv,
    ConfuserEvalResult,
    ConfuserScenes,
    confuser_episode,
    evaluate_confuser,
    record_confuser_episodes,
    render_confuser,
    sample_confuser_scenes,
)
from ._env import CAMERA, DEFAULT_IMAGE_SIZE, DEFAULT_MAX_STEPS, DockEnv
from ._evaluate import EVAL_SEED_START, DockEvalResult, episode_mode, evaluate
from ._expert import expert_path, expert_style
from ._metrics import mean_smoothness, mode_coverage, smoothness
from ._record import FPS, TASK, DockRecording, expert_episode, read_recording, record_episodes
from ._scene import (
    ACTION_DIM,
    DOCK_RADIUS,
    ENVIRONMENT_STATE_DIM,
    SIDES,
    STATE_DIM,
    WALL_HALF_SIZE,
    DockScenes,
    collides,
    docked,
    render,
    sample_scenes,
)

__all__ = [
    "ACTION_DIM",
    "CAMERA",
    "CONFUSER_CAMERAS",
    "CONFUSER_MAX_STEPS",
    "CONFUSER_TASK",
    "DEFAULT_IMAGE_SIZE",
    "DEFAULT_MAX_STEPS",
    "DOCK_RADIUS",
    "ENVIRONMENT_STATE_DIM",
    "EVAL_SEED_START",
    "FPS",
    "SIDES",
    "STATE_DIM",
    "TASK",
    "WALL_HALF_SIZE",
    "ConfuserDockEnv",
    "ConfuserEvalResult",
    "ConfuserScenes",
    "DockEnv",
    "DockEvalResult",
    "DockRecording",
    "DockScenes",
    "collides",
    "confuser_episode",
    "docked",
    "episode_mode",
    "evaluate",
    "evaluate_confuser",
    "expert_episode",
    "expert_path",
    "expert_style",
    "mean_smoothness",
    "mode_coverage",
    "read_recording",
    "record_confuser_episodes",
    "record_episodes",
    "render",
    "render_confuser",
    "sample_confuser_scenes",
    "sample_scenes",
    "smoothness",
]
