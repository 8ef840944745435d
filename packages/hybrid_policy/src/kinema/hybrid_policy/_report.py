"""The ablation's written results: ``results.json``, ``results.md`` (tables) and matplotlib plots
(``results.png``: success with the seeds' spread, jerk, diversity; ``sample_efficiency.png``: success against
the number of demonstrations, when several were run)."""

from __future__ import annotations

import math
from pathlib import Path

from kinema.act_policy import write_atomic, write_json_atomic, write_text_atomic

POLICY_LABELS = {
    "act": "ACT",
    "act_z": "ACT-z (z ~ N(0, I))",
    "A": "A (obs only)",
    "B": "B (z = f(obs))",
    "C": "C (posterior + prior)",
}
POLICY_COLORS = {"act": "#d62728", "act_z": "#9467bd", "A": "#7f7f7f", "B": "#ff7f0e", "C": "#1f77b4"}


def _number(value) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.4f}"


def _cell(entry: dict, key: str, percent: bool = False) -> str:
    if key not in entry:
        return "-"
    value, spread = entry[key], entry.get(f"{key}_std", 0.0)
    if percent:
        return f"{100 * value:.0f}% ± {100 * spread:.0f}"
    return f"{value:.4f} ± {spread:.4f}"


def results_markdown(results: dict) -> str:
    """The summary table (mean ± std over seeds) and one line per cell."""
    config = results["config"]
    dock = results["task"] == "dock"
    lines = [
        f"# Ablation on `{results['task']}`: ACT vs the hybrid's variants",
        "",
        f"Device {results['device']}, {results['date']}, {results['minutes']} minutes in this run (cells "
        "finished by earlier runs are read back). Seeds "
        f"{list(config['seeds'])}, demonstrations {list(config['demos'])}, model size `{config['size']}`, chunk "
        f"{config['chunk_size']} (execute {config['n_action_steps']}), training budget max_steps "
        f"{config['max_steps']} / max_minutes {config['max_minutes']}, batch {config['batch_size']}, lr "
        f"{config['lr']} ({config.get('lr_schedule', 'hybrid: cosine, ACT: constant')}, "
        f"{config.get('warmup_steps', 'hybrid only')} warm-up steps, EMA {config.get('ema', 'hybrid only')}; the "
        f"same for every cell from kinema-hybrid 0.2.5), {config['num_inference_steps']} DDIM steps, "
        f"{config['eval_episodes']} evaluation episodes per cell on seeds from {config.get('eval_seed', 100000)}.",
        "",
        "Mean ± standard deviation over seeds. Success: closed loop. Step / jerk: mean ||a_{t+1} - a_t|| and "
        "mean ||third difference|| of the executed actions (lower is smoother), over all episodes and over the "
        "successful ones only (jerk ok: collisions and timeouts end at other lengths). L1 / L2: one predicted chunk "
        "against the ground truth on held-out episodes. Spread: std of "
        f"{config['diversity_samples']} chunks sampled for one observation (ACT with z = 0 is deterministic at inference)."
        + (
            " Both sides: fraction of held-out scenes where the sampled first chunks go both left and right."
            if dock
            else ""
        ),
        "",
    ]
    header = ["policy", "demos", "success", "step", "jerk", "jerk ok", "L1", "L2", "spread"] + (
        ["both sides"] if dock else []
    )
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in results["summary"]:
        cells = [
            POLICY_LABELS.get(entry["policy"], entry["policy"]),
            str(entry["demos"]),
            _cell(entry, "success", True),
            _cell(entry, "step"),
            _cell(entry, "jerk"),
            _cell(entry, "jerk_success"),
            _cell(entry, "l1"),
            _cell(entry, "l2"),
            _cell(entry, "chunk_spread"),
        ]
        if dock:
            cells.append(_cell(entry, "both_sides_fraction", True))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Cells", ""]
    for row in results["rows"]:
        extra = ""
        if dock and "modes" in row:
            counts = row["modes"]["counts"]
            extra = f", successes left {counts['left']} / right {counts['right']}"
        lines.append(
            f"- `{row['policy']}` demos {row['demos']} seed {row['seed']}: success {row['success']:.0%}{extra}, "
            f"jerk {row['jerk']:.4f} (successful {_number(row.get('jerk_success'))}), {row['steps']} steps in {row['train_seconds'] / 60:.1f} min ({row['samples_per_second']:.0f} samples/s)"
        )
    return "\n".join(lines) + "\n"


def _save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
    plt.close(figure)


def plot_results(results: dict, path: Path) -> Path:
    """Three panels for the largest demonstration count: success (bars = mean, dots = seeds), jerk, spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    demos = max(e["demos"] for e in results["summary"])
    entries = [e for e in results["summary"] if e["demos"] == demos]
    rows = [r for r in results["rows"] if r["demos"] == demos]
    names = [e["policy"] for e in entries]
    colors = [POLICY_COLORS.get(n, "#333333") for n in names]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (
        ("success", "success rate"),
        ("jerk", "jerk (lower is smoother)"),
        ("chunk_spread", "chunk spread"),
    )
    for ax, (key, title) in zip(axes, panels, strict=True):
        means = [e.get(key, math.nan) for e in entries]
        spreads = [e.get(f"{key}_std", 0.0) for e in entries]
        ax.bar(range(len(names)), means, yerr=spreads, color=colors, capsize=4, alpha=0.85)
        for i, name in enumerate(names):
            values = [r[key] for r in rows if r["policy"] == name and key in r]
            ax.scatter([i] * len(values), values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(names)), [POLICY_LABELS.get(n, n).split(" ")[0] for n in names])
        ax.set_title(title)
        if key == "success":
            ax.set_ylim(0, 1.05)
    seeds = ", ".join(str(s) for s in results["config"]["seeds"])
    figure.suptitle(f"{results['task']}: {demos} demonstrations, seeds {seeds}", y=1.03)
    _save_figure(figure, path)
    return path


def plot_sample_efficiency(results: dict, path: Path) -> Path:
    """Success against the number of demonstrations, one line per policy (seed spread as error bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5, 3.6))
    for policy in dict.fromkeys(e["policy"] for e in results["summary"]):
        entries = sorted((e for e in results["summary"] if e["policy"] == policy), key=lambda e: e["demos"])
        ax.errorbar(
            [e["demos"] for e in entries],
            [e.get("success", math.nan) for e in entries],
            yerr=[e.get("success_std", 0.0) for e in entries],
            label=POLICY_LABELS.get(policy, policy),
            color=POLICY_COLORS.get(policy),
            marker="o",
            capsize=3,
        )
    ax.set_xlabel("demonstrations")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.05)
    ax.legend()
    ax.set_title(f"{results['task']}: sample efficiency")
    _save_figure(figure, path)
    return path


def write_results(results: dict, out_dir: str | Path) -> dict[str, Path]:
    """results.json, results.md, results.png (and sample_efficiency.png with several demo counts)."""
    out = Path(out_dir)
    paths = {
        "json": write_json_atomic(out / "results.json", results),
        "markdown": write_text_atomic(out / "results.md", results_markdown(results)),
        "plot": plot_results(results, out / "results.png"),
    }
    if len({e["demos"] for e in results["summary"]}) > 1:
        paths["sample_efficiency"] = plot_sample_efficiency(results, out / "sample_efficiency.png")
    return paths
