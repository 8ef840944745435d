"""kinema-wm scan-actions and kinema-wm action-effect."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..loading._wan import load_pipeline
from ..modeling._actions import load_actions
from ..pipelines._grid import write_contact_sheet, write_grid
from ..pipelines._scan import action_effect, scan_actions
from ._common import DTYPES, add_model_arguments, resolve_device

SCAN_EXAMPLES = """examples:
  kinema-wm scan-actions --model_dir models/Wan2.2-TI2V-5B --controller runs/wm --image first.jpg \\
      --prompt "A drone over a valley" --actions forward:0.5x20 --scales 0,0.5,1,2 --out_dir runs/scan
  kinema-wm scan-actions ... --per_action      # one row per action type (only that action), same scales
Writes scan.mp4 (a labelled grid: columns are scales, rows action types), contact_sheet.png and one mp4 per video.
"""
EFFECT_EXAMPLES = """examples:
  kinema-wm action-effect --model_dir models/Wan2.2-TI2V-5B --controller runs/wm --image first.jpg \\
      --prompt "A drone over a valley" --actions forward:0.5x20 --out_dir runs/effect
Prints the mean |with actions - without| per latent frame (near 0 for an untrained controller) and writes
action_effect.json and action_effect.png.
"""


def _add_generation_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--image", required=True, type=Path)
    parser.add_argument("--prompt", required=True)
    parser.add_argument(
        "--actions", required=True, help="actions JSON file or compact spec (as kinema-wm generate)"
    )
    parser.add_argument("--out_dir", required=True, type=Path)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--num_frames", type=int, default=81)
    parser.add_argument("--num_inference_steps", type=int, default=50)
    parser.add_argument("--guidance_scale", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")


def register(commands) -> None:
    scan = commands.add_parser(
        "scan-actions",
        help="one video per action scale (and action type) from the same noise, as a labelled grid",
        description="Generates one video per action scale from the same noise and writes a labelled grid mp4 and "
        "a PNG contact sheet, so you can see what the actions do.",
        epilog=SCAN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_generation_arguments(scan)
    scan.add_argument(
        "--scales",
        default="0,0.5,1,2",
        help="comma-separated multipliers of the action magnitudes, >= 0 (default 0,0.5,1,2); the binary "
        "on/off flags are not scaled, and 0 turns them off (no action)",
    )
    scan.add_argument("--per_action", action="store_true", help="one row per action type")
    scan.add_argument(
        "--fps", type=int, default=24, help="of the written mp4s (Wan2.2-TI2V's rate; Wan2.1: 16)"
    )
    scan.set_defaults(run=run_scan)
    effect = commands.add_parser(
        "action-effect",
        help="mean difference per latent frame between generation with and without the actions",
        description="Diagnoses whether conditioning works: generates with and without the actions from the same "
        "noise and reports the mean absolute latent difference per latent frame.",
        epilog=EFFECT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_generation_arguments(effect)
    effect.set_defaults(run=run_effect)


def _prepare(args: argparse.Namespace):
    if args.out_dir.exists() and any(args.out_dir.iterdir()) and not args.overwrite:
        raise FileExistsError(f"--out_dir: {args.out_dir} is not empty (pass --overwrite)")
    if not args.image.is_file():
        raise FileNotFoundError(f"--image: no file at {args.image}")
    if args.num_frames < 1 or (args.num_frames - 1) % 4:
        raise ValueError(f"--num_frames: {args.num_frames} is not 4n+1")
    binary, magnitude = load_actions(args.actions, (args.num_frames - 1) // 4)
    device = resolve_device(args.device)
    pipe = load_pipeline(
        args.model_dir, args.controller, torch_dtype=DTYPES[args.dtype], device=device,
        text_encoder_path=args.text_encoder_path, tokenizer_path=args.tokenizer_path, vae_path=args.vae_path,
    )  # fmt: skip
    call = {
        "height": args.height,
        "width": args.width,
        "num_frames": args.num_frames,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "seed": args.seed,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    return pipe, Image.open(args.image).convert("RGB"), binary, magnitude, call


def run_scan(args: argparse.Namespace) -> int:
    try:
        scales = [float(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--scales: expected comma-separated numbers, got {args.scales!r}") from None
    pipe, image, binary, magnitude, call = _prepare(args)
    result = scan_actions(
        pipe, image, args.prompt, binary, magnitude, scales, per_action=args.per_action, **call
    )
    labels = list(result.videos)
    videos = [result.videos[label] for label in labels]
    for label, video in zip(labels, videos):
        name = "scale_" + label.replace(" ", "_").replace("x", "") + ".mp4"
        write_grid(args.out_dir / name, [video], [label], columns=1, fps=args.fps)
    write_grid(args.out_dir / "scan.mp4", videos, labels, columns=len(result.columns), fps=args.fps)
    write_contact_sheet(args.out_dir / "contact_sheet.png", videos, labels)
    print(f"wrote {len(videos)} videos, scan.mp4 and contact_sheet.png to {args.out_dir}")
    return 0


def run_effect(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pipe, image, binary, magnitude, call = _prepare(args)
    effect = action_effect(pipe, image, args.prompt, binary, magnitude, **call)
    for frame, value in enumerate(effect):
        print(f"latent frame {frame:3d}: mean |with - without| = {value:.6f}")
    (args.out_dir / "action_effect.json").write_text(
        json.dumps({"per_latent_frame": effect.tolist()}, indent=2)
    )
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(np.arange(len(effect)), effect)
    ax.set_xlabel("latent frame")
    ax.set_ylabel("mean |with - without actions|")
    ax.set_title("What the actions change (same noise)")
    fig.tight_layout()
    fig.savefig(args.out_dir / "action_effect.png", dpi=120)
    plt.close(fig)
    return 0
