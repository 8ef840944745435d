"""Every module compiles with torch.compile(fullgraph=True) and gives the eager result."""

import pytest
import torch

from kinema.conditioning import (
    ActionEncoder,
    ActionModulationProjection,
    AdaLNZero,
    FiLM,
    PerFrameCrossAttention,
    ResidualInjector,
    frame_window,
)


def _cases():
    torch.manual_seed(0)
    x = torch.randn(2, 12, 16)
    return {
        "adaln_zero": (AdaLNZero(6, 16, zero_init=False), (torch.randn(2, 3, 6),), {}),
        "action_modulation": (
            ActionModulationProjection(6, 16, zero_init=False),
            (torch.randn(2, 6),),
            {"num_frames": 3},
        ),
        "film_maps": (FiLM(6, 4), (torch.randn(2, 4, 3, 3), torch.randn(2, 6)), {}),
        "cross_attn_k1": (
            PerFrameCrossAttention(16, 8, 4, initial_scale=0.5),
            (x, torch.randn(2, 3, 1, 8), 3),
            {},
        ),
        "cross_attn_k3": (
            PerFrameCrossAttention(16, 8, 4, initial_scale=0.5),
            (x, torch.randn(2, 3, 3, 8), 3),
            {},
        ),
        "residual": (ResidualInjector(16, 8, initial_scale=0.5), (x, torch.randn(2, 3, 8), 3), {}),
        "action_encoder": (
            ActionEncoder(8, 16, 20, [100] * 4 + [1] * 4),
            (torch.ones(2, 20, 8), torch.rand(2, 20, 8)),
            {},
        ),
    }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_fullgraph_compile_matches_eager(name):
    module, args, kwargs = CASES[name]
    torch._dynamo.reset()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    expected = module(*args, **kwargs)
    out = compiled(*args, **kwargs)
    assert torch.allclose(out, expected, atol=1e-6)
    out.float().sum().backward()  # the backward graph traces too


def test_windowed_attention_compiles_with_inductor():
    torch._dynamo.reset()
    layer = PerFrameCrossAttention(16, 8, 4, initial_scale=0.5)
    x = torch.randn(2, 12, 16)
    window, mask = frame_window(torch.randn(2, 3, 8), radius=1)

    def step(x, window, mask):
        return layer(x, window, 3, cond_mask=mask)

    compiled = torch.compile(step, fullgraph=True)
    assert torch.allclose(compiled(x, window, mask), step(x, window, mask), atol=1e-5)
