"""Chunk execution and temporal ensembling, per row, behind the SimPolicy protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kinema.act_policy import ACT, ACTPolicy, TemporalEnsembler
from kinema.act_policy._execution import ChunkExecutor, ensemble_weights
from kinema.act_policy.testing import fake_observation, tiny_config


def test_ensemble_weights_are_exp_minus_m_i_oldest_first():
    weights = ensemble_weights(0.01, 4)
    assert weights.tolist() == pytest.approx([1.0, math.exp(-0.01), math.exp(-0.02), math.exp(-0.03)])


def _direct(chunks_by_time: list[torch.Tensor], t: int, m: float) -> torch.Tensor:
    """The ensembled action at step t from its definition: every chunk queried at s <= t that still covers t
    (t - s < C), weighted exp(-m i) with i = 0 for the oldest of them."""
    chunk_size = chunks_by_time[0].shape[0]
    covering = [s for s in range(t + 1) if t - s < chunk_size]
    weights = [math.exp(-m * i) for i in range(len(covering))]
    total = sum(w * chunks_by_time[s][t - s] for w, s in zip(weights, covering))
    return total / sum(weights)


def test_temporal_ensembling_matches_the_direct_computation():
    torch.manual_seed(0)
    chunk, dims, m = 5, 3, 0.3  # a large m so that wrong weights would show
    ensembler = TemporalEnsembler(m, chunk)
    ensembler.reset(2, dims)
    history = {0: [], 1: []}
    for t in range(12):
        if t == 7:  # row 1 starts a new episode: its history is forgotten
            ensembler.reset_rows(torch.tensor([False, True]))
            history[1] = []
        chunks = torch.randn(2, chunk, dims, dtype=torch.float64)
        for row in (0, 1):
            history[row].append(chunks[row])
        actions = ensembler.update(chunks, torch.tensor([0, 1]))
        torch.testing.assert_close(actions[0], _direct(history[0], t, m))
        torch.testing.assert_close(actions[1], _direct(history[1], len(history[1]) - 1, m))


def test_chunked_execution_plays_n_action_steps_then_queries():
    executor = ChunkExecutor(chunk_size=4, n_action_steps=3)
    executor.reset(2, 1)
    active = torch.tensor([True, True])
    played = []
    queries = []
    for t in range(7):
        if t == 0:
            executor.start_rows(torch.tensor([True, True]))
        if t == 2:
            executor.start_rows(torch.tensor([False, True]))  # row 1 starts a new episode at t = 2
        need = executor.needs_query() & active
        rows = torch.nonzero(need).flatten()
        queries.append(rows.tolist())
        chunks = (
            torch.stack([torch.arange(4.0) + 10 * t + 100 * r for r in rows.tolist()]).unsqueeze(-1)
            if len(rows)
            else None
        )
        played.append(executor.step(chunks, rows, active)[:, 0].tolist())
    assert queries == [[0, 1], [], [1], [0], [], [1], [0]]
    assert [p[0] for p in played] == [0, 1, 2, 30, 31, 32, 60]
    assert [p[1] for p in played] == [100, 101, 120, 121, 122, 150, 151]


def test_policy_batches_rows_and_resets_each_row():
    config = tiny_config(environment_state_dim=2, n_action_steps=4)
    policy = ACTPolicy(ACT(config), device="cpu")
    policy.reset(3)
    obs = fake_observation(config, 3, [0, 0, 0])
    first = policy.act(obs)
    assert first.shape == (3, 14) and policy.queries == 1
    obs["step"] = np.array([1, 1, 1])
    policy.act(obs)
    assert policy.queries == 1  # still inside the chunk
    obs["step"] = np.array([2, 0, 2])  # row 1 restarts: only it is queried
    calls = []
    original = policy._predict
    policy._predict = lambda batch: (calls.append(batch["qpos"].shape[0]), original(batch))[1]
    policy.act(obs)
    assert calls == [1]
    obs["step"] = np.array([3, 1, 3])
    obs["active"] = np.array([True, True, False])
    policy.act(obs)
    obs["step"] = np.array([4, 2, 3])
    policy.act(obs)  # row 0 needs a chunk, row 2 is inactive and is not queried
    assert calls == [1, 1]


def test_policy_actions_are_the_chunk_in_order_and_match_predict():
    torch.manual_seed(0)
    config = tiny_config(environment_state_dim=2)
    model = ACT(config)
    policy = ACTPolicy(model, device="cpu")
    obs = fake_observation(config, 2, [0, 0])
    chunk = model.eval().predict(policy._inputs(obs, np.arange(2))).double()  # (2, 8, 14)
    policy.reset(2)
    for t in range(8):
        obs["step"] = np.array([t, t])
        np.testing.assert_allclose(policy.act(obs), chunk[:, t].numpy(), rtol=1e-6)
    assert policy.queries == 1


def test_policy_with_temporal_ensembling_queries_every_step():
    config = tiny_config(environment_state_dim=2)
    policy = ACTPolicy(ACT(config), device="cpu", temporal_ensemble_coeff=0.01)
    assert policy.n_action_steps == 1
    policy.reset(2)
    obs = fake_observation(config, 2, [0, 0])
    for t in range(3):
        obs["step"] = np.array([t, t])
        assert np.isfinite(policy.act(obs)).all()
    assert policy.queries == 3
    with pytest.raises(ValueError, match="must be 1"):
        ACTPolicy(ACT(config), device="cpu", temporal_ensemble_coeff=0.01, n_action_steps=4)


def test_policy_names_missing_inputs():
    config = tiny_config(environment_state_dim=2, camera_names=("top", "angle"))
    policy = ACTPolicy(ACT(config), device="cpu")
    obs = fake_observation(tiny_config(environment_state_dim=2), 1, [0])
    with pytest.raises(
        ValueError, match=r"missing camera\(s\) \['angle'\] the model was trained on; has \['top'\]"
    ):
        policy.act(obs)
    obs = fake_observation(config, 1, [0])
    del obs["environment_state"]
    with pytest.raises(ValueError, match=r"observation\['environment_state'\]: missing"):
        policy.act(obs)
