import pytest
import torch

from kinema.conditioning.testing import changed_frames
from kinema.video_world_model.modeling import WanActionTransformer, token_timesteps
from kinema.video_world_model.testing import tiny_controller, tiny_transformer

T, H, W = 4, 4, 4  # latent frames and latent size: 2x2 tokens per frame after 2x2 patches
HW = (H // 2) * (W // 2)
CASES = [
    ("cross_attn_frame", {}),
    ("cross_attn_frame", {"action_window": 1}),
    ("adaln_tmod", {}),
    ("add_residual", {}),
]


def inputs(seed=0, per_token=True):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(1, 4, T, H, W, generator=g)
    text = torch.randn(1, 5, 16, generator=g)
    timestep = token_timesteps(torch.tensor([700.0]), T, HW) if per_token else torch.tensor([700.0])
    binary = (torch.rand(1, T - 1, 8, generator=g) > 0.5).float()
    magnitude = torch.rand(1, T - 1, 8, generator=g)
    return latents, timestep, text, binary, magnitude


@pytest.mark.parametrize("per_token", [True, False])
@pytest.mark.parametrize(("injection_type", "extra"), CASES)
def test_identity_with_zero_scale_is_bitwise_plain_diffusers(injection_type, extra, per_token):
    transformer = tiny_transformer()
    model = WanActionTransformer(transformer, tiny_controller(injection_type, initial_scale=0.0, **extra))
    latents, timestep, text, binary, magnitude = inputs(per_token=per_token)
    with torch.no_grad():
        plain = transformer(latents, timestep, text, return_dict=False)[0]
        steered = model(latents, timestep, text, binary, magnitude)
        without_actions = model(latents, timestep, text)
    assert torch.equal(steered, plain)
    assert torch.equal(without_actions, plain)


@pytest.mark.parametrize(("injection_type", "extra"), CASES)
def test_actions_change_the_output_once_scales_are_nonzero(injection_type, extra):
    model = WanActionTransformer(
        tiny_transformer(), tiny_controller(injection_type, initial_scale=0.5, **extra)
    )
    latents, timestep, text, binary, magnitude = inputs()
    with torch.no_grad():
        a = model(latents, timestep, text, binary, magnitude)
        b = model(latents, timestep, text, binary, magnitude * 2)
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("injection_type", ["cross_attn_frame", "add_residual"])
def test_frame_locality_in_the_first_layer_output(injection_type):
    model = WanActionTransformer(tiny_transformer(), tiny_controller(injection_type, initial_scale=0.5))
    latents, timestep, text, binary, magnitude = inputs()
    captured = []
    original = model._block

    def spy(index, *args):
        out = original(index, *args)
        if index == 0:
            captured.append(out.detach().clone())
        return out

    model._block = spy
    with torch.no_grad():
        model(latents, timestep, text, binary, magnitude)
        for step in range(T - 1):
            changed = magnitude.clone()
            changed[:, step] += 1.0
            model(latents, timestep, text, binary, changed)
            assert changed_frames(captured[0], captured[-1], T) == [
                step + 1
            ]  # action step s drives latent frame s+1


def test_adaln_modulation_is_per_frame_and_spares_frame_zero():
    controller = tiny_controller("adaln_tmod", initial_scale=1.0)
    emb = controller.build_action_emb(torch.ones(1, T - 1, 8), torch.rand(1, T - 1, 8))
    tmod = controller.action_tmod(controller.frame_conditions(emb, T))  # (1, T, 6, C)
    base = torch.randn(1, T * HW, 6, 24)
    out = WanActionTransformer._modulated_temb(base, tmod, torch.tensor(0.5), (T, 2, 2))
    expected = base.view(1, T, HW, 6, 24) + 0.5 * tmod.unsqueeze(2)
    assert torch.allclose(out, expected.view(1, T * HW, 6, 24))
    assert torch.equal(
        out.view(1, T, HW, 6, 24)[:, 0], base.view(1, T, HW, 6, 24)[:, 0]
    )  # frame 0: no action
    wan21 = WanActionTransformer._modulated_temb(base[:, 0, :, :].clone(), tmod, torch.tensor(0.5), (T, 2, 2))
    assert wan21.shape == (1, T * HW, 6, 24)
    assert torch.allclose(wan21.view(1, T, HW, 6, 24)[:, 2, 1], base[0, 0] + 0.5 * tmod[0, 2])


@pytest.mark.parametrize("injection_type", ["cross_attn_frame", "adaln_tmod"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(injection_type):
    latents, timestep, text, binary, magnitude = inputs()
    results = []
    for checkpointing in (False, True):
        model = WanActionTransformer(tiny_transformer(), tiny_controller(injection_type, initial_scale=0.3))
        model.transformer.requires_grad_(False)
        model.enable_gradient_checkpointing(checkpointing)
        loss = model(latents, timestep, text, binary, magnitude).pow(2).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.controller.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert torch.equal(loss_a, loss_b)
    assert grads_a.keys() == grads_b.keys() and "output_scale" in grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-7), name


def test_bad_actions_raise_before_model_work():
    model = WanActionTransformer(tiny_transformer(), tiny_controller())
    latents, timestep, text, binary, magnitude = inputs()
    with pytest.raises(
        ValueError,
        match=r"action_binary: 4 action steps for 4 latent frames \(action_len must be latent_frames - 1 = 3\)",
    ):
        model(latents, timestep, text, torch.ones(1, 4, 8), torch.ones(1, 4, 8))
    with pytest.raises(ValueError, match=r"action_magnitude: expected shape \(B, 3, 8\)"):
        model(latents, timestep, text, binary, torch.ones(1, 3, 7))
    nan = magnitude.clone()
    nan[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="action_magnitude: holds NaN"):
        model(latents, timestep, text, binary, nan)
    assert (
        model(latents, timestep, text, binary.tolist()[0], magnitude[0].numpy()).shape == latents.shape
    )  # 2-D, lists


def test_controller_must_fit_the_transformer():
    with pytest.raises(ValueError, match="hidden 24 and 2 layers"):
        WanActionTransformer(tiny_transformer(), tiny_controller(num_layers=3))
