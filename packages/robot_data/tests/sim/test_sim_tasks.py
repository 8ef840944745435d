"""Task registry, object poses, environment state and argument checks (no simulator needed)."""

from __future__ import annotations

import numpy as np
import pytest

from kinema.robot_data.sim import TASK_NAMES, environment_state, sample_object_poses
from kinema.robot_data.sim._tasks import (
    CONFUSER_MIN_SEPARATION,
    check_image_size,
    check_render_quality,
    get_task,
)


def test_task_names_and_unknown_task():
    assert TASK_NAMES == ("transfer_cube", "insertion", "transfer_cube_confuser")
    with pytest.raises(
        ValueError, match=r"unknown task 'pick_place': expected one of transfer_cube, insertion"
    ):
        get_task("pick_place")


def test_poses_match_gym_aloha_samplers():
    utils = pytest.importorskip("gym_aloha.utils", reason="gym-aloha (sim extra) not installed")
    for seed in (0, 7, 123):
        np.testing.assert_array_equal(
            sample_object_poses("transfer_cube", seed)[0], utils.sample_box_pose(seed)
        )
        peg, socket = utils.sample_insertion_pose(seed)
        np.testing.assert_array_equal(sample_object_poses("insertion", seed), np.stack([peg, socket]))


def test_confuser_scene_target_and_separation():
    for seed in range(200):
        poses = sample_object_poses("transfer_cube_confuser", seed)
        assert poses.shape == (2, 7)
        # The target is drawn first, exactly as the plain transfer-cube cube of the same seed.
        np.testing.assert_array_equal(poses[0], sample_object_poses("transfer_cube", seed)[0])
        assert np.linalg.norm(poses[0, :2] - poses[1, :2]) >= CONFUSER_MIN_SEPARATION
        assert 0.0 <= poses[1, 0] <= 0.2 and 0.4 <= poses[1, 1] <= 0.6
        np.testing.assert_array_equal(poses[:, 3:], [[1, 0, 0, 0], [1, 0, 0, 0]])


def test_environment_state_is_the_pickup_xy():
    poses = np.array([[0.1, 0.45, 0.05, 1, 0, 0, 0], [-0.15, 0.55, 0.05, 1, 0, 0, 0]])
    np.testing.assert_array_equal(environment_state("transfer_cube_confuser", poses), [0.1, 0.45])
    np.testing.assert_array_equal(environment_state("insertion", poses), [0.1, 0.45, -0.15, 0.55])
    np.testing.assert_array_equal(environment_state("transfer_cube", poses[:1]), [0.1, 0.45])
    assert get_task("insertion").environment_state_dim == 4


def test_stage_names():
    spec = get_task("transfer_cube")
    assert [spec.stage_name(k) for k in range(5)] == [
        "none",
        "touched",
        "lifted",
        "attempted_transfer",
        "transferred",
    ]
    assert get_task("insertion").stage_name(4) == "inserted"


def test_argument_checks():
    assert check_image_size([240, 320]) == (240, 320)
    with pytest.raises(ValueError, match=r"image_size must be \(height, width\), got 'big'"):
        check_image_size("big")
    with pytest.raises(ValueError, match=r"between 8 and 4096 pixels per side, got \(4, 640\)"):
        check_image_size((4, 640))
    assert check_render_quality("fast") == "fast"
    with pytest.raises(ValueError, match="render_quality must be one of full, fast, got 'ultra'"):
        check_render_quality("ultra")
