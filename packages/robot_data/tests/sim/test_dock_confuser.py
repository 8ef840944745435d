"""The dock confuser (kinema.robot_data.sim.dock): two identical docks, the target named by its (x, y)."""

from __future__ import annotations

import numpy as np
import pytest

from kinema.robot_data import read_policy_episode
from kinema.robot_data.sim.dock import (
    ConfuserDockEnv,
    confuser_episode,
    evaluate_confuser,
    record_confuser_episodes,
    render_confuser,
    sample_confuser_scenes,
)

GREEN = np.array([60, 170, 90], np.uint8)


class _Fixed:
    """A SimPolicy that always moves toward one point per row, given as a function of the observation."""

    def __init__(self, choose):
        self.choose = choose

    def reset(self, num_envs):
        pass

    def act(self, observation):
        return self.choose(observation)


def test_oracle_docks_at_the_target_and_the_midpoint_at_neither():
    scenes = sample_confuser_scenes(np.arange(100_000, 100_050))
    oracle = evaluate_confuser(_Fixed(lambda o: o["environment_state"]), 50)
    assert oracle.success_rate == 1.0 and oracle.wrong_rate == 0.0
    midpoint = evaluate_confuser(_Fixed(lambda o: scenes.docks.mean(axis=1)), 50)
    assert midpoint.success_rate == 0.0 and midpoint.neither_rate == 1.0 and midpoint.between_rate == 1.0
    other = evaluate_confuser(_Fixed(lambda o: scenes.confuser_xy()), 50)
    assert other.wrong_rate == 1.0 and other.success_rate == 0.0


def test_expert_reaches_its_target_and_pairs_differ_only_in_the_coordinates():
    left, right = confuser_episode(5, 0), confuser_episode(5, 1)
    scene = sample_confuser_scenes([5])
    np.testing.assert_allclose(left["action"][-1], scene.docks[0, 0], atol=1e-6)
    np.testing.assert_allclose(right["action"][-1], scene.docks[0, 1], atol=1e-6)
    np.testing.assert_array_equal(left["images"]["top"][0], right["images"]["top"][0])  # same first image
    np.testing.assert_allclose(left["environment_state"][0], scene.docks[0, 0], atol=1e-6)
    np.testing.assert_allclose(right["environment_state"][0], scene.docks[0, 1], atol=1e-6)


def test_without_confuser_only_the_target_is_drawn():
    scenes = sample_confuser_scenes([3], [0])
    both = render_confuser(scenes.start, scenes, 64, confuser=True)
    one = render_confuser(scenes.start, scenes, 64, confuser=False)
    green_both = (both == GREEN).all(-1).sum()
    green_one = (one == GREEN).all(-1).sum()
    assert green_one > 20 and abs(green_both - 2 * green_one) <= 4  # two discs of about the same size

    def pixel(xy):
        return int((1 - xy[1]) * 64), int(xy[0] * 64)

    for image in (both, one):  # the target (left) dock drawn in both
        assert (image[0][pixel(scenes.docks[0, 0])] == GREEN).all()
    assert (both[0][pixel(scenes.docks[0, 1])] == GREEN).all()
    assert not (one[0][pixel(scenes.docks[0, 1])] == GREEN).all()  # the confuser only with confuser=True


def test_recording_writes_counterfactual_pairs(tmp_path):
    manifest = record_confuser_episodes(tmp_path, 4, seed=7, progress=False)
    assert manifest["seeds"] == [7, 7, 8, 8] and manifest["targets"] == [0, 1, 0, 1]
    first, second = (read_policy_episode(tmp_path / f"episode_{i}.hdf5") for i in (0, 1))
    np.testing.assert_array_equal(first["images"]["top"][0], second["images"]["top"][0])
    assert np.linalg.norm(first["environment_state"][0] - second["environment_state"][0]) > 0.3
    with pytest.raises(FileExistsError, match="overwrite"):
        record_confuser_episodes(tmp_path, 2, progress=False)


def test_unpaired_recording_shows_each_scene_with_its_own_target(tmp_path):
    manifest = record_confuser_episodes(tmp_path, 6, seed=3, pairs=False, progress=False)
    assert manifest["seeds"] == [3, 4, 5, 6, 7, 8]
    assert manifest["targets"] == sample_confuser_scenes(np.arange(3, 9)).target.tolist()
    episode = read_policy_episode(tmp_path / "episode_2.hdf5")
    scene = sample_confuser_scenes([5])
    np.testing.assert_allclose(episode["environment_state"][0], scene.target_xy()[0], atol=1e-6)


def test_env_rejects_actions_of_the_wrong_shape():
    env = ConfuserDockEnv([1, 2])
    with pytest.raises(ValueError, match="actions"):
        env.step(np.zeros((3, 2)))


def test_coordinate_noise_is_fixed_per_scene_and_bounded():
    scenes = sample_confuser_scenes(np.arange(20))
    named = scenes.named_target(0.1)
    assert np.abs(named - scenes.target_xy()).max() <= 0.1 + 1e-6
    np.testing.assert_array_equal(named, sample_confuser_scenes(np.arange(20)).named_target(0.1))
