"""The confuser transfer experiment (issue 12): does ACT use the target's coordinates when two cubes look alike?

Cells, each trained and then evaluated on the confuser scene (``transfer_cube_confuser``; success = the TARGET
cube transferred):

- ``clean``: trained on transfer-cube demonstrations WITHOUT a confuser, coordinates given (design note 003:
  such a model is expected to transfer to the confuser scene);
- ``confuser_plain``: trained on confuser demonstrations, coordinates as one plain token;
- ``confuser_<remedy>``: the same with one remedy of :data:`kinema.act_policy.REMEDIES`.

Writes ``confuser_experiment.json``, ``confuser_experiment.md`` (table) and ``confuser_experiment.png`` (bars)
to the output folder, with each cell's run under ``runs/<cell>/`` and its evaluation under
``runs/<cell>/eval_confuser/``. The experiment is resumable: finished evaluations are kept, unfinished training
resumes from its last checkpoint, and ``session_minutes`` stops before the limit so a machine lent in pieces can
run it piece by piece.
"""

from __future__ import annotations

import datetime
import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._config import ACTConfig, remedy_names
from ._io import write_atomic, write_json_atomic, write_text_atomic
from ._train import TrainConfig, latest_checkpoint, train

EVAL_TASK = "transfer_cube_confuser"
RESULT_NAME = "confuser_experiment"
_TRAIN_OVERRIDES_FORBIDDEN = ("data", "out_dir", "resume", "session_minutes", "run_name", "progress")


@dataclass
class ConfuserExperiment:
    """Settings of :func:`run_confuser_experiment`.

    ``model``: the base ACTConfig (with coordinates: ``environment_state_dim`` 2); each cell switches its remedy
    on. ``train``: TrainConfig fields shared by every cell (``data``/``out_dir``/``resume`` are set per cell).
    Evaluation: ``episodes`` seeds from ``eval_seed`` (disjoint from the recordings' seeds, which are excluded),
    ``workers`` simulator processes, the image size / render quality of the confuser data unless given.
    ``only``: cell names this run trains and evaluates (None: all); the others are read back when finished and
    listed as pending otherwise, so several processes can share one GPU, one cell each, and a last run without
    ``only`` tabulates them all.
    """

    clean_data: str
    confuser_data: str
    out_dir: str
    model: ACTConfig
    train: dict = field(default_factory=dict)
    remedies: tuple[str, ...] = (
        "aux_head",
        "film",
        "crop",
        "crop_replace",
        "heatmap",
        "strong",
        "contrastive",
        "heatmap+crop_replace",
    )
    include_clean: bool = True
    episodes: int = 50
    eval_seed: int = 100_000
    workers: int = 1
    episode_length: int = 400
    image_size: tuple[int, int] | None = None
    render_quality: str | None = None
    videos: int = 2
    device: str | None = None
    n_action_steps: int | None = None
    temporal_ensemble_coeff: float | None = None
    session_minutes: float | None = None
    only: tuple[str, ...] | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        plain = [r for r in self.remedies if "plain" in remedy_names(r)]  # raises naming an unknown remedy
        if plain:
            raise ValueError(f"remedies: unknown {plain}; 'plain' is the confuser_plain cell, not a remedy")
        bad = [k for k in self.train if k in _TRAIN_OVERRIDES_FORBIDDEN]
        if bad:
            raise ValueError(f"train: {bad} are set per cell by the experiment")
        if not self.model.use_environment_state:
            raise ValueError(
                "model: the experiment gives coordinates; set environment_state_dim (2 for the cube's x, y)"
            )
        TrainConfig(data="-", out_dir="-", **self.train)  # validates the shared training settings now
        if self.only is not None:
            self.only = tuple(self.only)
            names = [c["name"] for c in self.cells()]
            unknown = [n for n in self.only if n not in names]
            if unknown or not self.only:
                raise ValueError(f"cells: unknown {unknown or list(self.only)}; this experiment has {names}")

    def cells(self) -> list[dict]:
        cells = []
        if self.include_clean:
            cells.append({"name": "clean", "data": self.clean_data, "remedy": "plain"})
        cells.append({"name": "confuser_plain", "data": self.confuser_data, "remedy": "plain"})
        cells += [{"name": f"confuser_{r}", "data": self.confuser_data, "remedy": r} for r in self.remedies]
        return cells


def _recording(folder: str) -> dict:
    path = Path(folder) / "recording.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def run_confuser_experiment(experiment: ConfuserExperiment) -> dict:
    """Runs (or continues) every cell; returns the results table (also written as JSON, markdown and a plot).

    The returned dict has ``complete`` False when ``session_minutes`` ran out first; run again to continue."""
    from kinema.robot_data.sim import evaluate

    start = time.perf_counter()
    out = Path(experiment.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confuser_recording = _recording(experiment.confuser_data)
    # no evaluation scene may be one a model was trained on (the confuser scene of seed s has the target of the
    # transfer_cube scene of seed s)
    exclude = set(confuser_recording.get("seeds") or []) | set(
        _recording(experiment.clean_data).get("seeds") or []
    )
    rows = []
    complete = True

    def minutes_left() -> float | None:
        if experiment.session_minutes is None:
            return None
        return experiment.session_minutes - (time.perf_counter() - start) / 60

    for cell in experiment.cells():
        run_dir = out / "runs" / cell["name"]
        eval_dir = run_dir / "eval_confuser"
        row = {"cell": cell["name"], "data": cell["data"], "remedy": cell["remedy"], "status": "pending"}
        summary_path = eval_dir / "eval_summary.json"
        if not summary_path.is_file() and experiment.only is not None and cell["name"] not in experiment.only:
            complete = False  # another process's cell, not finished yet
            row["status"] = "pending (run by another process)"
            rows.append(row)
            continue
        if not summary_path.is_file():
            left = minutes_left()
            if left is not None and left < 0.5:
                complete = False
                rows.append(row)
                continue
            result_path = run_dir / "train_result.json"
            finished = result_path.is_file() and json.loads(result_path.read_text()).get("complete")
            if not finished:
                model = experiment.model.with_remedies(cell["remedy"])
                config = TrainConfig(
                    data=cell["data"],
                    out_dir=str(run_dir),
                    resume=latest_checkpoint(run_dir) is not None,
                    session_minutes=None if left is None else max(left - 0.25, 0.1),
                    progress=experiment.progress,
                    run_name=cell["name"],
                    **experiment.train,
                )
                result = train(model, config)
                if not result.complete:
                    complete = False
                    row["status"] = f"training stopped at step {result.step} ({result.stop_reason})"
                    rows.append(row)
                    continue
            left = minutes_left()
            if left is not None and left < 0.5:
                complete = False
                row["status"] = "trained, evaluation pending"
                rows.append(row)
                continue
            from ._policy import load_policy

            options = {"n_action_steps": experiment.n_action_steps}
            if experiment.temporal_ensemble_coeff is not None:
                options["temporal_ensemble_coeff"] = experiment.temporal_ensemble_coeff
            policy = load_policy(run_dir, device=experiment.device, **options)
            settings = confuser_recording or _recording(cell["data"])
            evaluate(
                policy,
                EVAL_TASK,
                episodes=experiment.episodes,
                seed=experiment.eval_seed,
                workers=experiment.workers,
                image_size=tuple(experiment.image_size or settings.get("image_size") or (480, 640)),
                cameras=tuple(policy.model.config.camera_names),
                episode_length=experiment.episode_length,
                render_quality=experiment.render_quality or settings.get("render_quality") or "full",
                videos=experiment.videos,
                out_dir=eval_dir,
                exclude_seeds=exclude or None,
                progress=experiment.progress,
            )
        summary = json.loads(summary_path.read_text())
        trained = json.loads((run_dir / "train_result.json").read_text())
        row.update(
            status="done",
            success=summary["success_rate"],
            stages=summary["stage_rates"],
            episodes=summary["episodes"],
            train_steps=trained["step"],
            train_minutes=round(trained["train_seconds"] / 60, 2),
            val_l1_prior=(trained.get("val") or {}).get("val/l1_prior"),
            videos=[
                str(Path("runs") / cell["name"] / "eval_confuser" / v) for v in summary.get("videos", [])
            ],
        )
        rows.append(row)

    table = {
        "format": "kinema.act_confuser_experiment",
        "version": 1,
        "complete": complete,
        "eval_task": EVAL_TASK,
        "episodes": experiment.episodes,
        "eval_seeds": [experiment.eval_seed, experiment.eval_seed + experiment.episodes - 1],
        "clean_data": experiment.clean_data,
        "confuser_data": experiment.confuser_data,
        "train": experiment.train,
        "model": {k: v for k, v in experiment.model.to_dict().items() if k != "notes"},
        "device": torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else platform.processor() or "cpu",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "rows": rows,
    }
    write_json_atomic(out / f"{RESULT_NAME}.json", table)
    write_text_atomic(out / f"{RESULT_NAME}.md", markdown_table(table))
    plot_bars(table, out / f"{RESULT_NAME}.png")
    return table


def markdown_table(table: dict) -> str:
    """The results as a markdown table (what RESULTS.md quotes)."""
    lines = [
        f"# Confuser transfer experiment ({'complete' if table['complete'] else 'INCOMPLETE: run again to continue'})",
        "",
        f"Evaluated on `{table['eval_task']}`, {table['episodes']} episodes, seeds {table['eval_seeds'][0]}.."
        f"{table['eval_seeds'][1]}; success = the TARGET cube transferred. Device: {table['device']}; "
        f"date {table['date']}.",
        f"Training data: clean `{table['clean_data']}`, confuser `{table['confuser_data']}`; shared training "
        f"settings `{json.dumps(table['train'])}`.",
        "",
        "| cell | trained on | remedy | success | touched | lifted | steps | minutes | val L1 (z=0) | status |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in table["rows"]:
        trained_on = "transfer_cube (no confuser)" if row["cell"] == "clean" else "confuser demos"
        if row["status"] == "done":
            stages = list(row["stages"].values())
            val = "" if row.get("val_l1_prior") is None else f"{row['val_l1_prior']:.4f}"
            lines.append(
                f"| {row['cell']} | {trained_on} | {row['remedy']} | {row['success']:.1%} | {stages[0]:.0%} | "
                f"{stages[1]:.0%} | {row['train_steps']} | {row['train_minutes']} | {val} | done |"
            )
        else:
            lines.append(
                f"| {row['cell']} | {trained_on} | {row['remedy']} |  |  |  |  |  |  | {row['status']} |"
            )
    return "\n".join(lines) + "\n"


def plot_bars(table: dict, path: Path) -> Path:
    """Success (and 'touched') rate per cell as a bar plot, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table["rows"]
    names = [r["cell"] for r in rows]
    success = [r.get("success", 0.0) if r["status"] == "done" else 0.0 for r in rows]
    touched = [next(iter(r["stages"].values())) if r["status"] == "done" else 0.0 for r in rows]
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(rows)), 4.0))
    positions = range(len(rows))
    axis.bar([p - 0.2 for p in positions], success, width=0.4, label="success (target transferred)")
    axis.bar([p + 0.2 for p in positions], touched, width=0.4, label="touched the target", alpha=0.6)
    for p, row in zip(positions, rows):
        if row["status"] != "done":
            axis.text(p, 0.02, "pending", ha="center", rotation=90, fontsize=8)
    axis.set_xticks(list(positions), names, rotation=30, ha="right")
    axis.set_ylim(0, 1)
    axis.set_ylabel(f"rate over {table['episodes']} episodes")
    axis.set_title(f"ACT on {table['eval_task']}: plain coordinate token vs remedies")
    axis.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=120))
    plt.close(figure)
    return path
