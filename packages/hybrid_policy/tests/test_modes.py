"""Two modes from one observation: the dock scene demonstrated around the left and around the right of the wall,
both demonstrations starting from the same observation (same image, qpos and environment_state).

A deterministic regressor trained with the squared error (ACT's network without its CVAE) must predict the
mean of the two demonstrated chunks for that observation, and the mean of "around the left" and "around the
right" runs straight into the wall. The hybrid (variant C) trained on the same two samples draws chunks near
one mode or the other.

Both models train on the two start samples only (one observation, two targets). On whole episodes the later
observations tell the sides apart, and a regressor's start prediction is pulled toward one side by its
neighbours (measured earlier with ACT's L1 loss: right after 100 steps, left after 400); the L1 optimum for
two targets is any point between them, the squared-error optimum only the mean. Without the CVAE, ACT's L1 has
no pull toward the middle, so the average shown here is the squared-error regressor's, not ACT's own loss.

C chunk steps (32: the mean path reaches the wall within them), K samples.
"""

import numpy as np
import pytest
import torch

from kinema.act_policy import load_episodes
from kinema.hybrid_policy import HybridPolicyModel
from kinema.hybrid_policy._data import chunk_batch
from kinema.hybrid_policy.testing import dock_episodes, tiny_config
from kinema.robot_data import compute_policy_stats
from kinema.robot_data.sim.dock import DockScenes, collides

CHUNK = 32
SAMPLES = 32


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(files, the start batch of the left and of the right demonstration of one scene, the scene's seed)."""
    root = dock_episodes(tmp_path_factory.mktemp("pair"), 2)
    files = sorted(root.glob("*.hdf5"))
    config = tiny_config(chunk_size=CHUNK, n_action_steps=CHUNK)
    memory = load_episodes(files, config, workers=1, progress=False)
    starts = torch.tensor([0, int(memory.episode_end[0])])  # step 0 of episode 0 (left) and 1 (right)
    batch = chunk_batch(memory, starts, CHUNK)
    assert not batch["is_pad"].any()  # both chunks are real steps
    return files, batch


def lateral(chunks: torch.Tensor, batch: dict) -> np.ndarray:
    """x of each chunk step relative to the start (..., C): < 0 toward the left gap, > 0 toward the right."""
    return (chunks[..., 0] - batch["qpos"][0, 0]).numpy()


def replay_collides(chunk: torch.Tensor, batch: dict) -> bool:
    """Whether the agent, moved along ``chunk`` (C, 2) from the start, touches the scene's wall on the way
    (positions interpolated between chunk points at 1/4 step, so a step cannot jump the wall's corner)."""

    env = batch["environment_state"][0].double().numpy()
    start = batch["qpos"][0].double().numpy()
    path = np.concatenate([start[None], chunk.double().numpy()])  # (C + 1, 2)
    fine = np.concatenate([path[i] + np.outer(np.linspace(0, 1, 4, endpoint=False), path[i + 1] - path[i])
                           for i in range(len(path) - 1)])  # fmt: skip
    scenes = DockScenes(
        start=np.repeat(start[None], len(fine), 0),
        dock=np.repeat(env[None, :2], len(fine), 0),
        wall=np.repeat(env[None, 2:], len(fine), 0),
        seeds=np.zeros(len(fine), np.int64),
    )
    return bool(collides(fine, scenes).any())


def test_the_two_demonstrations_start_alike_and_go_both_ways(pair):
    _, batch = pair
    for key in ("image", "qpos", "environment_state"):
        assert torch.equal(batch[key][0], batch[key][1]), key  # one observation ...
    modes = lateral(batch["action"], batch)  # (2, C)
    assert modes[0].min() < -0.2 and modes[1].max() > 0.2  # ... followed by the left and by the right path
    assert not replay_collides(batch["action"][0], batch) and not replay_collides(batch["action"][1], batch)
    assert replay_collides(batch["action"].mean(0), batch)  # their mean runs into the wall


def test_a_squared_error_regressor_averages_the_modes_into_the_wall(pair):
    from kinema.act_policy import ACT
    from kinema.act_policy.testing import tiny_config as tiny_act

    files, batch = pair
    torch.manual_seed(0)
    model = ACT(
        tiny_act(state_dim=2, action_dim=2, environment_state_dim=4, chunk_size=CHUNK, n_action_steps=CHUNK,
                 use_vae=False, dropout=0.0)
    )  # fmt: skip
    model.set_normalization(compute_policy_stats(files, strict=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    inputs = {k: v for k, v in batch.items() if k not in ("action", "is_pad")}
    target = model.normalize("action", batch["action"].float())
    for _ in range(150):
        loss = (model(inputs)["actions"] - target).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    chunks = torch.stack([model.predict(batch) for _ in range(2)])
    assert torch.equal(chunks[0], chunks[1])  # deterministic: nothing to sample
    assert torch.equal(chunks[0][0], chunks[0][1])  # one observation, one chunk
    predicted = lateral(chunks[0][0], batch)  # (C,)
    modes = lateral(batch["action"], batch)  # (2, C)
    separation = np.abs(modes[1] - modes[0]).max()  # about 0.8 at the widest step
    assert np.abs(predicted - modes.mean(0)).max() < 0.1 * separation  # the mean of the two modes ...
    assert np.abs(predicted).max() < 0.15 * separation  # ... straight ahead, neither left nor right
    assert replay_collides(chunks[0][0], batch)  # and into the wall


def test_the_hybrid_samples_each_mode(pair):
    files, batch = pair
    torch.manual_seed(0)
    config = tiny_config(
        variant="C", prediction_type="sample", chunk_size=CHUNK, n_action_steps=CHUNK, num_train_timesteps=50,
        num_inference_steps=10,
    )  # fmt: skip
    model = HybridPolicyModel(config)
    model.set_normalization(compute_policy_stats(files, strict=True))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    train_batch = {k: v.repeat(8, *([1] * (v.dim() - 1))) for k, v in batch.items()}  # (16, ...): 8 per mode
    for step in range(300):
        loss, _ = model.compute_loss(train_batch, step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    start = {k: v[:1].repeat(SAMPLES, *([1] * (v.dim() - 1))) for k, v in batch.items()}  # the start, K times
    chunks = model.sample(start, generator=torch.Generator().manual_seed(0))  # (K, C, 2)
    modes = lateral(batch["action"], batch)  # (2, C)
    separation = np.abs(modes[1] - modes[0]).max()
    # (K, 2): the worst step of each sample against each mode
    distance = np.abs(lateral(chunks, batch)[:, None] - modes[None]).max(-1)
    nearest = distance.argmin(1)
    close = distance.min(1) < 0.2 * separation
    assert close.mean() >= 0.75, distance  # most samples follow one demonstrated path closely
    assert (nearest[close] == 0).sum() >= 4 and (nearest[close] == 1).sum() >= 4, nearest  # both paths
