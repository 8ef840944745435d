"""kinema-wm train and kinema-wm cache."""

from __future__ import annotations

import argparse

from ..training._cache import write_cache
from ..training._loop_config import add_config_arguments, config_from_args
from ..training._train_config import TrainConfig
from ..training._trainer import WorldModelTrainer
from ._common import DTYPES, resolve_device

TRAIN_EXAMPLES = """examples:
  kinema-wm train --dataset_base_path data/drone --dataset_metadata_path data/drone/metadata.csv \\
      --model_dir models/Wan2.2-TI2V-5B-Diffusers --trainable_models action_controller \\
      --action_controller_config wan_ti2v_5b --learning_rate 1e-4 --max_steps 40000 --save_steps 5000 \\
      --save_full_state --output_path runs/wm
  accelerate launch --num_processes 2 -m kinema.video_world_model.cli train --config train.yaml
  kinema-wm train --config train.yaml --resume_from latest           # continue after a crash
  kinema-wm train --cache_dir runs/cache --model_dir ... --output_path runs/wm   # train on cached latents
  kinema-wm train --config train.yaml --dataset_window first   # each clip's first --num_frames frames only

Clips longer than --num_frames give a random window per sample (--dataset_window random, the default), drawn from
--seed, the epoch and the sample, so a resumed run sees the same windows; `all` makes every window a sample.

Every option can also be set in a YAML or JSON file given with --config; flags override the file.
Output: <output_path>/{action_train_config.json, action_controller.safetensors, lora.safetensors,
checkpoints/step-XXXXXXXXX/} (checkpoints with --save_full_state).
"""

CACHE_EXAMPLES = """examples:
  kinema-wm cache --dataset_base_path data/drone --model_dir models/Wan2.2-TI2V-5B-Diffusers \\
      --height 480 --width 832 --num_frames 81 --cache_dir runs/cache

Every --num_frames window of every clip is encoded (--dataset_window all, the default; `first`: one per clip).
"""


def register(commands) -> None:
    train = commands.add_parser(
        "train",
        help="train the action controller (and optionally LoRA) on action-video clips",
        description="Trains the action controller of the Wan world model (accelerate: run it directly or with "
        "`accelerate launch`).",
        epilog=TRAIN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(train, TrainConfig)
    train.set_defaults(run=run_train)

    cache = commands.add_parser(
        "cache",
        help="encode VAE latents and text embeddings of a dataset once, for --cache_dir",
        description="Writes sharded safetensors of latents and prompt embeddings beside the training output.",
        epilog=CACHE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_arguments(cache, TrainConfig)
    cache.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    cache.add_argument("--device", default=None)
    cache.add_argument("--shard_size", type=int, default=64, help="samples per shard file")
    cache.set_defaults(run=run_cache)


def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args, TrainConfig)
    result = WorldModelTrainer(config).run()
    if not result.main_process:
        return 0
    last = result.losses.get(result.step)
    print(
        f"trained to step {result.step}"
        + (f", loss {last:.4f}" if last is not None else "")
        + f"; output in {config.output_path}"
    )
    return 0


def run_cache(args: argparse.Namespace) -> int:
    cache_dir = args.cache_dir
    if cache_dir is None:
        raise ValueError("--cache_dir: required (where to write the cache, outside the dataset directory)")
    args.cache_dir = None  # the config reads the clips; the cache is the output here
    config = config_from_args(args, TrainConfig)
    index = write_cache(config, cache_dir, resolve_device(args.device), DTYPES[args.dtype], args.shard_size)
    print(f"wrote {index}")
    return 0
