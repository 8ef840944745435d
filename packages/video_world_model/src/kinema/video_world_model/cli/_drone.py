"""kinema-wm make-drone-data, kinema-wm fit-action-estimator and kinema-wm eval-actions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

MAKE_EXAMPLES = """examples:
  kinema-wm make-drone-data --out data/drone --clips 2000 --size 64 64 --frames 81 --seed 0 --workers 16
  kinema-wm make-drone-data --out data/drone_test --clips 128 --size 64 64 --seed 1 --overwrite
Writes metadata.csv (video, prompt, action: JSON (20, 2, 8)), videos/clip_XXXXX.mp4 and drone_data.json; train on
it with `kinema-wm train --dataset_base_path data/drone ...`. The same arguments give the same
metadata and rendered frames (the mp4 bytes may differ slightly: libx264 at tiny sizes).
"""
FIT_EXAMPLES = """examples:
  kinema-wm fit-action-estimator --dataset data/drone --out runs/estimator --workers 16
Fits the optical-flow readout on rendered flights (their actions are the truth); eval-actions --estimator uses it.
"""
EVAL_EXAMPLES = """examples:
  kinema-wm eval-actions --generated runs/gen --dataset data/drone_test --estimator runs/estimator --out runs/eval
A generated clip is matched to the dataset row whose video column names it (the same relative path, e.g.
videos/clip_00012.mp4, or the same file name). Prints and writes report.md / report.json / confusion_*.png with
the generated clips and two sanity rows: the dataset's own clips (near perfect) and those clips scored against
shuffled actions (near chance). Without --estimator one is fitted on --dataset itself (said in the report).
"""


def register(commands) -> None:
    make = commands.add_parser(
        "make-drone-data",
        help="render drone flights over procedural terrain as an action-video dataset",
        description="Renders camera flights over procedurally generated textured terrain (MuJoCo) where each "
        "latent step applies the commanded drone actions, and writes the action-video CSV that `kinema-wm train` "
        "reads.",
        epilog=MAKE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    make.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    make.add_argument("--clips", required=True, type=int)
    make.add_argument(
        "--size", nargs=2, type=int, metavar=("H", "W"), default=(64, 64), help="multiples of 32"
    )
    make.add_argument("--frames", type=int, default=81, help="frames per clip, 4n+1 (default 81: 20 actions)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--workers", type=int, default=1, help="rendering processes")
    make.add_argument("--clips-per-world", dest="clips_per_world", type=int, default=8)
    make.add_argument("--contrast", type=float, default=1.0,
                      help="field tint contrast of the worlds (the drone experiment uses 3.0 at 32x32)")  # fmt: skip
    make.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    make.set_defaults(run=run_make)

    fit = commands.add_parser(
        "fit-action-estimator",
        help="fit the camera-motion estimator of eval-actions on rendered flights",
        description="Computes the optical flow of every latent step of the dataset's clips and fits the readout "
        "that turns it into the 8 drone actions (binary + magnitude).",
        epilog=FIT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fit.add_argument("--dataset", required=True, type=Path, nargs="+", help="rendered flight dataset(s)")
    fit.add_argument("--out", required=True, type=Path)
    fit.add_argument("--steps", type=int, default=3000, help="optimizer steps of the readout")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--workers", type=int, default=1)
    fit.set_defaults(run=run_fit)

    evaluate = commands.add_parser(
        "eval-actions",
        help="score how well generated clips follow their actions",
        description="Estimates the camera motion of each latent step of each generated clip and scores it against "
        "the commanded actions of the matching dataset row.",
        epilog=EVAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    evaluate.add_argument("--generated", required=True, type=Path)
    evaluate.add_argument("--dataset", required=True, type=Path)
    evaluate.add_argument(
        "--estimator", type=Path, help="from fit-action-estimator (default: fit on --dataset)"
    )
    evaluate.add_argument("--out", type=Path, help="report directory (default: <generated>/action_eval)")
    evaluate.add_argument("--workers", type=int, default=1)
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the shuffled-actions sanity row")
    evaluate.set_defaults(run=run_eval)


def run_make(args: argparse.Namespace) -> int:
    from kinema.robot_data.drone import DroneDataConfig, make_drone_dataset

    config = DroneDataConfig(
        out=str(args.out),
        clips=args.clips,
        height=args.size[0],
        width=args.size[1],
        frames=args.frames,
        seed=args.seed,
        workers=args.workers,
        clips_per_world=args.clips_per_world,
        contrast=args.contrast,
    )
    print(make_drone_dataset(config, overwrite=args.overwrite).describe())
    return 0


def run_fit(args: argparse.Namespace) -> int:
    from ..drone._eval import fit_estimator

    if args.steps < 1:
        raise ValueError(f"--steps: expected >= 1, got {args.steps}")
    fit_estimator(args.dataset, args.out, steps=args.steps, seed=args.seed, workers=args.workers)
    print(f"wrote the action estimator to {args.out}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..drone._estimator import ActionEstimator
    from ..drone._eval import evaluate_actions, fit_estimator
    from ..drone._metric import scores_table

    if not args.generated.is_dir():
        raise FileNotFoundError(f"--generated: {args.generated} is not a directory")
    out = args.out or args.generated / "action_eval"
    if args.estimator is not None:
        estimator = ActionEstimator.load(args.estimator)
    else:
        print(f"no --estimator: fitting one on {args.dataset} itself (the ground-truth row is then in-sample)",
              file=sys.stderr)  # fmt: skip
        estimator = fit_estimator([args.dataset], out / "estimator", workers=args.workers)
    results = evaluate_actions(
        args.generated, args.dataset, estimator, out, workers=args.workers, seed=args.seed
    )
    print(scores_table(results))
    print(f"report: {out / 'report.md'}")
    return 0
