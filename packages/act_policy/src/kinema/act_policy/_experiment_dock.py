"""The confuser experiment at CPU scale (issue 21): ACT on kinema.robot_data.sim.dock's dock confuser.

Two identical docks; the target is named only by its (x, y) (``environment_state``); every training scene is
demonstrated to both docks (counterfactual pairs). Cells, each trained with every seed and evaluated on the
confuser scenes of seeds ``eval_seed`` .. (never recorded, never used to choose settings; the settings were
chosen on seeds 50000..):

- ``clean``: trained on the same scenes with only the target drawn, coordinates given (design note 003's
  control), evaluated with both docks drawn;
- ``confuser_plain``: trained on the confuser demonstrations, coordinates as one plain token;
- ``confuser_<remedy>``: the same with a remedy (or a combination "a+b") of :data:`kinema.act_policy.REMEDIES`.

Writes ``confuser_2d.json`` (every seed's rates), ``confuser_2d.md`` (per-seed table) and ``confuser_2d.png``
to the output folder; runs under ``runs/<cell>/seed<k>/``. Finished cells are read back, so an interrupted run
continues where it stopped.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._config import ACTConfig, remedy_names
from ._io import write_atomic, write_json_atomic, write_text_atomic
from ._train import TrainConfig, train

RESULT_NAME = "confuser_2d"
# A tiny ACT for the 64x64 dock images (2x2 image tokens), sized by measurement to train in about half a minute
# per run on one CPU thread.
DOCK_MODEL = {
    "camera_names": ("top",),
    "state_dim": 2,
    "action_dim": 2,
    "environment_state_dim": 2,
    "chunk_size": 10,
    "n_action_steps": 5,
    "dim_model": 64,
    "n_heads": 4,
    "dim_feedforward": 128,
    "n_encoder_layers": 2,
    "n_vae_encoder_layers": 1,
    "latent_dim": 8,
    "backbone_width": 8,
    "crop_size": 0.5,
}
DEFAULT_REMEDIES = ("aux_head", "strong", "contrastive", "heatmap", "crop_replace", "heatmap+crop_replace")


@dataclass
class DockConfuserExperiment:
    """Settings of :func:`run_dock_confuser_experiment`: ``episodes`` training demonstrations (scenes
    ``record_seed`` .., each to both docks), ``steps`` optimizer steps of ``batch_size`` at ``lr`` per run,
    ``seeds`` training seeds, ``eval_episodes`` evaluation scenes from ``eval_seed``; ``model``: ACTConfig
    fields over :data:`DOCK_MODEL`. ``pairs=False`` records one target per scene (``episodes`` scenes), as
    ALOHA's confuser recordings are, instead of counterfactual pairs."""

    out_dir: str
    remedies: tuple[str, ...] = DEFAULT_REMEDIES
    include_clean: bool = True
    seeds: tuple[int, ...] = (0, 1, 2)
    episodes: int = 40
    pairs: bool = True
    record_seed: int = 0
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    eval_episodes: int = 100
    eval_seed: int = 100_000
    image_size: int = 64
    threads: int | None = 1
    model: dict = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("episodes", "steps", "batch_size", "eval_episodes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if self.pairs and (self.episodes < 2 or self.episodes % 2):
            raise ValueError(f"episodes: expected an even number >= 2 (pairs), got {self.episodes}")
        for remedy in self.remedies:
            remedy_names(remedy)  # raises naming an unknown remedy
        if not self.seeds:
            raise ValueError("seeds: expected at least one training seed")
        scenes = range(self.record_seed, self.record_seed + self.num_scenes)
        if self.eval_seed < scenes.stop and self.eval_seed + self.eval_episodes > scenes.start:
            raise ValueError(
                f"eval_seed: scenes {self.eval_seed}..{self.eval_seed + self.eval_episodes - 1} overlap the "
                f"recorded scenes {scenes.start}..{scenes.stop - 1}"
            )
        self.base_model()  # validates the model overrides now

    @property
    def num_scenes(self) -> int:
        return self.episodes // 2 if self.pairs else self.episodes

    def base_model(self) -> ACTConfig:
        from kinema.robot_data.sim.dock import CONFUSER_CAMERAS

        return ACTConfig(**{**DOCK_MODEL, "crop_cameras": CONFUSER_CAMERAS, **self.model})

    def cells(self) -> list[dict]:
        cells = [{"name": "clean", "data": "clean", "remedy": "plain"}] if self.include_clean else []
        cells.append({"name": "confuser_plain", "data": "confuser", "remedy": "plain"})
        cells += [{"name": f"confuser_{r}", "data": "confuser", "remedy": r} for r in self.remedies]
        return cells


def _record(folder: Path, experiment: DockConfuserExperiment, confuser: bool) -> Path:
    from kinema.robot_data.sim.dock import record_confuser_episodes

    manifest = folder / "recording.json"
    wanted = {
        "episodes": experiment.episodes,
        "seed": experiment.record_seed,
        "image_size": experiment.image_size,
    }
    if manifest.is_file():
        found = json.loads(manifest.read_text())
        if all(found.get(k) == v for k, v in wanted.items()) and found.get("confuser") == confuser:
            return folder
    record_confuser_episodes(
        folder,
        experiment.episodes,
        seed=experiment.record_seed,
        image_size=experiment.image_size,
        confuser=confuser,
        pairs=experiment.pairs,
        overwrite=True,
        progress=False,
    )
    return folder


def run_dock_confuser_experiment(experiment: DockConfuserExperiment) -> dict:
    """Records the data (once), trains and evaluates every cell x seed not yet done, and writes the table."""
    from tqdm import tqdm

    from kinema.robot_data.sim.dock import evaluate_confuser

    from ._policy import load_policy

    threads = torch.get_num_threads()
    if experiment.threads is not None:
        torch.set_num_threads(experiment.threads)
    start = time.perf_counter()
    out = Path(experiment.out_dir)
    data = {
        "confuser": _record(out / "data" / "confuser", experiment, confuser=True),
        "clean": _record(out / "data" / "clean", experiment, confuser=False),
    }
    rows = []
    todo = [(cell, seed) for cell in experiment.cells() for seed in experiment.seeds]
    bar = tqdm(total=len(todo), desc="confuser-2d runs", unit="run", disable=not experiment.progress)
    try:
        for cell in experiment.cells():
            per_seed = []
            for seed in experiment.seeds:
                run_dir = out / "runs" / cell["name"] / f"seed{seed}"
                summary_path = run_dir / "eval_confuser" / "eval_summary.json"
                if not summary_path.is_file():
                    if run_dir.exists():  # an unfinished run of an earlier session: start it again
                        import shutil

                        shutil.rmtree(run_dir)
                    model = experiment.base_model()
                    if cell["remedy"] != "plain":
                        model = model.with_remedies(cell["remedy"])
                    config = TrainConfig(
                        data=str(data[cell["data"]]),
                        out_dir=str(run_dir),
                        max_steps=experiment.steps,
                        batch_size=experiment.batch_size,
                        lr=experiment.lr,
                        lr_backbone=experiment.lr,
                        warmup_steps=0,
                        val_fraction=0.0,
                        seed=seed,
                        save_every=10**9,
                        log_every=max(1, experiment.steps // 5),
                        load_workers=1,
                        device="cpu",
                        progress=False,
                        run_name=f"{cell['name']}_seed{seed}",
                    )
                    train(model, config)
                    policy = load_policy(run_dir, device="cpu")
                    evaluate_confuser(
                        policy,
                        experiment.eval_episodes,
                        seed=experiment.eval_seed,
                        image_size=experiment.image_size,
                        out_dir=run_dir / "eval_confuser",
                    )
                summary = json.loads(summary_path.read_text())
                trained = json.loads((run_dir / "train_result.json").read_text())
                per_seed.append(
                    {
                        "seed": seed,
                        "success": summary["success_rate"],
                        "wrong": summary["wrong_rate"],
                        "neither": summary["neither_rate"],
                        "between": summary["between_rate"],
                        "train_seconds": round(trained["train_seconds"], 1),
                    }
                )
                bar.update(1)
            success = [s["success"] for s in per_seed]
            rows.append(
                {
                    "cell": cell["name"],
                    "trained_on": cell["data"],
                    "remedy": cell["remedy"],
                    "seeds": per_seed,
                    "mean_success": sum(success) / len(success),
                    "min_success": min(success),
                    "max_success": max(success),
                }
            )
    finally:
        bar.close()
        torch.set_num_threads(threads)
    table = {
        "format": "kinema.act_confuser_2d",
        "version": 1,
        "task": "dock_confuser (kinema.robot_data.sim.dock)",
        "training_demonstrations": experiment.episodes,
        "counterfactual_pairs": experiment.pairs,
        "recording_scenes": [experiment.record_seed, experiment.record_seed + experiment.num_scenes - 1],
        "eval_seeds": [experiment.eval_seed, experiment.eval_seed + experiment.eval_episodes - 1],
        "steps": experiment.steps,
        "batch_size": experiment.batch_size,
        "lr": experiment.lr,
        "train_seeds": list(experiment.seeds),
        "model": {k: v for k, v in experiment.base_model().to_dict().items() if k != "notes"},
        "device": f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch threads {experiment.threads or threads})",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "wall_seconds_this_session": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    write_json_atomic(out / f"{RESULT_NAME}.json", table)
    write_text_atomic(out / f"{RESULT_NAME}.md", dock_markdown_table(table))
    plot_dock_grid(table, out / f"{RESULT_NAME}.png")
    return table


def dock_markdown_table(table: dict) -> str:
    """Per-seed target success (and where the other episodes ended) as a markdown table."""
    seeds = table["train_seeds"]
    pairs = "each to both docks" if table.get("counterfactual_pairs", True) else "each to one dock"
    lines = [
        f"Dock confuser, {table['training_demonstrations']} demonstrations (scenes {table['recording_scenes'][0]}.."
        f"{table['recording_scenes'][1]}, {pairs}), {table['steps']} steps x batch "
        f"{table['batch_size']}; evaluated on scenes {table['eval_seeds'][0]}..{table['eval_seeds'][1]}. "
        f"Device: {table['device']}; date {table['date']}.",
        "",
        "| cell | trained on | remedy | "
        + " | ".join(f"target, seed {s}" for s in seeds)
        + " | mean target | mean other dock | mean neither (between) |",
        "|---|---|---|" + "---:|" * (len(seeds) + 3),
    ]
    for row in table["rows"]:
        runs = row["seeds"]
        wrong = sum(r["wrong"] for r in runs) / len(runs)
        neither = sum(r["neither"] for r in runs) / len(runs)
        between = sum(r["between"] for r in runs) / len(runs)
        lines.append(
            f"| {row['cell']} | {row['trained_on']} | {row['remedy']} | "
            + " | ".join(f"{r['success']:.0%}" for r in runs)
            + f" | {row['mean_success']:.1%} | {wrong:.1%} | {neither:.1%} ({between:.1%}) |"
        )
    return "\n".join(lines) + "\n"


def plot_dock_grid(table: dict, path: Path) -> Path:
    """Mean target success per cell (bars) with every seed's value (dots), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.1 * len(rows)), 4.0))
    for index, row in enumerate(rows):
        axis.bar(index, row["mean_success"], width=0.6, color="tab:blue", alpha=0.7)
        values = [r["success"] for r in row["seeds"]]
        axis.scatter([index] * len(values), values, color="black", s=12, zorder=3)
    axis.axhline(0.9, color="tab:green", linestyle="--", linewidth=1, label="goal 90%")
    axis.axhline(0.25, color="tab:red", linestyle=":", linewidth=1, label="collapse <= 25%")
    axis.set_xticks(range(len(rows)), [r["cell"] for r in rows], rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"target success, {table['eval_seeds'][1] - table['eval_seeds'][0] + 1} scenes")
    axis.set_title("ACT on the dock confuser: mean over seeds (dots: each seed)")
    axis.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return path
