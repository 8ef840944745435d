"""Saving and loading: identical actions after a round trip, policy.json for eval-sim, other configs refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from kinema.act_policy import ACT, ACTConfig, load_act, load_policy, save_act
from kinema.act_policy.testing import fake_observation, tiny_config


def test_round_trip_gives_identical_actions(tmp_path):
    torch.manual_seed(0)
    config = tiny_config(environment_state_dim=2).with_remedies("film", "aux_head")
    model = ACT(config)
    with torch.no_grad():  # non-trivial weights and statistics everywhere, FiLM included
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    model.set_normalization(
        {
            "qpos": {"mean": np.arange(14.0), "std": np.full(14, 2.0)},
            "action": {"mean": np.full(14, 0.5), "std": np.full(14, 3.0)},
            "environment_state": {"mean": np.array([0.1, 0.5]), "std": np.array([0.05, 0.05])},
        }
    )
    model.eval()
    save_act(model, tmp_path / "ckpt", task="transfer_cube", image_size=(32, 32), render_quality="fast")
    loaded = load_act(tmp_path / "ckpt")
    assert loaded.config == config
    obs = fake_observation(config, 2, [0, 0])
    from kinema.act_policy import ACTPolicy

    a = ACTPolicy(model, device="cpu")
    b = load_policy(tmp_path / "ckpt", device="cpu")
    for policy in (a, b):
        policy.reset(2)
    for t in range(3):
        obs["step"] = np.array([t, t])
        np.testing.assert_array_equal(a.act(obs), b.act(obs))
    manifest = json.loads((tmp_path / "ckpt" / "policy.json").read_text())
    assert manifest["loader"] == "kinema.act_policy:load_sim_policy"
    assert manifest["task"] == "transfer_cube" and manifest["image_size"] == [32, 32]
    assert manifest["cameras"] == ["top"] and manifest["render_quality"] == "fast"


def test_eval_sim_loader_reads_the_checkpoint(tmp_path):
    """kinema.robot_data.sim's own loader (what `kinema-data eval-sim --checkpoint` runs) builds the policy."""
    from kinema.robot_data.sim import load_policy as sim_load_policy

    model = ACT(tiny_config()).eval()
    save_act(model, tmp_path, task="synthetic")  # not a sim task: left out of policy.json
    policy, manifest = sim_load_policy(tmp_path, device="cpu")
    assert manifest["task"] is None
    assert type(policy).__name__ == "ACTPolicy" and policy.model.config == model.config


def test_checkpoint_from_another_config_is_refused(tmp_path):
    config = tiny_config(environment_state_dim=2)
    save_act(ACT(config), tmp_path / "a")
    with pytest.raises(ValueError, match=r"made with another config \(chunk_size: checkpoint 8, expected 16"):
        load_act(tmp_path / "a", expect=dataclasses.replace(config, chunk_size=16, n_action_steps=16))
    # execution settings may differ: the weights are the same
    load_act(tmp_path / "a", expect=dataclasses.replace(config, n_action_steps=2))
    # weights that do not fit the folder's config: every mismatch is named
    dataclasses.replace(config, dim_model=64, coord_aux_head=True).save(tmp_path / "a")
    with pytest.raises(ValueError, match=r"do not fit this ACTConfig.*missing \['coord_head.0.bias'.*shape"):
        load_act(tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(FileNotFoundError, match="no ACT config"):
        load_act(tmp_path / "b")
    (tmp_path / "b" / "act_config.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match=r'expected a JSON object with "format": "kinema\.act_config"'):
        load_act(tmp_path / "b")


def test_execution_overrides_on_load(tmp_path):
    save_act(ACT(tiny_config()), tmp_path)
    policy = load_policy(tmp_path, device="cpu", temporal_ensemble_coeff=0.01)
    assert policy.temporal_ensemble_coeff == 0.01 and policy.n_action_steps == 1
    policy = load_policy(tmp_path, device="cpu", n_action_steps=2)
    assert policy.temporal_ensemble_coeff is None and policy.n_action_steps == 2
    assert ACTConfig.load(tmp_path).n_action_steps == 8


def test_lerobot_observation_names_give_the_same_actions():
    """A LeRobot-style observation dict (observation.state, observation.images.<cam>, observation.environment_state)
    drives the policy exactly as kinema's names do; a value given under both names is refused."""
    from kinema.act_policy import ACTPolicy

    torch.manual_seed(0)
    config = tiny_config(environment_state_dim=2)
    model = ACT(config).eval()
    obs = fake_observation(config, 2, [0, 0])
    lerobot = {"observation.state": obs["qpos"], "observation.environment_state": obs["environment_state"],
               **{f"observation.images.{c}": v for c, v in obs["images"].items()},
               **{k: v for k, v in obs.items() if k not in ("qpos", "environment_state", "images")}}  # fmt: skip
    a, b = ACTPolicy(model, device="cpu"), ACTPolicy(model, device="cpu")
    for policy in (a, b):
        policy.reset(2)
    for t in range(3):
        obs["step"] = lerobot["step"] = np.array([t, t])
        np.testing.assert_array_equal(a.act(obs), b.act(lerobot))
    with pytest.raises(ValueError, match="'qpos' given twice"):
        b.act(lerobot | {"qpos": obs["qpos"]})
