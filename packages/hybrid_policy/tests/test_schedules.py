import math

import pytest
import torch

from kinema.hybrid_policy import BetaSchedule, HybridConfig, free_bits_kl, gaussian_kl


def test_gaussian_kl_matches_the_closed_form():
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (0 - ln 4 + (4 + 1) / 1 - 1) = 2 - ln 2
    kl = gaussian_kl(
        torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]]), torch.zeros(1, 1), torch.zeros(1, 1)
    )
    assert kl.item() == pytest.approx(2 - math.log(2), abs=1e-6)
    # KL(N(0, 1) || N(2, e^2)) = 0.5 * (2 - 0 + (1 + 4) / e^2 - 1)
    kl = gaussian_kl(torch.zeros(1, 1), torch.zeros(1, 1), torch.full((1, 1), 2.0), torch.full((1, 1), 2.0))
    assert kl.item() == pytest.approx(0.5 * (1 + 5 / math.e**2), abs=1e-6)


def test_gaussian_kl_is_zero_for_equal_gaussians_and_per_dim():
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5)
    kl = gaussian_kl(mu, logvar, mu, logvar)
    assert kl.shape == (3, 5)
    assert torch.allclose(kl, torch.zeros(3, 5), atol=1e-6)


def test_free_bits_floors_each_dims_batch_mean():
    kl = torch.tensor([[0.01, 1.0], [0.03, 3.0]])  # dim means 0.02 and 2.0
    assert free_bits_kl(kl, 0.0).item() == pytest.approx(2.02)
    assert free_bits_kl(kl, 0.5).item() == pytest.approx(0.5 + 2.0)  # dim 0 raised to the floor


def test_free_bits_gives_no_gradient_under_the_floor():
    kl = torch.tensor([[0.01, 1.0], [0.03, 3.0]], requires_grad=True)
    free_bits_kl(kl, 0.5).backward()
    assert kl.grad[:, 0].abs().sum() == 0  # dim 0 sits under the floor
    assert torch.allclose(kl.grad[:, 1], torch.tensor([0.5, 0.5]))


def test_free_bits_rejects_negative_floor():
    with pytest.raises(ValueError, match="free_bits"):
        free_bits_kl(torch.zeros(1, 1), -0.1)


def test_linear_annealing_values():
    schedule = BetaSchedule.parse("linear:0.01:100")
    assert [schedule(s) for s in (0, 50, 100, 500)] == pytest.approx([0.0, 0.005, 0.01, 0.01])


def test_cyclical_annealing_values():
    schedule = BetaSchedule.parse("cyclical:1:100:0.5")
    assert [schedule(s) for s in (0, 25, 50, 75, 100, 125)] == pytest.approx([0, 0.5, 1, 1, 0, 0.5])
    assert BetaSchedule.parse("cyclical:2:10")(4) == pytest.approx(2 * 0.4 / 0.5)


def test_constant_and_round_trip():
    assert BetaSchedule.parse("0.3")(1000) == pytest.approx(0.3)
    for text in ("constant:0.3", "linear:0.01:2000", "cyclical:0.01:500:0.25"):
        assert str(BetaSchedule.parse(str(BetaSchedule.parse(text)))) == str(BetaSchedule.parse(text))


@pytest.mark.parametrize("text", ["linear:abc:10", "sigmoid:1:10", "linear:0.1", "cyclical:1:0", "", "-1"])
def test_unparseable_schedule_is_a_clear_error(text):
    with pytest.raises(ValueError, match="kl schedule"):
        BetaSchedule.parse(text)


def test_config_names_the_bad_schedule():
    with pytest.raises(ValueError, match="linear:x"):
        HybridConfig(kl_schedule="linear:x")
