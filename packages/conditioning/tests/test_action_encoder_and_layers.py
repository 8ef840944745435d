import pytest
import torch

from kinema.conditioning import ActionEncoder, build_injector, output_scales, select_layers
from kinema.conditioning._registry import INJECTORS


def test_action_encoder_applies_magnitude_scale_once():
    enc = ActionEncoder(num_actions=2, hidden_dim=3, num_frames=4, magnitude_scale=[100, 1])
    with torch.no_grad():
        first, second = enc.action_embed[0], enc.action_embed[2]
        first.weight.zero_()
        first.bias.zero_()
        first.weight[0, 2] = 1.0  # hidden 0 <- magnitude of action 0 (scaled by 100)
        first.weight[1, 3] = 1.0  # hidden 1 <- magnitude of action 1 (scale 1)
        first.weight[2, 0] = 1.0  # hidden 2 <- binary of action 0
        second.weight.copy_(torch.eye(3))
        second.bias.zero_()
        enc.temporal_pos_embed.zero_()
        enc.temporal_pos_embed[0, 1] = 10.0
    binary = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # (1, 2, 2)
    magnitude = torch.tensor([[[0.02, 0.5], [0.0, 0.0]]])
    out = enc(binary, magnitude)  # (1, 2, 3)
    silu = torch.nn.functional.silu
    expected = torch.stack(
        [
            silu(torch.tensor([2.0, 0.5, 1.0])),  # 0.02 * 100 = 2
            silu(torch.tensor([0.0, 0.0, 0.0])) + 10.0,
        ]
    ).unsqueeze(0)
    assert torch.allclose(out, expected, atol=1e-6)


def test_action_encoder_state_dict_names_match_reference_and_exclude_scale():
    enc = ActionEncoder(num_actions=8, hidden_dim=16, num_frames=20, magnitude_scale=[100] * 4 + [1] * 4)
    assert set(enc.state_dict()) == {
        "action_embed.0.weight",
        "action_embed.0.bias",
        "action_embed.2.weight",
        "action_embed.2.bias",
        "temporal_pos_embed",
    }
    assert enc.temporal_pos_embed.shape == (1, 20, 16)
    assert enc.magnitude_scale.tolist() == [100.0] * 4 + [1.0] * 4


def test_action_encoder_bad_input():
    enc = ActionEncoder(num_actions=8, hidden_dim=16, num_frames=20)
    with pytest.raises(ValueError, match=r"action_binary: expected shape \(B, F, 8\), got \(1, 20, 7\)"):
        enc(torch.zeros(1, 20, 7), torch.zeros(1, 20, 7))
    with pytest.raises(ValueError, match="action_magnitude: expected the shape of action_binary"):
        enc(torch.zeros(1, 20, 8), torch.zeros(1, 19, 8))
    with pytest.raises(ValueError, match="21 frames, but the encoder has position embeddings for 20"):
        enc(torch.zeros(1, 21, 8), torch.zeros(1, 21, 8))
    with pytest.raises(ValueError, match="magnitude_scale: expected 8 values"):
        ActionEncoder(num_actions=8, hidden_dim=4, magnitude_scale=[1, 2])


def test_select_layers_specs():
    assert select_layers(None, 4) == (0, 1, 2, 3)
    assert select_layers("all", 3) == (0, 1, 2)
    assert select_layers("every:3", 30) == tuple(range(0, 30, 3))
    assert select_layers("25, 0,5", 30) == (0, 5, 25)
    assert select_layers([2, 1], 3) == (1, 2)
    with pytest.raises(ValueError, match=r"\[30\] outside the model's 30 layers"):
        select_layers([0, 30], 30)
    with pytest.raises(ValueError, match="duplicate"):
        select_layers("1,1", 3)
    with pytest.raises(ValueError, match="every:k"):
        select_layers("every:0", 3)
    with pytest.raises(ValueError, match="comma-separated"):
        select_layers("first", 3)
    with pytest.raises(ValueError, match="ambiguous"):
        select_layers(3, 30)


def test_output_scales():
    scales = output_scales(30, 0.01)
    assert scales.shape == (30,) and scales.requires_grad
    assert torch.equal(scales, torch.full((30,), 0.01))


def test_build_injector_every_kind():
    assert set(INJECTORS) == {"adaln_zero", "film", "cross_attn_frame", "residual"}
    ada = build_injector("adaln_zero", cond_dim=4, hidden_dim=8)
    assert ada(torch.randn(1, 4)).shape == (1, 1, 6, 8)
    film = build_injector("film", cond_dim=4, num_features=8)
    x = torch.randn(1, 8, 2, 2)
    assert torch.equal(film(x, torch.randn(1, 4)), x)
    attn = build_injector("cross_attn_frame", hidden_dim=8, cond_dim=4, num_heads=2, initial_scale=0.0)
    tokens = torch.randn(1, 6, 8)
    assert torch.equal(attn(tokens, torch.randn(1, 2, 1, 4), num_frames=2), tokens)
    res = build_injector("residual", hidden_dim=8, cond_dim=4, initial_scale=0.0)
    assert torch.equal(res(tokens, torch.randn(1, 2, 4), num_frames=2), tokens)
    with pytest.raises(ValueError, match=r"unknown injector 'gate'; expected one of"):
        build_injector("gate")
    with pytest.raises(ValueError, match="bad config for FiLM"):
        build_injector("film", cond_dim=4, num_channels=8)
