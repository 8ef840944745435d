"""Training the action path: the loss falls with a frozen generator, the objectives equal what inference computes
with the cache, and trained weights round-trip through an action checkpoint."""

import json

import pytest
import torch

from kinema.video_world_model import ModelFileError
from kinema.video_world_model.causal._attention import RollingKVCache
from kinema.video_world_model.causal._checkpoint import (
    ACTION_CONFIG,
    load_action_checkpoint,
    load_causal_pipeline,
    write_action_checkpoint,
)
from kinema.video_world_model.causal._pipeline import ActionCausalInferencePipeline
from kinema.video_world_model.causal._training import causal_training_loss, freeze_generator
from kinema.video_world_model.modeling._action_modules import ActionSequenceEncoder
from kinema.video_world_model.testing import (
    TINY_ACTION_DIM,
    randomize_projection,
    tiny_causal_pipeline,
    tiny_noise,
    tiny_transformer,
)

PROMPT = ["a drone flies over hills"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronization
    yield
    torch.set_num_threads(threads)


def sequence_module():
    torch.manual_seed(3)
    return ActionSequenceEncoder(action_dim=TINY_ACTION_DIM, embed_dim=8, hidden_dim=8)


@pytest.mark.parametrize("mode", ["diffusion_forcing", "teacher_forcing"])
def test_loss_falls_with_a_frozen_generator(mode):
    pipe = tiny_causal_pipeline(action_module=sequence_module(), vae=False)
    parameters = freeze_generator(pipe)
    assert {id(p) for p in parameters} == {
        id(p) for m in (pipe.action_projection, pipe.action_module) for p in m.parameters()
    }
    frozen = {k: v.clone() for k, v in pipe.generator.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    latents, noise = torch.randn(2, 6, 4, 4, 4, generator=g), torch.randn(2, 6, 4, 4, 4, generator=g)
    sigmas = torch.rand(2, 3, generator=g) * 0.8 + 0.1
    inputs = {"target_actions": torch.tensor([[1, 2, 3], [5, 6, 0]])}
    optimizer = torch.optim.Adam(parameters, lr=2e-2)
    losses = []
    for _ in range(25):
        loss = causal_training_loss(pipe, latents, PROMPT * 2, inputs, mode=mode, sigmas=sigmas, noise=noise)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses
    assert all(p.grad is None for p in pipe.generator.parameters())
    for key, value in pipe.generator.state_dict().items():
        assert torch.equal(value, frozen[key]), key
    assert pipe.action_module.embedding.weight.grad.abs().sum() > 0  # gradients reach the action module


def manual_loss(pipe, latents, noise, sigmas, features, teacher):
    """The loss from block-by-block cached forwards, as inference runs them: the cache holds the clean blocks
    (teacher forcing) or the noisy blocks at their own levels (diffusion forcing)."""
    model, block = pipe.model, pipe.config.block_size
    states = pipe._encode_text(PROMPT, 1, low_memory=False)
    text_kv = model.text_cache(states)
    table = model.rotary_table(latents.shape[1], 4, 4)
    cache = RollingKVCache(model.num_layers, 4, block, pipe.config.window_frames, pipe.config.window_frames)
    errors = []
    with torch.no_grad():
        for b in range(latents.shape[1] // block):
            part = slice(b * block, (b + 1) * block)
            x0, eps = latents[:, part].permute(0, 2, 1, 3, 4), noise[:, part].permute(0, 2, 1, 3, 4)
            s = sigmas[0, b].item()
            modulation = pipe._action_modulation(features[:, b], block)
            t = torch.full((1, block), s * 1000)
            flow = model(
                (1 - s) * x0 + s * eps,
                t,
                text_kv,
                model.rotary(table, part),
                cache=cache,
                action_modulation=modulation,
            )
            if teacher:
                model(
                    x0,
                    torch.zeros(1, block),
                    text_kv,
                    model.rotary(table, part),
                    cache=cache,
                    action_modulation=modulation,
                )
            cache.commit()
            errors.append((flow - (eps - x0)).pow(2).flatten())
    return torch.cat(errors).mean()


@pytest.mark.parametrize("mode", ["diffusion_forcing", "teacher_forcing"])
def test_objective_equals_the_cached_inference_computation(mode):
    pipe = tiny_causal_pipeline(vae=False, window_frames=4)
    randomize_projection(pipe)
    g = torch.Generator().manual_seed(1)
    latents, noise = torch.randn(1, 8, 4, 4, 4, generator=g), torch.randn(1, 8, 4, 4, 4, generator=g)
    sigmas = torch.tensor([[0.9, 0.3, 0.6, 0.5]])
    features = torch.randn(1, 4, TINY_ACTION_DIM, generator=g)
    with torch.no_grad():
        loss = causal_training_loss(
            pipe, latents, PROMPT, {"action_features": features}, mode=mode, sigmas=sigmas, noise=noise
        )
    expected = manual_loss(pipe, latents, noise, sigmas, features, teacher=mode == "teacher_forcing")
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)


def test_first_frame_is_conditioning_not_target():
    pipe = tiny_causal_pipeline(vae=False)
    randomize_projection(pipe)
    latents, noise = torch.randn(1, 4, 4, 4, 4), torch.randn(1, 4, 4, 4, 4)
    sigmas = torch.tensor([[0.7, 0.4]])
    inputs = {"action_features": torch.randn(1, TINY_ACTION_DIM)}
    with torch.no_grad():
        loss = causal_training_loss(
            pipe, latents, PROMPT, inputs, sigmas=sigmas, noise=noise, first_frame=True
        )
        noise[:, 0] += 5.0  # frame 0 is the clean image: its noise is never used
        again = causal_training_loss(
            pipe, latents, PROMPT, inputs, sigmas=sigmas, noise=noise, first_frame=True
        )
        latents[:, 0] += 1.0  # but it conditions the other frames
        moved = causal_training_loss(
            pipe, latents, PROMPT, inputs, sigmas=sigmas, noise=noise, first_frame=True
        )
    assert torch.equal(loss, again)
    assert not torch.equal(loss, moved)


def test_training_refuses_bad_input():
    pipe = tiny_causal_pipeline(vae=False)
    with pytest.raises(ValueError, match="mode: expected one of"):
        causal_training_loss(pipe, tiny_noise(4), PROMPT, mode="forcing")
    with pytest.raises(ValueError, match=r"sigmas: expected shape \(1, 2\)"):
        causal_training_loss(pipe, tiny_noise(4), PROMPT, sigmas=torch.rand(1, 4))
    with pytest.raises(ValueError, match="not a multiple of block_size"):
        causal_training_loss(pipe, tiny_noise(3), PROMPT)
    plain = ActionCausalInferencePipeline({}, "cpu", generator=tiny_transformer(), enable_adaln_zero=False)
    with pytest.raises(ValueError, match="nothing to train"):
        freeze_generator(plain)


def test_action_checkpoint_round_trip_and_loading(tmp_path, tiny_wan_dir):
    pipe = tiny_causal_pipeline(action_module=sequence_module())
    randomize_projection(pipe)
    out = write_action_checkpoint(tmp_path / "act", pipe, base_model="tiny-wan", extra={"steps": 3})
    config = json.loads((out / ACTION_CONFIG).read_text())
    assert config["action_module"]["kind"] == "sequence" and config["steps"] == 3
    checkpoint = load_action_checkpoint(out)
    assert checkpoint.rollout == pipe.config
    for key, value in pipe.action_projection.state_dict().items():
        assert torch.equal(checkpoint.projection_state[key], value)
    for key, value in pipe.action_module.state_dict().items():
        assert torch.equal(checkpoint.action_module.state_dict()[key], value)

    loaded = load_causal_pipeline(tiny_wan_dir, out, torch_dtype=torch.float32)
    noise, inputs = tiny_noise(6), {"target_actions": torch.tensor([[1, 4, 7]])}
    assert torch.equal(loaded.inference(noise, PROMPT, inputs), pipe.inference(noise, PROMPT, inputs))

    config["hidden_dim"] = 48
    (out / ACTION_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trained for hidden size 48"):
        load_causal_pipeline(tiny_wan_dir, out, torch_dtype=torch.float32)
    with pytest.raises(ModelFileError, match=r"causal_action_config\.json does not exist"):
        load_action_checkpoint(tmp_path / "missing")


def test_only_shipped_modules_are_written(tmp_path):
    class Custom(torch.nn.Module):
        action_dim = TINY_ACTION_DIM

        def forward(self, frames):
            return frames.mean(dim=(1, 3, 4)).repeat(1, 4)

    pipe = tiny_causal_pipeline(action_module=Custom(), vae=False)
    with pytest.raises(ValueError, match="not one of the shipped modules"):
        write_action_checkpoint(tmp_path / "act", pipe)
