import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from kinema.video_world_model import parse_compact_actions
from kinema.video_world_model.modeling import (
    FlowMatchingObjective,
    fuse_first_frame,
    load_actions,
    token_timesteps,
)


def test_training_sigmas_are_diffsynths_and_the_old_schedule_stays_available():
    objective = FlowMatchingObjective(shift=5.0)
    # DiffSynth-Studio's Wan training sigmas: shift(linspace(1, 0, 1001)[:-1]), the shift applied once
    plain = torch.linspace(1, 0, 1001, dtype=torch.float64)[:-1]
    assert torch.allclose(objective.sigmas.double(), 5 * plain / (1 + 4 * plain), atol=1e-6)
    assert objective.sigmas[-1].item() == pytest.approx(0.005 / 1.004, rel=1e-4)
    # "inference": the scheduler after set_timesteps(1000), shifted twice at the low end (kinema <= 0.4)
    old = FlowMatchingObjective(shift=5.0, sigma_schedule="inference")
    scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=5.0)
    scheduler.set_timesteps(1000)
    assert torch.equal(old.sigmas, scheduler.sigmas[:-1].float())
    assert old.sigmas[-1].item() == pytest.approx(0.0244, abs=1e-4)
    with pytest.raises(ValueError, match="sigma_schedule"):
        FlowMatchingObjective(sigma_schedule="linear")


def test_diffsynth_loss_weight_is_the_bell_over_timesteps_with_mean_one():
    objective = FlowMatchingObjective(shift=5.0, weighting="diffsynth")
    table = objective.loss_weights(objective.sigmas)
    assert table.mean().item() == pytest.approx(1.0, rel=1e-5) and table.min().item() == pytest.approx(
        0, abs=1e-6
    )
    # hand-computed at sigma 0.5 (t = 500, the bell's top) and 1.0 (t = 1000)
    t = objective.sigmas.double() * 1000
    bell = torch.exp(-2 * ((t - 500) / 1000) ** 2)
    scale = 1000 / (bell - bell.min()).sum()
    top = ((1 - bell.min()) * scale).item()
    edge = ((np.exp(-0.5) - bell.min()) * scale).item()  # t = 1000 is the minimum: weight 0
    assert objective.loss_weights(torch.tensor([0.5, 1.0])).tolist() == pytest.approx([top, edge], rel=1e-5)
    # the loss of a batch is weighted per sample
    latents, noise = torch.zeros(2, 1, 2, 1, 1), torch.ones(2, 1, 2, 1, 1)
    batch = objective.prepare(latents, noise, torch.tensor([0.5, 1.0]), tokens_per_frame=1)
    prediction = torch.full((2, 1, 2, 1, 1), 3.0)  # error 2 everywhere -> MSE 4 per sample
    assert objective.loss(prediction, batch).item() == pytest.approx(4 * (top + edge) / 2, rel=1e-5)
    assert FlowMatchingObjective(weighting="none").loss_weights(torch.tensor([0.5])).tolist() == [1.0]


def test_boundaries_select_part_of_the_descending_schedule():
    objective = FlowMatchingObjective(min_timestep_boundary=0.0, max_timestep_boundary=0.25)
    sigmas = objective.sample_sigmas(2000, torch.Generator().manual_seed(0))
    assert sigmas.min() >= objective.sigmas[249] and sigmas.max() <= 1.0
    with pytest.raises(ValueError, match="min_timestep_boundary"):
        FlowMatchingObjective(min_timestep_boundary=0.5, max_timestep_boundary=0.5)


def test_noisy_target_timesteps_and_clean_first_frame():
    objective = FlowMatchingObjective()
    latents = torch.randn(2, 4, 3, 2, 2)
    noise = torch.randn(2, 4, 3, 2, 2)
    sigmas = torch.tensor([0.25, 0.75])
    batch = objective.prepare(latents, noise, sigmas, tokens_per_frame=1)
    expected = 0.75 * latents[0] + 0.25 * noise[0]
    assert torch.allclose(batch.noisy[0, :, 1:], expected[:, 1:])
    assert torch.equal(batch.noisy[:, :, 0], latents[:, :, 0])  # first frame exactly clean
    assert torch.allclose(batch.target, noise - latents)
    assert batch.timesteps.tolist() == [[0.0, 250.0, 250.0], [0.0, 750.0, 750.0]]


def test_loss_is_hand_computed_and_ignores_frame_zero():
    objective = FlowMatchingObjective()
    latents, noise = torch.zeros(1, 1, 3, 1, 1), torch.ones(1, 1, 3, 1, 1)
    batch = objective.prepare(latents, noise, torch.tensor([0.5]), tokens_per_frame=1)
    prediction = torch.tensor([99.0, 3.0, -1.0]).view(1, 1, 3, 1, 1)  # target 1 everywhere
    assert objective.loss(prediction, batch).item() == pytest.approx(((3 - 1) ** 2 + (-1 - 1) ** 2) / 2)


def test_token_timesteps_and_fuse():
    assert token_timesteps(torch.tensor([500.0]), 3, 2).tolist() == [[0.0, 0.0, 500.0, 500.0, 500.0, 500.0]]
    latents, first = torch.zeros(1, 2, 3, 1, 1), torch.ones(1, 2, 1, 1, 1)
    fused = fuse_first_frame(latents, first)
    assert fused[:, :, 0].sum() == 2 and fused[:, :, 1:].sum() == 0
    with pytest.raises(ValueError, match="first_frame"):
        fuse_first_frame(latents, torch.ones(1, 3, 1, 1, 1))


def test_compact_actions():
    binary, magnitude = parse_compact_actions("forward:0.5x2,yaw_left:0.3+pitch_up:0.1x1,idlex1", 4)
    assert binary.shape == (4, 8)
    assert binary[:2, 0].tolist() == [1, 1] and magnitude[:2, 0].tolist() == [0.5, 0.5]
    assert binary[2].tolist() == [0, 0, 0, 0, 1, 0, 1, 0]
    assert magnitude[2, 4] == pytest.approx(0.3) and magnitude[2, 6] == pytest.approx(0.1)
    assert binary[3].sum() == 0
    with pytest.raises(ValueError, match="unknown action 'up'"):
        parse_compact_actions("up:1x4", 4)
    with pytest.raises(ValueError, match="gives 3 steps, expected 4"):
        parse_compact_actions("forwardx3", 4)
    with pytest.raises(ValueError, match="not ACTIONSxCOUNT"):
        parse_compact_actions("forward:1", 4)


def test_action_files(tmp_path):
    path = tmp_path / "a.json"
    path.write_text(
        json.dumps({"action_binary": np.eye(8)[:2].tolist(), "action_magnitude": np.zeros((2, 8)).tolist()})
    )
    binary, _ = load_actions(path, 2)
    assert binary[1, 1] == 1
    path.write_text(json.dumps(np.zeros((2, 2, 8)).tolist()))
    assert load_actions(path, 2)[0].shape == (2, 8)
    with pytest.raises(ValueError, match=r"expected 3 action steps"):
        load_actions(path, 3)
    with pytest.raises(FileNotFoundError, match="no file"):
        load_actions(tmp_path / "missing.json", 2)


def test_sample_prediction_targets_x0_and_converts_back_to_the_flow_by_hand():
    from kinema.video_world_model.modeling._flow_matching import flow_from_prediction

    objective = FlowMatchingObjective(shift=3.0, prediction="sample")
    latents, noise = torch.randn(2, 4, 3, 2, 2), torch.randn(2, 4, 3, 2, 2)
    batch = objective.prepare(latents, noise, torch.tensor([0.25, 0.75]), tokens_per_frame=4)
    assert torch.equal(batch.target, latents)
    # a perfect x0 prediction is exactly the flow target noise - x0, on every noised frame
    flow = flow_from_prediction(latents, batch.noisy, batch.timesteps, (1, 1, 1), "sample")
    torch.testing.assert_close(flow[:, :, 1:], (noise - latents)[:, :, 1:], atol=1e-5, rtol=1e-5)
    assert torch.equal(flow[:, :, 0], torch.zeros_like(flow[:, :, 0]))  # the given first frame does not move
    # by hand, one value: x_t = 0.5, x0 = 0.2, sigma = 0.6 -> (0.5 - 0.2) / 0.6
    one = flow_from_prediction(torch.tensor([0.2]).view(1, 1, 1, 1, 1), torch.full((1, 1, 1, 1, 1), 0.5),
                               torch.tensor([600.0]), (1, 1, 1), "sample")  # fmt: skip
    assert one.item() == pytest.approx(0.5)
    assert torch.equal(
        flow_from_prediction(latents, batch.noisy, batch.timesteps, (1, 1, 1), "flow"), latents
    )
    # per-token timesteps over 2x2 patches: one sigma per patch
    patched = flow_from_prediction(torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2),
                                   torch.tensor([[0.0, 500.0]]), (1, 2, 2), "sample")  # fmt: skip
    assert patched[0, 0, 0].abs().max() == 0 and torch.allclose(patched[0, 0, 1], torch.full((2, 2), 2.0))
    with pytest.raises(ValueError, match="prediction"):
        FlowMatchingObjective(prediction="epsilon")
    with pytest.raises(ValueError, match="shift"):
        FlowMatchingObjective(shift=0.0)


def test_sample_prediction_flow_in_bf16_matches_fp32():
    from kinema.video_world_model.modeling._flow_matching import flow_from_prediction

    x0, noisy = torch.randn(1, 8, 3, 4, 4), torch.randn(1, 8, 3, 4, 4)
    timesteps = torch.tensor([[0.0] * 16 + [700.0] * 32])
    exact = flow_from_prediction(x0, noisy, timesteps, (1, 1, 1), "sample")
    low = flow_from_prediction(x0.bfloat16(), noisy, timesteps, (1, 1, 1), "sample")
    assert low.dtype == torch.float32
    torch.testing.assert_close(
        low, exact, atol=0.03, rtol=0.02
    )  # bf16 rounding of x0 only, scaled by 1/sigma
