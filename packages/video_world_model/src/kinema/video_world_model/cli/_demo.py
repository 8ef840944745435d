"""kinema-wm demo (the world-model half of `make demo`) and kinema-wm drone-experiment (any scale, resumable)."""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path

DEMO_EXAMPLES = """examples:
  kinema-wm demo --out runs/demo/world_model                  # CPU, about 5.5 minutes on two cores
  kinema-wm demo --out runs/wm --steps 200 --variant add_residual
Renders drone flights, fits the action estimator, trains a small Wan model with an action controller from scratch,
generates held-out flights with their own, shuffled and zero actions and writes report.md (the balanced-accuracy
table), per_action_<variant>.png and grid_<variant>.mp4 (ground truth | own | shuffled | zero). Needs the drone
extra: pip install 'kinema-video-world-model[drone]'.
"""
EXPERIMENT_EXAMPLES = """examples:
  kinema-wm drone-experiment --preset gpu --variants adaln_tmod,add_residual --out $OUT --budget_minutes 9
  kinema-wm drone-experiment --preset cpu --variants cross_attn_frame --work .bench/drone-cpu --out runs/cpu
Resumable: state lives in --work; a run that stops for its budget (exit code 3) continues when run again.
Results per variant in --out: results_<variant>.json/.md, confusion_/per_action_<variant>.png, grid_<variant>.mp4.
"""


# the names of _drone_experiment's VARIANTS and PRESETS (kept here so that --help imports no model code; a test
# checks that they agree)
VARIANTS = ("cross_attn_frame", "adaln_tmod", "add_residual", "cross_attn_window")
PRESETS = ("gpu", "cpu", "ci", "smoke")
DEMO_STEPS = 600


def register(commands) -> None:
    demo = commands.add_parser(
        "demo",
        help="CPU demo: train a small world model on drone flights and show that it follows the actions",
        description="The world-model half of `make demo`: the drone experiment's CPU preset, end to end.",
        epilog=DEMO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--out", required=True, type=Path, help="report directory")
    demo.add_argument("--work", type=Path, help="rendered data, cache and checkpoints (default: <out>/work)")
    demo.add_argument("--variant", default="adaln_tmod", choices=sorted(VARIANTS), help="injection type")
    demo.add_argument("--steps", type=int, help=f"training steps (default {DEMO_STEPS})")
    demo.add_argument("--keep-work", dest="keep_work", action="store_true",
                      help="keep the rendered data and checkpoints (default: deleted after the report)")  # fmt: skip
    demo.set_defaults(run=run_demo)

    experiment = commands.add_parser(
        "drone-experiment",
        help="the drone action-following experiment at a chosen scale, resumable",
        description="Renders flights, fits the estimator, trains one model per injection type and scores own / "
        "shuffled / zero actions against the ground truth (see RESULTS.md).",
        epilog=EXPERIMENT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    experiment.add_argument("--preset", default="gpu", choices=PRESETS)
    experiment.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}"
    )
    experiment.add_argument("--work", type=Path, default=Path(".bench/drone"), help="resumable state")
    experiment.add_argument("--out", type=Path, help="where the result files of each variant go")
    experiment.add_argument("--steps", type=int, help="training steps per variant (default: the preset's)")
    experiment.add_argument("--chunk", type=int, help="steps per checkpoint (default: the preset's)")
    experiment.add_argument("--budget_minutes", type=float, default=math.inf, help="stop cleanly before this")
    experiment.add_argument("--prepare-only", dest="prepare_only", action="store_true",
                            help="render the data and fit the estimator, then stop (before parallel variant runs)")  # fmt: skip
    experiment.add_argument("--reserve_seconds", type=float, default=0.0,
                            help="stop training early to keep this for generation and evaluation")  # fmt: skip
    experiment.add_argument("--finish", action="store_true",
                            help="score a variant at its last checkpoint when the budget stops its training "
                            "early (the last call of a budgeted series; results record the steps trained)")  # fmt: skip
    experiment.set_defaults(run=run_experiment)


def run_demo(args: argparse.Namespace) -> int:
    from ..drone._experiment import DroneExperiment, preset
    from ..drone._report import demo_report

    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps: expected >= 1, got {args.steps}")
    settings = preset("cpu", steps=args.steps)
    work = args.work or args.out / "work"
    experiment = DroneExperiment(settings, work, args.out)
    results = experiment.run([args.variant])
    seconds = experiment.seconds | {"total": sum(experiment.seconds.values())}
    report = demo_report(results, args.variant, experiment.metadata(args.variant), seconds)
    (args.out / "report.md").write_text(report)
    if not args.keep_work and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    print(report.split("## All scores")[0])
    print(f"report: {args.out / 'report.md'}")
    return 0


def run_experiment(args: argparse.Namespace) -> int:
    from ..drone._experiment import DroneExperiment, OutOfTime, preset
    from ..drone._metric import scores_table

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    settings = preset(args.preset, steps=args.steps, chunk=args.chunk)
    experiment = DroneExperiment(
        settings,
        args.work,
        args.out,
        budget_seconds=args.budget_minutes * 60,
        reserve_seconds=args.reserve_seconds,
        finish=args.finish,
    )
    try:
        if args.prepare_only:
            experiment.data()
            experiment.estimator()
            return 0
        results = experiment.run(variants)
    except OutOfTime as stop:
        experiment.log(f"stopping: {stop}. Run the same command again to continue.")
        return 3
    print(scores_table(results))
    if args.out is not None:
        (args.out / "summary.json").write_text(
            json.dumps({k: v.balanced_accuracy for k, v in results.items()}, indent=2)
        )
    return 0
