"""The ablation's metrics, on numpy arrays: chunk fidelity and diversity; smoothness and mode coverage of rollouts
are kinema.robot_data.sim.dock's (re-exported here).

A action dims, K samples, C chunk steps, B observations.
"""

from __future__ import annotations

import math

import numpy as np

from kinema.robot_data.sim.dock import mean_smoothness, mode_coverage, smoothness

__all__ = ["chunk_fidelity", "chunk_spread", "mean_smoothness", "mode_coverage", "smoothness"]


def chunk_fidelity(predicted: np.ndarray, target: np.ndarray, is_pad: np.ndarray) -> dict[str, float]:
    """L1 and L2 between predicted and ground-truth chunks (B, C, A) over the real (not padded) steps:
    ``l1`` = mean |error| per entry, ``l2`` = mean Euclidean norm of the per-step error (raw units)."""
    predicted = np.asarray(predicted, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    keep = ~np.asarray(is_pad, dtype=bool)  # (B, C)
    if predicted.shape != target.shape or keep.shape != predicted.shape[:2]:
        raise ValueError(
            f"chunk_fidelity: expected predicted and target (B, C, A) and is_pad (B, C), got {predicted.shape}, "
            f"{target.shape}, {keep.shape}"
        )
    error = (predicted - target)[keep]  # (real steps, A)
    if not len(error):
        return {"l1": math.nan, "l2": math.nan}
    return {"l1": float(np.abs(error).mean()), "l2": float(np.linalg.norm(error, axis=1).mean())}


def chunk_spread(samples: np.ndarray) -> float:
    """Diversity of K sampled chunks per observation (B, K, C, A): the standard deviation across the K samples,
    averaged over observations, chunk steps and action dims (0 for a deterministic policy)."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 4:
        raise ValueError(f"samples: expected (B, K, C, A), got shape {samples.shape}")
    if samples.shape[1] < 2:
        raise ValueError(
            f"samples: need K >= 2 samples per observation to measure a spread, got {samples.shape[1]}"
        )
    return float(samples.std(axis=1, ddof=0).mean())
