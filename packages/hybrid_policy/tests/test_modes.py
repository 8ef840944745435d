"""On the docking task (one scene, demonstrated around the left and around the right of the wall), variant C's
sampled chunks from the start cover both modes; a deterministic regressor (ACT without its CVAE, trained on the
same episodes) gives one chunk whatever is sampled, so it covers one mode at most."""

import numpy as np
import pytest
import torch

from kinema.act_policy import load_episodes
from kinema.hybrid_policy import load_hybrid, mode_coverage, train
from kinema.hybrid_policy._ablation import _side_labels
from kinema.hybrid_policy._data import chunk_batch
from kinema.hybrid_policy.testing import dock_episodes, tiny_config, tiny_train_config

SAMPLES = 32


@pytest.fixture(scope="module")
def one_scene(tmp_path_factory):
    return dock_episodes(tmp_path_factory.mktemp("one_scene"), 2)


def start_batch(data, config) -> dict:
    memory = load_episodes(sorted(data.glob("*.hdf5")), config, workers=1, progress=False)
    return chunk_batch(
        memory, torch.zeros(SAMPLES, dtype=torch.long), config.chunk_size
    )  # the start, K times


def labels(chunks: torch.Tensor, batch: dict) -> list[str]:
    return _side_labels(chunks.numpy()[None], batch["environment_state"][:1, 2].numpy())[0]


def test_variant_c_samples_cover_both_modes(one_scene, tmp_path):
    config = tiny_config(
        variant="C", prediction_type="sample", chunk_size=16, n_action_steps=16, num_train_timesteps=50,
        num_inference_steps=10,
    )  # fmt: skip
    settings = {"max_steps": 400, "val_fraction": 0.0, "batch_size": 16, "lr": 3e-3, "lr_backbone": 3e-3}
    train(config, tiny_train_config(one_scene, tmp_path / "c", save_every=10**6, **settings))
    model = load_hybrid(tmp_path / "c", variant="C")
    batch = start_batch(one_scene, model.config)
    coverage = mode_coverage(labels(model.sample(batch, generator=torch.Generator().manual_seed(0)), batch))
    assert coverage["coverage"] == 1.0, coverage  # both sides among the samples
    assert coverage["counts"]["other"] <= SAMPLES // 4, coverage  # few chunks head into the wall


def test_a_deterministic_regressor_covers_one_mode_at_most(one_scene, tmp_path):
    from kinema.act_policy import load_act
    from kinema.act_policy import train as train_act
    from kinema.act_policy.testing import tiny_config as tiny_act
    from kinema.act_policy.testing import tiny_train_config as tiny_act_train

    config = tiny_act(
        state_dim=2, action_dim=2, environment_state_dim=4, chunk_size=16, n_action_steps=16, use_vae=False
    )
    train_act(
        config, tiny_act_train(one_scene, tmp_path / "r", max_steps=100, val_fraction=0.0, save_every=10**6)
    )
    model = load_act(tmp_path / "r").eval()
    batch = start_batch(one_scene, model.config)
    with torch.no_grad():
        chunks = torch.stack([model.predict(batch) for _ in range(2)])
    assert torch.equal(chunks[0], chunks[1])  # nothing to sample: one chunk per observation
    coverage = mode_coverage(labels(chunks[0], batch))
    assert coverage["coverage"] <= 0.5 and len(set(labels(chunks[0], batch))) == 1
    assert np.isclose(chunks[0].std(0).max().item(), 0.0)
