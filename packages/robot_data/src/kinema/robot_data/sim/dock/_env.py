"""N docking environments stepped together as numpy arrays (one process, no simulator to spawn).

Observations follow kinema.robot_data.sim's SimPolicy batch, so any SimPolicy (ACTPolicy, HybridPolicy) runs
here unchanged: ``qpos`` (N, 2) the agent's (x, y), ``qvel`` (N, 2) its last move, ``images`` {"top":
(N, S, S, 3) uint8}, ``environment_state`` (N, 4) (dock x, y, wall centre x, y), ``step`` (N,) int64 (0 starts
an episode in that row) and ``active`` (N,) bool.
"""

from __future__ import annotations

import numpy as np

from ._scene import collides, docked, move, render, sample_scenes

CAMERA = "top"
DEFAULT_IMAGE_SIZE = 64
DEFAULT_MAX_STEPS = 100


class DockEnv:
    """Vectorized docking task: ``reset(rows, seeds)`` starts episodes in some rows, ``observe()`` returns the
    batch, ``step(actions)`` moves every active row and returns (docked, collided) (N,) bool."""

    def __init__(self, num_envs: int, *, image_size: int = DEFAULT_IMAGE_SIZE):
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ValueError(f"num_envs: expected an integer >= 1, got {num_envs!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 8:
            raise ValueError(f"image_size: expected an integer >= 8, got {image_size!r}")
        self.num_envs = num_envs
        self.image_size = image_size
        self.scenes = sample_scenes(np.zeros(num_envs, dtype=np.int64))
        self.positions = self.scenes.start.copy()  # (N, 2)
        self.velocity = np.zeros((num_envs, 2))
        self.steps = np.zeros(num_envs, dtype=np.int64)
        self.active = np.zeros(num_envs, dtype=bool)

    def reset(self, rows, seeds) -> None:
        """Starts the episodes of ``seeds`` in ``rows`` (equal lengths)."""
        rows = np.asarray(rows, dtype=np.int64)
        fresh = sample_scenes(seeds)
        if len(fresh) != len(rows):
            raise ValueError(f"reset: {len(rows)} rows but {len(fresh)} seeds")
        for name in (
            "start",
            "dock",
            "wall",
            "seeds",
        ):  # the scene arrays are this env's own: set rows in place
            getattr(self.scenes, name)[rows] = getattr(fresh, name)
        self.positions[rows] = fresh.start
        self.velocity[rows] = 0.0
        self.steps[rows] = 0
        self.active[rows] = True

    def deactivate(self, rows) -> None:
        self.active[np.asarray(rows, dtype=np.int64)] = False

    def observe(self) -> dict:
        return {
            "qpos": self.positions.astype(np.float32),
            "qvel": self.velocity.astype(np.float32),
            "images": {CAMERA: render(self.positions, self.scenes, self.image_size)},
            "environment_state": self.scenes.environment_state(),
            "step": self.steps.copy(),
            "active": self.active.copy(),
        }

    def step(self, actions) -> tuple[np.ndarray, np.ndarray]:
        """Moves the active rows toward ``actions`` (N, 2); returns (docked, collided) (N,) for the active rows
        (False elsewhere)."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions: expected ({self.num_envs}, 2), got {actions.shape}")
        rows = self.active
        bad = np.flatnonzero(rows & ~np.isfinite(actions).all(axis=1))
        if bad.size:
            raise ValueError(f"actions: NaN or Inf in rows {bad.tolist()}")
        new = move(self.positions[rows], actions[rows])
        self.velocity[rows] = new - self.positions[rows]
        self.positions[rows] = new
        self.steps[rows] += 1
        done_dock = np.zeros(self.num_envs, dtype=bool)
        done_hit = np.zeros(self.num_envs, dtype=bool)
        sub = self.scenes.take(np.flatnonzero(rows))
        done_hit[rows] = collides(new, sub)
        done_dock[rows] = docked(new, sub) & ~done_hit[rows]
        return done_dock, done_hit
