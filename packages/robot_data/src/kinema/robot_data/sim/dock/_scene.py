"""The docking scene: a point agent in the unit square reaches a dock above a wall it must pass on the left or
on the right. Geometry, seeded scene sampling, collision and success checks, and the top-down image.

N scenes (rows), H/W image size. Coordinates: x to the right, y up, both in [0, 1]; image row 0 is y = 1.

::

    y=1 +---------------------------+
        |           (dock)          |
        |                           |
        |  gap  ###############  gap|      the wall: a rectangle across the middle; the gaps on both
        |       ###############     |      sides are the only ways up
        |                           |
        |          agent            |
    y=0 +---------------------------+
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AGENT_RADIUS = 0.025
DOCK_RADIUS = 0.05  # success: the agent's centre within this distance of the dock's
WALL_HALF_SIZE = (0.3, 0.06)  # (half width, half height)
MAX_STEP = 0.05  # the largest move per step: an action further away is followed only this far
STATE_DIM = 2  # qpos: the agent's (x, y)
ACTION_DIM = 2  # an action: the (x, y) the agent moves to (clipped to MAX_STEP)
ENVIRONMENT_STATE_DIM = 4  # (dock x, dock y, wall centre x, wall centre y)
SIDES = ("left", "right")

_BACKGROUND = np.array([236, 236, 230], np.uint8)
_WALL = np.array([70, 70, 80], np.uint8)
_DOCK = np.array([60, 170, 90], np.uint8)
_AGENT = np.array([220, 50, 40], np.uint8)


@dataclass(frozen=True)
class DockScenes:
    """N scenes as arrays: ``start`` (N, 2) the agent's first position, ``dock`` (N, 2), ``wall`` (N, 2) the
    wall's centre (its half size is :data:`WALL_HALF_SIZE` for every scene), ``seeds`` (N,)."""

    start: np.ndarray
    dock: np.ndarray
    wall: np.ndarray
    seeds: np.ndarray

    def __len__(self) -> int:
        return len(self.seeds)

    def take(self, rows) -> DockScenes:
        rows = np.asarray(rows)
        return DockScenes(self.start[rows], self.dock[rows], self.wall[rows], self.seeds[rows])

    def environment_state(self) -> np.ndarray:
        """(N, 4) float32: dock (x, y), wall centre (x, y)."""
        return np.concatenate([self.dock, self.wall], axis=1).astype(np.float32)

    def wall_box(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower-left and upper-right corners (N, 2) each."""
        half = np.asarray(WALL_HALF_SIZE)
        return self.wall - half, self.wall + half

    def gap_centres(self) -> np.ndarray:
        """(N, 2): the x in the middle of the left and of the right gap."""
        low, high = self.wall_box()
        return np.stack([low[:, 0] / 2, (high[:, 0] + 1) / 2], axis=1)


def sample_scenes(seeds) -> DockScenes:
    """The scene of each seed (the same seed always gives the same scene): the agent starts near the bottom
    centre, the wall spans the middle with gaps of about 0.2 on both sides, the dock is near the top."""
    seeds = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    start, dock, wall = [], [], []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 0])
        start.append([0.5 + rng.uniform(-0.06, 0.06), 0.08 + rng.uniform(-0.02, 0.02)])
        wall.append([0.5 + rng.uniform(-0.03, 0.03), 0.42 + rng.uniform(-0.03, 0.03)])
        dock.append([0.5 + rng.uniform(-0.1, 0.1), 0.88 + rng.uniform(-0.02, 0.02)])
    return DockScenes(np.array(start), np.array(dock), np.array(wall), seeds)


def wall_distance(positions: np.ndarray, scenes: DockScenes) -> np.ndarray:
    """(N,) distance from each position (N, 2) to its scene's wall rectangle (0 inside)."""
    low, high = scenes.wall_box()
    outside = np.maximum(np.maximum(low - positions, positions - high), 0.0)  # (N, 2)
    return np.linalg.norm(outside, axis=1)


def collides(positions: np.ndarray, scenes: DockScenes) -> np.ndarray:
    """(N,) bool: the agent's disc touches the wall."""
    return wall_distance(positions, scenes) < AGENT_RADIUS


def docked(positions: np.ndarray, scenes: DockScenes) -> np.ndarray:
    """(N,) bool: the agent's centre is within DOCK_RADIUS of the dock's."""
    return np.linalg.norm(positions - scenes.dock, axis=1) < DOCK_RADIUS


def move(positions: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """The dynamics: each agent moves toward its action (N, 2), at most MAX_STEP, and stays in the square."""
    delta = np.asarray(actions, np.float64) - positions
    length = np.linalg.norm(delta, axis=1, keepdims=True)
    delta = delta * np.minimum(1.0, MAX_STEP / np.maximum(length, 1e-12))
    return np.clip(positions + delta, AGENT_RADIUS, 1 - AGENT_RADIUS)


def side_of(positions: np.ndarray, scenes: DockScenes) -> np.ndarray:
    """(N,) -1 left of the wall, +1 right of it, 0 in between (in x)."""
    low, high = scenes.wall_box()
    return np.where(positions[:, 0] < low[:, 0], -1, np.where(positions[:, 0] > high[:, 0], 1, 0))


def render(positions: np.ndarray, scenes: DockScenes, size: int = 64) -> np.ndarray:
    """Top-down images (N, size, size, 3) uint8: wall dark grey, dock green, agent red.

    ``positions`` (N, 2). The agent and the dock are drawn at least 1.5 pixels in radius so they stay visible
    in small images."""
    n = len(scenes)
    centres = (np.arange(size) + 0.5) / size
    x = centres[None, None, :]  # (1, 1, W)
    y = (1 - centres)[None, :, None]  # (1, H, 1): row 0 is the top
    low, high = scenes.wall_box()
    image = np.broadcast_to(_BACKGROUND, (n, size, size, 3)).copy()

    def disc(centre: np.ndarray, radius: float) -> np.ndarray:
        r = max(radius, 1.5 / size)
        return (x - centre[:, 0, None, None]) ** 2 + (y - centre[:, 1, None, None]) ** 2 < r * r  # (N, H, W)

    wall = (
        (x >= low[:, 0, None, None])
        & (x <= high[:, 0, None, None])
        & (y >= low[:, 1, None, None])
        & (y <= high[:, 1, None, None])
    )
    image[wall] = _WALL
    image[disc(scenes.dock, DOCK_RADIUS)] = _DOCK
    image[disc(np.asarray(positions, np.float64), AGENT_RADIUS)] = _AGENT
    return image
