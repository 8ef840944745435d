"""Scheduler round trips: with a model that predicts exactly (it knows the clean sample), DDIM and DPM-Solver++
recover that sample from pure noise, for every prediction type."""

import pytest
import torch

from kinema.hybrid_policy._diffusion import (
    ddim_plan,
    ddim_update,
    reverse_diffusion,
    sampling_scheduler,
    training_scheduler,
    training_target,
)
from kinema.hybrid_policy.testing import tiny_config


def oracle(config, clean: torch.Tensor):
    """The exact model output for ``clean`` at x_t: epsilon, the sample itself, or the velocity."""
    alphas = training_scheduler(config).alphas_cumprod

    def denoise(x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        a = alphas[timesteps].view(-1, 1, 1)
        eps = (x - a.sqrt() * clean) / (1 - a).sqrt()
        if config.prediction_type == "epsilon":
            return eps
        if config.prediction_type == "sample":
            return clean
        return a.sqrt() * eps - (1 - a).sqrt() * clean

    return denoise


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_round_trip_recovers_the_known_sample(sampler, prediction):
    config = tiny_config(num_train_timesteps=100, num_inference_steps=10, prediction_type=prediction)
    clean = torch.linspace(-0.9, 0.9, 2 * 8 * 2).view(2, 8, 2)
    out = reverse_diffusion(
        oracle(config, clean), sampling_scheduler(config, sampler), clean.shape, 10, device=torch.device("cpu"),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.allclose(out, clean, atol=1e-3)


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_training_target_is_what_the_oracle_predicts(prediction):
    config = tiny_config(num_train_timesteps=100, prediction_type=prediction)
    scheduler = training_scheduler(config)
    clean, noise = torch.rand(3, 8, 2) * 2 - 1, torch.randn(3, 8, 2)
    timesteps = torch.tensor([0, 50, 99])
    noisy = scheduler.add_noise(clean, noise, timesteps)
    expected = oracle(config, clean)(noisy, timesteps)
    assert torch.allclose(training_target(scheduler, clean, noise, timesteps), expected, atol=1e-4)


def test_zero_steps_is_a_clear_error():
    config = tiny_config()
    with pytest.raises(ValueError, match="expected an integer from 1"):
        reverse_diffusion(
            lambda x, t: x, sampling_scheduler(config), (1, 8, 2), 0, device=torch.device("cpu")
        )


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
@pytest.mark.parametrize("clip", [True, False])
def test_graph_ddim_update_equals_diffusers_ddim_step(prediction, clip):
    config = tiny_config(prediction_type=prediction, clip_sample=clip)
    scheduler = sampling_scheduler(config, "ddim")
    plan = ddim_plan(sampling_scheduler(config, "ddim"), 4)
    scheduler.set_timesteps(4)
    assert [t for t, _, _ in plan] == scheduler.timesteps.tolist()
    g = torch.Generator().manual_seed(0)
    x = ours = torch.randn(2, 8, 3, generator=g)
    for t, alpha, alpha_prev in plan:
        output = torch.randn(2, 8, 3, generator=g) * 2  # large enough that clipping happens
        x = scheduler.step(output, t, x).prev_sample
        ours = ddim_update(ours, output, alpha, alpha_prev, prediction, 1.0 if clip else None)
        torch.testing.assert_close(ours, x, rtol=1e-5, atol=1e-5)
    assert plan[-1][2] == 1.0  # the last step lands on alpha_bar = 1 (set_alpha_to_one)
