import numpy as np
import pytest

from kinema.hybrid_policy._ablation import _side_labels
from kinema.robot_data.sim.dock import (
    SIDES,
    evaluate,
    expert_episode,
    read_recording,
    record_episodes,
    sample_scenes,
)


def test_recording_pairs_each_scene_left_and_right(dock_data):
    manifest = read_recording(dock_data)
    assert manifest["sides"] == ["left", "right", "left", "right"]
    assert manifest["seeds"][0] == manifest["seeds"][1] and manifest["seeds"][2] == manifest["seeds"][3]


def test_recording_refuses_to_overwrite(dock_data):
    with pytest.raises(FileExistsError, match="overwrite"):
        record_episodes(dock_data, 2, progress=False)


def test_expert_docks_on_both_sides_without_touching_the_wall():
    for side in SIDES:
        episode = expert_episode(3, side)
        assert episode is not None and episode["side"] == side
        scene = sample_scenes([3])
        x = episode["qpos"][:, 0]
        assert (x.min() < scene.wall[0, 0] - 0.3) == (side == "left")


def test_evaluate_scores_the_expert_and_a_straight_line():
    # the expert of the evaluation scenes (seeds 100000..) replays to the dock
    result = evaluate(_SeedReplay(), 6, progress=False)
    assert result.success_rate == 1.0 and result.modes["counts"]["right"] == 6

    class Up:  # the average of the two modes: straight up, into the wall
        def reset(self, n):
            pass

        def act(self, observation):
            return observation["qpos"] + np.array([0.0, 0.05])

    result = evaluate(Up(), 6, progress=False)
    assert result.collision_rate == 1.0 and result.success_rate == 0.0


class _SeedReplay:
    """The scripted expert of each evaluation scene (found by its environment state), around the right."""

    def reset(self, num_envs):
        self.paths = {}

    def act(self, observation):
        env_state = observation["environment_state"]
        actions = np.zeros((len(observation["step"]), 2))
        for row, step in enumerate(observation["step"]):
            if step == 0:
                seed = next(
                    s
                    for s in range(100_000, 100_010)
                    if np.allclose(sample_scenes([s]).environment_state()[0], env_state[row])
                )
                self.paths[row] = expert_episode(seed, "right")["action"]
            actions[row] = self.paths[row][min(step, len(self.paths[row]) - 1)]
        return actions


def test_side_labels_by_the_widest_point_of_the_chunk():
    chunks = np.zeros((1, 3, 5, 2))
    chunks[0, 0, :, 0] = [0.5, 0.3, 0.1, 0.3, 0.5]  # round the left end, back to the dock
    chunks[0, 1, :, 0] = [0.5, 0.7, 0.9, 0.7, 0.5]
    chunks[0, 2, :, 0] = 0.52  # straight up: the average of the two
    assert _side_labels(chunks, np.array([0.5])) == [["left", "right", "middle"]]


def test_old_dock_path_warns_and_re_exports():
    import importlib
    import sys

    import kinema.robot_data.sim.dock as moved

    sys.modules.pop("kinema.hybrid_policy.dock", None)
    with pytest.warns(DeprecationWarning, match="kinema.robot_data.sim.dock"):
        old = importlib.import_module("kinema.hybrid_policy.dock")
    assert old.record_episodes is moved.record_episodes and old.DockEnv is moved.DockEnv
