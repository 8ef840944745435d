"""The joint-space environment: gym-aloha parity, seeding, replay determinism, bad actions."""

from __future__ import annotations

import numpy as np
import pytest

from kinema.robot_data.sim import make_env, sample_object_poses


@pytest.fixture(scope="module")
def env(sim_backend, small):
    environment = make_env("transfer_cube", **small)
    yield environment
    environment.close()


def _rollout(env, seed, actions):
    observation, info = env.reset(seed=seed)
    qpos, images = [observation["qpos"]], [observation["images"]["top"]]
    for action in actions:
        observation, *_ = env.step(action)
        qpos.append(observation["qpos"])
        images.append(observation["images"]["top"])
    return np.array(qpos), np.array(images), info


def test_observation_layout_and_spaces(env):
    observation, info = env.reset(seed=5)
    assert observation["qpos"].shape == (14,) and observation["qvel"].shape == (14,)
    assert (
        observation["images"]["top"].shape == (48, 64, 3) and observation["images"]["top"].dtype == np.uint8
    )
    assert env.observation_space.contains(observation)
    np.testing.assert_array_equal(info["object_poses"], sample_object_poses("transfer_cube", 5))
    np.testing.assert_array_equal(observation["environment_state"], info["object_poses"][0, :2])
    # The start pose of gym-aloha's tasks, grippers normalized.
    np.testing.assert_allclose(
        observation["qpos"][[0, 1, 2, 7, 8, 9]], [0, -0.96, 1.16, 0, -0.96, 1.16], atol=1e-6
    )


def test_same_seed_same_trajectory(env):
    rng = np.random.default_rng(0)
    start = env.reset(seed=3)[0]["qpos"]
    actions = start + rng.normal(0, 0.05, size=(30, 14))
    qpos_a, images_a, _ = _rollout(env, 3, actions)
    qpos_b, images_b, _ = _rollout(env, 3, actions)
    np.testing.assert_array_equal(qpos_a, qpos_b)
    np.testing.assert_array_equal(images_a, images_b)
    _, _, info_c = _rollout(env, 4, actions)
    assert not np.array_equal(info_c["object_poses"], sample_object_poses("transfer_cube", 3))


def test_object_poses_match_gym_aloha(sim_backend, small):
    """Same seed, same cube: kinema's scene starts where gym-aloha's own AlohaEnv starts."""
    from gym_aloha.env import AlohaEnv

    theirs = AlohaEnv("transfer_cube")
    theirs.reset(seed=21)
    ours = make_env("transfer_cube", **small)
    ours.reset(seed=21)
    np.testing.assert_allclose(ours.physics.data.qpos[16:], theirs._env.physics.data.qpos[16:], atol=1e-12)


def test_bad_actions_are_errors(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action: expected shape \(14,\), got \(13,\)"):
        env.step(np.zeros(13))
    action = np.zeros(14)
    action[2] = np.nan
    with pytest.raises(ValueError, match="action: expected finite values"):
        env.step(action)
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        make_env("stack")
