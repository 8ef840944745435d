"""ActionCausalInferencePipeline on the tiny model: cache vs. full recomputation, adaLN-Zero identity, causality of
actions, streaming decode, the _process_action hook, and bad input rejected before any model work."""

import argparse
import itertools

import pytest
import torch
from diffusers import WanPipeline

from kinema.video_world_model.causal._attention import block_causal_mask
from kinema.video_world_model.causal._config import CausalRolloutConfig
from kinema.video_world_model.causal._pipeline import ActionCausalInferencePipeline
from kinema.video_world_model.causal._vae import StreamingVAEDecoder
from kinema.video_world_model.modeling import WanActionTransformer, decode_latents
from kinema.video_world_model.modeling._action_modules import ActionSequenceEncoder, HistoryActionModule
from kinema.video_world_model.testing import (
    TINY_ACTION_DIM,
    randomize_projection,
    tiny_causal_pipeline,
    tiny_controller,
    tiny_noise,
    tiny_scheduler,
    tiny_transformer,
    tiny_vae,
)

PROMPT = ["a drone flies over hills"]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronization
    yield
    torch.set_num_threads(threads)


def reference_rollout(pipe, noise, features):
    """The rollout without a cache: every step of block b is one masked pass over [clean blocks < b, x_b]."""
    model, config = pipe.model, pipe.config
    block = config.block_size
    sigmas = config.sigmas().tolist()
    states = pipe._encode_text(PROMPT, 1, low_memory=False)
    text_kv = model.text_cache(states)
    frames = noise.shape[1]
    table = model.rotary_table(frames, 4, 4)
    done = []
    with torch.no_grad():
        for b in range(frames // block):
            modulation = torch.cat(
                [pipe._action_modulation(features[:, j], block) for j in range(b + 1)], dim=1
            )
            x = noise[:, b * block : (b + 1) * block].permute(0, 2, 1, 3, 4)
            for sigma, sigma_next in itertools.pairwise(sigmas):
                sequence = torch.cat([*done, x], dim=2)
                n = sequence.shape[2]
                timesteps = torch.cat(
                    [torch.zeros(1, n - block), torch.full((1, block), sigma * 1000)], dim=1
                )
                flow = model(
                    sequence, timesteps, text_kv, model.rotary(table, slice(0, n)), action_modulation=modulation,
                    attention_mask=block_causal_mask(n, block, 4, config.window_frames),
                )[:, :, -block:]  # fmt: skip
                x = x + (sigma_next - sigma) * flow
            done.append(x)
    return torch.cat(done, dim=2).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("window", [None, 4])
def test_cached_rollout_equals_full_recomputation_with_the_block_causal_mask(window):
    pipe = tiny_causal_pipeline(window_frames=window, vae=False)
    randomize_projection(pipe)
    noise = tiny_noise(6)
    features = torch.randn(1, 3, TINY_ACTION_DIM, generator=torch.Generator().manual_seed(1))
    _, latents = pipe.inference(noise, PROMPT, {"action_features": features}, return_latents=True)
    torch.testing.assert_close(latents, reference_rollout(pipe, noise, features), rtol=1e-5, atol=1e-5)


def test_zero_initialized_projection_makes_actions_change_nothing_bitwise():
    pipe = tiny_causal_pipeline(
        action_module=ActionSequenceEncoder(action_dim=TINY_ACTION_DIM, embed_dim=8, hidden_dim=8)
    )
    noise = tiny_noise(6)
    plain = tiny_causal_pipeline()  # no action module, no action inputs: the plain causal rollout
    video_plain, latents_plain = plain.inference(noise, PROMPT, return_latents=True)
    features = torch.randn(1, TINY_ACTION_DIM) * 10
    video_features, latents_features = pipe.inference(
        noise, PROMPT, {"action_features": features}, return_latents=True
    )
    targets = torch.tensor([[1, 5, 8]])
    video_targets = pipe.inference(noise, PROMPT, {"target_actions": targets})
    assert pipe.action_projection(features).abs().max() == 0  # zero at init
    assert torch.equal(latents_features, latents_plain)
    assert torch.equal(video_features, video_plain)
    assert torch.equal(video_targets, video_plain)


def test_changing_the_action_of_block_k_changes_nothing_before_block_k():
    pipe = tiny_causal_pipeline(
        action_module=ActionSequenceEncoder(action_dim=TINY_ACTION_DIM, embed_dim=8, hidden_dim=8), vae=False
    )
    randomize_projection(pipe)
    noise = tiny_noise(6)
    base = torch.tensor([[1, 1, 1]])

    def rollout(targets):
        return pipe.inference(noise, PROMPT, {"target_actions": targets}, return_latents=True)[1]

    reference = rollout(base)
    for k in range(3):
        changed = base.clone()
        changed[0, k] = 6
        latents = rollout(changed)
        start = 2 * k
        assert torch.equal(latents[:, :start], reference[:, :start]), f"block {k} changed an earlier block"
        assert not torch.allclose(latents[:, start : start + 2], reference[:, start : start + 2])
    # per-block features: the same causality
    features = torch.randn(1, 3, TINY_ACTION_DIM)
    a = pipe.inference(noise, PROMPT, {"action_features": features}, return_latents=True)[1]
    features[:, 2] += 1.0
    b = pipe.inference(noise, PROMPT, {"action_features": features}, return_latents=True)[1]
    assert torch.equal(a[:, :4], b[:, :4]) and not torch.allclose(a[:, 4:], b[:, 4:])


def test_video_is_the_streaming_decode_and_matches_one_full_decode():
    pipe = tiny_causal_pipeline()
    video, latents = pipe.inference(tiny_noise(6), PROMPT, return_latents=True)
    assert video.shape == (1, 4 * 6 - 3, 3, 64, 64)
    assert video.min() >= 0 and video.max() <= 1
    full = decode_latents(pipe.vae, latents.permute(0, 2, 1, 3, 4))  # (1, 3, 21, 64, 64) in [-1, 1]
    torch.testing.assert_close(video, ((full + 1) / 2).permute(0, 2, 1, 3, 4), rtol=0, atol=1e-6)
    decoder = StreamingVAEDecoder(pipe.vae)
    sizes = [decoder.decode(latents[:, i : i + 2].permute(0, 2, 1, 3, 4)).shape[2] for i in (0, 2, 4)]
    assert sizes == [5, 8, 8]


@pytest.mark.parametrize("frames_per_call, channels_last", [(None, False), (2, False), (None, True)])
def test_grouped_and_channels_last_decode_give_diffusers_frames(frames_per_call, channels_last):
    torch.manual_seed(0)
    vae = tiny_vae()
    latents = torch.randn(1, 4, 7, 8, 8)  # (B, z, F, h, w), normalized
    full = decode_latents(vae, latents)  # diffusers' frame-by-frame decode of all 7 latent frames
    decoder = StreamingVAEDecoder(vae, frames_per_call=frames_per_call, channels_last=channels_last)
    blocks = [decoder.decode(latents[:, :, i : i + 3]) for i in (0, 3)] + [decoder.decode(latents[:, :, 6:])]
    assert [b.shape[2] for b in blocks] == [9, 12, 4]
    torch.testing.assert_close(torch.cat(blocks, dim=2), full, rtol=0, atol=1e-5)


def test_streaming_decoder_rejects_bad_frames_per_call():
    with pytest.raises(ValueError, match="frames_per_call"):
        StreamingVAEDecoder(tiny_vae(), frames_per_call=0)
    with pytest.raises(ValueError, match="frames_per_call"):
        tiny_causal_pipeline().configure_decoder(frames_per_call=1.5)


def test_pipeline_with_the_fast_decoder_gives_the_same_video():
    pipe = tiny_causal_pipeline()
    video = pipe.inference(tiny_noise(6), PROMPT)
    pipe.configure_decoder(frames_per_call=None, channels_last=True)
    torch.testing.assert_close(pipe.inference(tiny_noise(6), PROMPT), video, rtol=0, atol=1e-5)


def test_initial_latent_is_frame_zero_exactly_and_gets_no_action():
    pipe = tiny_causal_pipeline(vae=False)
    randomize_projection(pipe)
    image = torch.randn(1, 1, 4, 4, 4)
    noise = tiny_noise(4)
    _, latents = pipe.inference(noise, PROMPT, return_latents=True, initial_latent=image)
    assert torch.equal(latents[:, :1], image)
    # the first frame receives no action: its modulation row is zero
    modulation = pipe._action_modulation(torch.randn(1, TINY_ACTION_DIM), 2, zero_first=True)
    assert modulation[:, 0].abs().max() == 0 and modulation[:, 1].abs().max() > 0


def test_process_action_hook_sees_the_generated_history():
    pipe = tiny_causal_pipeline(vae=False)
    randomize_projection(pipe)
    calls = []

    def hook(self, generated_frames, current_frame_idx, action_inputs):
        calls.append((None if generated_frames is None else generated_frames.clone(), current_frame_idx))
        return torch.full((1, TINY_ACTION_DIM), 0.1 * current_frame_idx)

    pipe._process_action = hook.__get__(pipe, ActionCausalInferencePipeline)
    _, latents = pipe.inference(tiny_noise(6), PROMPT, return_latents=True)
    assert [index for _, index in calls] == [0, 2, 4]
    assert calls[0][0] is None
    assert torch.equal(calls[1][0], latents[:, :2]) and torch.equal(calls[2][0], latents[:, :4])


def test_history_module_acts_from_the_second_block_on():
    module = HistoryActionModule(latent_dim=4, action_dim=TINY_ACTION_DIM, hidden_dims=(4, 8))
    pipe = tiny_causal_pipeline(action_module=module, vae=False)
    randomize_projection(pipe)
    plain = tiny_causal_pipeline(vae=False)
    randomize_projection(plain)
    noise = tiny_noise(4)
    with_module = pipe.inference(noise, PROMPT, return_latents=True)[1]
    without = plain.inference(noise, PROMPT, return_latents=True)[1]
    assert torch.equal(with_module[:, :2], without[:, :2])  # block 0: no history, no action
    assert not torch.allclose(with_module[:, 2:], without[:, 2:])


def test_overlap_and_low_memory_options_give_the_same_video_on_cpu():
    pipe = tiny_causal_pipeline()
    noise = tiny_noise(4)
    video = pipe.inference(noise, PROMPT)
    assert torch.equal(pipe.inference(noise, PROMPT, low_memory=True, profile=True), video)
    assert [b["index"] for b in pipe.last_profile["blocks"]] == [0, 1]
    streamed = torch.cat([b.frames for b in pipe.stream(noise, PROMPT, overlap_decode=True)], dim=1)
    assert torch.equal(streamed, video)


def test_config_from_a_self_forcing_namespace():
    args = argparse.Namespace(
        num_frame_per_block=2, local_attn_size=-1, denoising_step_list=[1000, 500], warp_denoising_step=False,
        model_name="unrelated",
    )  # fmt: skip
    config = CausalRolloutConfig.from_args(args)
    assert (config.block_size, config.window_frames, config.denoising_steps) == (2, None, (1000, 500))
    assert config.sigmas().tolist() == [1.0, 0.5, 0.0]
    warped = CausalRolloutConfig(denoising_steps=(1000, 750))
    assert warped.sigmas()[1].item() == pytest.approx(5 * 0.75 / (1 + 4 * 0.75), abs=1e-3)  # shift 5


def test_generator_forms():
    wrapper = WanActionTransformer(tiny_transformer(), None)
    pipe = ActionCausalInferencePipeline(CausalRolloutConfig(block_size=2), "cpu", generator=wrapper)
    assert pipe.generator is wrapper.transformer
    with pytest.raises(ValueError, match="WanActionController"):
        ActionCausalInferencePipeline(
            {}, "cpu", generator=WanActionTransformer(tiny_transformer(), tiny_controller())
        )
    with pytest.raises(ValueError, match="generator: a Wan transformer is required"):
        ActionCausalInferencePipeline({}, "cpu")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"action_inputs": {"action_features": torch.randn(1, 7)}}, "expected width action_dim=16, got 7"),
        ({"noise": tiny_noise(5)}, "5 latent frames is not a multiple of block_size=2"),
        (
            {"action_inputs": {"action_features": torch.randn(1, 2, TINY_ACTION_DIM)}},
            "2 per-block rows for 3",
        ),
        ({"action_inputs": {"actions": torch.zeros(1)}}, "unknown keys"),
        ({"text_prompts": ["a", "b"]}, "2 prompts for a batch of 1"),
        ({"initial_latent": torch.zeros(1, 4, 4, 4)}, "initial_latent: expected shape"),
    ],
)
def test_bad_input_is_refused_before_any_model_work(change, message, monkeypatch):
    pipe = tiny_causal_pipeline()
    calls = []
    monkeypatch.setattr(pipe.model, "forward", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(pipe, "_encode_text", lambda *a, **k: calls.append(1))
    kwargs = {"noise": tiny_noise(6), "text_prompts": PROMPT} | change
    with pytest.raises(ValueError, match=message):
        pipe.inference(**kwargs)
    assert calls == []


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="smaller than one block"):
        CausalRolloutConfig(block_size=3, window_frames=2)
    with pytest.raises(ValueError, match="strictly descending"):
        CausalRolloutConfig(denoising_steps=(500, 750))
    with pytest.raises(ValueError, match="produces 8-wide features"):
        tiny_causal_pipeline(action_module=ActionSequenceEncoder(action_dim=8))
    sequence = ActionSequenceEncoder(action_dim=TINY_ACTION_DIM)
    pipe = tiny_causal_pipeline(action_module=sequence)
    with pytest.raises(ValueError, match="needs the discrete actions"):
        pipe.inference(tiny_noise(6), PROMPT)
    with pytest.raises(ValueError, match=r"must lie in \[0, 9\)"):
        pipe.inference(tiny_noise(6), PROMPT, {"target_actions": torch.tensor([[0, 1, 9]])})
    no_vae = tiny_causal_pipeline(vae=False)
    with pytest.raises(ValueError, match="no VAE"):
        no_vae.inference(tiny_noise(6), PROMPT)
    plain = ActionCausalInferencePipeline(
        {}, "cpu", generator=tiny_transformer(), vae=tiny_vae(), enable_adaln_zero=False
    )
    with pytest.raises(ValueError, match="enable_adaln_zero=False"):
        plain.inference(tiny_noise(3), torch.zeros(1, 5, 16), {"action_features": torch.zeros(1, 512)})


def test_prompt_encoding_matches_diffusers_wan_pipeline():
    pipe = tiny_causal_pipeline()
    encoder = pipe.text_encoder
    wan = WanPipeline(
        encoder.tokenizer, encoder.text_encoder, pipe.vae, tiny_scheduler(), transformer=pipe.generator
    )
    with torch.no_grad():  # as every caller encodes prompts (with autograd on, CPU kernels round differently)
        expected, _ = wan.encode_prompt(
            PROMPT, do_classifier_free_guidance=False, max_sequence_length=8, device=torch.device("cpu")
        )
    states, lengths = encoder(PROMPT, "cpu")
    assert lengths.tolist() == [6]  # five words and </s>
    assert torch.equal(states, expected)  # the one prompt encoder is encode_prompt itself
    assert states[:, 6:].abs().max() == 0


def test_renoise_sampler_and_noisy_context_follow_the_seed():
    pipe = tiny_causal_pipeline(vae=False, sampler="renoise", context_timestep=100.0)
    noise = tiny_noise(4)

    def rollout(seed):
        return pipe.inference(noise, PROMPT, return_latents=True, rng=torch.Generator().manual_seed(seed))[1]

    assert torch.equal(rollout(0), rollout(0))
    assert not torch.allclose(rollout(0), rollout(1))
