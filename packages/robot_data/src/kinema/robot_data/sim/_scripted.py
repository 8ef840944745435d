"""Scripted bimanual demonstrations: end-effector waypoints interpolated over time (pure numpy).

A script is two lists of waypoints, one per arm; each waypoint is (t, xyz, quaternion, gripper) with the
gripper normalized (0 closed, 1 open). Between waypoints the position and the gripper are interpolated
linearly and the orientation by spherical linear interpolation. The timing follows the ACT work's scripted
policies on a 400-step (8 s) timeline, stretched or squeezed to the episode length. Quaternions are
[w, x, y, z], as MuJoCo's mocap bodies take them.

Optional noise (``noise_scale`` metres) adds a uniform offset in [-noise_scale, noise_scale] to each arm's
target position at every step, drawn from a generator seeded by the episode seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

REFERENCE_LENGTH = 400  # the waypoint times below are on this timeline


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b of quaternions [w, x, y, z] (rotation b, then a)."""
    aw, ax, ay, az = a
    bw, bx, by, bz = b
    return np.array(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ]
    )


def axis_angle_quat(axis, degrees: float) -> np.ndarray:
    """Quaternion [w, x, y, z] of a rotation by ``degrees`` about ``axis``."""
    axis = np.asarray(axis, dtype=np.float64)
    half = np.deg2rad(degrees) / 2
    return np.concatenate([[np.cos(half)], np.sin(half) * axis / np.linalg.norm(axis)])


def slerp(q0: np.ndarray, q1: np.ndarray, fraction: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions (shortest arc), ``fraction`` in [0, 1]."""
    q0 = q0 / np.linalg.norm(q0)
    q1 = q1 / np.linalg.norm(q1)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:  # q and -q are the same rotation: take the short way round
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly parallel: linear interpolation is exact enough and avoids dividing by ~0
        q = q0 + fraction * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1 - fraction) * theta) * q0 + np.sin(fraction * theta) * q1) / np.sin(theta)


@dataclass(frozen=True)
class Waypoint:
    """Target of one arm at step ``t``: xyz (3,), quat (4,) [w, x, y, z], gripper in [0, 1] (1 open)."""

    t: int
    xyz: np.ndarray
    quat: np.ndarray
    gripper: float


def interpolate(waypoints: list[Waypoint], t: float) -> np.ndarray:
    """The arm target at step ``t``: (8,) [xyz, quat, gripper]; held constant after the last waypoint."""
    if t <= waypoints[0].t:
        first = waypoints[0]
        return np.concatenate([first.xyz, first.quat, [first.gripper]])
    for current, following in itertools.pairwise(waypoints):
        if current.t <= t < following.t:
            fraction = (t - current.t) / (following.t - current.t)
            xyz = current.xyz + fraction * (following.xyz - current.xyz)
            quat = slerp(current.quat, following.quat, fraction)
            gripper = current.gripper + fraction * (following.gripper - current.gripper)
            return np.concatenate([xyz, quat, [gripper]])
    last = waypoints[-1]
    return np.concatenate([last.xyz, last.quat, [last.gripper]])


class ScriptedPolicy:
    """Both arms' waypoints; ``policy(t)`` is the end-effector action (16,) at step t.

    The action layout is gym-aloha's end-effector task's: [left xyz (3), left quat (4), left gripper (1),
    right xyz (3), right quat (4), right gripper (1)].
    """

    def __init__(
        self,
        left: list[Waypoint],
        right: list[Waypoint],
        *,
        episode_length: int = REFERENCE_LENGTH,
        noise_scale: float = 0.0,
        seed: int = 0,
    ):
        if episode_length < 2:
            raise ValueError(f"episode_length must be at least 2 steps, got {episode_length}")
        if noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0 metres, got {noise_scale}")
        self.left = left
        self.right = right
        self.time_scale = REFERENCE_LENGTH / episode_length
        self.noise_scale = float(noise_scale)
        self._rng = np.random.default_rng([int(seed), 0x5C41])  # separate stream from the scene's seed

    def __call__(self, t: int) -> np.ndarray:
        reference_t = t * self.time_scale
        left = interpolate(self.left, reference_t)
        right = interpolate(self.right, reference_t)
        if self.noise_scale > 0:
            left[:3] += self._rng.uniform(-self.noise_scale, self.noise_scale, 3)
            right[:3] += self._rng.uniform(-self.noise_scale, self.noise_scale, 3)
        return np.concatenate([left, right])  # (16,)


def _offset(xyz: np.ndarray, dx: float, dy: float, dz: float) -> np.ndarray:
    return np.asarray(xyz, dtype=np.float64) + np.array([dx, dy, dz])


def _waypoint(t: int, xyz, quat, gripper: float) -> Waypoint:
    return Waypoint(t, np.asarray(xyz, dtype=np.float64), np.asarray(quat, dtype=np.float64), float(gripper))


# Arm bases in the world (x, y) and the heading (rad, about z) each arm faces with its waist at 0.
LEFT_BASE, LEFT_HEADING = np.array([-0.469, 0.5]), 0.0
RIGHT_BASE, RIGHT_HEADING = np.array([0.469, 0.5]), np.pi


def face_target(waypoints: list[Waypoint], base_xy: np.ndarray, heading: float) -> list[Waypoint]:
    """Turns each waypoint's orientation about z by the waist angle that points the arm at its position.

    A 6-joint arm reaching sideways turns its waist, which turns the gripper too. A target orientation
    that keeps the gripper's yaw fixed makes the wrist undo that turn; the wrist does it with forearm roll
    and wrist rotate, whose axes line up as the wrist straightens while the gripper tilts down, so the
    two joints spin half a turn each in either direction, differently per scene (seen here with MuJoCo 3).
    Letting the gripper yaw with the waist keeps both joints near zero and the joint trajectories
    consistent from episode to episode. The first waypoint (the start pose) is left as it is.
    """
    faced = [waypoints[0]]
    for waypoint in waypoints[1:]:
        dx, dy = waypoint.xyz[:2] - base_xy
        yaw = np.arctan2(dy, dx) - heading
        yaw = (yaw + np.pi) % (2 * np.pi) - np.pi  # wrap to [-pi, pi)
        quat = quat_multiply(axis_angle_quat([0, 0, 1], np.rad2deg(yaw)), waypoint.quat)
        faced.append(Waypoint(waypoint.t, waypoint.xyz, quat, waypoint.gripper))
    return faced


def pick_and_transfer_waypoints(
    start_left: np.ndarray, start_right: np.ndarray, cube_xyz: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    """The right arm picks the cube at ``cube_xyz`` and hands it to the left arm above the table centre.

    ``start_left`` / ``start_right`` are the mocap poses (7,) [xyz, quat] at reset.
    """
    meet_xyz = np.array([0.0, 0.5, 0.25])
    pick_quat = quat_multiply(start_right[3:], axis_angle_quat([0, 1, 0], -60))  # tilt the right gripper down
    meet_left_quat = axis_angle_quat([1, 0, 0], 90)  # left gripper rolled to face the right one
    left = [
        _waypoint(0, start_left[:3], start_left[3:], 0),  # sleep
        _waypoint(100, _offset(meet_xyz, -0.1, 0, -0.02), meet_left_quat, 1),  # approach meet position
        _waypoint(260, _offset(meet_xyz, 0.02, 0, -0.02), meet_left_quat, 1),  # move to meet position
        _waypoint(310, _offset(meet_xyz, 0.02, 0, -0.02), meet_left_quat, 0),  # close gripper
        _waypoint(360, _offset(meet_xyz, -0.1, 0, -0.02), [1, 0, 0, 0], 0),  # move left
        _waypoint(400, _offset(meet_xyz, -0.1, 0, -0.02), [1, 0, 0, 0], 0),  # stay
    ]
    right = [
        _waypoint(0, start_right[:3], start_right[3:], 0),  # sleep
        _waypoint(90, _offset(cube_xyz, 0, 0, 0.08), pick_quat, 1),  # approach the cube
        _waypoint(130, _offset(cube_xyz, 0, 0, -0.015), pick_quat, 1),  # go down
        _waypoint(170, _offset(cube_xyz, 0, 0, -0.015), pick_quat, 0),  # close gripper
        _waypoint(200, _offset(meet_xyz, 0.05, 0, 0), pick_quat, 0),  # approach meet position
        _waypoint(220, meet_xyz, pick_quat, 0),  # move to meet position
        _waypoint(310, meet_xyz, pick_quat, 1),  # open gripper
        _waypoint(360, _offset(meet_xyz, 0.1, 0, 0), pick_quat, 1),  # move to right
        _waypoint(400, _offset(meet_xyz, 0.1, 0, 0), pick_quat, 1),  # stay
    ]
    return face_target(left, LEFT_BASE, LEFT_HEADING), face_target(right, RIGHT_BASE, RIGHT_HEADING)


def insertion_waypoints(
    start_left: np.ndarray, start_right: np.ndarray, peg_xyz: np.ndarray, socket_xyz: np.ndarray
) -> tuple[list[Waypoint], list[Waypoint]]:
    """The left arm picks the socket, the right arm the peg; they meet and the peg goes into the socket."""
    meet_xyz = np.array([0.0, 0.5, 0.15])
    lift_right = 0.00715  # the peg sits this much higher in the right gripper than the socket in the left
    # Each gripper ends this far from the meeting point. The ACT work used 0.05; in joint-space replay the
    # position servos stop about 2 mm short of the end-effector rollout and the peg then misses the pin
    # (0 of 10 seeds measured here), so the arms push 1 cm further (10 of 10).
    insert = 0.04
    pick_left_quat = quat_multiply(start_left[3:], axis_angle_quat([0, 1, 0], 60))
    pick_right_quat = quat_multiply(start_right[3:], axis_angle_quat([0, 1, 0], -60))
    left = [
        _waypoint(0, start_left[:3], start_left[3:], 0),  # sleep
        _waypoint(120, _offset(socket_xyz, 0, 0, 0.08), pick_left_quat, 1),  # approach the socket
        _waypoint(170, _offset(socket_xyz, 0, 0, -0.03), pick_left_quat, 1),  # go down
        _waypoint(220, _offset(socket_xyz, 0, 0, -0.03), pick_left_quat, 0),  # close gripper
        _waypoint(285, _offset(meet_xyz, -0.1, 0, 0), pick_left_quat, 0),  # approach meet position
        _waypoint(340, _offset(meet_xyz, -insert, 0, 0), pick_left_quat, 0),  # insertion
        _waypoint(400, _offset(meet_xyz, -insert, 0, 0), pick_left_quat, 0),  # stay
    ]
    right = [
        _waypoint(0, start_right[:3], start_right[3:], 0),  # sleep
        _waypoint(120, _offset(peg_xyz, 0, 0, 0.08), pick_right_quat, 1),  # approach the peg
        _waypoint(170, _offset(peg_xyz, 0, 0, -0.03), pick_right_quat, 1),  # go down
        _waypoint(220, _offset(peg_xyz, 0, 0, -0.03), pick_right_quat, 0),  # close gripper
        _waypoint(285, _offset(meet_xyz, 0.1, 0, lift_right), pick_right_quat, 0),  # approach meet position
        _waypoint(340, _offset(meet_xyz, insert, 0, lift_right), pick_right_quat, 0),  # insertion
        _waypoint(400, _offset(meet_xyz, insert, 0, lift_right), pick_right_quat, 0),  # stay
    ]
    return face_target(left, LEFT_BASE, LEFT_HEADING), face_target(right, RIGHT_BASE, RIGHT_HEADING)


def make_scripted_policy(
    task: str,
    start_left: np.ndarray,
    start_right: np.ndarray,
    object_poses: np.ndarray,
    *,
    episode_length: int = REFERENCE_LENGTH,
    noise_scale: float = 0.0,
    seed: int = 0,
    pick_object: int = 0,
) -> ScriptedPolicy:
    """The scripted policy of ``task`` for a scene with ``object_poses`` (num_objects, 7).

    ``pick_object`` chooses which object the cube tasks pick (0 is the target; 1 in the confuser scene is
    the confuser, used to show that moving the wrong cube is not a success).
    """
    poses = np.asarray(object_poses, dtype=np.float64)
    if task in ("transfer_cube", "transfer_cube_confuser"):
        if not 0 <= pick_object < len(poses):
            raise ValueError(f"pick_object must index one of the {len(poses)} objects, got {pick_object}")
        left, right = pick_and_transfer_waypoints(start_left, start_right, poses[pick_object, :3])
    elif task == "insertion":
        left, right = insertion_waypoints(start_left, start_right, poses[0, :3], poses[1, :3])
    else:
        raise ValueError(f"no scripted policy for task {task!r}")
    return ScriptedPolicy(left, right, episode_length=episode_length, noise_scale=noise_scale, seed=seed)
