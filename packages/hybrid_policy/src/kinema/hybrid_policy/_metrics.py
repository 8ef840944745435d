"""The ablation's metrics, on numpy arrays: smoothness, chunk fidelity, diversity and mode coverage.

T time steps, A action dims, K samples, C chunk steps, B observations.
"""

from __future__ import annotations

import math

import numpy as np


def smoothness(actions: np.ndarray) -> dict[str, float]:
    """Of one executed action sequence (T, A): ``step`` = mean ||a_{t+1} - a_t|| and ``jerk`` = mean
    ||a_{t+3} - 3 a_{t+2} + 3 a_{t+1} - a_t|| (the third difference, per step^3). NaN where T is too short."""
    actions = np.asarray(actions, dtype=np.float64)
    if actions.ndim != 2:
        raise ValueError(f"actions: expected (T, A), got shape {actions.shape}")
    first = np.diff(actions, n=1, axis=0)
    third = np.diff(actions, n=3, axis=0)
    return {
        "step": float(np.linalg.norm(first, axis=1).mean()) if len(first) else math.nan,
        "jerk": float(np.linalg.norm(third, axis=1).mean()) if len(third) else math.nan,
    }


def mean_smoothness(sequences) -> dict[str, float]:
    """:func:`smoothness` averaged over sequences (each (T, A)), NaNs (too short) left out."""
    values = [smoothness(s) for s in sequences]
    out = {}
    for key in ("step", "jerk"):
        finite = [v[key] for v in values if math.isfinite(v[key])]
        out[key] = float(np.mean(finite)) if finite else math.nan
    return out


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


def mode_coverage(labels, modes=("left", "right")) -> dict:
    """Of the mode label of each successful episode (or sample): counts per mode, ``coverage`` (fraction of
    ``modes`` seen at least once) and ``entropy`` (of the mode frequencies, in units of log(len(modes)): 1 for
    an even split, 0 for one mode). Labels outside ``modes`` are counted under ``other``."""
    labels = list(labels)
    counts = {m: labels.count(m) for m in modes}
    counts["other"] = len(labels) - sum(counts.values())
    total = sum(counts[m] for m in modes)
    entropy = 0.0
    if total:
        for m in modes:
            p = counts[m] / total
            if p > 0:
                entropy -= p * math.log(p)
        entropy /= math.log(len(modes))
    return {
        "counts": counts,
        "coverage": sum(counts[m] > 0 for m in modes) / len(modes),
        "entropy": entropy,
    }
