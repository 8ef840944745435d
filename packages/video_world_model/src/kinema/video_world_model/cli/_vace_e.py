"""kinema-wm vace-e {train, generate, validate}."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from kinema.robot_data import collate_vace_e

from ..pipelines._grid import write_grid
from ..vace_e._config import SHIPPED_CONFIGS, VaceEConfig, add_vace_e_arguments, vace_e_config_from_args
from ._common import DTYPES, resolve_device

TRAIN_EXAMPLES = f"""examples:
  kinema-wm vace-e train --config vace_e_dev.yaml --model_dir models/Wan2.1-VACE-1.3B-diffusers \\
      --clip_path models/clip-vit-h-14 --dataset_base_path data/vace_e \\
      --task_metadata_path data/ph2d_metadata.json --output_path runs/vace_e_dev
  kinema-wm vace-e train --config configs/vace_e_lora.yaml --learning_rate 1e-4 --vace_e_layers 0,3,6,9 ...

--config takes a YAML/JSON file or a shipped config ({", ".join(SHIPPED_CONFIGS)}); flags override it. Stages run
in order, one folder each under --output_path; rerunning the same command resumes where it stopped.
"""
GENERATE_EXAMPLES = """examples:
  kinema-wm vace-e generate --checkpoint runs/vace_e_dev --episode data/vace_e/904-grasping_2024/episode_3 \\
      --task_metadata_path data/ph2d_metadata.json --out demo.mp4
"""
VALIDATE_EXAMPLES = """examples:
  kinema-wm vace-e validate --checkpoint runs/vace_e_lora --test_data data/vace_e_test \\
      --task_metadata_path data/ph2d_metadata.json --output_dir runs/vace_e_lora/test
  kinema-wm vace-e validate --checkpoint runs/vace_e_lora/stage_2/vace_e.safetensors \\
      --test_data data/vace_e_test --output_dir ./validation_results
--checkpoint takes a run or stage folder, or a file inside one (its stage's exported weights load);
--task_metadata_path defaults to the one the run trained with.
Writes one mp4 per episode (target | generated), metrics.json and metrics.md (PSNR and SSIM over the whole frame,
inside the hand mask and outside it).
"""


def register(commands) -> None:
    vace = commands.add_parser(
        "vace-e", help="VACE-E: demonstration videos from hands-masked control + task features"
    )
    sub = vace.add_subparsers(dest="vace_command", required=True, metavar="COMMAND")
    train = sub.add_parser("train", help="staged VACE-E training", epilog=TRAIN_EXAMPLES,
                           formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    add_vace_e_arguments(train)
    train.set_defaults(run=run_train)
    for name, examples, runner in (
        ("generate", GENERATE_EXAMPLES, run_generate),
        ("validate", VALIDATE_EXAMPLES, run_validate),
    ):
        parser = sub.add_parser(name, help=f"{name} with a trained VACE-E checkpoint", epilog=examples,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        parser.add_argument(
            "--checkpoint",
            required=True,
            type=Path,
            help="a VACE-E training output (or stage) folder, or a weights file (.pt/.safetensors) inside one: "
            "its stage folder loads",
        )
        parser.add_argument(
            "--task_metadata_path", help="task metadata JSON (default: the one the run trained with)"
        )
        parser.add_argument("--model_dir", help="override the base VACE model directory of the checkpoint")
        parser.add_argument("--clip_path", help="override the CLIP vision model directory of the checkpoint")
        parser.add_argument("--num_inference_steps", type=int, default=50)
        parser.add_argument(
            "--guidance_scale",
            type=float,
            default=5.0,
            help="classifier-free guidance (1 turns it off; default 5)",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
        parser.add_argument("--device", default=None)
        if name == "generate":
            parser.add_argument(
                "--episode", required=True, type=Path, help="an episode folder <base>/<task>/episode_<n>"
            )
            parser.add_argument("--out", required=True, type=Path, help="output .mp4 (target | generated)")
        else:
            parser.add_argument("--test_data", required=True, help="a VACE-E base folder of test episodes")
            parser.add_argument("--output_dir", required=True, type=Path)
            parser.add_argument("--episodes", type=int, default=None, help="at most this many (default all)")
        parser.set_defaults(run=runner)


def run_train(args: argparse.Namespace) -> int:
    from ..vace_e._train import run_stages

    config = vace_e_config_from_args(args)
    results = run_stages(config)
    if any(result is not None and not result.main_process for result in results.values()):
        return 0  # the first process reports
    for stage, result in results.items():
        print(f"{stage}: " + ("already finished" if result is None else f"trained to step {result.step}"))
    return 0


def _pipeline(args: argparse.Namespace):
    from ..vace_e._pipeline import load_vace_e_pipeline

    return load_vace_e_pipeline(
        args.checkpoint, DTYPES[args.dtype], resolve_device(args.device), args.model_dir, args.clip_path
    )


def _saved_config(args: argparse.Namespace) -> VaceEConfig:
    """The run's options as it saved them; --task_metadata_path and --model_dir replace its own when given."""
    from ..vace_e._train import TRAIN_CONFIG, final_stage_dir, resolve_checkpoint

    args.checkpoint = resolve_checkpoint(args.checkpoint)
    saved = json.loads((final_stage_dir(args.checkpoint) / TRAIN_CONFIG).read_text())
    metadata = args.task_metadata_path or saved["train_args"]["task_metadata_path"]
    values = saved["train_args"] | {"task_metadata_path": metadata, "training_stages": None}
    values["model_dir"] = args.model_dir or saved["base_model"]
    return VaceEConfig(**values)


def run_generate(args: argparse.Namespace) -> int:
    from ..vace_e._inputs import to_unit_range
    from ..vace_e._train import episode_dataset

    if args.out.exists():
        raise FileExistsError(f"--out: {args.out} exists")
    episode = args.episode.resolve()
    if not episode.is_dir():
        raise FileNotFoundError(f"--episode: {episode} is not a folder")
    config = _saved_config(args)
    dataset = episode_dataset(config, str(episode.parent.parent))
    matches = [i for i, e in enumerate(dataset.episodes) if Path(e.path).resolve() == episode]
    if not matches:
        raise ValueError(f"--episode: {episode} is not a usable VACE-E episode (see the warning above)")
    sample = dataset[matches[0]]
    batch = collate_vace_e([sample])
    pipe = _pipeline(args)
    reference = batch["embodiment_image"][0] if bool(batch["has_embodiment_image"][0]) else None
    hand = None if int(batch["hand_motion_lengths"][0]) == 0 else batch["hand_motion"][0]
    objects = None if int(batch["object_trajectory_lengths"][0]) == 0 else batch["object_trajectory"][0]
    frames = pipe(
        sample["prompt"], batch["control_video"][0], batch["mask"][0], reference, hand, objects,
        num_inference_steps=args.num_inference_steps, guidance_scale=args.guidance_scale,
        generator=torch.Generator().manual_seed(args.seed),
    ).frames[0]  # fmt: skip
    target = ((to_unit_range(batch["video"][0]) + 1) / 2).permute(1, 2, 3, 0).numpy()  # (T, H, W, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_grid(args.out, [target, frames], ["target", "generated"], columns=2, fps=16)
    print(f"wrote {args.out} ({sample['prompt']!r})")
    return 0


def run_validate(args: argparse.Namespace) -> int:
    from ..vace_e._validate import validate

    if args.output_dir.exists() and any(args.output_dir.iterdir()):
        raise FileExistsError(f"--output_dir: {args.output_dir} is not empty")
    config = _saved_config(args)
    pipe = _pipeline(args)
    rows = validate(
        pipe.vace_e_model, pipe.vace_e_inputs, config, args.output_dir, args.episodes, args.test_data,
        args.num_inference_steps, args.seed, guidance_scale=args.guidance_scale,
    )  # fmt: skip
    print((args.output_dir / "metrics.md").read_text())
    print(f"validated {len(rows)} episodes into {args.output_dir}")
    return 0
