"""The scripted expert of the docking task: around the wall on the left or on the right, at a steady speed.

Every scene is demonstrated twice, once on each side (:func:`expert_style`), so the same first observation is
followed by either mode exactly half of the time and nothing in the scene predicts the side: the
demonstrations are bimodal, their average (or a per-coordinate median) runs into the wall, and a regressor
cannot escape the ambiguity by memorizing a spurious scene feature.
T steps, P path points.
"""

from __future__ import annotations

import numpy as np

from ._scene import MAX_STEP, SIDES, DockScenes

CLEARANCE = 0.06  # how far below and above the wall the path turns
SPEED = 0.025  # path length per step (x U(0.9, 1.1) per episode: a style the latent can carry)
HOLD_STEPS = 4  # steps at the dock after arriving (chunks near the end then see "stay")


def _chaikin(points: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Corner cutting of a polyline (P, 2), keeping both end points: a smooth curve near the polyline."""
    for _ in range(iterations):
        a, b = points[:-1], points[1:]
        cut = np.empty((2 * len(a), 2))
        cut[0::2] = 0.75 * a + 0.25 * b
        cut[1::2] = 0.25 * a + 0.75 * b
        points = np.concatenate([points[:1], cut[1:-1], points[-1:]])
    return points


def _resample(points: np.ndarray, step: float) -> np.ndarray:
    """Points at arc-length spacing ``step`` along the polyline (P, 2), the last point included."""
    lengths = np.linalg.norm(np.diff(points, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    stations = np.append(np.arange(0.0, arc[-1], step), arc[-1])
    return np.stack([np.interp(stations, arc, points[:, k]) for k in range(2)], axis=1)


def expert_style(seed: int, side: str) -> float:
    """The speed of the demonstration of scene ``seed`` around ``side``: 0.025 x U(0.9, 1.1), drawn per (scene,
    side) pair, a style the latent can carry beside the mode."""
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    rng = np.random.default_rng([int(seed), 1, SIDES.index(side)])
    return SPEED * float(rng.uniform(0.9, 1.1))


def expert_path(scenes: DockScenes, row: int, side: str, speed: float) -> np.ndarray:
    """Positions (T + 1, 2) from the start to the dock around ``side`` of the wall, ``speed`` apart, then
    HOLD_STEPS more at the dock. Actions are positions[1:] (each step's target is the next position)."""
    if side not in SIDES:
        raise ValueError(f"side: expected one of {SIDES}, got {side!r}")
    if not 0 < speed <= MAX_STEP:
        raise ValueError(f"speed: expected 0 < speed <= {MAX_STEP} (the largest step), got {speed}")
    low, high = scenes.wall_box()
    gap_x = scenes.gap_centres()[row, SIDES.index(side)]
    corners = np.array(
        [
            scenes.start[row],
            [gap_x, low[row, 1] - CLEARANCE],
            [gap_x, high[row, 1] + CLEARANCE],
            scenes.dock[row],
        ]
    )
    path = _resample(_chaikin(corners), speed)
    return np.concatenate([path, np.repeat(path[-1:], HOLD_STEPS, axis=0)])
