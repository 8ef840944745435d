import pytest
import torch

from kinema.conditioning import PerFrameCrossAttention, frame_window
from kinema.conditioning.testing import changed_frames, reference_per_frame_attention

B, F, HW, D, DC, H = 2, 3, 5, 16, 12, 4


def make_inputs(keys: int, dtype=torch.float32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, F * HW, D, generator=g).to(dtype)
    cond = torch.randn(B, F, keys, DC, generator=g).to(dtype)
    return x, cond


@pytest.mark.parametrize("keys", [1, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_identity_with_scale_zero(keys, dtype):
    torch.manual_seed(0)
    layer = PerFrameCrossAttention(D, DC, H, initial_scale=0.0).to(dtype)
    x, cond = make_inputs(keys, dtype)
    out = layer(x, cond, num_frames=F)
    assert out.dtype == dtype
    assert torch.equal(out, x)


@pytest.mark.parametrize("keys", [2, 4])
def test_matches_plain_multihead_attention(keys):
    torch.manual_seed(1)
    layer = PerFrameCrossAttention(D, DC, H, initial_scale=0.3)
    x, cond = make_inputs(keys)
    expected = reference_per_frame_attention(x, cond, F, layer, scale=0.3)
    assert torch.allclose(layer(x, cond, num_frames=F), expected, atol=1e-5)


def test_narrow_attention_width_and_mask_match_reference():
    torch.manual_seed(2)
    layer = PerFrameCrossAttention(D, DC, num_heads=2, attn_dim=8, initial_scale=0.5)
    x, cond = make_inputs(3)
    mask = torch.tensor([[True, True, False], [True, False, False], [True, True, True]])  # (F, K)
    expected = reference_per_frame_attention(x, cond, F, layer, scale=0.5, cond_mask=mask)
    assert torch.allclose(layer(x, cond, num_frames=F, cond_mask=mask), expected, atol=1e-5)
    # a masked key changes nothing
    cond2 = cond.clone()
    cond2[:, 1, 2] += 10.0
    assert torch.equal(
        layer(x, cond2, num_frames=F, cond_mask=mask), layer(x, cond, num_frames=F, cond_mask=mask)
    )


def test_k1_reduces_to_per_frame_residual_of_out_value():
    torch.manual_seed(3)
    layer = PerFrameCrossAttention(D, DC, H, initial_scale=0.7)
    x, cond = make_inputs(1)
    out = layer(x, cond, num_frames=F)
    residual = layer.o_proj(layer.v_proj(cond[:, :, 0]))  # (B, F, D)
    expected = x + 0.7 * residual.repeat_interleave(HW, dim=1)
    assert torch.allclose(out, expected, atol=1e-6)
    # ... and it is what real attention gives with one key (softmax of one logit is 1)
    assert torch.allclose(out, reference_per_frame_attention(x, cond, F, layer, scale=0.7), atol=1e-5)


@pytest.mark.parametrize("keys", [1, 4])
def test_frame_locality(keys):
    torch.manual_seed(4)
    layer = PerFrameCrossAttention(D, DC, H)
    x, cond = make_inputs(keys)
    base = layer(x, cond, num_frames=F)
    for f in range(F):
        changed = cond.clone()
        changed[:, f] += 1.0
        assert changed_frames(base, layer(x, changed, num_frames=F), F) == [f]


def test_gradients_reach_every_parameter_at_default_scale():
    torch.manual_seed(5)
    layer = PerFrameCrossAttention(D, DC, H)
    assert layer.output_scale.item() == pytest.approx(0.01)
    x, cond = make_inputs(4)
    layer(x, cond, num_frames=F).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_k1_gradients_reach_value_path_only_and_scale_zero_freezes_all_but_scale():
    torch.manual_seed(6)
    layer = PerFrameCrossAttention(D, DC, H)
    x, cond = make_inputs(1)
    layer(x, cond, num_frames=F).pow(2).sum().backward()
    for name in ("v_proj.weight", "o_proj.weight", "output_scale"):
        assert layer.get_parameter(name).grad.abs().sum() > 0, name
    assert layer.q_proj.weight.grad is None  # queries drop out with one key

    frozen = PerFrameCrossAttention(D, DC, H, initial_scale=0.0)
    x, cond = make_inputs(4)
    frozen(x, cond, num_frames=F).pow(2).sum().backward()
    assert frozen.output_scale.grad.abs() > 0
    for name, p in frozen.named_parameters():
        if name != "output_scale":
            assert p.grad is None or torch.equal(p.grad, torch.zeros_like(p.grad)), name


def test_external_per_layer_scale():
    layer = PerFrameCrossAttention(D, DC, H, initial_scale=None)
    assert layer.output_scale is None
    x, cond = make_inputs(2)
    assert torch.equal(layer(x, cond, num_frames=F, scale=torch.tensor(0.0)), x)
    with pytest.raises(ValueError, match="scale"):
        layer(x, cond, num_frames=F)


def test_bf16_close_to_fp32():
    torch.manual_seed(7)
    layer = PerFrameCrossAttention(D, DC, H, initial_scale=1.0)
    x, cond = make_inputs(4)
    ref = layer(x, cond, num_frames=F)
    out = layer.to(torch.bfloat16)(x.bfloat16(), cond.bfloat16(), num_frames=F)
    assert out.dtype == torch.bfloat16
    assert torch.allclose(out.float(), ref, atol=0.1, rtol=0.05)


def test_frame_window_indices_and_mask():
    cond = torch.arange(4, dtype=torch.float32).view(1, 4, 1).expand(2, 4, 3)  # frame f holds value f
    window, mask = frame_window(cond, radius=1)
    assert window.shape == (2, 4, 3, 3)
    assert window[0, :, :, 0].tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert mask.tolist() == [[False, True, True], [True, True, True], [True, True, True], [True, True, False]]


def test_bad_input_raises_before_arithmetic():
    layer = PerFrameCrossAttention(D, DC, H)
    x, cond = make_inputs(2)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, F\*HW, 16\), got \(2, 15, 8\)"):
        layer(torch.randn(2, 15, 8), cond, num_frames=F)
    with pytest.raises(ValueError, match="num_frames: 4 frames do not divide the 15 tokens"):
        layer(x, cond, num_frames=4)
    with pytest.raises(ValueError, match=r"cond: expected \(B, F=3, K, 12\), got \(2, 2, 2, 12\)"):
        layer(x, cond[:, :2], num_frames=F)
    with pytest.raises(ValueError, match="cond: expected shape"):
        layer(x, cond[..., :5], num_frames=F)
    with pytest.raises(ValueError, match="batch size 2"):
        layer(x, cond[:1], num_frames=F)
    with pytest.raises(ValueError, match="share a dtype"):
        layer(x, cond.double(), num_frames=F)
    with pytest.raises(ValueError, match=r"parameters are torch\.float32"):
        layer(x.double(), cond.double(), num_frames=F)
    with pytest.raises(ValueError, match="one device"):
        layer(x, cond.to("meta"), num_frames=F)
    with pytest.raises(ValueError, match="parameters are on cpu"):
        layer(x.to("meta"), cond.to("meta"), num_frames=F)
    with pytest.raises(ValueError, match="cond_mask"):
        layer(x, cond, num_frames=F, cond_mask=torch.ones(3, 2))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        PerFrameCrossAttention(D, DC, num_heads=5)
