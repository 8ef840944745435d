"""The dock confuser: two identical docks, the target named only by its (x, y); a CPU-scale stand-in for ALOHA's
``transfer_cube_confuser`` (design note 003).

A point agent starts near the bottom centre; one dock lies in the upper left, one in the upper right, drawn
alike. ``environment_state`` is the target's (x, y). The scripted expert drives straight to the target at a
steady speed and holds there. Every scene is demonstrated twice, once to each dock (counterfactual pairs: the
first image is the same, only the coordinates tell the two apart), so a policy that ignores the coordinates
sees the two targets equally often and its average heads between the docks, reaching neither. With
``confuser=False`` the other dock is not drawn (the "trained without confuser" control's data); evaluation
always draws both.

N scenes (rows), T steps, S image size. Coordinates as in :mod:`._scene`: x right, y up, both in [0, 1].

    from kinema.robot_data.sim.dock import evaluate_confuser, record_confuser_episodes

    record_confuser_episodes("data/dock_confuser", 100, seed=0)  # 50 scenes, each to the left and right dock
    result = evaluate_confuser(policy, episodes=100)  # seeds 100000..; target / wrong dock / neither
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import write_json_atomic, write_text_atomic
from ._record import MANIFEST, prepare_recording_folder, write_episode
from ._scene import _AGENT, _BACKGROUND, _DOCK, AGENT_RADIUS, DOCK_RADIUS, move

CONFUSER_TASK = "dock_confuser"
CONFUSER_MAX_STEPS = 60
CONFUSER_STATE_DIM = 2  # qpos: the agent's (x, y)
CONFUSER_ENVIRONMENT_STATE_DIM = 2  # the target's (x, y)
# The camera as a map from the world plane to the image, for coordinate-guided crops and heat maps
# (kinema.act_policy's ``crop_cameras``): u = x, v = 1 - y.
CONFUSER_CAMERAS = {"top": {"plane": [[0.0, 1.0], [0.0, 1.0]]}}
SPEED = 0.025  # path length per step, x U(0.9, 1.1) per episode
HOLD_STEPS = 4
_FORMAT = "kinema-dock-confuser-recording"
_SUMMARY_FILE = "eval_summary.json"
_EPISODES_FILE = "eval_episodes.jsonl"


@dataclass(frozen=True)
class ConfuserScenes:
    """N scenes: ``start`` (N, 2), ``docks`` (N, 2, 2) the left and the right dock, ``target`` (N,) 0 or 1,
    ``seeds`` (N,)."""

    start: np.ndarray
    docks: np.ndarray
    target: np.ndarray
    seeds: np.ndarray
    noise: np.ndarray  # (N, 2) in [-1, 1]: the error of the named coordinates, in units of coordinate_noise

    def named_target(self, coordinate_noise: float = 0.0) -> np.ndarray:
        """(N, 2) float32 the ``environment_state``: the target's (x, y), off by up to ``coordinate_noise`` per
        axis (fixed per scene)."""
        return (self.target_xy() + coordinate_noise * self.noise).astype(np.float32)

    def __len__(self) -> int:
        return len(self.seeds)

    def target_xy(self) -> np.ndarray:
        """(N, 2) the target dock's (x, y)."""
        return self.docks[np.arange(len(self)), self.target]

    def confuser_xy(self) -> np.ndarray:
        """(N, 2) the other dock's (x, y)."""
        return self.docks[np.arange(len(self)), 1 - self.target]


def sample_confuser_scenes(seeds, targets=None) -> ConfuserScenes:
    """The scene of each seed (the same seed, the same scene): start near (0.5, 0.1), docks near (0.25, 0.8) and
    (0.75, 0.8). ``targets`` (N,) 0 (left) / 1 (right); default a coin flip drawn from the seed."""
    seeds = np.atleast_1d(np.asarray(seeds, dtype=np.int64))
    start, docks, coin, noise = [], [], [], []
    for seed in seeds:
        rng = np.random.default_rng([int(seed), 7])
        start.append([0.5 + rng.uniform(-0.06, 0.06), 0.1 + rng.uniform(-0.02, 0.02)])
        docks.append(
            [
                [0.25 + rng.uniform(-0.08, 0.08), 0.8 + rng.uniform(-0.1, 0.1)],
                [0.75 + rng.uniform(-0.08, 0.08), 0.8 + rng.uniform(-0.1, 0.1)],
            ]
        )
        coin.append(int(rng.integers(2)))
        noise.append(rng.uniform(-1.0, 1.0, size=2))
    target = np.asarray(coin if targets is None else targets, dtype=np.int64).reshape(-1)
    if target.shape != seeds.shape or not np.isin(target, (0, 1)).all():
        raise ValueError(f"targets: expected {len(seeds)} values, each 0 or 1, got {targets!r}")
    return ConfuserScenes(np.array(start), np.array(docks), target, seeds, np.array(noise))


def render_confuser(positions: np.ndarray, scenes: ConfuserScenes, size: int = 64, confuser: bool = True):
    """Top-down images (N, size, size, 3) uint8: both docks (or the target only) green, the agent red."""
    n = len(scenes)
    centres = (np.arange(size) + 0.5) / size
    x = centres[None, None, :]  # (1, 1, W)
    y = (1 - centres)[None, :, None]  # (1, H, 1): row 0 is the top
    image = np.broadcast_to(_BACKGROUND, (n, size, size, 3)).copy()

    def disc(centre: np.ndarray, radius: float) -> np.ndarray:
        r = max(radius, 1.5 / size)
        return (x - centre[:, 0, None, None]) ** 2 + (y - centre[:, 1, None, None]) ** 2 < r * r  # (N, H, W)

    image[disc(scenes.target_xy(), DOCK_RADIUS)] = _DOCK
    if confuser:
        image[disc(scenes.confuser_xy(), DOCK_RADIUS)] = _DOCK
    image[disc(np.asarray(positions, np.float64), AGENT_RADIUS)] = _AGENT
    return image


def confuser_expert_path(scenes: ConfuserScenes, row: int, speed: float) -> np.ndarray:
    """Positions (T + 1, 2): straight from the start to the target at ``speed`` per step, then held."""
    start, goal = scenes.start[row], scenes.target_xy()[row]
    steps = max(1, int(np.ceil(np.linalg.norm(goal - start) / speed)))
    path = start + np.linspace(0.0, 1.0, steps + 1)[:, None] * (goal - start)
    return np.concatenate([path, np.repeat(path[-1:], HOLD_STEPS, axis=0)])


def confuser_episode(
    seed: int, target: int, image_size: int = 64, confuser: bool = True, coordinate_noise: float = 0.0
) -> dict:
    """The scripted episode of scene ``seed`` to dock ``target`` (0 left, 1 right) as arrays: qpos, qvel,
    action (T, 2), images {"top": (T, S, S, 3)}, environment_state (T, 2) = the target's (x, y), speed."""
    scenes = sample_confuser_scenes([seed], [target])
    speed = SPEED * np.random.default_rng([int(seed), 8, int(target)]).uniform(0.9, 1.1)
    actions = confuser_expert_path(scenes, 0, speed)[1:]
    positions = [scenes.start.copy()]
    for action in actions:  # through the dynamics, as a policy's actions would be
        positions.append(move(positions[-1], action[None]))
    positions = np.concatenate(positions)  # (T + 1, 2)
    observed = positions[:-1]
    repeated = sample_confuser_scenes(np.full(len(observed), seed), np.full(len(observed), target))
    return {
        "qpos": observed.astype(np.float32),
        "qvel": np.diff(positions, axis=0, prepend=positions[:1])[:-1].astype(np.float32),
        "action": actions.astype(np.float32),
        "images": {"top": render_confuser(observed, repeated, image_size, confuser)},
        "environment_state": np.repeat(scenes.named_target(coordinate_noise), len(observed), axis=0),
        "speed": float(speed),
    }


def record_confuser_episodes(
    out: str | os.PathLike,
    episodes: int,
    *,
    seed: int = 0,
    image_size: int = 64,
    confuser: bool = True,
    coordinate_noise: float = 0.0,
    pairs: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Writes ``episodes`` demonstrations to ``out/episode_<i>.hdf5`` and ``out/recording.json`` (last). With
    ``pairs`` (counterfactual pairs): scene ``seed + k`` to the left dock (episode 2k) and to the right dock
    (episode 2k + 1); without: scene ``seed + k`` to its own target (a coin flip of the seed; episode k), as
    ALOHA's confuser recordings are, where every scene is seen with one target only. With ``confuser=False``
    the other dock is not drawn. Returns the manifest."""
    from tqdm import tqdm

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected an integer >= 1, got {episodes!r}")
    out = prepare_recording_folder(out, overwrite)
    seeds, targets = [], []
    for index in tqdm(range(episodes), desc="record dock confuser", unit="episode", disable=not progress):
        if pairs:
            scene, target = seed + index // 2, index % 2
        else:
            scene = seed + index
            target = int(sample_confuser_scenes([scene]).target[0])
        episode = confuser_episode(scene, target, image_size, confuser, coordinate_noise)
        write_episode(
            out / f"episode_{index}.hdf5",
            episode,
            task=CONFUSER_TASK,
            seed=scene,
            target=target,
            confuser=confuser,
            speed=episode["speed"],
        )
        seeds.append(scene)
        targets.append(target)
    manifest = {
        "format": _FORMAT,
        "version": 1,
        "task": CONFUSER_TASK,
        "episodes": episodes,
        "seed": seed,
        "image_size": image_size,
        "confuser": confuser,
        "coordinate_noise": coordinate_noise,
        "pairs": pairs,
        "seeds": seeds,
        "targets": targets,
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest


class ConfuserDockEnv:
    """N confuser scenes stepped together; observations as kinema.robot_data.sim's SimPolicy batch: ``qpos``
    (N, 2), ``qvel`` (N, 2), ``images`` {"top": (N, S, S, 3)}, ``environment_state`` (N, 2) the target's (x, y),
    ``step`` (N,), ``active`` (N,)."""

    def __init__(self, seeds, *, image_size: int = 64, coordinate_noise: float = 0.0):
        self.scenes = sample_confuser_scenes(seeds)
        self.coordinate_noise = coordinate_noise
        self.image_size = image_size
        self.positions = self.scenes.start.copy()
        self.velocity = np.zeros_like(self.positions)
        self.steps = np.zeros(len(self.scenes), dtype=np.int64)
        self.active = np.ones(len(self.scenes), dtype=bool)

    def observe(self) -> dict:
        return {
            "qpos": self.positions.astype(np.float32),
            "qvel": self.velocity.astype(np.float32),
            "images": {"top": render_confuser(self.positions, self.scenes, self.image_size)},
            "environment_state": self.scenes.named_target(self.coordinate_noise),
            "step": self.steps.copy(),
            "active": self.active.copy(),
        }

    def step(self, actions) -> tuple[np.ndarray, np.ndarray]:
        """Moves the active rows; returns (at the target, at the other dock) (N,) bool for the active rows."""
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != self.positions.shape or not np.isfinite(actions[self.active]).all():
            raise ValueError(f"actions: expected finite {self.positions.shape}, got {actions.shape}")
        rows = self.active
        new = move(self.positions[rows], actions[rows])
        self.velocity[rows] = new - self.positions[rows]
        self.positions[rows] = new
        self.steps[rows] += 1
        at = np.linalg.norm(self.positions - self.scenes.target_xy(), axis=1) < DOCK_RADIUS
        wrong = np.linalg.norm(self.positions - self.scenes.confuser_xy(), axis=1) < DOCK_RADIUS
        return at & rows, wrong & rows & ~at


@dataclass
class ConfuserEvalResult:
    """Rates over episodes: ``success`` (docked at the target), ``wrong`` (at the other dock), ``neither``
    (timed out; ``between`` of those ended nearer the docks' midpoint than either dock), and one record per
    episode (seed, target, outcome, steps, final position)."""

    success_rate: float
    wrong_rate: float
    neither_rate: float
    between_rate: float
    episodes: list[dict]
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "format": "kinema-dock-confuser-eval",
            "version": 1,
            "task": CONFUSER_TASK,
            "episodes": len(self.episodes),
            "success_rate": self.success_rate,
            "wrong_rate": self.wrong_rate,
            "neither_rate": self.neither_rate,
            "between_rate": self.between_rate,
            **self.settings,
        }

    def describe(self) -> str:
        return (
            f"dock confuser: target {self.success_rate:.1%} over {len(self.episodes)} episodes (other dock "
            f"{self.wrong_rate:.0%}, neither {self.neither_rate:.0%}, of which nearest the midpoint "
            f"{self.between_rate:.0%})"
        )

    def write(self, out_dir: str | os.PathLike) -> Path:
        out_dir = Path(out_dir)
        write_json_atomic(out_dir / _SUMMARY_FILE, self.summary())
        write_text_atomic(out_dir / _EPISODES_FILE, "".join(json.dumps(r) + "\n" for r in self.episodes))
        return out_dir


def evaluate_confuser(
    policy,
    episodes: int = 100,
    *,
    seed: int = 100_000,
    max_steps: int = CONFUSER_MAX_STEPS,
    image_size: int = 64,
    coordinate_noise: float = 0.0,
    out_dir: str | os.PathLike | None = None,
) -> ConfuserEvalResult:
    """Runs ``policy`` (a SimPolicy: ``reset(n)``, ``act(observation) -> (n, 2)``) on the confuser scenes of
    ``episodes`` seeds from ``seed``, all at once; an episode ends at either dock or after ``max_steps``."""
    for name, value in (("episodes", episodes), ("max_steps", max_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
    seeds = np.arange(seed, seed + episodes)
    env = ConfuserDockEnv(seeds, image_size=image_size, coordinate_noise=coordinate_noise)
    outcome = np.full(episodes, "neither", dtype=object)
    policy.reset(episodes)
    while env.active.any() and env.steps.max() < max_steps:
        actions = policy.act(env.observe())
        if hasattr(actions, "detach"):
            actions = actions.detach().cpu().numpy()
        at, wrong = env.step(np.asarray(actions, dtype=np.float64))
        outcome[at] = "target"
        outcome[wrong] = "wrong"
        env.active &= ~(at | wrong)
    midpoint = env.scenes.docks.mean(axis=1)  # (N, 2)
    nearest = np.stack(
        [np.linalg.norm(env.positions - env.scenes.docks[:, k], axis=1) for k in (0, 1)]
        + [np.linalg.norm(env.positions - midpoint, axis=1)],
        axis=1,
    ).argmin(axis=1)
    between = (outcome == "neither") & (nearest == 2)
    records = [
        {
            "seed": int(s),
            "target": int(env.scenes.target[i]),
            "outcome": str(outcome[i]),
            "between": bool(between[i]),
            "steps": int(env.steps[i]),
            "final": np.round(env.positions[i], 4).tolist(),
        }
        for i, s in enumerate(seeds)
    ]
    result = ConfuserEvalResult(
        success_rate=float((outcome == "target").mean()),
        wrong_rate=float((outcome == "wrong").mean()),
        neither_rate=float((outcome == "neither").mean()),
        between_rate=float(between.mean()),
        episodes=records,
        settings={
            "seed": seed,
            "max_steps": max_steps,
            "image_size": image_size,
            "coordinate_noise": coordinate_noise,
        },
    )
    if out_dir is not None:
        result.write(out_dir)
    return result
