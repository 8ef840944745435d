"""Metrics of simulated rollouts, on numpy arrays: smoothness of executed actions and mode coverage.

T time steps, A action dims.
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
