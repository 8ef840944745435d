"""MuJoCo scenes and dm_control tasks of the ALOHA simulation (imports dm_control and gym-aloha).

Joint-space tasks reuse gym-aloha's ``TransferCubeTask`` / ``InsertionTask`` (action mapping, reward stages)
and end-effector tasks its ``TransferCubeEndEffectorTask`` / ``InsertionEndEffectorTask`` (mocap control),
with these changes made here: object poses come from the caller (gym-aloha reads a module-level global in
the joint tasks and draws unseeded poses in the end-effector tasks), only the requested cameras are rendered
at the requested size (gym-aloha always renders three cameras at 480x640), and the observation carries
kinema's ``environment_state``; and in the end-effector scenes the mocap welds are made stiff and the
mocap bodies start where the welds hold them (see :func:`stiffen_mocap_welds`). The confuser scene is kinema's XML beside this file; its target cube keeps
gym-aloha's geom name ``red_box``, so the inherited reward counts the target cube only.

Import this module only after :func:`kinema.robot_data.sim._rendering.configure_rendering`.
"""

from __future__ import annotations

import collections
import functools
from pathlib import Path

import mujoco
import numpy as np
from dm_control import mujoco as dm_mujoco
from dm_control.rl import control
from dm_control.suite import base
from gym_aloha.constants import ASSETS_DIR, DT, START_ARM_POSE
from gym_aloha.tasks.sim import InsertionTask, TransferCubeTask
from gym_aloha.tasks.sim_end_effector import InsertionEndEffectorTask, TransferCubeEndEffectorTask

from ._tasks import SimTask, check_render_quality, environment_state

KINEMA_ASSETS = Path(__file__).resolve().parent / "assets"
NUM_ARM_QPOS = 16  # 2 arms x (6 joints + 2 finger slides); object free joints follow, 7 entries each


@functools.cache
def _gym_aloha_assets() -> dict[str, bytes]:
    """gym-aloha's scene, arm and mesh files, as MuJoCo assets for kinema's XML files that include them."""
    return {path.name: path.read_bytes() for path in ASSETS_DIR.iterdir() if path.is_file()}


def load_physics(
    xml_name: str, image_size: tuple[int, int], render_quality: str = "full"
) -> dm_mujoco.Physics:
    """The scene ``xml_name`` (kinema's assets first, then gym-aloha's), with an offscreen buffer >= (H, W).

    ``render_quality="fast"`` turns off shadows and multisampling (see ``RENDER_QUALITIES``); the change is
    made before the first render creates the OpenGL context, which reads these settings.
    """
    own = KINEMA_ASSETS / xml_name
    if own.is_file():
        physics = dm_mujoco.Physics.from_xml_string(own.read_text(), assets=_gym_aloha_assets())
    else:
        physics = dm_mujoco.Physics.from_xml_path(str(ASSETS_DIR / xml_name))
    height, width = image_size
    visual = physics.model.vis.global_
    visual.offheight = max(int(visual.offheight), int(height))
    visual.offwidth = max(int(visual.offwidth), int(width))
    if check_render_quality(render_quality) == "fast":
        physics.model.vis.quality.shadowsize = 0
        physics.model.vis.quality.offsamples = 0
    return physics


class _SceneMixin:
    """Object placement and observations shared by kinema's joint-space and end-effector tasks."""

    def __init__(self, spec: SimTask, cameras: tuple[str, ...], image_size: tuple[int, int]):
        super().__init__(random=None)
        self.spec = spec
        self.cameras = tuple(cameras)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.object_poses: np.ndarray | None = None

    def set_object_poses(self, object_poses: np.ndarray) -> None:
        """Poses (num_objects, 7) used by the next episode's reset."""
        poses = np.asarray(object_poses, dtype=np.float64)
        expected = (len(self.spec.objects), 7)
        if poses.shape != expected:
            raise ValueError(
                f"object_poses for {self.spec.name}: expected shape {expected}, got {poses.shape}"
            )
        self.object_poses = poses.copy()

    def _place_objects(self, physics) -> None:
        if self.object_poses is None:
            raise RuntimeError("set_object_poses() must be called before the episode is reset")
        physics.data.qpos[NUM_ARM_QPOS:] = self.object_poses.reshape(-1)

    def get_observation(self, physics):
        height, width = self.image_size
        observation = collections.OrderedDict()
        observation["qpos"] = self.get_qpos(physics)  # (14,)
        observation["qvel"] = self.get_qvel(physics)  # (14,)
        observation["environment_state"] = environment_state(self.spec, self.object_poses)  # (E,)
        observation["images"] = {
            camera: physics.render(height=height, width=width, camera_id=camera) for camera in self.cameras
        }  # each (H, W, 3) uint8
        return observation


class _JointScene(_SceneMixin):
    """Joint-space control (gym-aloha's BimanualViperXTask action mapping): action (14,)."""

    def initialize_episode(self, physics):
        physics.named.data.qpos[:NUM_ARM_QPOS] = START_ARM_POSE
        np.copyto(physics.data.ctrl, START_ARM_POSE)
        self._place_objects(physics)
        base.Task.initialize_episode(self, physics)


class _EndEffectorScene(_SceneMixin):
    """Mocap control (gym-aloha's BimanualViperXEndEffectorTask): action (16,) = per arm xyz, quat, gripper."""

    def initialize_episode(self, physics):
        self.initialize_robots(physics)  # gym-aloha: start pose, mocap at the gripper links, grippers closed
        self._place_objects(physics)
        _mocap_to_weld_targets(physics)
        base.Task.initialize_episode(self, physics)

    def get_observation(self, physics):
        observation = super().get_observation(physics)
        # The scripted policies start from the mocap poses; the recorder replays the gripper commands.
        observation["mocap_pose_left"] = np.concatenate(
            [physics.data.mocap_pos[0], physics.data.mocap_quat[0]]
        )
        observation["mocap_pose_right"] = np.concatenate(
            [physics.data.mocap_pos[1], physics.data.mocap_quat[1]]
        )
        observation["gripper_ctrl"] = physics.data.ctrl.copy()  # (4,) finger position targets
        return observation


class JointTransferCubeTask(_JointScene, TransferCubeTask):
    pass


class JointInsertionTask(_JointScene, InsertionTask):
    pass


class EndEffectorTransferCubeTask(_EndEffectorScene, TransferCubeEndEffectorTask):
    pass


class EndEffectorInsertionTask(_EndEffectorScene, InsertionEndEffectorTask):
    pass


# The confuser scene is transfer-cube plus a free body "confuser" (geom "confuser_box"); the inherited reward
# looks at geom "red_box" only, i.e. the target cube.
_JOINT_TASKS = {
    "transfer_cube": JointTransferCubeTask,
    "insertion": JointInsertionTask,
    "transfer_cube_confuser": JointTransferCubeTask,
}
_END_EFFECTOR_TASKS = {
    "transfer_cube": EndEffectorTransferCubeTask,
    "insertion": EndEffectorInsertionTask,
    "transfer_cube_confuser": EndEffectorTransferCubeTask,
}


def make_control_environment(
    spec: SimTask,
    *,
    end_effector: bool,
    cameras: tuple[str, ...],
    image_size: tuple[int, int],
    render_quality: str = "full",
) -> control.Environment:
    """A dm_control environment of ``spec`` (joint-space or end-effector), stepping at 50 Hz."""
    task_class = (_END_EFFECTOR_TASKS if end_effector else _JOINT_TASKS)[spec.name]
    physics = load_physics(spec.ee_xml if end_effector else spec.joint_xml, image_size, render_quality)
    known = {physics.model.id2name(i, "camera") for i in range(physics.model.ncam)}
    unknown = [camera for camera in cameras if camera not in known]
    if unknown:
        raise ValueError(
            f"cameras {unknown} are not in the {spec.name} scene: expected some of {sorted(known)}"
        )
    if end_effector:
        stiffen_mocap_welds(physics)
    task = task_class(spec, cameras, image_size)
    # The time limit is kinema's (episode_length); dm_control's stays infinite as in gym-aloha.
    return control.Environment(
        physics, task, time_limit=float("inf"), control_timestep=DT, n_sub_steps=None, flat_observation=False
    )


# The mocap welds: solimp (dmin, dmax, width) close to a hard constraint, and the orientation part weighted
# by MOCAP_WELD_TORQUESCALE against the position part (MuJoCo's weld torquescale, default 1).
MOCAP_WELD_SOLIMP = (0.99, 0.999, 0.001)
MOCAP_WELD_TORQUESCALE = 0.3


def _mocap_welds(physics) -> list[tuple[int, int, int]]:
    """(equality index, mocap index, gripper body id) of each weld between a mocap body and a gripper."""
    model = physics.model
    welds = []
    for index in range(model.neq):
        mocap = model.body_mocapid[model.eq_obj1id[index]]
        if model.eq_type[index] == mujoco.mjtEq.mjEQ_WELD and mocap >= 0:
            welds.append((index, int(mocap), int(model.eq_obj2id[index])))
    return welds


def stiffen_mocap_welds(physics) -> None:
    """Makes the grippers follow their mocap bodies closely, with a softer hold on orientation.

    gym-aloha's end-effector XML (from the ACT work, made for MuJoCo 2.3) welds each gripper to its mocap
    body with a soft constraint (solimp 0.25 0.25). MuJoCo 3 scales weld constraints differently (its 3.0
    changelog; MuJoCo issue #1483), and with the soft welds the grippers lag their targets by up to 13 cm,
    so the scripted grasps miss the cube (1 of 12 seeds succeeded, measured here). Stiff welds track within
    millimetres, but a stiff hold on orientation fights the wrist singularity the grippers pass while they
    tilt down (forearm roll and wrist rotate line up): half of the seeds then spun both joints half a turn,
    each scene its own way, which would give a policy inconsistent joint trajectories. With the orientation
    weighted 0.3, measured here on 30 seeds: transfer-cube 30/30 and insertion 27/30 succeed in joint-space
    replay, and forearm roll stays within 0.7 rad.
    """
    for index, _, _ in _mocap_welds(physics):
        physics.model.eq_solimp[index, :3] = MOCAP_WELD_SOLIMP
        physics.model.eq_data[index, 10] = MOCAP_WELD_TORQUESCALE


def _mocap_to_weld_targets(physics) -> None:
    """Puts each mocap body exactly where its weld holds it, given the grippers' current poses.

    The welds give no ``relpose``, so MuJoCo takes the bodies' relative pose in the reference configuration:
    the mocap point sits 13.5 cm ahead of the gripper link, between the fingertips. gym-aloha's
    ``initialize_robots`` puts the mocap bodies at the gripper links instead, which would yank both arms at
    the first step. Weld: gripper position = mocap position + R(mocap quat) @ relpos, gripper quat =
    mocap quat * relquat; eq_data = anchor (3), relpos (3), relquat (4), torquescale (1).
    """
    model, data = physics.model, physics.data
    mujoco.mj_kinematics(model.ptr, data.ptr)
    for index, mocap, gripper in _mocap_welds(physics):
        relpos = np.asarray(model.eq_data[index, 3:6])
        relquat_inverse = np.zeros(4)
        mujoco.mju_negQuat(relquat_inverse, np.asarray(model.eq_data[index, 6:10]))
        quat = np.zeros(4)
        mujoco.mju_mulQuat(quat, np.asarray(data.xquat[gripper]), relquat_inverse)
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, quat)
        data.mocap_quat[mocap] = quat
        data.mocap_pos[mocap] = data.xpos[gripper] - rotation.reshape(3, 3) @ relpos


def object_positions(physics, spec: SimTask) -> np.ndarray:
    """Current object positions (num_objects, 3), e.g. to see which cube was moved."""
    qpos = physics.data.qpos[NUM_ARM_QPOS:].reshape(len(spec.objects), 7)
    return qpos[:, :3].copy()
