"""``kinema-data record-sim`` and ``kinema-data eval-sim``.

``add_sim_commands(subparsers)`` adds both subcommands to the ``kinema-data`` parser; each sets
``handler(args) -> exit code`` (0 ok, 1 failure; argparse exits 2 on usage errors), the convention of
``kinema.robot_data.cli`` (append ``add_sim_commands`` to its ``REGISTRARS``). Importing this module
imports no optional dependency, so ``kinema-data --help`` works without the ``sim`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._tasks import DEFAULT_EPISODE_LENGTH, DEFAULT_IMAGE_SIZE, EVAL_SEED_START, RENDER_QUALITIES, TASK_NAMES

_RECORD_EXAMPLES = """examples:
  kinema-data record-sim --task transfer_cube --episodes 50 --out data/sim_transfer_cube --workers 8
  kinema-data record-sim --task transfer_cube_confuser --episodes 10 --out /tmp/confuser \\
      --image-size 240 320 --seed 1000 --overwrite

Episode i is the i-th seed from --seed whose scripted demonstration succeeds in joint-space replay;
the same arguments give the same episodes whatever --workers is. Files: episode_<i>.hdf5 and
recording.json (the summary, written last). A folder that already holds a recording is refused
unless --overwrite replaces it."""

_EVAL_EXAMPLES = """examples:
  kinema-data eval-sim --checkpoint runs/act_transfer_cube --episodes 50 --workers 8 --out eval/act --videos 3
  kinema-data eval-sim --checkpoint runs/act_confuser --task transfer_cube_confuser \\
      --train-data data/sim_confuser --json

The checkpoint folder names its policy loader in policy.json
({"format": "kinema-sim-policy", "version": 1, "loader": "package.module:function", "options": {...}}),
called as function(checkpoint_dir, device=DEVICE, **options). Evaluation seeds default to
--seed 100000 + i, disjoint from recording seeds (0 + i by default); --train-data refuses overlap."""


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _pixels(text: str) -> int:
    value = int(text)
    if not 8 <= value <= 4096:
        raise argparse.ArgumentTypeError(f"expected a size between 8 and 4096 pixels, got {text}")
    return value


def _metres(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a distance >= 0 metres, got {text}")
    return value


def add_sim_commands(subparsers) -> None:
    """Adds ``record-sim`` and ``eval-sim`` to the ``kinema-data`` subcommand parsers."""
    formatter = argparse.RawDescriptionHelpFormatter
    record = subparsers.add_parser(
        "record-sim",
        help="record scripted ALOHA demonstrations (needs the sim extra)",
        description="Record scripted bimanual demonstrations in the ALOHA MuJoCo simulation as policy episodes.",
        epilog=_RECORD_EXAMPLES,
        formatter_class=formatter,
    )
    record.add_argument("--task", required=True, choices=TASK_NAMES, help="the simulated task")
    record.add_argument(
        "--episodes", type=_count, default=50, help="successful episodes to write (default 50)"
    )
    record.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the episodes")
    record.add_argument("--workers", type=_count, default=1, help="simulator processes (default 1)")
    record.add_argument("--seed", type=_non_negative, default=0, help="first seed tried (default 0)")
    record.add_argument(
        "--image-size", type=_pixels, nargs=2, default=list(DEFAULT_IMAGE_SIZE), metavar=("H", "W"),
        help="camera image size (default 480 640)",
    )  # fmt: skip
    record.add_argument(
        "--episode-length", type=_count, default=DEFAULT_EPISODE_LENGTH, help="steps at 50 Hz (default 400)"
    )
    record.add_argument(
        "--noise",
        type=_metres,
        default=0.0,
        help="uniform noise on the scripted gripper targets, metres (default 0)",
    )
    record.add_argument(
        "--render-quality", choices=RENDER_QUALITIES, default="full",
        help="full: shadows and multisampling (default); fast: neither, ~8x faster without a GPU",
    )  # fmt: skip
    record.add_argument("--overwrite", action="store_true", help="replace a recording already in --out")
    record.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    record.set_defaults(handler=_run_record)

    evaluate = subparsers.add_parser(
        "eval-sim",
        help="evaluate a policy checkpoint in the ALOHA simulation (needs the sim extra)",
        description="Run a policy checkpoint (policy.json convention) on simulated episodes in parallel.",
        epilog=_EVAL_EXAMPLES,
        formatter_class=formatter,
    )
    evaluate.add_argument(
        "--checkpoint", type=Path, required=True, metavar="DIR", help="folder with policy.json"
    )
    evaluate.add_argument("--task", choices=TASK_NAMES, help="the task (default: policy.json's task)")
    evaluate.add_argument("--episodes", type=_count, default=50, help="episodes (default 50)")
    evaluate.add_argument(
        "--seed", type=_non_negative, default=EVAL_SEED_START, help=f"first seed (default {EVAL_SEED_START})"
    )
    evaluate.add_argument("--workers", type=_count, default=1, help="simulator processes (default 1)")
    evaluate.add_argument(
        "--image-size", type=_pixels, nargs=2, metavar=("H", "W"),
        help="camera image size (default: policy.json's, else 480 640)",
    )  # fmt: skip
    evaluate.add_argument(
        "--episode-length", type=_count, default=DEFAULT_EPISODE_LENGTH, help="steps at 50 Hz (default 400)"
    )
    evaluate.add_argument(
        "--render-quality", choices=RENDER_QUALITIES,
        help="as the training data was recorded (default: policy.json's, else full)",
    )  # fmt: skip
    evaluate.add_argument(
        "--full-episodes", action="store_true", help="run every episode to its end after success"
    )
    evaluate.add_argument(
        "--out", type=Path, metavar="DIR", help="write eval_summary.json, eval_episodes.jsonl, videos/"
    )
    evaluate.add_argument(
        "--videos", type=_non_negative, default=0, help="mp4 videos of the first N episodes (needs --out)"
    )
    evaluate.add_argument("--device", help="device handed to the policy loader, e.g. cuda or cpu")
    evaluate.add_argument(
        "--train-data", type=Path, metavar="DIR", help="a record-sim folder whose seeds must not be evaluated"
    )
    evaluate.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    evaluate.set_defaults(handler=_run_eval)


def _fail(command: str, error: BaseException) -> int:
    print(f"kinema-data {command}: error: {error}", file=sys.stderr)
    return 1


def _run_record(args) -> int:
    from . import RecordingError, RenderBackendError, record_episodes

    try:
        summary = record_episodes(
            args.task,
            args.episodes,
            args.out,
            workers=args.workers,
            seed=args.seed,
            image_size=tuple(args.image_size),
            episode_length=args.episode_length,
            noise_scale=args.noise,
            render_quality=args.render_quality,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError, ImportError, RecordingError, RenderBackendError) as error:
        return _fail("record-sim", error)
    except KeyboardInterrupt:
        print(
            f"kinema-data record-sim: interrupted; the complete episodes stay in {args.out}", file=sys.stderr
        )
        return 1
    print(summary.describe())
    if args.json:
        print(json.dumps(summary.to_dict()))
    return 0


def _train_seeds(folder: Path) -> list[int]:
    from ._io import RECORDING_MANIFEST

    path = folder / RECORDING_MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"--train-data {folder}: no {RECORDING_MANIFEST} (not a record-sim folder)")
    seeds = json.loads(path.read_text()).get("seeds")
    if not isinstance(seeds, list):
        raise ValueError(f"{path} has no list of seeds")
    return [int(s) for s in seeds]


def _run_eval(args) -> int:
    from . import EvaluationError, PolicyError, RenderBackendError, evaluate, load_policy

    try:
        exclude = _train_seeds(args.train_data) if args.train_data is not None else None
        policy, manifest = load_policy(args.checkpoint, device=args.device)
        task = args.task or manifest.get("task")
        if task is None:
            raise ValueError(f"--task is needed: {args.checkpoint}/policy.json names no task")
        image_size = args.image_size or manifest.get("image_size") or DEFAULT_IMAGE_SIZE
        cameras = tuple(manifest.get("cameras") or ("top",))
        result = evaluate(
            policy,
            task,
            episodes=args.episodes,
            seed=args.seed,
            workers=args.workers,
            image_size=tuple(image_size),
            cameras=cameras,
            episode_length=args.episode_length,
            render_quality=args.render_quality or manifest.get("render_quality") or "full",
            stop_on_success=not args.full_episodes,
            videos=args.videos,
            out_dir=args.out,
            exclude_seeds=exclude,
        )
    except (ValueError, OSError, ImportError, EvaluationError, PolicyError, RenderBackendError) as error:
        return _fail("eval-sim", error)
    except KeyboardInterrupt:
        print("kinema-data eval-sim: interrupted", file=sys.stderr)
        return 1
    print(result.describe())
    if args.out is not None:
        print(f"results in {args.out}")
    if args.json:
        print(json.dumps(result.summary()))
    return 0
