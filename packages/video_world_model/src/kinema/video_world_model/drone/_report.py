"""What the drone experiment shows a reader: a per-action bar plot and the demo's report.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from kinema.robot_data import DRONE_ACTIONS

from ._metric import ActionScores, per_action_table, save_figure, scores_table

ROWS = (  # (row-name suffix or full name, label, colour)
    ("actions", "own actions", "tab:blue"),
    ("shuffled_actions", "shuffled actions", "tab:orange"),
    ("zero_actions", "zero actions", "tab:gray"),
    ("ground truth", "ground truth (ceiling)", "tab:green"),
)


def _rows(results: dict[str, ActionScores], variant: str) -> list[tuple[str, ActionScores, str]]:
    out = []
    for key, label, colour in ROWS:
        name = key if key.startswith("ground") else f"{variant}, {key}"
        if name in results:
            out.append((label, results[name], colour))
    return out


def plot_per_action(results: dict[str, ActionScores], variant: str, path: str | os.PathLike) -> Path:
    """Balanced accuracy per drone action (grouped bars: own / shuffled / zero actions, ground truth) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(results, variant)
    x = np.arange(len(DRONE_ACTIONS))
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(11, 3.6))
    for i, (label, scores, colour) in enumerate(rows):
        values = [scores.per_action_balanced_accuracy[a] for a in DRONE_ACTIONS]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, values, width, label=f"{label}: {scores.balanced_accuracy:.2f}",
               color=colour)  # fmt: skip
    ax.axhline(0.5, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, DRONE_ACTIONS, rotation=20, fontsize=8)
    ax.set_ylim(0.3, 1.0)
    ax.set_ylabel("balanced accuracy")
    ax.set_title(
        f"{variant}: does the generated camera motion follow each action? (0.5 = ignored)", fontsize=10
    )
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def demo_report(
    results: dict[str, ActionScores], variant: str, meta: dict[str, Any], seconds: dict[str, float]
) -> str:
    """The markdown of ``kinema-wm demo``'s report.md."""
    rows = _rows(results, variant)
    own = results[f"{variant}, actions"]
    lines = [
        "# kinema world-model demo: does a model trained here follow the drone actions?",
        "",
        f"A Wan transformer ({meta['settings']['model']} preset, trained from scratch) with the `{variant}` action "
        f"controller, trained for {meta['steps_trained']} steps on {meta['settings']['train_clips']} rendered drone "
        f"flights ({meta['settings']['size']}x{meta['settings']['size']}, {meta['settings']['frames']} frames), "
        f"then asked to continue {meta['settings']['test_clips']} held-out flights from their first frame under "
        "their own actions, another flight's actions (shuffled) and no actions (zero). An optical-flow estimator "
        "reads the camera motion of each latent step back.",
        "",
        "| condition | balanced accuracy (0.5 = actions ignored) |",
        "|---|---:|",
        *[f"| {label} | {scores.balanced_accuracy:.3f} |" for label, scores, _ in rows],
        "",
        f"![per action](per_action_{variant}.png)",
        "",
        f"`grid_{variant}.mp4`: held-out flights, one per row: ground truth | own actions | shuffled | zero.",
        "",
        "## All scores",
        "",
        scores_table(results),
        "",
        "## Per action (own actions)",
        "",
        per_action_table(own),
        "",
        "## Run",
        "",
        f"- device {meta['device']}, torch {meta['torch']}, {meta['date']}; seeds {meta['seeds']}",
        "- time: " + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()),
        f"- settings: `{meta['settings']}`",
    ]
    return "\n".join(lines) + "\n"
