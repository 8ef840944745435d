"""The action-following metric: estimated camera motion of generated clips scored against commanded actions.

Matching: a generated clip belongs to the dataset row whose ``video`` column names it: ``<generated>/<video>``
(the same relative path, e.g. ``videos/clip_00012.mp4``) or, failing that, ``<generated>/<file name>``. Rows
without a generated clip are left out (and counted); a generated folder matching no row is an error.

Scores, over every (clip, latent step, action):

- ``accuracy``: the binary part (is action a commanded at step k?) estimated right, per action and overall;
- ``balanced_accuracy``: the mean of the rates on commanded and on not-commanded steps (0.5 for a clip that
  ignores its actions, whatever the share of idle steps);
- ``chance_accuracy``: what independent guesses with the same rates would score, sum p q + (1 - p)(1 - q);
- ``exact_step_accuracy``: steps whose 8 binaries are all right;
- ``magnitude_r``: Pearson correlation of estimated and commanded magnitude on the steps where the action is
  commanded (and, for ``magnitude_r_all``, on all steps, idle as 0);
- per axis (forward/back, left/right, yaw, pitch) the 3 x 3 confusion of direction (negative, none, positive).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kinema.robot_data import DRONE_ACTIONS
from kinema.robot_data.drone import AXES, AXIS_INDEX

from .._atomic import write_atomic

AXIS_NAMES = tuple(f"{p}/{n}" for p, n in AXES)


@dataclass
class ActionScores:
    """Scores of one set of estimated actions against commanded ones (see the module docstring)."""

    clips: int
    steps: int
    accuracy: float
    per_action_accuracy: dict[str, float]
    balanced_accuracy: float
    per_action_balanced_accuracy: dict[str, float]
    chance_accuracy: float
    exact_step_accuracy: float
    magnitude_r: dict[str, float | None]
    magnitude_r_all: float | None
    commanded_rate: dict[str, float]
    estimated_rate: dict[str, float]
    axis_confusion: dict[str, list[list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.std(x) < 1e-12 or np.std(y) < 1e-12:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def score_actions(
    true_binary: np.ndarray, true_magnitude: np.ndarray, est_binary: np.ndarray, est_magnitude: np.ndarray
) -> ActionScores:
    """Arrays (N, A, 8) (or (M, 8), M steps) of commanded and estimated actions -> :class:`ActionScores`."""
    arrays = [np.asarray(a, np.float64) for a in (true_binary, true_magnitude, est_binary, est_magnitude)]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or arrays[0].shape[-1] != len(DRONE_ACTIONS):
        raise ValueError(
            f"actions: expected four arrays of one shape (..., 8), got {[a.shape for a in arrays]}"
        )
    clips = arrays[0].shape[0] if arrays[0].ndim == 3 else 1
    tb, tm, eb, em = (a.reshape(-1, len(DRONE_ACTIONS)) for a in arrays)
    if len(tb) == 0:
        raise ValueError("actions: no step to score")
    tb, eb = tb > 0.5, eb > 0.5
    right = tb == eb
    per_action = right.mean(0)
    balanced = []
    for a in range(len(DRONE_ACTIONS)):
        rates = [right[tb[:, a], a].mean() if tb[:, a].any() else None]
        rates.append(right[~tb[:, a], a].mean() if (~tb[:, a]).any() else None)
        known = [r for r in rates if r is not None]
        balanced.append(float(np.mean(known)))
    p, q = tb.mean(0), eb.mean(0)
    chance = p * q + (1 - p) * (1 - q)
    magnitude_r = {}
    for a, name in enumerate(DRONE_ACTIONS):
        on = tb[:, a]
        magnitude_r[name] = _pearson(tm[on, a], em[on, a] * eb[on, a])
    signed_true = np.stack([tm[:, p_] * tb[:, p_] - tm[:, n_] * tb[:, n_] for p_, n_ in AXIS_INDEX], 1)
    signed_est = np.stack([em[:, p_] * eb[:, p_] - em[:, n_] * eb[:, n_] for p_, n_ in AXIS_INDEX], 1)
    scale = np.abs(signed_true).max(0).clip(min=1e-12)  # per axis, so translations and rotations count alike
    magnitude_all = _pearson((signed_true / scale).ravel(), (signed_est / scale).ravel())
    confusion = {}
    for axis, (positive, negative) in enumerate(AXIS_INDEX):

        def direction(b: np.ndarray, positive: int = positive, negative: int = negative) -> np.ndarray:
            """(M, 8) bool -> (M,) 0 negative, 1 none, 2 positive."""
            plus, minus = b[:, positive] & ~b[:, negative], b[:, negative] & ~b[:, positive]
            return np.where(plus, 2, np.where(minus, 0, 1))

        matrix = np.zeros((3, 3), np.int64)
        np.add.at(matrix, (direction(tb), direction(eb)), 1)
        confusion[AXIS_NAMES[axis]] = matrix.tolist()
    return ActionScores(
        clips=clips,
        steps=len(tb),
        accuracy=float(right.mean()),
        per_action_accuracy=dict(zip(DRONE_ACTIONS, per_action.round(6).tolist())),
        balanced_accuracy=float(np.mean(balanced)),
        per_action_balanced_accuracy=dict(zip(DRONE_ACTIONS, np.round(balanced, 6).tolist())),
        chance_accuracy=float(chance.mean()),
        exact_step_accuracy=float(right.all(1).mean()),
        magnitude_r=magnitude_r,
        magnitude_r_all=magnitude_all,
        commanded_rate=dict(zip(DRONE_ACTIONS, p.round(6).tolist())),
        estimated_rate=dict(zip(DRONE_ACTIONS, q.round(6).tolist())),
        axis_confusion=confusion,
    )


def derangement(count: int, seed: int = 0) -> np.ndarray:
    """A permutation of range(count) with no fixed point (count >= 2): row i gets the actions of row perm[i]."""
    if count < 2:
        raise ValueError(f"shuffled actions need at least 2 clips, got {count}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    return np.roll(order, 1)[np.argsort(order)]


def match_generated(generated: Path, videos: list[str]) -> tuple[dict[int, Path], list[str]]:
    """Row index -> generated clip, for each dataset ``videos`` entry found in ``generated``; and the generated
    mp4 files matching no row. Raises when nothing matches."""
    if not generated.is_dir():
        raise FileNotFoundError(f"--generated: {generated} is not a directory")
    matched: dict[int, Path] = {}
    for index, video in enumerate(videos):
        for candidate in (generated / video, generated / Path(video).name):
            if candidate.is_file():
                matched[index] = candidate
                break
    used = {p.resolve() for p in matched.values()}
    unmatched = sorted(
        str(p.relative_to(generated)) for p in generated.rglob("*.mp4") if p.resolve() not in used
    )
    if not matched:
        raise ValueError(
            f"--generated: no clip in {generated} matches a row of the dataset (expected the CSV's video paths, "
            f"e.g. {videos[0] if videos else 'videos/clip_00000.mp4'}, or their file names)"
        )
    return matched, unmatched


def scores_table(rows: dict[str, ActionScores]) -> str:
    """A markdown table: one line per named set of scores. Balanced accuracy first: it is the headline (binary
    accuracy has a high floor, since most commanded actions are off)."""
    lines = [
        "| clips | balanced accuracy | binary accuracy | chance accuracy | exact steps | magnitude r | "
        "steps |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines[0] = "| what " + lines[0]
    lines[1] = "|---" + lines[1]
    for name, s in rows.items():
        r = "n/a" if s.magnitude_r_all is None else f"{s.magnitude_r_all:.3f}"
        lines.append(
            f"| {name} | {s.clips} | {s.balanced_accuracy:.3f} | {s.accuracy:.3f} | {s.chance_accuracy:.3f} | "
            f"{s.exact_step_accuracy:.3f} | {r} | {s.steps} |"
        )
    return "\n".join(lines)


def per_action_table(scores: ActionScores) -> str:
    lines = [
        "| action | accuracy | balanced accuracy | commanded | estimated | magnitude r |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name in DRONE_ACTIONS:
        r = scores.magnitude_r[name]
        lines.append(
            f"| {name} | {scores.per_action_accuracy[name]:.3f} | {scores.per_action_balanced_accuracy[name]:.3f} | "
            f"{scores.commanded_rate[name]:.3f} | {scores.estimated_rate[name]:.3f} | "
            f"{'n/a' if r is None else f'{r:.3f}'} |"
        )
    return "\n".join(lines)


def plot_confusion(scores: ActionScores, path: str | os.PathLike, title: str) -> Path:
    """Per-axis 3 x 3 direction confusion matrices (row-normalized colour, counts written) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(AXES), figsize=(3.2 * len(AXES), 3.4))
    for ax, (positive, negative), name in zip(axes, AXES, AXIS_NAMES):
        counts = np.asarray(scores.axis_confusion[name], np.float64)
        rates = counts / counts.sum(1, keepdims=True).clip(min=1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        labels = [negative, "none", positive]
        ax.set_xticks(range(3), labels, rotation=30, fontsize=8)
        ax.set_yticks(range(3), labels, fontsize=8)
        ax.set_xlabel("estimated")
        ax.set_ylabel("commanded")
        ax.set_title(name, fontsize=9)
        for i in range(3):
            for j in range(3):
                ax.text(j, i, f"{int(counts[i, j])}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """Writes a matplotlib figure as a PNG atomically (temporary name + rename) and closes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
