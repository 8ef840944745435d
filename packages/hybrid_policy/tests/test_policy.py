import math

import numpy as np
import pytest
import torch

from kinema.hybrid_policy import HybridPolicy, HybridPolicyModel
from kinema.hybrid_policy.testing import tiny_config
from kinema.robot_data.sim.dock import DockEnv


def observation(num_envs: int, step) -> dict:
    env = DockEnv(num_envs)
    env.reset(np.arange(num_envs), np.arange(num_envs))
    obs = env.observe()
    obs["step"] = np.asarray(step, dtype=np.int64)
    return obs


class Scripted(HybridPolicy):
    """predict_chunk returns known chunks: query k gives chunk[i] = (10 k + i) on every action dim."""

    def predict_chunk(self, observation, rows=None, *, z=None):
        rows = np.arange(len(observation["qpos"])) if rows is None else rows
        k = self.queries
        self.queries += 1
        chunk = (10.0 * k + torch.arange(8.0)).view(1, 8, 1).expand(len(rows), 8, 2)
        return chunk.clone()


def test_chunked_execution_queries_every_n_action_steps():
    policy = Scripted(HybridPolicyModel(tiny_config()), device="cpu", n_action_steps=4)
    policy.reset(2)
    actions = [policy.act(observation(2, [t, t]))[0, 0] for t in range(8)]
    assert actions == [0, 1, 2, 3, 10, 11, 12, 13]
    assert policy.queries == 2


def test_temporal_ensembling_averages_overlapping_chunks():
    m = 0.5
    policy = Scripted(HybridPolicyModel(tiny_config()), device="cpu", temporal_ensemble_coeff=m)
    policy.reset(1)
    first = policy.act(observation(1, [0]))[0, 0]
    second = policy.act(observation(1, [1]))[0, 0]
    third = policy.act(observation(1, [2]))[0, 0]
    w = [1.0, math.exp(-m), math.exp(-2 * m)]  # the oldest prediction weighs 1
    assert first == pytest.approx(0.0)
    assert second == pytest.approx((w[0] * 1 + w[1] * 10) / (w[0] + w[1]))
    assert third == pytest.approx((w[0] * 2 + w[1] * 11 + w[2] * 20) / sum(w))
    fresh = policy.act(observation(1, [0]))[0, 0]  # a new episode forgets the history
    assert fresh == pytest.approx(30.0)  # the 4th chunk alone
    assert policy.executor.ensembler.counts[0].tolist() == [1] * 7 + [0]


def test_policy_runs_on_the_dock_task_and_is_reproducible_by_seed():
    torch.manual_seed(0)
    model = HybridPolicyModel(tiny_config(variant="C"))
    a = HybridPolicy(model, device="cpu", seed=7).predict_chunk(observation(3, [0, 0, 0]))
    b = HybridPolicy(model, device="cpu", seed=7).predict_chunk(observation(3, [0, 0, 0]))
    assert a.shape == (3, 8, 2) and torch.equal(a, b)


def test_policy_rejects_zero_sampling_steps_and_unknown_sampler():
    model = HybridPolicyModel(tiny_config())
    with pytest.raises(ValueError, match="num_inference_steps"):
        HybridPolicy(model, device="cpu", num_inference_steps=0)
    with pytest.raises(ValueError, match="sampler"):
        HybridPolicy(model, device="cpu", sampler="euler")
