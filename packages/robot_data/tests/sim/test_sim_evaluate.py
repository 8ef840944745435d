"""The evaluation harness: success and stages, per-episode records, videos, bad policies, parallel workers."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest

from kinema.robot_data.sim import PolicyError, ReplayPolicy, _record, evaluate


def test_replaying_a_recording_succeeds_on_its_seed(transfer_recording, small, tmp_path):
    _, folder = transfer_recording
    policy = ReplayPolicy.from_episode(folder / "episode_1.hdf5")
    assert policy.seed == 1
    result = evaluate(policy, "transfer_cube", seeds=[1], out_dir=tmp_path, videos=1, progress=False, **small)
    assert result.success_rate == 1.0
    assert result.stage_rates == {
        "touched": 1.0,
        "lifted": 1.0,
        "attempted_transfer": 1.0,
        "transferred": 1.0,
    }
    assert result.max_reward_counts == {"0": 0, "1": 0, "2": 0, "3": 0, "4": 1}
    record = result.episodes[0]
    # stop_on_success: the episode ends at the step the cube is transferred.
    assert record["success"] and record["steps"] == record["first_success_step"] < 200
    assert record["stage"] == "transferred" and record["video"] == "videos/episode_000_seed_1.mp4"
    written = json.loads((tmp_path / "eval_summary.json").read_text())
    assert written["success_rate"] == 1.0 and written["seeds"] == [1] and written["render_quality"] == "fast"
    lines = (tmp_path / "eval_episodes.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == result.episodes
    with av.open(str(tmp_path / record["video"])) as container:
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(frames) == record["steps"] + 1 and frames[0].shape == (48, 64, 3)  # reset frame + every step


def test_parallel_workers_give_the_same_records(transfer_recording, small):
    """Two environments in worker processes, three seeds: the same per-episode results as one in-process env."""
    _, folder = transfer_recording
    policy = ReplayPolicy.from_episode(folder / "episode_0.hdf5")
    settings = {**small, "episode_length": 120, "seeds": [0, 1, 7], "progress": False}
    serial = evaluate(policy, "transfer_cube", workers=1, **settings)
    parallel = evaluate(policy, "transfer_cube", workers=2, **settings)
    assert serial.episodes == parallel.episodes
    assert [r["seed"] for r in serial.episodes] == [0, 1, 7]
    assert serial.episodes[0]["max_reward"] >= 2  # its own scene: the cube is at least lifted by step 120
    assert parallel.settings["workers"] == 2


def test_confuser_success_needs_the_target(sim_backend, small):
    """A policy that hands over the confuser cube earns nothing: success and every stage stay at 0."""
    from kinema.robot_data.sim._env import EndEffectorEnv

    config = _record.RecordConfig("transfer_cube_confuser", cameras=(), episode_length=200)
    env = EndEffectorEnv("transfer_cube_confuser")
    wrong, _, _ = _record.scripted_rollout(env, config, 10, pick_object=1)
    right, _, _ = _record.scripted_rollout(env, config, 10, pick_object=0)
    task = "transfer_cube_confuser"
    missed = evaluate(ReplayPolicy(wrong), task, seeds=[10], progress=False, **small)
    assert missed.success_rate == 0.0 and missed.episodes[0]["stage"] == "none"
    assert set(missed.stage_rates.values()) == {0.0}
    hit = evaluate(ReplayPolicy(right), task, seeds=[10], progress=False, **small)
    assert hit.success_rate == 1.0
    np.testing.assert_allclose(hit.episodes[0]["environment_state"], missed.episodes[0]["environment_state"])


class _Broken:
    """A policy whose actions are wrong in a chosen way, to check the harness's errors."""

    def __init__(self, make):
        self.make = make
        self.calls = 0

    def reset(self, num_envs):
        self.num_envs = num_envs

    def act(self, observation):
        self.calls += 1
        assert observation["qpos"].shape == (self.num_envs, 14) and observation["qpos"].dtype == np.float32
        assert observation["images"]["top"].shape == (self.num_envs, 48, 64, 3)
        np.testing.assert_array_equal(observation["step"], 0)
        return self.make(self.num_envs)


def test_bad_policy_actions_fail_at_the_first_step(sim_backend, small):
    wrong_shape = _Broken(lambda n: np.zeros((n, 16)))
    with pytest.raises(PolicyError, match=r"shape \(1, 14\) for 1 environments, got \(1, 16\)"):
        evaluate(wrong_shape, "transfer_cube", seeds=[0], progress=False, **small)
    assert wrong_shape.calls == 1

    def nan_row(n):
        actions = np.zeros((n, 14))
        actions[0, 3] = np.nan
        return actions

    with pytest.raises(PolicyError, match=r"NaN or Inf in rows \[0\]"):
        evaluate(_Broken(nan_row), "transfer_cube", seeds=[0], progress=False, **small)


def test_bad_arguments_fail_before_any_work(sim_backend, tmp_path):
    policy = ReplayPolicy(np.zeros((2, 14)))
    with pytest.raises(PolicyError, match="lacks reset"):
        evaluate(object(), "transfer_cube", seeds=[0])
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        evaluate(policy, "stack")
    with pytest.raises(ValueError, match=r"2 evaluation seeds are also training seeds \(3, 4\)"):
        evaluate(policy, "transfer_cube", seeds=[2, 3, 4], exclude_seeds=[3, 4, 5])
    with pytest.raises(ValueError, match="seeds must be distinct"):
        evaluate(policy, "transfer_cube", seeds=[1, 1])
    with pytest.raises(ValueError, match="videos need an out_dir"):
        evaluate(policy, "transfer_cube", seeds=[1], videos=1)
