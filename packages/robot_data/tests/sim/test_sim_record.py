"""Scripted demonstrations: each task records and reads back, determinism, overwrite, interruption, confuser."""

from __future__ import annotations

import json

import numpy as np
import pytest

import kinema.robot_data as robot_data
from kinema.robot_data import read_policy_episode
from kinema.robot_data.sim import RecordingError, _record, record_episodes, sample_object_poses


def test_recorded_episode_reads_back(transfer_recording):
    from gym_aloha.constants import START_ARM_POSE  # 16 joints: per arm 6 + two finger slides

    start_action = np.array(
        [*START_ARM_POSE[:6], 0.0, *START_ARM_POSE[8:14], 0.0]
    )  # grippers commanded closed
    summary, folder = transfer_recording
    assert sorted(p.name for p in folder.iterdir()) == ["episode_0.hdf5", "episode_1.hdf5", "recording.json"]
    assert summary.seeds == [0, 1] and summary.attempts == 2 and summary.replay_successes == 2
    episode = read_policy_episode(folder / "episode_0.hdf5")
    assert episode["qpos"].shape == episode["qvel"].shape == episode["action"].shape == (200, 14)
    assert episode["images"]["top"].shape == (200, 48, 64, 3)
    attrs = episode["attrs"]
    assert (attrs["sim"], attrs["fps"], attrs["task"], attrs["seed"]) == (True, 50, "transfer_cube", 0)
    assert attrs["replay_max_reward"] == 4 and attrs["render_quality"] == "fast"
    # environment_state: the cube's initial (x, y), on every row.
    cube_xy = sample_object_poses("transfer_cube", 0)[0, :2]
    np.testing.assert_allclose(episode["environment_state"], np.tile(cube_xy, (200, 1)), rtol=1e-6)
    # The first action holds the start pose (grippers as commanded: closed), and observation 0 is that pose.
    np.testing.assert_allclose(episode["action"][0], start_action, atol=1e-5)
    np.testing.assert_allclose(episode["qpos"][0, :6], start_action[:6], atol=1e-5)
    manifest = json.loads((folder / "recording.json").read_text())
    assert manifest["episodes"] == ["episode_0.hdf5", "episode_1.hdf5"] and manifest["seeds"] == [0, 1]
    assert manifest["format"] == "kinema-sim-recording" and manifest["image_size"] == [48, 64]


@pytest.mark.parametrize("task", ["insertion", "transfer_cube_confuser"])
def test_other_tasks_record_and_read_back(task, sim_backend, small, tmp_path):
    summary = record_episodes(task, 1, tmp_path, seed=3, progress=False, **small)
    episode = read_policy_episode(summary.episodes[0])
    poses = sample_object_poses(task, summary.seeds[0])
    expected = poses[:, :2].reshape(-1) if task == "insertion" else poses[0, :2]  # confuser: the target only
    np.testing.assert_allclose(episode["environment_state"][-1], expected, rtol=1e-6)
    assert episode["attrs"]["task"] == task and episode["attrs"]["replay_max_reward"] == 4
    assert episode["images"]["top"].shape == (200, 48, 64, 3)


def test_same_seed_same_recording_whatever_the_workers(transfer_recording, small, tmp_path):
    """Two worker processes produce byte-identical arrays to the in-process recording of the same seeds."""
    _, folder = transfer_recording
    summary = record_episodes("transfer_cube", 2, tmp_path, workers=2, seed=0, progress=False, **small)
    assert summary.seeds == [0, 1]
    for index in range(2):
        ours = read_policy_episode(tmp_path / f"episode_{index}.hdf5")
        reference = read_policy_episode(folder / f"episode_{index}.hdf5")
        for key in ("qpos", "qvel", "action", "environment_state"):
            np.testing.assert_array_equal(ours[key], reference[key])
        np.testing.assert_array_equal(ours["images"]["top"], reference["images"]["top"])


def test_scripted_success_on_several_seeds(sim_backend):
    """Each task's script succeeds in joint-space replay on seeds 0..4 at full length (no rendering).

    Measured over 30 seeds: transfer-cube 30/30, insertion 27/30; seeds 0..4 all succeed for every task.
    """
    from kinema.robot_data.sim._env import AlohaSimEnv, EndEffectorEnv

    for task in ("transfer_cube", "insertion", "transfer_cube_confuser"):
        config = _record.RecordConfig(task, cameras=())
        ee_env = EndEffectorEnv(task)
        joint_env = AlohaSimEnv(task, cameras=(), terminate_on_success=False)
        for seed in range(5):
            actions, _, poses = _record.scripted_rollout(ee_env, config, seed)
            assert actions.shape == (400, 14)
            replayed = _record.replay(joint_env, seed, actions, poses)
            assert (task, seed, int(replayed["reward"].max())) == (task, seed, 4)


def test_confuser_moving_the_wrong_cube_is_no_success(sim_backend):
    """The script aimed at the confuser lifts and hands over that cube, and the target's reward stays 0."""
    from kinema.robot_data.sim._env import EndEffectorEnv

    env = EndEffectorEnv("transfer_cube_confuser")
    config = _record.RecordConfig("transfer_cube_confuser", cameras=(), episode_length=200)
    _, reward, poses = _record.scripted_rollout(env, config, 10, pick_object=1)
    positions = env.object_positions()
    assert reward == 0
    assert positions[1, 2] > 0.1  # the confuser ends up in the air (held by the left gripper)
    np.testing.assert_allclose(positions[0, :2], poses[0, :2], atol=0.01)  # the target never moved
    _, reward, _ = _record.scripted_rollout(env, config, 10, pick_object=0)
    assert reward == 4


def test_existing_recording_is_refused_unless_overwrite(transfer_recording, tmp_path):
    _, folder = transfer_recording
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with pytest.raises(
        FileExistsError, match=r"already holds a recording .*pass overwrite=True \(--overwrite\)"
    ):
        record_episodes("transfer_cube", 1, folder, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before  # untouched


def test_overwrite_replaces_the_whole_recording(sim_backend, small, tmp_path, monkeypatch):
    (tmp_path / "episode_7.hdf5").write_bytes(b"an older recording")
    (tmp_path / "notes.txt").write_text("kept")
    summary = record_episodes("transfer_cube", 1, tmp_path, seed=5, overwrite=True, progress=False, **small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0.hdf5", "notes.txt", "recording.json"]
    assert summary.seeds == [5]


def test_interrupted_recording_leaves_only_complete_episodes(sim_backend, small, tmp_path, monkeypatch):
    writer = robot_data.write_policy_episode
    calls = []

    def interrupted(path, **arrays):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second episode is being written
        return writer(path, **arrays)

    monkeypatch.setattr(robot_data, "write_policy_episode", interrupted)
    with pytest.raises(KeyboardInterrupt):
        record_episodes("transfer_cube", 3, tmp_path, progress=False, **small)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode_0.hdf5"]  # no partial folder, no manifest
    assert read_policy_episode(tmp_path / "episode_0.hdf5")["attrs"]["seed"] == 0


def test_too_many_failed_seeds_is_an_error(sim_backend, tmp_path, monkeypatch):
    monkeypatch.setattr(_record, "record_attempt", lambda config, seed, partial: _record.Attempt(seed, 2, 2))
    with pytest.raises(
        RecordingError, match=r"only 0 of 2 transfer_cube demonstrations succeeded in 3 seeds \(4..6\)"
    ):
        record_episodes("transfer_cube", 2, tmp_path, seed=4, max_attempts=3, progress=False)


def test_bad_arguments_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'stack'"):
        record_episodes("stack", 1, tmp_path)
    with pytest.raises(ValueError, match="episodes must be an integer >= 1, got 0"):
        record_episodes("transfer_cube", 0, tmp_path)
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got -2"):
        record_episodes("transfer_cube", 1, tmp_path, workers=-2)
    with pytest.raises(ValueError, match="render_quality must be one of full, fast"):
        record_episodes("transfer_cube", 1, tmp_path, render_quality="low")
    assert list(tmp_path.iterdir()) == []
