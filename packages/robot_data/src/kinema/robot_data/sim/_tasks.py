"""The simulated ALOHA tasks: names, scene files, object poses, environment state and reward stages.

Pure numpy: importing this module needs no simulator, so the CLI can list and validate tasks without the
``sim`` extra.

Object poses are (num_objects, 7) arrays of [x, y, z, qw, qx, qy, qz] in the world frame (metres), the
layout of a MuJoCo free joint. They are drawn from ``numpy.random.RandomState(seed)`` exactly as
gym-aloha's ``sample_box_pose(seed)`` and ``sample_insertion_pose(seed)`` draw them, so a kinema episode and
a gym-aloha ``AlohaEnv.reset(seed=seed)`` episode start from the same scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FPS = 50  # control rate of the ALOHA tasks (gym-aloha's DT = 0.02 s)
ACTION_DIM = 14  # [left arm 6 joints, left gripper, right arm 6 joints, right gripper]
MAX_REWARD = 4  # reward stage of a successful episode
DEFAULT_EPISODE_LENGTH = 400  # steps (8 s at 50 Hz), as in the ACT work
DEFAULT_IMAGE_SIZE = (480, 640)  # (H, W), as in the ACT work
DEFAULT_CAMERAS = ("top",)
EVAL_SEED_START = 100_000  # evaluation seeds default to EVAL_SEED_START + i; recording defaults to 0 + i

_CUBE_LOW = np.array([0.0, 0.4, 0.05])  # gym-aloha's sample_box_pose ranges
_CUBE_HIGH = np.array([0.2, 0.6, 0.05])
_PEG_LOW = np.array([0.1, 0.4, 0.05])  # gym-aloha's sample_insertion_pose ranges
_PEG_HIGH = np.array([0.2, 0.6, 0.05])
_SOCKET_LOW = np.array([-0.2, 0.4, 0.05])
_SOCKET_HIGH = np.array([-0.1, 0.6, 0.05])
_IDENTITY_QUAT = np.array([1.0, 0.0, 0.0, 0.0])

# The two cubes of the confuser scene are at least this far apart (m, centre to centre), so the gripper fits
# around either one without touching the other, and the point halfway between them is empty table.
CONFUSER_MIN_SEPARATION = 0.08


@dataclass(frozen=True)
class SimTask:
    """One simulated task.

    Attributes:
        name: the task's name on the command line.
        joint_xml / ee_xml: scene files of the joint-space and the end-effector (mocap) variant; kinema's
            own files live in ``kinema/robot_data/sim/assets``, the others are gym-aloha's.
        objects: names of the free bodies in qpos order (each adds 7 entries after the 16 arm joints).
        environment_state_names: the (E,) entries of ``environment_state``.
        stage_names: name of reward stage k at index k - 1 (stage 4 is success).
    """

    name: str
    joint_xml: str
    ee_xml: str
    objects: tuple[str, ...]
    environment_state_names: tuple[str, ...]
    stage_names: tuple[str, ...]
    description: str

    @property
    def environment_state_dim(self) -> int:
        return len(self.environment_state_names)

    def stage_name(self, reward: int) -> str:
        """Name of reward stage ``reward`` (0 is ``"none"``)."""
        return "none" if reward <= 0 else self.stage_names[min(int(reward), MAX_REWARD) - 1]


_CUBE_STAGES = ("touched", "lifted", "attempted_transfer", "transferred")

TASKS: dict[str, SimTask] = {
    "transfer_cube": SimTask(
        name="transfer_cube",
        joint_xml="bimanual_viperx_transfer_cube.xml",
        ee_xml="bimanual_viperx_end_effector_transfer_cube.xml",
        objects=("box",),
        environment_state_names=("cube_x", "cube_y"),
        stage_names=_CUBE_STAGES,
        description="the right arm picks up the red cube and hands it to the left arm",
    ),
    "insertion": SimTask(
        name="insertion",
        joint_xml="bimanual_viperx_insertion.xml",
        ee_xml="bimanual_viperx_end_effector_insertion.xml",
        objects=("peg", "socket"),
        environment_state_names=("peg_x", "peg_y", "socket_x", "socket_y"),
        stage_names=("touched_both", "lifted_both", "peg_touches_socket", "inserted"),
        description="each arm picks up one part and the peg is inserted into the socket in mid-air",
    ),
    "transfer_cube_confuser": SimTask(
        name="transfer_cube_confuser",
        joint_xml="bimanual_viperx_transfer_cube_confuser.xml",
        ee_xml="bimanual_viperx_end_effector_transfer_cube_confuser.xml",
        objects=("box", "confuser"),
        environment_state_names=("target_x", "target_y"),
        stage_names=_CUBE_STAGES,
        description="transfer-cube with a second, identical cube; only the target cube (x, y) counts",
    ),
}

TASK_NAMES = tuple(TASKS)


def get_task(name: str) -> SimTask:
    """The task called ``name``; a ValueError naming the known tasks otherwise."""
    try:
        return TASKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown task {name!r}: expected one of {', '.join(TASK_NAMES)}") from None


# "full": the scenes' own rendering (4096x4096 shadow map, 4x multisampling), as in the ACT work.
# "fast": no shadows, no multisampling: measured here with software rendering (Mesa llvmpipe, 2 cores), 18 ms
# instead of 152 ms per 480x640 frame (10 ms instead of 96 ms at 48x64). Images differ (no shadows), so a policy
# is evaluated with the quality its data was recorded with.
RENDER_QUALITIES = ("full", "fast")


def check_render_quality(render_quality: str) -> str:
    """``render_quality`` if it is one of RENDER_QUALITIES; a ValueError naming them otherwise."""
    if render_quality not in RENDER_QUALITIES:
        raise ValueError(
            f"render_quality must be one of {', '.join(RENDER_QUALITIES)}, got {render_quality!r}"
        )
    return render_quality


def check_image_size(image_size) -> tuple[int, int]:
    """``image_size`` as (H, W) of ints in [8, 4096]; a ValueError naming it otherwise."""
    try:
        height, width = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if not (8 <= height <= 4096 and 8 <= width <= 4096):
        raise ValueError(f"image_size must be between 8 and 4096 pixels per side, got ({height}, {width})")
    return height, width


def _pose(rng: np.random.RandomState, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    return np.concatenate([rng.uniform(low, high), _IDENTITY_QUAT])


def sample_object_poses(task: str | SimTask, seed: int) -> np.ndarray:
    """Initial object poses of episode ``seed``: (num_objects, 7) [x, y, z, qw, qx, qy, qz].

    transfer_cube and insertion draw exactly what gym-aloha's samplers draw for the same seed. The confuser
    scene draws the target cube as transfer_cube does (same seed, same target position), then the confuser
    cube from the same stream until it is at least ``CONFUSER_MIN_SEPARATION`` away in (x, y).
    """
    spec = task if isinstance(task, SimTask) else get_task(task)
    rng = np.random.RandomState(int(seed))
    if spec.name == "transfer_cube":
        return _pose(rng, _CUBE_LOW, _CUBE_HIGH)[None]
    if spec.name == "insertion":
        return np.stack([_pose(rng, _PEG_LOW, _PEG_HIGH), _pose(rng, _SOCKET_LOW, _SOCKET_HIGH)])
    target = _pose(rng, _CUBE_LOW, _CUBE_HIGH)
    while True:
        confuser = _pose(rng, _CUBE_LOW, _CUBE_HIGH)
        if np.linalg.norm(confuser[:2] - target[:2]) >= CONFUSER_MIN_SEPARATION:
            return np.stack([target, confuser])


def environment_state(task: str | SimTask, object_poses: np.ndarray) -> np.ndarray:
    """The (E,) ``environment_state`` of an episode that starts from ``object_poses`` (num_objects, 7).

    It is the initial (x, y) of the object(s) to pick up, constant over the episode (an instruction, like
    the pickup coordinates of the ACT experiments, not a live object state): the cube for transfer_cube,
    the TARGET cube for the confuser scene (the confuser's position is not given), peg then socket for
    insertion.
    """
    spec = task if isinstance(task, SimTask) else get_task(task)
    poses = np.asarray(object_poses, dtype=np.float64)
    if spec.name == "transfer_cube_confuser":
        return poses[0, :2].copy()
    return poses[:, :2].reshape(-1).copy()
