import pytest
import torch
from torch import nn

from kinema.conditioning import MODULATION_CHUNKS, ActionModulationProjection, AdaLNZero, apply_gate, modulate


class TinyDiTBlock(nn.Module):
    """x + gate * f(LN(x) * (1 + scale) + shift), twice: the adaLN-Zero block of DiT."""

    def __init__(self, dim: int, cond_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.ada = AdaLNZero(cond_dim, dim)

    def forward(self, x, cond):
        sa, sc, ga, sf, scf, gf = self.ada(cond).unbind(2)  # each (B, F, D)
        x = apply_gate(x, ga, self.attn(modulate(self.norm(x), sa, sc)))
        return apply_gate(x, gf, self.ffn(modulate(self.norm(x), sf, scf)))


def test_adaln_zero_outputs_exact_zeros_with_frame_axis():
    ada = AdaLNZero(cond_dim=5, hidden_dim=8)
    flat = ada(torch.randn(3, 5))
    per_frame = ada(torch.randn(3, 4, 5))
    assert flat.shape == (3, 1, 6, 8) and per_frame.shape == (3, 4, 6, 8)
    assert torch.equal(flat, torch.zeros_like(flat)) and torch.equal(per_frame, torch.zeros_like(per_frame))
    assert len(MODULATION_CHUNKS) == 6 and MODULATION_CHUNKS[2] == "gate_attn"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dit_block_is_identity_at_init_and_its_modulation_gets_gradients(dtype):
    torch.manual_seed(0)
    block = TinyDiTBlock(dim=16, cond_dim=6).to(dtype)
    x = torch.randn(2, 12, 16, dtype=dtype)
    cond = torch.randn(2, 3, 6, dtype=dtype)  # 3 frames of 4 tokens
    out = block(x, cond)
    assert out.dtype == dtype
    assert torch.equal(out, x)
    out.float().pow(2).sum().backward()
    grad = block.ada.adaLN_modulation[1].weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_modulate_matches_hand_computation_per_frame_and_broadcast():
    x = torch.arange(2 * 6 * 3, dtype=torch.float32).view(2, 6, 3)
    shift = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]]).expand(2, 2, 3)  # 2 frames of 3 tokens
    scale = torch.tensor([[[0.5, 0.5, 0.5], [-1.0, 0.0, 1.0]]]).expand(2, 2, 3)
    out = modulate(x, shift, scale)
    expected = x.clone()
    expected[:, :3] = x[:, :3] * 1.5 + torch.tensor([1.0, 2.0, 3.0])
    expected[:, 3:] = x[:, 3:] * torch.tensor([0.0, 1.0, 2.0])
    assert torch.allclose(out, expected)
    out_all = modulate(x, shift[:, 0], scale[:, 0])  # (B, D): every token
    assert torch.allclose(out_all, x * 1.5 + torch.tensor([1.0, 2.0, 3.0]))


def test_modulate_keeps_bf16_stream_and_computes_in_fp32():
    x = torch.full((1, 2, 4), 3.0, dtype=torch.bfloat16)
    scale = torch.full((1, 4), 2.0**-8)
    out = modulate(x, torch.zeros(1, 4), scale)
    assert out.dtype == torch.bfloat16
    # fp32: 3 * (1 + 2^-8) = 3.0117, which bf16 (spacing 2^-6 at 3) rounds to 3.015625. In bf16 arithmetic
    # 1 + 2^-8 would round to 1 first and the modulation would vanish (3.0).
    assert torch.equal(out, torch.full_like(x, 3.015625))
    assert torch.equal(x * (1 + scale.to(torch.bfloat16)), x)


def test_action_modulation_projection_api_of_the_guide():
    torch.manual_seed(0)
    proj = ActionModulationProjection(action_dim=12, hidden_dim=8, num_frames=1)
    features = torch.randn(2, 12)
    assert proj(features).shape == (2, 1, 6, 8)
    modulation = proj(features, num_frames=3)
    assert modulation.shape == (2, 3, 6, 8)
    assert torch.equal(modulation, torch.zeros_like(modulation))  # zero_init

    live = ActionModulationProjection(action_dim=12, hidden_dim=8, zero_init=False)
    m = live(features, num_frames=3)
    assert m.abs().sum() > 0
    assert torch.equal(
        m[:, 0], m[:, 2]
    )  # one feature vector for the clip: the same modulation in every frame
    per_frame = live(torch.randn(2, 4, 12))
    assert per_frame.shape == (2, 4, 6, 8) and not torch.equal(per_frame[:, 0], per_frame[:, 1])


def test_adaln_bad_input_names_the_argument():
    ada = AdaLNZero(cond_dim=5, hidden_dim=8)
    with pytest.raises(ValueError, match=r"cond: expected shape \(B, 5\) or \(B, F, 5\), got \(3, 4\)"):
        ada(torch.randn(3, 4))
    proj = ActionModulationProjection(action_dim=4, hidden_dim=8)
    with pytest.raises(ValueError, match="action_features"):
        proj(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="num_frames=2"):
        proj(torch.randn(2, 3, 4), num_frames=2)
    with pytest.raises(ValueError, match="num_frames"):
        proj(torch.randn(2, 4), num_frames=0)
