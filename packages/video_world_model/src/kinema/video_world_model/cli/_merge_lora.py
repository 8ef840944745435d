"""kinema-wm merge-lora: fold a trained LoRA into the base transformer and save a diffusers-layout model."""

from __future__ import annotations

import argparse
from pathlib import Path

from diffusers import WanPipeline
from safetensors.torch import load_file

from .._atomic import write_dir_atomic
from ..loading._lora import diffusers_lora_state
from ..loading._wan import load_wan_components
from ._common import DTYPES

EXAMPLES = """examples:
  kinema-wm merge-lora --model_dir models/Wan2.2-TI2V-5B-Diffusers --lora_path runs/wm/lora.safetensors
  kinema-wm merge-lora --model_dir models/Wan2.2-TI2V-5B-Diffusers --lora_path runs/wm/lora.safetensors \\
      --alpha 0.8 --output_dir models/merged/wm-lora --overwrite
"""


def register(commands) -> None:
    parser = commands.add_parser(
        "merge-lora",
        help="merge a trained LoRA into the base model (diffusers layout)",
        description="Loads the base model and a LoRA, fuses it at scale ALPHA and writes the merged model.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model_dir", required=True)
    parser.add_argument("--lora_path", required=True, type=Path)
    parser.add_argument("--alpha", type=float, default=1.0, help="LoRA scale when fusing (default 1.0)")
    parser.add_argument("--output_dir", type=Path, help="default ./models/merged/<base>_merged")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--text_encoder_path")
    parser.add_argument("--tokenizer_path")
    parser.add_argument("--vae_path")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if not args.lora_path.is_file():
        raise FileNotFoundError(f"--lora_path: no file at {args.lora_path}")
    output = args.output_dir or Path("models") / "merged" / f"{Path(args.model_dir).resolve().name}_merged"
    if output.exists() and any(output.iterdir()) and not args.overwrite:
        raise FileExistsError(
            f"--output_dir: {output} exists and is not empty (pass --overwrite to replace it)"
        )
    components = load_wan_components(
        args.model_dir, DTYPES[args.dtype], args.text_encoder_path, args.tokenizer_path, args.vae_path
    )
    pipe = WanPipeline(expand_timesteps=True, **components)
    # kinema's, diffusers' or DiffSynth-Studio's keys (blocks.N.self_attn.q.lora_A.default.weight) -> diffusers'
    state = diffusers_lora_state(load_file(str(args.lora_path)), str(args.lora_path))
    pipe.load_lora_weights(state, adapter_name="merge")
    pipe.fuse_lora(components=["transformer"], lora_scale=args.alpha)
    pipe.unload_lora_weights()
    write_dir_atomic(output, lambda tmp: pipe.save_pretrained(tmp, safe_serialization=True))
    print(f"wrote the merged model to {output}")
    return 0
