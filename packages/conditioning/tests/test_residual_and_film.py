import pytest
import torch

from kinema.conditioning import FiLM, ResidualInjector
from kinema.conditioning.testing import changed_frames


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_residual_identity_at_scale_zero_and_hand_computed(dtype):
    inj = ResidualInjector(hidden_dim=4, cond_dim=2, initial_scale=0.0).to(dtype)
    x = torch.randn(1, 6, 4).to(dtype)
    cond = torch.randn(1, 3, 2).to(dtype)
    assert torch.equal(inj(x, cond, num_frames=3), x)

    with torch.no_grad():
        inj.to_residual.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]]))
        inj.output_scale.fill_(0.5)
    x = torch.zeros(1, 4, 4, dtype=dtype)
    cond = torch.tensor([[[2.0, 4.0], [-2.0, 0.0]]], dtype=dtype)  # 2 frames of 2 tokens
    out = inj(x, cond, num_frames=2)
    expected = torch.tensor([[[1.0, 2.0, 3.0, 0.0]] * 2 + [[-1.0, 0.0, -1.0, 0.0]] * 2], dtype=dtype)
    assert out.dtype == dtype and torch.equal(out, expected)


def test_residual_locality_and_gradients():
    torch.manual_seed(0)
    inj = ResidualInjector(hidden_dim=8, cond_dim=3)
    x = torch.randn(2, 20, 8)
    cond = torch.randn(2, 4, 3)
    base = inj(x, cond, num_frames=4)
    changed = cond.clone()
    changed[:, 2] += 1
    assert changed_frames(base, inj(x, changed, num_frames=4), 4) == [2]
    inj(x, cond, num_frames=4).pow(2).sum().backward()
    assert inj.to_residual.weight.grad.abs().sum() > 0 and inj.output_scale.grad.abs() > 0


def test_residual_bad_input():
    inj = ResidualInjector(hidden_dim=8, cond_dim=3)
    with pytest.raises(ValueError, match="num_frames: 3 frames do not divide the 20 tokens"):
        inj(torch.randn(2, 20, 8), torch.randn(2, 3, 3), num_frames=3)
    with pytest.raises(ValueError, match=r"cond: expected \(B, F=4, 3\), got \(2, 5, 3\)"):
        inj(torch.randn(2, 20, 8), torch.randn(2, 5, 3), num_frames=4)
    with pytest.raises(ValueError, match=r"parameters are torch\.float32"):
        inj(torch.randn(2, 20, 8), torch.randn(2, 4, 3, dtype=torch.float64), num_frames=4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_film_identity_at_init_on_maps_and_tokens(dtype):
    film = FiLM(cond_dim=3, num_features=5)
    x = torch.randn(2, 5, 4, 4).to(dtype)
    out = film(x, torch.randn(2, 3))
    assert out.dtype == dtype and torch.equal(out, x)
    tokens = FiLM(cond_dim=3, num_features=5, channel_dim=-1)
    t = torch.randn(2, 7, 5).to(dtype)
    assert torch.equal(tokens(t, torch.randn(2, 3)), t)
    assert torch.equal(tokens(t, torch.randn(2, 7, 3)), t)


def test_film_hand_computed_and_gradients():
    film = FiLM(cond_dim=1, num_features=2)
    with torch.no_grad():
        film.to_gamma_beta.weight.copy_(
            torch.tensor([[1.0], [0.0], [0.0], [2.0]])
        )  # delta=(c, 0), beta=(0, 2c)
    x = torch.ones(1, 2, 2, 2)
    out = film(x, torch.tensor([[3.0]]))
    assert torch.equal(out[0, 0], torch.full((2, 2), 4.0))  # (1 + 3) * 1 + 0
    assert torch.equal(out[0, 1], torch.full((2, 2), 7.0))  # (1 + 0) * 1 + 6

    fresh = FiLM(cond_dim=3, num_features=4)
    fresh(torch.randn(2, 4, 3, 3), torch.randn(2, 3)).pow(2).sum().backward()
    assert fresh.to_gamma_beta.weight.grad.abs().sum() > 0


def test_film_bad_input():
    film = FiLM(cond_dim=3, num_features=5)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 5, \.\.\.\), got \(2, 4, 3, 3\)"):
        film(torch.randn(2, 4, 3, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="batch size 2"):
        film(torch.randn(2, 5, 3, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="channel_dim"):
        FiLM(3, 5, channel_dim=2)
