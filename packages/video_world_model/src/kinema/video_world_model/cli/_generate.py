"""kinema-wm generate: one video from a first image, a prompt and per-frame actions."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from kinema.robot_data import write_video

from ..loading._wan import load_pipeline
from ..modeling._actions import load_actions
from ._common import DTYPES, add_model_arguments, resolve_device

EXAMPLES = """examples:
  kinema-wm generate --model_dir models/Wan2.2-TI2V-5B --controller runs/wm --image first.jpg \\
      --prompt "A drone flying over mountains" --actions forward:0.5x10,yaw_left:0.3x10 --out video.mp4
  kinema-wm generate --model_dir models/Wan2.2-TI2V-5B --controller runs/wm --image first.jpg \\
      --prompt "A drone over a city" --actions actions.json --action_guidance_scale 2.0 --out city.mp4
  kinema-wm generate --model_dir models/Wan2.2-TI2V-5B --image first.jpg --prompt "A drone" --out plain.mp4
      (no --controller: plain image-to-video, so --actions is refused)

--actions takes a JSON file ((T, 2, 8) as in the action-video CSV, or {"action_binary", "action_magnitude"})
or the compact form ACTIONSxCOUNT,... with ACTIONS = name[:magnitude][+name[:magnitude]] or idle, where name is
one of forward, back, left, right, yaw_left, yaw_right, pitch_up, pitch_down. T = (num_frames - 1) / 4.
"""


def register(commands) -> None:
    parser = commands.add_parser(
        "generate",
        help="generate a video that follows per-frame actions",
        description="Generates a video from a first image, a prompt and per-frame drone actions.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_arguments(parser)
    parser.add_argument("--image", required=True, type=Path, help="the first frame (any format PIL reads)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--actions",
        help="actions JSON file or compact spec (see below); needs --controller (without one the video follows "
        "only the image and prompt). Magnitudes are raw, as in the training data (forward:0.5 means 0.5): the "
        "controller multiplies them by its magnitude scale [100, 100, 100, 100, 1, 1, 1, 1] itself, so do not "
        "pre-scale them; a warning says so when they look pre-scaled",
    )
    parser.add_argument("--out", required=True, type=Path, help="output .mp4")
    parser.add_argument("--negative_prompt", default=None)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--num_frames", type=int, default=81, help="4n+1 (default 81 -> 20 action steps)")
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument(
        "--action_guidance_scale", type=float, default=1.0, help=">1 strengthens action following"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fps",
        type=int,
        default=24,
        help="frame rate of the written video (default 24, Wan2.2-TI2V's rate; Wan2.1 models are 16 fps)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"--out: {args.out} exists (pass --overwrite to replace it)")
    if args.out.suffix.lower() != ".mp4":
        raise ValueError(f"--out: expected an .mp4 path, got {args.out}")
    if not args.image.is_file():
        raise FileNotFoundError(f"--image: no file at {args.image}")
    if args.num_frames < 1 or (args.num_frames - 1) % 4:
        raise ValueError(f"--num_frames: {args.num_frames} is not 4n+1")
    _check_action_arguments(args)
    binary, magnitude = (
        (None, None) if args.actions is None else load_actions(args.actions, (args.num_frames - 1) // 4)
    )
    image = Image.open(args.image).convert("RGB")
    device = resolve_device(args.device)
    pipe = load_pipeline(
        args.model_dir,
        args.controller,
        torch_dtype=DTYPES[args.dtype],
        device=device,
        text_encoder_path=args.text_encoder_path,
        tokenizer_path=args.tokenizer_path,
        vae_path=args.vae_path,
    )
    generator = torch.Generator(device=device).manual_seed(args.seed)
    output = pipe(
        args.prompt,
        image,
        binary,
        magnitude,
        height=args.height,
        width=args.width,
        num_frames=args.num_frames,
        num_inference_steps=args.num_inference_steps,
        guidance_scale=args.guidance_scale,
        action_guidance_scale=args.action_guidance_scale,
        negative_prompt=args.negative_prompt,
        generator=generator,
    )
    frames = (np.clip(output.frames[0], 0, 1) * 255).round().astype(np.uint8)  # (F, H, W, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_video(args.out, frames, fps=args.fps)
    print(f"wrote {args.out} ({frames.shape[0]} frames, {frames.shape[2]}x{frames.shape[1]})")
    return 0


def _check_action_arguments(args: argparse.Namespace) -> None:
    """Actions steer only through a controller: refuse what would otherwise be ignored, before loading models."""
    if args.controller is None:
        if args.actions is not None:
            raise ValueError("--actions: only a trained controller reads actions; pass --controller DIR")
        if args.action_guidance_scale != 1.0:
            raise ValueError("--action_guidance_scale: guides the actions, which need --controller DIR")
    elif args.actions is None:
        raise ValueError("--actions: --controller needs the actions to follow (a JSON file or compact spec)")
