import numpy as np
import pytest

from kinema.hybrid_policy import chunk_fidelity, chunk_spread, mode_coverage, smoothness


def test_smoothness_of_a_ramp_and_a_cubic():
    t = np.arange(10.0)[:, None]
    ramp = np.concatenate([3 * t, 4 * t], axis=1)  # constant velocity 5, no jerk
    assert smoothness(ramp) == pytest.approx({"step": 5.0, "jerk": 0.0})
    cubic = t**3  # third difference of t^3 is 6 everywhere
    assert smoothness(cubic)["jerk"] == pytest.approx(6.0)


def test_chunk_fidelity_counts_real_steps_only():
    target = np.zeros((1, 3, 2))
    predicted = np.array([[[3.0, 4.0], [1.0, 1.0], [100.0, 100.0]]])
    is_pad = np.array([[False, False, True]])
    out = chunk_fidelity(predicted, target, is_pad)
    assert out["l1"] == pytest.approx((3 + 4 + 1 + 1) / 4)
    assert out["l2"] == pytest.approx((5 + np.sqrt(2)) / 2)


def test_chunk_spread_zero_for_identical_samples():
    samples = np.repeat(np.random.default_rng(0).normal(size=(2, 1, 4, 2)), 5, axis=1)
    assert chunk_spread(samples) == 0.0
    two = np.stack([np.zeros((4, 2)), 2 * np.ones((4, 2))])[None]  # (1, 2, 4, 2): std 1 everywhere
    assert chunk_spread(two) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="K >= 2"):
        chunk_spread(samples[:, :1])


def test_mode_coverage():
    out = mode_coverage(["left", "right", "left", "middle"])
    assert out["counts"] == {"left": 2, "right": 1, "other": 1}
    assert out["coverage"] == 1.0
    assert mode_coverage(["left"] * 4) == {
        "counts": {"left": 4, "right": 0, "other": 0},
        "coverage": 0.5,
        "entropy": 0.0,
    }
    assert mode_coverage(["left", "right"])["entropy"] == pytest.approx(1.0)
