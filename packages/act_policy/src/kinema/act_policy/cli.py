"""kinema-act: train ACT on policy episodes, evaluate it in the ALOHA simulation, run the confuser experiment.

Exit codes: 0 ok, 1 failure, 2 usage, 3 stopped at --session-minutes with a checkpoint (run again with --resume,
or the same experiment command, to continue).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._version import __version__

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3

_TRAIN_EXAMPLES = """examples:
  kinema-act train --data data/sim_transfer_cube --out runs/act_transfer_cube
  kinema-act train --data data/sim_transfer_cube --out runs/act_fast --batch-size 64 --lr 1e-4 \\
      --max-minutes 10 --image-size 240 320 --compile
  kinema-act train --data data/sim_confuser --out runs/act_film --coordinates --remedy film
  kinema-act train --data data/sim_transfer_cube --out runs/act_fast --resume --session-minutes 9

The output folder is a checkpoint (act_config.json, model.safetensors, policy.json, policy_stats.json) that
`kinema-act eval` and `kinema-data eval-sim` load, plus checkpoints/step-*/ for --resume and
training_log.jsonl. Exit code 3: stopped at --session-minutes; run again with --resume to continue."""

_EVAL_EXAMPLES = """examples:
  kinema-act eval --checkpoint runs/act_transfer_cube --task transfer_cube --episodes 50 --workers 8
  kinema-act eval --checkpoint runs/act_transfer_cube --temporal-ensemble 0.01 --out eval/ensembled
  kinema-act eval --checkpoint runs/act_film --task transfer_cube_confuser --train-data data/sim_confuser

Prints the success rate and the reward-stage distribution; writes eval_summary.json, eval_episodes.jsonl and
videos of the first --videos episodes to --out (default CHECKPOINT/eval_TASK)."""

_EXPERIMENT_EXAMPLES = """examples:
  kinema-act experiment confuser --clean-data data/sim_transfer_cube --confuser-data data/sim_confuser \\
      --out runs/confuser --batch-size 64 --lr 1e-4 --max-minutes 8 --episodes 50 --workers 16
  kinema-act experiment confuser --clean-data data/tc --confuser-data data/conf --out runs/confuser \\
      --remedies film crop --session-minutes 9      # exit 3 until done: run it again to continue
  kinema-act experiment confuser ... --cells confuser_film --session-minutes 8 &   # one process per cell,
  kinema-act experiment confuser ... --cells confuser_crop --session-minutes 8 &   # then once without --cells

Cells: clean (trained without a confuser, coordinates given), confuser_plain, confuser_<remedy>; each is
trained, then evaluated on transfer_cube_confuser (success = the TARGET cube transferred). Writes
confuser_experiment.json, .md and .png in --out."""

_GRID_EXAMPLES = """examples:
  kinema-act experiment confuser-2d --out runs/confuser_2d          # the grid of RESULTS.md (2-core CPU)
  kinema-act experiment confuser-2d --out runs/c2d --remedies heatmap contrastive+heatmap --seeds 0 1 2 3 4
  kinema-act experiment confuser-2d --out runs/c2d_unpaired --unpaired --remedies heatmap strong
  kinema-act experiment confuser-2d --out runs/c2d_tiny --remedies heatmap --seeds 0 --episodes 8 \\
      --steps 20 --eval-episodes 10     # a smoke run in seconds

Cells: clean (trained on the same scenes with only the target drawn, coordinates given), confuser_plain,
confuser_<remedy>, each trained with every seed and evaluated on the confuser scenes 100000.. (never recorded).
Finished runs are kept: run the same command again to continue an interrupted grid. Writes confuser_2d.json,
.md (per-seed table) and .png in --out."""


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


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser, *, remedies: bool = True) -> None:
    from ._config import REMEDIES

    group = parser.add_argument_group("model (ACTConfig; defaults as the ACT paper)")
    group.add_argument("--config", type=Path, metavar="FILE", help="start from an act_config.json")
    group.add_argument("--cameras", nargs="+", metavar="NAME", help="cameras, in order (default: top)")
    group.add_argument(
        "--coordinates", action="store_true", help="give the environment_state (target x, y) as a token"
    )
    if remedies:
        group.add_argument(
            "--remedy", action="append", default=[], choices=[r for r in REMEDIES if r != "plain"],
            help="a coordinate remedy (repeatable; implies --coordinates)",
        )  # fmt: skip
    group.add_argument("--chunk-size", type=_positive_int, help="actions per chunk (default 100)")
    group.add_argument(
        "--n-action-steps", type=_positive_int, help="actions executed per chunk (default 100)"
    )
    group.add_argument(
        "--temporal-ensemble", type=_non_negative_float, metavar="M",
        help="temporal ensembling with weights exp(-M i) (sets n_action_steps 1; the original uses 0.01)",
    )  # fmt: skip
    group.add_argument("--dim-model", type=_positive_int, help="transformer width (default 512)")
    group.add_argument("--encoder-layers", type=_positive_int, help="default 4")
    group.add_argument("--decoder-layers", type=_positive_int, help="default 1 (what the original computed)")
    group.add_argument("--kl-weight", type=_non_negative_float, help="default 10")
    group.add_argument("--no-vae", action="store_true", help="train without the CVAE (z = 0 always)")
    group.add_argument(
        "--image-size", type=_positive_int, nargs=2, metavar=("H", "W"),
        help="resize images to H x W for the model (default: as recorded)",
    )  # fmt: skip
    group.add_argument(
        "--pretrained-backbone", type=Path, metavar="FILE", help="a local torchvision resnet18 weights file"
    )
    group.add_argument(
        "--frozen-batchnorm", action=argparse.BooleanOptionalAction, default=None,
        help="freeze BatchNorm (default: only with --pretrained-backbone)",
    )  # fmt: skip


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training (TrainConfig; defaults as the ACT paper)")
    group.add_argument("--batch-size", type=_positive_int, help="per GPU (default 8)")
    group.add_argument("--lr", type=_positive_float, help="AdamW learning rate (default 1e-5)")
    group.add_argument(
        "--lr-backbone", type=_positive_float, help="the ResNet's learning rate (default 1e-5)"
    )
    group.add_argument("--weight-decay", type=_non_negative_float, help="default 1e-4")
    group.add_argument("--grad-clip", type=_positive_float, help="gradient norm clip (default 10)")
    group.add_argument("--lr-schedule", choices=("constant", "cosine"), help="default constant")
    group.add_argument("--warmup-steps", type=_non_negative_int, help="linear warm-up (default 0)")
    group.add_argument(
        "--ema", action=argparse.BooleanOptionalAction, default=None,
        help="average the weights (EMA, power 0.75, max decay 0.9999; needs diffusers; default off)",
    )  # fmt: skip
    group.add_argument("--max-steps", type=_positive_int, help="optimizer steps (default 100000)")
    group.add_argument("--max-minutes", type=_positive_float, help="training-time budget over all sessions")
    group.add_argument("--val-fraction", type=float, help="episodes held out for validation (default 0.1)")
    group.add_argument("--val-every", type=_positive_int, help="default 1000 steps")
    group.add_argument("--save-every", type=_positive_int, help="default 2000 steps")
    group.add_argument("--log-every", type=_positive_int, help="default 50 steps")
    group.add_argument("--seed", type=_non_negative_int, help="default 0")
    group.add_argument(
        "--mixed-precision", choices=("auto", "bf16", "fp16", "no"), help="default auto (bf16 on GPUs)"
    )
    group.add_argument("--compile", action="store_true", help="torch.compile the training step")
    group.add_argument(
        "--data-device", choices=("auto", "device", "cpu"),
        help="where decoded images live (default auto: the GPU when they fit)",
    )  # fmt: skip
    group.add_argument(
        "--load-workers", type=_non_negative_int, help="episode reader processes (default: CPUs)"
    )
    group.add_argument(
        "--wandb", action="store_true", help="log to Weights & Biases (offline without credentials)"
    )
    group.add_argument("--wandb-project", help="default kinema-act")
    group.add_argument("--no-progress", action="store_true", help="no progress bars")


_MODEL_FLAGS = {
    "chunk_size": "chunk_size",
    "dim_model": "dim_model",
    "encoder_layers": "n_encoder_layers",
    "decoder_layers": "n_decoder_layers",
    "kl_weight": "kl_weight",
}
_TRAIN_FLAGS = (
    "batch_size",
    "lr",
    "lr_backbone",
    "weight_decay",
    "grad_clip",
    "lr_schedule",
    "warmup_steps",
    "ema",
    "max_steps",
    "max_minutes",
    "val_fraction",
    "val_every",
    "save_every",
    "log_every",
    "seed",
    "mixed_precision",
    "data_device",
    "load_workers",
    "wandb_project",
)


def _model_config(args, data: str | Path):
    """The ACTConfig from --config and the flags; dims from the first episode of ``data``."""
    import dataclasses

    from kinema.robot_data import RobotDataError, check_policy_episode

    from ._config import ACTConfig
    from ._train import episode_files

    config = ACTConfig.load(args.config) if args.config else ACTConfig()
    changes = {v: getattr(args, k) for k, v in _MODEL_FLAGS.items() if getattr(args, k) is not None}
    if args.cameras:
        changes["camera_names"] = tuple(args.cameras)
    if args.image_size:
        changes["image_size"] = tuple(args.image_size)
    if args.pretrained_backbone:
        changes["pretrained_backbone"] = str(args.pretrained_backbone)
        changes["frozen_batchnorm"] = None
    if args.frozen_batchnorm is not None:
        changes["frozen_batchnorm"] = args.frozen_batchnorm
    if args.no_vae:
        changes["use_vae"] = False
    if args.temporal_ensemble is not None:
        changes["temporal_ensemble_coeff"] = args.temporal_ensemble
        changes["n_action_steps"] = 1
    if args.n_action_steps is not None:
        changes["n_action_steps"] = args.n_action_steps
    elif "chunk_size" in changes and args.temporal_ensemble is None and not args.config:
        changes["n_action_steps"] = changes["chunk_size"]
    remedies = getattr(args, "remedy", []) or []
    if not args.config:
        first = episode_files(data)[0]
        info = check_policy_episode(first)
        changes.setdefault("state_dim", info.qpos_dim)
        changes.setdefault("action_dim", info.action_dim)
        if args.coordinates or remedies:
            if info.environment_state_dim is None:
                raise RobotDataError(
                    first,
                    "observations/environment_state",
                    "missing, but --coordinates / --remedy asks for coordinates",
                )
            changes["environment_state_dim"] = info.environment_state_dim
        if info.attrs.get("task") == "dock_confuser":  # a top-down view: the target projects by the plane map
            from kinema.robot_data.sim.dock import CONFUSER_CAMERAS

            changes.setdefault("crop_cameras", CONFUSER_CAMERAS)
    config = dataclasses.replace(config, **changes)
    return config.with_remedies(*remedies) if remedies else config


def _train_overrides(args) -> dict:
    values = {k: getattr(args, k) for k in _TRAIN_FLAGS if getattr(args, k) is not None}
    if args.compile:
        values["compile"] = True
    if args.wandb:
        values["wandb"] = True
    if args.no_progress:
        values["progress"] = False
    return values


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="kinema-act",
        description="ACT (Action Chunking with Transformers) with switchable remedies for its coordinate-conditioning "
        "failure (on the 2-D dock confuser plain ACT did not collapse; the ALOHA grid has not been run: RESULTS.md).",
        epilog="commands: train, eval, experiment confuser, experiment confuser-2d (each has --help with examples)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train", help="train ACT on policy episodes", description="Train ACT on a folder of policy episodes.",
        epilog=_TRAIN_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    train.add_argument("--data", type=Path, required=True, metavar="DIR", help="policy episodes (*.hdf5)")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="the run's folder")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    train.add_argument(
        "--session-minutes", type=_positive_float,
        help="stop this process after this long with a checkpoint (exit 3; continue with --resume)",
    )  # fmt: skip
    train.add_argument("--run-name", help="wandb run name")
    train.add_argument(
        "--device",
        choices=("auto", "cuda", "cpu"),
        help="where training runs (default auto: CUDA when available)",
    )
    train.add_argument("--json", action="store_true", help="also print the result as one JSON line")
    _add_model_arguments(train)
    _add_train_arguments(train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint in the ALOHA simulation (needs the sim extra)",
        description="Evaluate an ACT checkpoint through kinema.robot_data.sim's evaluation harness.",
        epilog=_EVAL_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    evaluate.add_argument("--checkpoint", type=Path, required=True, metavar="DIR")
    evaluate.add_argument("--task", help="default: the checkpoint's (policy.json)")
    evaluate.add_argument("--episodes", type=_positive_int, default=50, help="default 50")
    evaluate.add_argument(
        "--seed", type=_non_negative_int, default=100_000, help="first seed (default 100000)"
    )
    evaluate.add_argument("--workers", type=_positive_int, default=1, help="simulator processes (default 1)")
    evaluate.add_argument("--out", type=Path, metavar="DIR", help="default CHECKPOINT/eval_TASK")
    evaluate.add_argument("--videos", type=_non_negative_int, default=3, help="mp4s of the first N episodes")
    evaluate.add_argument("--device", help="e.g. cuda, cpu (default: cuda when available)")
    execution = evaluate.add_mutually_exclusive_group()
    execution.add_argument(
        "--temporal-ensemble", type=_non_negative_float, metavar="M", help="ensemble, weights exp(-M i)"
    )
    execution.add_argument(
        "--chunked", action="store_true", help="chunked execution, whatever the checkpoint says"
    )
    evaluate.add_argument(
        "--n-action-steps", type=_positive_int, help="actions per chunk in chunked execution"
    )
    evaluate.add_argument(
        "--compile", choices=("default", "reduce-overhead"), help="torch.compile the policy"
    )
    evaluate.add_argument("--image-size", type=_positive_int, nargs=2, metavar=("H", "W"), help="render size")
    evaluate.add_argument(
        "--render-quality", choices=("full", "fast"), help="default: the checkpoint's data's"
    )
    evaluate.add_argument("--episode-length", type=_positive_int, default=400, help="default 400 steps")
    evaluate.add_argument(
        "--train-data", type=Path, metavar="DIR", help="a recording whose seeds must not be evaluated"
    )
    evaluate.add_argument("--json", action="store_true", help="also print the summary as one JSON line")

    experiment = commands.add_parser(
        "experiment",
        help="experiments (confuser, confuser-2d)",
        description="Experiments that train and evaluate several runs.",
    )
    kinds = experiment.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    confuser = kinds.add_parser(
        "confuser", help="plain coordinate token vs each remedy on the confuser scene",
        description=(
            "Train on transfer-cube demonstrations without a confuser and on confuser demonstrations (plain and "
            "with each remedy), evaluate every run on the confuser scene, and tabulate."
        ),
        epilog=_EXPERIMENT_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    confuser.add_argument(
        "--clean-data", type=Path, required=True, metavar="DIR", help="transfer_cube episodes"
    )
    confuser.add_argument(
        "--confuser-data", type=Path, required=True, metavar="DIR", help="transfer_cube_confuser episodes"
    )
    confuser.add_argument("--out", type=Path, required=True, metavar="DIR")
    confuser.add_argument(
        "--remedies", nargs="+", default=None, metavar="NAME",
        help="remedies or combinations a+b to compare (default: aux_head film crop crop_replace heatmap strong "
        "contrastive heatmap+crop_replace)",
    )  # fmt: skip
    confuser.add_argument("--no-clean", action="store_true", help="leave out the no-confuser training run")
    confuser.add_argument(
        "--cells", nargs="+", metavar="CELL",
        help="run only these cells (e.g. clean confuser_film), one process per cell sharing a GPU",
    )  # fmt: skip
    confuser.add_argument("--episodes", type=_positive_int, default=50, help="evaluation episodes per cell")
    confuser.add_argument("--eval-seed", type=_non_negative_int, default=100_000)
    confuser.add_argument("--workers", type=_positive_int, default=1, help="simulator processes")
    confuser.add_argument("--videos", type=_non_negative_int, default=2)
    confuser.add_argument("--device", help="policy device at evaluation")
    confuser.add_argument("--episode-length", type=_positive_int, default=400)
    confuser.add_argument("--session-minutes", type=_positive_float, help="stop before this long (exit 3)")
    confuser.add_argument("--json", action="store_true", help="also print the table as one JSON line")
    _add_model_arguments(confuser, remedies=False)
    _add_train_arguments(confuser)

    grid = kinds.add_parser(
        "confuser-2d", help="the same question on the 2-D dock confuser, on a CPU",
        description=(
            "Record the dock confuser (two identical docks, the target named by its (x, y)), train tiny ACTs without "
            "a confuser, plain, and with each remedy for every seed, evaluate on unseen scenes, and tabulate."
        ),
        epilog=_GRID_EXAMPLES, formatter_class=formatter,
    )  # fmt: skip
    grid.add_argument("--out", type=Path, required=True, metavar="DIR")
    grid.add_argument(
        "--remedies", nargs="+", metavar="NAME", default=None,
        help="remedies or combinations a+b (default: aux_head strong contrastive heatmap crop_replace "
        "heatmap+crop_replace)",
    )  # fmt: skip
    grid.add_argument("--no-clean", action="store_true", help="leave out the no-confuser control")
    grid.add_argument("--seeds", type=_non_negative_int, nargs="+", default=[0, 1, 2], help="training seeds")
    grid.add_argument("--episodes", type=_positive_int, default=40, help="demonstrations (default 40)")
    grid.add_argument(
        "--unpaired", action="store_true",
        help="one target per scene (as ALOHA's recordings) instead of every scene to both docks",
    )  # fmt: skip
    grid.add_argument(
        "--steps", type=_positive_int, default=300, help="optimizer steps per run (default 300)"
    )
    grid.add_argument("--batch-size", type=_positive_int, default=64)
    grid.add_argument("--lr", type=_positive_float, default=1e-3)
    grid.add_argument(
        "--eval-episodes", type=_positive_int, default=100, help="evaluation scenes (default 100)"
    )
    grid.add_argument("--eval-seed", type=_non_negative_int, default=100_000)
    grid.add_argument("--threads", type=_positive_int, default=1, help="torch CPU threads (default 1)")
    grid.add_argument("--no-progress", action="store_true")
    grid.add_argument("--json", action="store_true", help="also print the table as one JSON line")
    return parser


def _fail(command: str, error: BaseException) -> int:
    print(f"kinema-act {command}: error: {error}", file=sys.stderr)
    return EXIT_FAILURE


def _run_train(args) -> int:
    from kinema.robot_data import RobotDataError

    from ._train import TrainConfig, train

    try:
        model = _model_config(args, args.data)
        config = TrainConfig(
            data=str(args.data),
            out_dir=str(args.out),
            resume=args.resume,
            session_minutes=args.session_minutes,
            run_name=args.run_name,
            **({"device": args.device} if args.device else {}),
            **_train_overrides(args),
        )
        result = train(model, config)
    except (ValueError, OSError, RobotDataError) as error:
        return _fail("train", error)
    if not result.main_process:  # the first process of a multi-process run reports
        return EXIT_OK if result.complete else EXIT_INCOMPLETE
    print(
        f"step {result.step} ({result.stop_reason}); {result.train_seconds / 60:.1f} min of training, "
        f"{result.samples_per_second:.0f} samples/s; checkpoint in {result.out_dir}"
        + (f"; val L1 (z=0) {result.val['val/l1_prior']:.4f}" if result.val else "")
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    if not result.complete:
        print(
            "kinema-act train: stopped before the end; run again with --resume to continue", file=sys.stderr
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def _run_eval(args) -> int:
    from ._policy import load_policy

    try:
        from kinema.robot_data.sim import EvaluationError, PolicyError, RenderBackendError, evaluate
    except ImportError as error:
        return _fail("eval", error)
    try:
        manifest_path = args.checkpoint / "policy.json"
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        task = args.task or manifest.get("task")
        if task is None:
            raise ValueError(f"--task is needed: {args.checkpoint} names no task")
        options = {"compile": args.compile or False, "n_action_steps": args.n_action_steps}
        if args.temporal_ensemble is not None:
            options["temporal_ensemble_coeff"] = args.temporal_ensemble
        elif args.chunked:
            options["temporal_ensemble_coeff"] = None
        policy = load_policy(args.checkpoint, device=args.device, **options)
        exclude = None
        if args.train_data is not None:
            recording = args.train_data / "recording.json"
            if not recording.is_file():
                raise FileNotFoundError(
                    f"--train-data {args.train_data}: no recording.json (not a record-sim folder)"
                )
            exclude = json.loads(recording.read_text()).get("seeds")
        out = args.out or args.checkpoint / f"eval_{task}"
        result = evaluate(
            policy,
            task,
            episodes=args.episodes,
            seed=args.seed,
            workers=args.workers,
            image_size=tuple(args.image_size or manifest.get("image_size") or (480, 640)),
            cameras=tuple(policy.model.config.camera_names),
            episode_length=args.episode_length,
            render_quality=args.render_quality or manifest.get("render_quality") or "full",
            videos=args.videos,
            out_dir=out,
            exclude_seeds=exclude,
        )
    except (ValueError, OSError, ImportError, EvaluationError, PolicyError, RenderBackendError) as error:
        return _fail("eval", error)
    mode = (
        f"temporal ensembling m={policy.temporal_ensemble_coeff}"
        if policy.temporal_ensemble_coeff is not None
        else f"chunked, {policy.n_action_steps} actions per chunk"
    )
    print(result.describe())
    print(f"execution: {mode}; best stage per episode: {result.max_reward_counts}")
    print(f"results in {out}")
    if args.json:
        print(json.dumps({**result.summary(), "execution": mode}))
    return EXIT_OK


def _run_confuser(args) -> int:
    from kinema.robot_data import RobotDataError

    from ._experiment import ConfuserExperiment, run_confuser_experiment

    for flag, folder in (("--clean-data", args.clean_data), ("--confuser-data", args.confuser_data)):
        if not folder.exists():
            return _fail("experiment confuser", FileNotFoundError(f"{flag}: {folder} does not exist"))
    try:
        args.coordinates = True  # the experiment gives the target's coordinates to every cell
        model = _model_config(args, args.confuser_data)
        experiment = ConfuserExperiment(
            clean_data=str(args.clean_data),
            confuser_data=str(args.confuser_data),
            out_dir=str(args.out),
            model=model,
            train=_train_overrides(args),
            include_clean=not args.no_clean,
            episodes=args.episodes,
            eval_seed=args.eval_seed,
            workers=args.workers,
            videos=args.videos,
            device=args.device,
            episode_length=args.episode_length,
            session_minutes=args.session_minutes,
            only=None if args.cells is None else tuple(args.cells),
            progress=not args.no_progress,
            **({"remedies": tuple(args.remedies)} if args.remedies else {}),
        )
        table = run_confuser_experiment(experiment)
    except (ValueError, OSError, ImportError, RobotDataError) as error:
        return _fail("experiment confuser", error)
    from ._experiment import markdown_table

    print(markdown_table(table))
    print(f"written: {args.out / 'confuser_experiment.md'}, .json, .png")
    if args.json:
        print(json.dumps(table))
    if not table["complete"]:
        print(
            "kinema-act experiment confuser: not finished; run the same command again to continue",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


def _run_grid(args) -> int:
    from ._experiment_dock import DockConfuserExperiment, dock_markdown_table, run_dock_confuser_experiment

    try:
        experiment = DockConfuserExperiment(
            out_dir=str(args.out),
            include_clean=not args.no_clean,
            seeds=tuple(args.seeds),
            episodes=args.episodes,
            pairs=not args.unpaired,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            eval_episodes=args.eval_episodes,
            eval_seed=args.eval_seed,
            threads=args.threads,
            progress=not args.no_progress,
            **({"remedies": tuple(args.remedies)} if args.remedies else {}),
        )
        table = run_dock_confuser_experiment(experiment)
    except (ValueError, OSError) as error:
        return _fail("experiment confuser-2d", error)
    print(dock_markdown_table(table))
    print(f"written: {args.out / 'confuser_2d.md'}, .json, .png")
    if args.json:
        print(json.dumps(table))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _run_train(args)
        if args.command == "eval":
            return _run_eval(args)
        if args.command == "experiment" and args.experiment == "confuser":
            return _run_confuser(args)
        if args.command == "experiment" and args.experiment == "confuser-2d":
            return _run_grid(args)
    except KeyboardInterrupt:
        print(f"kinema-act {args.command}: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
