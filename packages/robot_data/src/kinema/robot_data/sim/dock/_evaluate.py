"""Evaluating a SimPolicy on the docking task: all episodes' environments stepped as one numpy batch.

N = min(num_envs, episodes) rows run at once; the policy is queried once per step on the whole batch (so a GPU
model serves every row); a row that docks, touches the wall or runs out of steps starts the next seed at once
with ``step`` 0, until every seed is done. Evaluation seeds start at 100000, recording seeds at 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import write_json_atomic, write_text_atomic
from ._env import DEFAULT_IMAGE_SIZE, DEFAULT_MAX_STEPS, DockEnv
from ._metrics import mean_smoothness, mode_coverage
from ._scene import SIDES, sample_scenes, side_of

EVAL_SEED_START = 100_000
SUMMARY_FILE = "eval_summary.json"
EPISODES_FILE = "eval_episodes.jsonl"


@dataclass
class DockEvalResult:
    """Outcome of :func:`evaluate`: rates over episodes, the mode (side of the wall) of each successful
    episode, smoothness of the executed actions, and one record per episode (seed, success, collision, steps,
    mode, positions (T + 1, 2), actions (T, 2))."""

    success_rate: float
    collision_rate: float
    timeout_rate: float
    modes: dict
    smoothness: dict
    episodes: list[dict]
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Everything but the per-episode records, JSON-ready."""
        return {
            "format": "kinema-dock-eval",
            "version": 1,
            "task": "dock",
            "episodes": len(self.episodes),
            "success_rate": self.success_rate,
            "collision_rate": self.collision_rate,
            "timeout_rate": self.timeout_rate,
            "modes": self.modes,
            "smoothness": self.smoothness,
            **self.settings,
        }

    def describe(self) -> str:
        counts = self.modes["counts"]
        return (
            f"dock: success {self.success_rate:.1%} over {len(self.episodes)} episodes (collision "
            f"{self.collision_rate:.0%}, timeout {self.timeout_rate:.0%}); successes left {counts['left']}, "
            f"right {counts['right']}; jerk {self.smoothness['jerk']:.4f}"
        )

    def write(self, out_dir: str | os.PathLike) -> Path:
        out_dir = Path(out_dir)
        write_json_atomic(out_dir / SUMMARY_FILE, self.summary())
        import json

        lines = []
        for record in self.episodes:
            compact = {k: v for k, v in record.items() if k not in ("positions", "actions")}
            compact["positions"] = np.round(record["positions"], 5).tolist()
            lines.append(json.dumps(compact))
        write_text_atomic(out_dir / EPISODES_FILE, "\n".join(lines) + "\n")
        return out_dir


def episode_mode(positions: np.ndarray, seed: int) -> str | None:
    """The side of the wall ("left" / "right") where the trajectory (T + 1, 2) first rises above the wall's
    centre line, or None when it never does."""
    scenes = sample_scenes([seed])
    above = np.flatnonzero(positions[:, 1] > scenes.wall[0, 1])
    if not len(above):
        return None
    side = int(side_of(positions[above[:1]], scenes)[0])
    return {-1: SIDES[0], 1: SIDES[1]}.get(side)


def evaluate(
    policy,
    episodes: int = 100,
    *,
    seed: int = EVAL_SEED_START,
    num_envs: int | None = None,
    max_steps: int = DEFAULT_MAX_STEPS,
    image_size: int = DEFAULT_IMAGE_SIZE,
    out_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> DockEvalResult:
    """Runs ``policy`` (any kinema SimPolicy: ``reset(num_envs)``, ``act(observation) -> (N, 2)``) on
    ``episodes`` seeds from ``seed``; with ``out_dir`` writes eval_summary.json and eval_episodes.jsonl."""
    from tqdm import tqdm

    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    for name in ("reset", "act"):
        if not callable(getattr(policy, name, None)):
            raise TypeError(
                f"policy: {type(policy).__name__} lacks {name}(); a SimPolicy has reset() and act()"
            )
    n = min(num_envs or episodes, episodes)
    seeds = [seed + i for i in range(episodes)]
    env = DockEnv(n, image_size=image_size)
    env.reset(np.arange(n), seeds[:n])
    row_episode = np.arange(n)
    next_episode = n
    positions = [[env.positions[r].copy()] for r in range(n)]
    actions_taken: list[list] = [[] for _ in range(n)]
    records: list[dict | None] = [None] * episodes
    policy.reset(n)
    bar = tqdm(total=episodes, desc="evaluate dock", unit="episode", disable=not progress)
    while env.active.any():
        observation = env.observe()
        actions = policy.act(observation)
        if hasattr(actions, "detach"):
            actions = actions.detach().cpu().numpy()
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (n, 2):
            raise ValueError(f"policy actions: expected ({n}, 2) for {n} environments, got {actions.shape}")
        active = env.active.copy()
        docked, hit = env.step(actions)
        for row in np.flatnonzero(active):
            positions[row].append(env.positions[row].copy())
            actions_taken[row].append(actions[row].copy())
        finished = active & (docked | hit | (env.steps >= max_steps))
        for row in np.flatnonzero(finished):
            index = int(row_episode[row])
            trajectory = np.asarray(positions[row])
            records[index] = {
                "episode": index,
                "seed": seeds[index],
                "success": bool(docked[row]),
                "collision": bool(hit[row]),
                "steps": int(env.steps[row]),
                "mode": episode_mode(trajectory, seeds[index]),
                "positions": trajectory,
                "actions": np.asarray(actions_taken[row]),
            }
            bar.update(1)
            if next_episode < episodes:
                env.reset([row], [seeds[next_episode]])
                row_episode[row] = next_episode
                next_episode += 1
                positions[row] = [env.positions[row].copy()]
                actions_taken[row] = []
            else:
                env.deactivate([row])
    bar.close()
    success = np.array([r["success"] for r in records])
    collision = np.array([r["collision"] for r in records])
    result = DockEvalResult(
        success_rate=float(success.mean()),
        collision_rate=float(collision.mean()),
        timeout_rate=float((~success & ~collision).mean()),
        modes=mode_coverage([r["mode"] for r in records if r["success"]], SIDES),
        smoothness=mean_smoothness([r["actions"] for r in records]),
        episodes=records,
        settings={"seed": seed, "max_steps": max_steps, "num_envs": n, "image_size": image_size},
    )
    if out_dir is not None:
        result.write(out_dir)
    return result
