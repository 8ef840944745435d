"""The hand-written backward of the K > 1 per-frame attention against autograd."""

import pytest
import torch

from kinema.conditioning import PerFrameCrossAttention
from kinema.conditioning._frame_attention_kernel import FoldedFrameAttention
from kinema.conditioning.testing import reference_per_frame_attention


@pytest.mark.parametrize("eps", [None, 1e-5])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("dropout", [False, True])
def test_gradcheck(eps, masked, dropout):
    g = torch.Generator().manual_seed(0)
    bf, hw, dim, heads, head_dim, keys = 2, 3, 5, 2, 3, 3
    a, hk = heads * head_dim, heads * keys

    def rand(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)

    x, w_q, key_blocks, values = rand(bf, hw, dim), rand(a, dim), rand(bf, a, hk), rand(bf, hk, dim)
    scale = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([True, False, True]).view(1, 1, 1, keys).expand(bf, 1, 1, keys) if masked else None
    keep = (
        (torch.rand(bf, hw, hk, generator=g, dtype=torch.float64) > 0.3).double() / 0.7 if dropout else None
    )
    assert torch.autograd.gradcheck(
        lambda *t: FoldedFrameAttention.apply(*t, mask, keep, heads, eps), (x, w_q, key_blocks, values, scale)
    )


@pytest.mark.parametrize("qk_norm", [True, False])
def test_every_gradient_matches_plain_attention(qk_norm):
    torch.manual_seed(0)
    layer = PerFrameCrossAttention(12, 6, num_heads=3, qk_norm=qk_norm, initial_scale=0.4).double()
    with torch.no_grad():  # make the norm weights non-trivial so their gradients are checked too
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 4 * 5, 12, dtype=torch.float64, requires_grad=True)
    cond = torch.randn(2, 4, 3, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 3) > 0.3
    mask[:, 0] = True
    grad = torch.randn(2, 20, 12, dtype=torch.float64)

    def grads(fn):
        for p in [x, cond, *layer.parameters()]:
            p.grad = None
        fn().backward(grad)
        return [t.grad.clone() for t in [x, cond, *layer.parameters()]]

    fast = grads(lambda: layer(x, cond, num_frames=4, cond_mask=mask))
    slow = grads(lambda: reference_per_frame_attention(x, cond, 4, layer, layer.output_scale, cond_mask=mask))
    names = ["x", "cond", *(n for n, _ in layer.named_parameters())]
    for name, a, b in zip(names, fast, slow):
        assert torch.allclose(a, b, atol=1e-10), name


def test_dropout_only_in_training():
    torch.manual_seed(0)
    layer = PerFrameCrossAttention(8, 4, num_heads=2, initial_scale=1.0, dropout=0.5)
    x, cond = torch.randn(1, 6, 8), torch.randn(1, 2, 3, 4)
    layer.eval()
    plain = layer(x, cond, num_frames=2)
    assert torch.equal(plain, layer(x, cond, num_frames=2))
    layer.train()
    torch.manual_seed(1)
    first = layer(x, cond, num_frames=2)
    torch.manual_seed(1)
    assert torch.equal(first, layer(x, cond, num_frames=2)) and not torch.allclose(first, plain)
