"""Block-causal Wan forward: equality with diffusers, the masks, the rolling KV cache against the masked sequence."""

import pytest
import torch

from kinema.video_world_model.causal._attention import (
    RollingKVCache,
    block_causal_frame_mask,
    block_causal_mask,
    teacher_forcing_mask,
)
from kinema.video_world_model.causal._model import CausalWanModel
from kinema.video_world_model.modeling import token_timesteps
from kinema.video_world_model.testing import tiny_transformer

HW = 4  # 4x4 latents, 2x2 patches


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds synchronization
    yield
    torch.set_num_threads(threads)


def inputs(frames, batch=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, 4, frames, 4, 4, generator=g)
    text = torch.randn(batch, 5, 16, generator=g)
    timesteps = torch.rand(batch, frames, generator=g) * 1000
    modulation = torch.randn(batch, frames, 6, 24, generator=g) * 0.3
    return latents, text, timesteps, modulation


def test_one_unmasked_pass_equals_diffusers_forward_bitwise():
    transformer = tiny_transformer()
    model = CausalWanModel(transformer)
    latents, text, _, _ = inputs(5, batch=2)
    timesteps = torch.tensor([[0.0, 700, 700, 700, 700], [100, 250, 400, 550, 900]])
    with torch.no_grad():
        plain = transformer(latents, timesteps.repeat_interleave(HW, dim=1), text, return_dict=False)[0]
        ours = model(
            latents, timesteps, model.text_cache(text), model.rotary(model.rotary_table(5, 4, 4), slice(0, 5))
        )
    assert torch.equal(ours, plain)
    # the TI2V helper's per-token timesteps are the per-frame ones repeated
    assert torch.equal(
        token_timesteps(torch.tensor([700.0]), 5, HW)[0, ::HW], torch.tensor([0.0, 700, 700, 700, 700])
    )


def test_block_causal_frame_mask_by_hand():
    # 6 frames, blocks of 2, window 3: block b sees frames >= end(b) - 3 of blocks <= b
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 1],
            [0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(block_causal_frame_mask(6, 2, 3), expected)
    unbounded = block_causal_frame_mask(6, 2, None)
    assert torch.equal(unbounded, torch.tensor([[j // 2 <= i // 2 for j in range(6)] for i in range(6)]))
    tokens = block_causal_mask(6, 2, HW, 3)
    assert tokens.shape == (24, 24) and torch.equal(tokens[::HW, ::HW], expected)
    assert tokens[:HW, :HW].all()


def test_teacher_forcing_mask_by_hand():
    # 4 frames, blocks of 2: rows/cols are [clean 0..3, noisy 0..3]
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 1, 0, 0],  # noisy block 0: only itself
            [0, 0, 0, 0, 1, 1, 0, 0],
            [1, 1, 0, 0, 0, 0, 1, 1],  # noisy block 1: clean block 0 and itself
            [1, 1, 0, 0, 0, 0, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(teacher_forcing_mask(4, 2, 1), expected)
    windowed = teacher_forcing_mask(6, 2, 1, window_frames=3)  # noisy block 2 sees clean frame 3 only
    assert windowed[6 + 4, :6].tolist() == [False, False, False, True, False, False]


@pytest.mark.parametrize("window", [None, 4, 5])
def test_incremental_cache_equals_the_masked_sequence(window):
    """Each block written to the cache at its own timesteps and committed: the same outputs as one masked pass."""
    model = CausalWanModel(tiny_transformer())
    frames, block = 8, 2
    latents, text, timesteps, modulation = inputs(frames)
    text_kv = model.text_cache(text)
    table = model.rotary_table(frames, 4, 4)
    with torch.no_grad():
        full = model(
            latents, timesteps, text_kv, model.rotary(table, slice(0, frames)), action_modulation=modulation,
            attention_mask=block_causal_mask(frames, block, HW, window),
        )  # fmt: skip
        cache = RollingKVCache(model.num_layers, HW, block, frames if window is None else window, window)
        pieces = []
        for start in range(0, frames, block):
            part = slice(start, start + block)
            pieces.append(
                model(
                    latents[:, :, part],
                    timesteps[:, part],
                    text_kv,
                    model.rotary(table, part),
                    cache=cache,
                    action_modulation=modulation[:, part],
                )
            )
            cache.commit()
    torch.testing.assert_close(torch.cat(pieces, dim=2), full, rtol=1e-5, atol=1e-5)
    if window is not None:  # the window is real: without it block 3 would see more
        unbounded = model(
            latents, timesteps, text_kv, model.rotary(table, slice(0, frames)), action_modulation=modulation,
            attention_mask=block_causal_mask(frames, block, HW, None),
        )  # fmt: skip
        assert not torch.allclose(unbounded[:, :, -block:], full[:, :, -block:])


def test_window_caps_the_cache_tensors():
    model = CausalWanModel(tiny_transformer())
    frames, block, window = 12, 2, 5
    latents, text, timesteps, _ = inputs(frames)
    text_kv = model.text_cache(text)
    table = model.rotary_table(frames, 4, 4)
    cache = RollingKVCache(model.num_layers, HW, block, capacity_frames=window, window_frames=window)
    heads, head_dim = 2, 12
    with torch.no_grad():
        for index, start in enumerate(range(0, frames, block)):
            part = slice(start, start + block)
            model(latents[:, :, part], timesteps[:, part], text_kv, model.rotary(table, part), cache=cache)
            cache.commit()
            assert cache.context_frames == min((index + 1) * block, window - block)
            assert cache.start_frame == max(0, (index + 1) * block - (window - block))
            for layer in range(model.num_layers):
                assert cache.k[layer].shape == (1, window * HW, heads, head_dim)
                assert cache.v[layer].shape == (1, window * HW, heads, head_dim)
    assert cache.cached_tokens() == (window - block) * HW
    assert text_kv[0][0].shape == (1, 5, heads, head_dim)  # text keys: computed once, (B, S, H, d)


def test_cache_refuses_more_frames_than_it_holds():
    cache = RollingKVCache(1, HW, 2, capacity_frames=4, window_frames=4)
    cache.begin(2)
    cache.commit()
    with pytest.raises(ValueError, match="exceed the capacity"):
        cache.begin(4)
    with pytest.raises(ValueError, match="cannot hold one block"):
        RollingKVCache(1, HW, 3, capacity_frames=2, window_frames=2)
