"""The policy protocol: action validation, the replay policy and the policy.json loader (no simulator)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kinema.robot_data import write_policy_episode
from kinema.robot_data.sim import PolicyError, ReplayPolicy, load_policy, write_policy_manifest
from kinema.robot_data.sim._policy import check_policy, read_policy_manifest, validate_actions


def _episode(path, steps=5, seed=11):
    actions = np.arange(steps * 14, dtype=np.float64).reshape(steps, 14) / 100
    write_policy_episode(
        path,
        qpos=np.zeros((steps, 14)),
        qvel=np.zeros((steps, 14)),
        action=actions,
        images={"top": np.zeros((steps, 8, 8, 3), np.uint8)},
        attrs={"sim": True, "fps": 50, "task": "transfer_cube", "seed": seed},
    )
    return actions


def test_validate_actions_shapes_and_values():
    good = np.zeros((3, 14))
    assert validate_actions(good, 3).dtype == np.float64
    np.testing.assert_array_equal(validate_actions(torch.ones(2, 14), 2), np.ones((2, 14)))
    with pytest.raises(PolicyError, match=r"shape \(3, 14\) for 3 environments, got \(3, 7\)"):
        validate_actions(np.zeros((3, 7)), 3)
    with pytest.raises(PolicyError, match=r"shape \(2, 14\) for 2 environments, got \(14,\)"):
        validate_actions(np.zeros(14), 2)
    bad = good.copy()
    bad[1, 4] = np.nan
    bad[2, 0] = np.inf
    with pytest.raises(PolicyError, match=r"NaN or Inf in rows \[1, 2\] \(of 3 environments\)"):
        validate_actions(bad, 3)
    # Rows of finished environments are ignored.
    assert validate_actions(bad, 3, active=np.array([True, False, False])).shape == (3, 14)
    with pytest.raises(PolicyError, match="must be numeric"):
        validate_actions([["a"] * 14], 1)


def test_check_policy_names_missing_methods():
    class OnlyAct:
        def act(self, observation):
            return None

    with pytest.raises(PolicyError, match=r"OnlyAct is not a sim policy: it lacks reset\(\)"):
        check_policy(OnlyAct())
    check_policy(ReplayPolicy(np.zeros((2, 14))))


def test_replay_policy_plays_by_step(tmp_path):
    actions = _episode(tmp_path / "episode.hdf5")
    policy = ReplayPolicy.from_episode(tmp_path / "episode.hdf5")
    assert (policy.seed, policy.task) == (11, "transfer_cube")
    policy.reset(3)
    out = policy.act({"step": np.array([0, 4, 9])})  # 9 is past the end: the last action is held
    np.testing.assert_allclose(out, actions[[0, 4, 4]], rtol=1e-6)
    with pytest.raises(PolicyError, match=r"ReplayPolicy actions must have shape \(T, 14\)"):
        ReplayPolicy(np.zeros((4, 13)))
    with pytest.raises(FileNotFoundError, match=r"episode file .*missing.hdf5 does not exist"):
        ReplayPolicy.from_episode(tmp_path / "missing.hdf5")


def test_policy_manifest_round_trip_and_loading(tmp_path):
    actions = _episode(tmp_path / "demo.hdf5")
    path = write_policy_manifest(
        tmp_path,
        "kinema.robot_data.sim:load_replay_policy",
        task="transfer_cube",
        image_size=(48, 64),
        cameras=("top",),
        render_quality="fast",
        options={"episode": "demo.hdf5"},
    )
    manifest = json.loads(path.read_text())
    assert manifest == {
        "format": "kinema-sim-policy",
        "version": 1,
        "loader": "kinema.robot_data.sim:load_replay_policy",
        "task": "transfer_cube",
        "image_size": [48, 64],
        "cameras": ["top"],
        "render_quality": "fast",
        "options": {"episode": "demo.hdf5"},
    }
    policy, loaded = load_policy(tmp_path, device="cpu")
    assert loaded == manifest
    np.testing.assert_allclose(policy.actions, actions, rtol=1e-6)


def test_policy_manifest_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint directory .*nowhere does not exist"):
        load_policy(tmp_path / "nowhere")
    with pytest.raises(
        FileNotFoundError, match=r"policy.json does not exist: a checkpoint evaluated by eval-sim"
    ):
        load_policy(tmp_path)
    (tmp_path / "policy.json").write_text("{not json")
    with pytest.raises(PolicyError, match="is not valid JSON"):
        read_policy_manifest(tmp_path)
    with pytest.raises(PolicyError, match=r'"loader" must be "package.module:function", got \'nocolon\''):
        write_policy_manifest(tmp_path, "nocolon")
    write_policy_manifest(tmp_path, "kinema_not_installed.module:load")
    with pytest.raises(PolicyError, match=r"'kinema_not_installed.module' named in .*cannot be imported"):
        load_policy(tmp_path)
    write_policy_manifest(tmp_path, "kinema.robot_data.sim:no_such_loader")
    with pytest.raises(PolicyError, match="has no callable 'no_such_loader'"):
        load_policy(tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        write_policy_manifest(tmp_path, "a.b:c", task="stack_blocks")
