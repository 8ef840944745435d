"""kinema-hybrid: train and evaluate the ACT + diffusion hybrid, run the ablation against ACT, the CPU demo, and
record the bundled docking task.

Exit codes: 0 ok, 1 failure, 2 usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_MORE = 0, 1, 2, 3

_TRAIN_EXAMPLES = """examples:
  kinema-hybrid record-dock --out data/dock --episodes 60
  kinema-hybrid train --data data/dock --out runs/dock_C --variant C --size tiny --chunk-size 48 \\
      --n-action-steps 24 --max-steps 1000 --max-minutes 3 --lr 1e-3
  kinema-hybrid train --data data/sim_transfer_cube --out runs/tc_C --variant C --kl-schedule cyclical:0.01:2000
  kinema-hybrid train --data data/sim_transfer_cube --out runs/tc_C --resume

The output folder is a checkpoint (hybrid_config.json, model.safetensors with the EMA weights, policy.json)
that `kinema-hybrid eval` and `kinema-data eval-sim --checkpoint` load, plus checkpoints/step-*/ for --resume."""

_EVAL_EXAMPLES = """examples:
  kinema-hybrid eval --checkpoint runs/dock_C --task dock --episodes 100
  kinema-hybrid eval --checkpoint runs/tc_C --task transfer_cube --episodes 50 --workers 8 --steps 10
  kinema-hybrid eval --checkpoint runs/tc_C --sampler dpmsolver++ --steps 5 --temporal-ensemble 0.01

Prints the success rate (dock: and the side of each success, jerk); writes eval_summary.json and
eval_episodes.jsonl to --out (default CHECKPOINT/eval_TASK)."""

_ABLATE_EXAMPLES = """examples:
  kinema-hybrid ablate --task dock --variants act,A,B,C --seeds 3 --out runs/ablate_dock
  kinema-hybrid ablate --task dock --variants act,act_z,A,B,C --seeds 3 --lr 1e-3 --out runs/dock_fair
  kinema-hybrid ablate --task dock --variants act,C --seeds 1 --size tiny --max-steps 300 --out runs/quick
  kinema-hybrid ablate --task dock --demos 10,25,50 --seeds 3 --out runs/dock_efficiency
  kinema-hybrid ablate --task transfer_cube --data data/sim_transfer_cube --seeds 1 --size paper \\
      --max-minutes 40 --workers 8 --out runs/ablate_tc
  # one GPU in 10-minute pieces, one process per variant sharing one recording at 240x320:
  kinema-hybrid ablate --task transfer_cube --prepare-only --image-size 240 320 --workers 16 --out runs/tc
  kinema-hybrid ablate --task transfer_cube --variants C --seeds 1 --image-size 240 320 --max-minutes 9 \
      --session-minutes 6 --out runs/tc          # exit 3: run again; then all variants once to tabulate

Trains and evaluates every (variant, demos, seed) cell; writes results.json, results.md, results.png (and
sample_efficiency.png) to --out. Run the same command again to continue an interrupted ablation
(exit 0: done; exit 3: cells still to train)."""

_DEMO_EXAMPLES = """examples:
  kinema-hybrid demo --out runs/demo
  kinema-hybrid demo --out runs/demo_long --max-steps 3000 --max-minutes 8

Records dock demonstrations, trains ACT and variant C briefly, evaluates both on the same scenes, and writes
report.md, trajectories.png and rollouts.mp4 to --out (about 4 minutes on 2 CPU cores). Run again into the same
folder, it reuses what is done (recordings, trained and evaluated policies); delete the folder to start over."""

_RECORD_EXAMPLES = """examples:
  kinema-hybrid record-dock --out data/dock --episodes 60
  kinema-hybrid record-dock --out data/dock_val --episodes 20 --seed 50000

Every scene is demonstrated twice, around the left and the right end of the wall (episodes 2k and 2k + 1)."""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from ._config import PREDICTION_TYPES, SAMPLERS, VARIANTS

    group = parser.add_argument_group("model (HybridConfig)")
    group.add_argument("--variant", default="C", help=f"one of {', '.join(VARIANTS)} (default C)")
    group.add_argument("--size", choices=("tiny", "small", "paper"), default="paper", help="default paper")
    group.add_argument("--chunk-size", type=_positive_int, help="actions per chunk (default 100)")
    group.add_argument(
        "--n-action-steps", type=_positive_int, help="actions executed per chunk (default: all)"
    )
    group.add_argument(
        "--kl-schedule", help='variant C\'s beta: "0.01", "linear:0.01:2000", "cyclical:0.01:2000"'
    )
    group.add_argument("--free-bits", type=float, help="nats per latent dim (default 0.05)")
    group.add_argument("--prediction-type", choices=PREDICTION_TYPES, help="default epsilon")
    group.add_argument("--sampler", choices=SAMPLERS, help="inference sampler (default ddim)")
    group.add_argument(
        "--steps", type=int, dest="num_inference_steps", help="reverse-diffusion steps (default 10)"
    )
    group.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="resize images")


def _add_budget_arguments(
    parser: argparse.ArgumentParser, *, steps: int | None, minutes: float | None
) -> None:
    group = parser.add_argument_group("training budget and optimizer")
    group.add_argument(
        "--max-steps", type=_positive_int, default=steps, help=f"optimizer steps (default {steps})"
    )
    group.add_argument(
        "--max-minutes", type=_positive_float, default=minutes, help=f"per training (default {minutes})"
    )
    group.add_argument("--batch-size", type=_positive_int, help="default 64 (train) / 32 (ablate)")
    group.add_argument("--lr", type=_positive_float, help="AdamW learning rate (default 1e-4)")
    group.add_argument("--seed", type=_non_negative_int, default=0, help="default 0")
    group.add_argument("--device", help="e.g. cuda, cpu (default: cuda when available)")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="kinema-hybrid",
        description="ACT's action chunks and style latent with a diffusion head (variants A, B, C).",
        epilog="commands: train, eval, ablate, demo, record-dock (each has --help with examples)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train a hybrid variant on policy episodes", description="Train the hybrid on policy episodes.",
        epilog=_TRAIN_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    train.add_argument("--data", type=Path, required=True, metavar="DIR", help="policy episodes (*.hdf5)")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="the run's folder")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    _add_model_arguments(train)
    _add_budget_arguments(train, steps=100_000, minutes=None)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on dock or in the ALOHA simulation",
        description="Evaluate a hybrid checkpoint in closed loop.", epilog=_EVAL_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    evaluate.add_argument("--checkpoint", type=Path, required=True, metavar="DIR")
    evaluate.add_argument("--task", help="dock, transfer_cube, insertion (default: the checkpoint's)")
    evaluate.add_argument("--variant", help="the variant the checkpoint must hold")
    evaluate.add_argument("--episodes", type=_positive_int, default=50, help="default 50")
    evaluate.add_argument("--workers", type=_positive_int, default=1, help="ALOHA simulator processes")
    evaluate.add_argument("--steps", type=int, dest="num_inference_steps", help="reverse-diffusion steps")
    evaluate.add_argument("--sampler", help="ddim, dpmsolver++ or ddpm")
    evaluate.add_argument(
        "--temporal-ensemble", type=float, metavar="M", help="ensemble chunks, weights exp(-M i)"
    )
    evaluate.add_argument(
        "--seed", type=_non_negative_int, default=0, help="seeds z and the noise (default 0)"
    )
    evaluate.add_argument("--device", help="e.g. cuda, cpu")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="default CHECKPOINT/eval_TASK")
    evaluate.add_argument("--json", action="store_true", help="also print the summary as one JSON line")

    ablate = commands.add_parser(
        "ablate", help="ACT vs variants A, B, C over seeds (and demonstration counts)",
        description="Train and evaluate ACT and the hybrid's variants on one task; tabulate and plot.",
        epilog=_ABLATE_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    ablate.add_argument("--task", required=True, help="dock, transfer_cube or insertion")
    ablate.add_argument("--out", type=Path, required=True, metavar="DIR")
    ablate.add_argument(
        "--variants", default="act,A,B,C",
        help="comma-separated among act (z = 0), act_z (ACT with z ~ N(0, I)), A, B, C (default act,A,B,C)",
    )  # fmt: skip
    ablate.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 per variant (default 3)")
    ablate.add_argument("--demos", default="50", help="demonstration counts, e.g. 10,25,50 (default 50)")
    ablate.add_argument(
        "--data", type=Path, metavar="DIR", help="ALOHA episodes (default: recorded into --out)"
    )
    ablate.add_argument(
        "--val-episodes", type=_positive_int, default=10, help="held-out episodes (default 10)"
    )
    ablate.add_argument("--episodes", type=_positive_int, default=50, help="evaluation episodes per cell")
    ablate.add_argument(
        "--eval-seed", type=_non_negative_int, default=100_000,
        help="first evaluation seed (default 100000, the reported range; choose settings on another, e.g. 70000)",
    )  # fmt: skip
    ablate.add_argument("--size", choices=("tiny", "small", "paper"), default="small", help="default small")
    ablate.add_argument("--chunk-size", type=_positive_int, help="default: dock 48, ALOHA 100")
    ablate.add_argument("--n-action-steps", type=_positive_int, help="default: dock 24, ALOHA 100")
    ablate.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="resize images")
    ablate.add_argument(
        "--steps", type=int, dest="num_inference_steps", default=10, help="DDIM steps (default 10)"
    )
    ablate.add_argument("--kl-schedule", help="variant C's beta schedule")
    ablate.add_argument(
        "--lr-schedule", choices=("constant", "cosine"), default="cosine",
        help="every cell, ACT included (default cosine)",
    )  # fmt: skip
    ablate.add_argument(
        "--warmup-steps", type=_non_negative_int,
        help="linear warm-up of every cell (default min(500, max-steps / 10))",
    )  # fmt: skip
    ablate.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=True,
        help="EMA weights for every cell, ACT included (default on)",
    )  # fmt: skip
    ablate.add_argument("--workers", type=_positive_int, default=1, help="ALOHA simulator processes")
    ablate.add_argument(
        "--session-minutes", type=_positive_float,
        help="stop each training after this long in this run, keep its checkpoint, exit 3: run again",
    )  # fmt: skip
    ablate.add_argument(
        "--prepare-only", action="store_true",
        help="record / check the demonstrations and exit 3 (then run variants in parallel processes)",
    )  # fmt: skip
    ablate.add_argument("--json", action="store_true", help="also print the summary as one JSON line")
    _add_budget_arguments(ablate, steps=5000, minutes=None)

    demo = commands.add_parser(
        "demo", help="the CPU quickstart: dock demonstrations, ACT vs variant C, report.md",
        description="Record dock demonstrations, train ACT and variant C briefly, evaluate both, write a report.",
        epilog=_DEMO_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), metavar="DIR", help="default runs/demo")
    demo.add_argument("--demos", type=_positive_int, default=60, help="recorded episodes (default 60)")
    demo.add_argument("--max-steps", type=_positive_int, default=1000, help="per training (default 1000)")
    demo.add_argument("--max-minutes", type=_positive_float, default=2.5, help="per training (default 2.5)")
    demo.add_argument("--episodes", type=_positive_int, default=50, help="evaluation scenes (default 50)")
    demo.add_argument("--seed", type=_non_negative_int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")

    record = commands.add_parser(
        "record-dock", help="scripted demonstrations of the docking task",
        description="Write dock demonstrations as policy episodes (HDF5).", epilog=_RECORD_EXAMPLES,
        formatter_class=formatter,
    )  # fmt: skip
    record.add_argument("--out", type=Path, required=True, metavar="DIR")
    record.add_argument("--episodes", type=_positive_int, default=60, help="default 60")
    record.add_argument("--seed", type=_non_negative_int, default=0, help="first scene seed (default 0)")
    record.add_argument("--image-size", type=_positive_int, default=64, help="square image side (default 64)")
    record.add_argument("--overwrite", action="store_true", help="replace a recording in --out")
    return parser


def _fail(command: str, error: BaseException) -> int:
    print(f"kinema-hybrid {command}: error: {error}", file=sys.stderr)
    return EXIT_FAILURE


def _hybrid_config(args):
    from kinema.act_policy import episode_files
    from kinema.robot_data import check_policy_episode

    from ._ablation import _HYBRID_DEPTH, SIZES
    from ._config import HybridConfig, check_variant

    check_variant(args.variant)
    info = check_policy_episode(episode_files(args.data)[0])
    values = {
        **SIZES[args.size],
        **_HYBRID_DEPTH[args.size],
        "variant": args.variant,
        "camera_names": tuple(sorted(info.cameras)),
        "state_dim": info.qpos_dim,
        "action_dim": info.action_dim,
        "environment_state_dim": info.environment_state_dim or 0,
    }
    if args.size != "paper":
        values["dropout"] = 0.0
    for name in (
        "kl_schedule",
        "free_bits",
        "prediction_type",
        "sampler",
        "num_inference_steps",
        "chunk_size",
    ):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    values["n_action_steps"] = args.n_action_steps or values.get("chunk_size", 100)
    if args.image_size:
        values["image_size"] = tuple(args.image_size)
    return HybridConfig(**values)


def _run_train(args) -> int:
    from kinema.robot_data import RobotDataError

    from ._train import TrainConfig, train, train_device

    try:
        model = _hybrid_config(args)
        overrides = {k: getattr(args, k) for k in ("batch_size", "lr") if getattr(args, k) is not None}
        if "lr" in overrides:
            overrides["lr_backbone"] = overrides["lr"]
        config = TrainConfig(
            data=str(args.data),
            out_dir=str(args.out),
            resume=args.resume,
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
            seed=args.seed,
            progress=not args.no_progress,
            device=train_device(args.device),
            **overrides,
        )
        result = train(model, config)
    except (ValueError, OSError, RobotDataError) as error:
        return _fail("train", error)
    if not result.main_process:  # the first process of a multi-process run reports
        return EXIT_OK if result.complete else EXIT_FAILURE
    print(
        f"step {result.step} ({result.stop_reason}); {result.train_seconds / 60:.1f} min of training, "
        f"{result.samples_per_second:.0f} samples/s; checkpoint in {result.out_dir}"
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    return EXIT_OK if result.complete else EXIT_FAILURE


def _run_eval(args) -> int:
    from ._policy import _UNSET, load_policy

    try:
        manifest_path = args.checkpoint / "policy.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        config_path = args.checkpoint / "hybrid_config.json"
        notes = (
            json.loads(config_path.read_text())["config"].get("notes", {}) if config_path.is_file() else {}
        )
        task = args.task or manifest.get("task") or notes.get("task")
        if task is None:
            raise ValueError(f"--task is needed: {args.checkpoint} names no task")
        coeff = _UNSET if args.temporal_ensemble is None else args.temporal_ensemble
        policy = load_policy(
            args.checkpoint, device=args.device, variant=args.variant, temporal_ensemble_coeff=coeff,
            num_inference_steps=args.num_inference_steps, sampler=args.sampler, seed=args.seed,
        )  # fmt: skip
        out = args.out or args.checkpoint / f"eval_{task}"
        if task == "dock":
            from kinema.robot_data.sim.dock import evaluate

            result = evaluate(policy, args.episodes, out_dir=out)
            summary = result.summary()
        else:
            from kinema.robot_data.sim import evaluate

            result = evaluate(
                policy, task, episodes=args.episodes, workers=args.workers, out_dir=out,
                image_size=tuple(manifest.get("image_size") or (480, 640)),
                cameras=tuple(policy.model.config.camera_names),
                render_quality=manifest.get("render_quality") or "full",
            )  # fmt: skip
            summary = result.summary()
    except (ValueError, OSError, ImportError, RuntimeError, TypeError) as error:
        # the sim's PolicyError is a ValueError, its EvaluationError and RenderBackendError RuntimeErrors
        return _fail("eval", error)
    print(result.describe())
    print(f"results in {out}")
    if args.json:
        print(json.dumps(summary))
    return EXIT_OK


def _run_ablate(args) -> int:
    from ._ablation import AblationConfig, parse_list, run_ablation

    try:
        hybrid = {"kl_schedule": args.kl_schedule} if args.kl_schedule else {}
        config = AblationConfig(
            task=args.task,
            out_dir=str(args.out),
            variants=parse_list(args.variants, str, "--variants"),
            seeds=tuple(range(args.seeds)),
            demos=parse_list(args.demos, int, "--demos"),
            data=None if args.data is None else str(args.data),
            val_episodes=args.val_episodes,
            size=args.size,
            chunk_size=args.chunk_size,
            n_action_steps=args.n_action_steps,
            image_size=None if args.image_size is None else tuple(args.image_size),
            max_steps=args.max_steps,
            max_minutes=args.max_minutes,
            session_minutes=args.session_minutes,
            num_inference_steps=args.num_inference_steps,
            eval_episodes=args.episodes,
            eval_seed=args.eval_seed,
            workers=args.workers,
            device=args.device,
            hybrid=hybrid,
            lr_schedule=args.lr_schedule,
            warmup_steps=args.warmup_steps,
            ema=args.ema,
            progress=not args.no_progress,
            **{k: getattr(args, k) for k in ("batch_size", "lr") if getattr(args, k) is not None},
        )
        results = run_ablation(config, prepare_only=args.prepare_only)
    except (ValueError, OSError, ImportError, RuntimeError) as error:
        return _fail("ablate", error)
    if args.prepare_only:
        print(f"demonstrations ready in {args.out / 'data'}; nothing trained (--prepare-only)")
        return EXIT_MORE
    if not results["complete"]:
        print(
            f"{len(results['rows'])} cells done; still training: {', '.join(results['unfinished'])} "
            "(--session-minutes): run the same command again"
        )
        return EXIT_MORE
    print((args.out / "results.md").read_text())
    print(f"written: {args.out / 'results.md'}, results.json, results.png")
    if args.json:
        print(json.dumps(results["summary"]))
    return EXIT_OK


def _run_demo(args) -> int:
    from ._demo import DemoConfig, run_demo

    try:
        summary = run_demo(
            DemoConfig(
                out_dir=str(args.out), demos=args.demos, max_steps=args.max_steps, max_minutes=args.max_minutes,
                eval_episodes=args.episodes, seed=args.seed, progress=not args.no_progress,
            )
        )  # fmt: skip
    except (ValueError, OSError, ImportError) as error:
        return _fail("demo", error)
    act, c = summary["act"], summary["C"]
    print(f"dock success: ACT {act['success']:.0%}, variant C {c['success']:.0%}")
    print(f"report: {args.out / 'report.md'} (trajectories.png, rollouts.mp4 beside it)")
    return EXIT_OK


def _run_record(args) -> int:
    from kinema.robot_data.sim.dock import record_episodes

    try:
        recording = record_episodes(
            args.out, args.episodes, seed=args.seed, image_size=args.image_size, overwrite=args.overwrite
        )
    except (ValueError, OSError, RuntimeError) as error:
        return _fail("record-dock", error)
    print(recording.describe())
    return EXIT_OK


_COMMANDS = {
    "train": _run_train,
    "eval": _run_eval,
    "ablate": _run_ablate,
    "demo": _run_demo,
    "record-dock": _run_record,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_:  # argparse: --help / --version exit 0, usage errors exit 2
        return int(exit_.code or 0)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"kinema-hybrid {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
