"""Waypoint interpolation and quaternion helpers of the scripted policies, against scipy (no simulator)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from kinema.robot_data.sim._scripted import (
    LEFT_BASE,
    LEFT_HEADING,
    RIGHT_BASE,
    RIGHT_HEADING,
    ScriptedPolicy,
    Waypoint,
    axis_angle_quat,
    face_target,
    interpolate,
    make_scripted_policy,
    quat_multiply,
    slerp,
)


def _scipy(quat_wxyz: np.ndarray) -> Rotation:
    return Rotation.from_quat(np.roll(quat_wxyz, -1))  # scipy is scalar-last


def test_axis_angle_and_product_against_scipy():
    q = axis_angle_quat([0, 1, 0], -60)
    np.testing.assert_allclose(q, [np.cos(np.pi / 6), 0, -np.sin(np.pi / 6), 0], atol=1e-12)
    a, b = axis_angle_quat([1, 0, 0], 90), axis_angle_quat([0, 0, 1], 30)
    expected = (_scipy(a) * _scipy(b)).as_matrix()
    np.testing.assert_allclose(_scipy(quat_multiply(a, b)).as_matrix(), expected, atol=1e-12)
    half = axis_angle_quat([0, 0, 1], 90)
    np.testing.assert_allclose(quat_multiply(half, half), axis_angle_quat([0, 0, 1], 180), atol=1e-12)


def test_slerp_against_scipy():
    q0, q1 = (
        axis_angle_quat([0, 1, 0], 0),
        quat_multiply(axis_angle_quat([1, 0, 0], 90), axis_angle_quat([0, 1, 0], -60)),
    )
    reference = Slerp([0, 1], Rotation.concatenate([_scipy(q0), _scipy(q1)]))
    for fraction in (0.0, 0.25, 0.5, 0.9, 1.0):
        ours = _scipy(slerp(q0, q1, fraction)).as_matrix()
        np.testing.assert_allclose(ours, reference([fraction]).as_matrix()[0], atol=1e-9)
    # q and -q are one rotation: the interpolation takes the short arc either way.
    np.testing.assert_allclose(
        _scipy(slerp(q0, -q1, 0.5)).as_matrix(), _scipy(slerp(q0, q1, 0.5)).as_matrix(), atol=1e-9
    )


def test_interpolate_positions_gripper_and_holds():
    identity = np.array([1.0, 0, 0, 0])
    points = [
        Waypoint(0, np.zeros(3), identity, 0.0),
        Waypoint(100, np.array([1.0, 2.0, 4.0]), identity, 1.0),
    ]
    np.testing.assert_allclose(interpolate(points, 25), [0.25, 0.5, 1.0, 1, 0, 0, 0, 0.25])
    np.testing.assert_allclose(interpolate(points, 100), [1, 2, 4, 1, 0, 0, 0, 1])
    np.testing.assert_allclose(interpolate(points, 400), [1, 2, 4, 1, 0, 0, 0, 1])  # held after the last


def test_time_scaling_and_seeded_noise():
    identity = np.array([1.0, 0, 0, 0])
    left = [Waypoint(0, np.zeros(3), identity, 0.0), Waypoint(400, np.ones(3), identity, 1.0)]
    squeezed = ScriptedPolicy(left, left, episode_length=200)
    np.testing.assert_allclose(squeezed(100)[:3], [0.5, 0.5, 0.5])  # step 100 of 200 is step 200 of 400
    noisy_a = ScriptedPolicy(left, left, noise_scale=0.01, seed=3)
    noisy_b = ScriptedPolicy(left, left, noise_scale=0.01, seed=3)
    clean = ScriptedPolicy(left, left)
    deltas = np.array([noisy_a(t) - clean(t) for t in range(50)])
    np.testing.assert_array_equal(deltas, np.array([noisy_b(t) - clean(t) for t in range(50)]))
    assert 0 < np.abs(deltas[:, [0, 1, 2, 8, 9, 10]]).max() <= 0.01
    np.testing.assert_array_equal(
        deltas[:, [3, 4, 5, 6, 7, 11, 12, 13, 14, 15]], 0
    )  # noise on positions only
    with pytest.raises(ValueError, match="noise_scale must be >= 0"):
        ScriptedPolicy(left, left, noise_scale=-1)


def test_face_target_turns_the_gripper_with_the_waist():
    identity = np.array([1.0, 0, 0, 0])
    start = Waypoint(0, np.array([0.3, 0.5, 0.3]), identity, 0.0)
    # A target straight ahead of the right arm (same y as its base) needs no turn; one off to the side does.
    ahead = face_target(
        [start, Waypoint(90, np.array([0.1, 0.5, 0.1]), identity, 1.0)], RIGHT_BASE, RIGHT_HEADING
    )
    np.testing.assert_allclose(ahead[1].quat, identity, atol=1e-12)
    side = face_target(
        [start, Waypoint(90, np.array([-0.469 + 0.3, 0.8, 0.1]), identity, 1)], LEFT_BASE, LEFT_HEADING
    )
    np.testing.assert_allclose(side[1].quat, axis_angle_quat([0, 0, 1], 45), atol=1e-12)
    assert side[0] is start


def test_scripted_policy_starts_at_the_start_pose():
    start_left = np.array([-0.2, 0.5, 0.3, 1, 0, 0, 0])
    start_right = np.array([0.2, 0.5, 0.3, 1, 0, 0, 0])
    poses = np.array([[0.1, 0.5, 0.05, 1, 0, 0, 0]])
    policy = make_scripted_policy("transfer_cube", start_left, start_right, poses)
    np.testing.assert_allclose(policy(0), [*start_left, 0, *start_right, 0])
    with pytest.raises(ValueError, match="pick_object must index one of the 1 objects"):
        make_scripted_policy("transfer_cube", start_left, start_right, poses, pick_object=1)
