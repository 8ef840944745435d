"""kinema-wm play: an interactive, block-causal rollout steered per block from a file or the keyboard."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from diffusers.video_processor import VideoProcessor
from PIL import Image

from ..causal._checkpoint import load_action_checkpoint, load_causal_pipeline
from ..causal._config import SAMPLERS, CausalRolloutConfig
from ..causal._play_input import KeyboardActions, action_id, choose_action, parse_block_actions
from ..causal._play_output import FrameDisplay, ProgressiveVideoWriter, display_available
from ..modeling._action_modules import PLAY_ACTIONS, ActionSequenceEncoder
from ..modeling._vae import encode_video
from ._common import DTYPES, resolve_device

EXAMPLES = """examples:
  kinema-wm play --model_dir models/Wan2.2-TI2V-5B --action_checkpoint runs/causal --image first.jpg \\
      --prompt "A drone flying over mountains" --keyboard --blocks 20 --out play.mp4
  kinema-wm play --model_dir models/Wan2.2-TI2V-5B --action_checkpoint runs/causal \\
      --prompt "A drone over a city" --actions forwardx4,yaw_leftx3 --out city.mp4

Keys (--keyboard, read from the terminal without Enter): W/S forward/back, A/D left/right, arrow left/right yaw,
arrow up/down pitch, space idle, q stop (the video so far is kept). Each block takes the last key pressed since
the previous block, idle when none was. When stdin is not a terminal the --actions (or idle) actions are used.
--actions: one action per block, as a spec NAMExCOUNT,... (names: idle, forward, back, left, right, yaw_left,
yaw_right, pitch_up, pitch_down), a JSON list, or a text file with one action per line.
"""


def register(commands) -> None:
    parser = commands.add_parser(
        "play",
        help="stream an action-steered rollout block by block (file or keyboard actions)",
        description="Generates video block by block with a block-causal KV cache; each block follows the action "
        "given for it. Frames are encoded to the mp4 as they arrive and shown when a display is present.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model = parser.add_argument_group("model (local directories only; nothing is downloaded)")
    model.add_argument(
        "--model_dir", required=True, help="Wan2.2-TI2V directory (diffusers or original layout)"
    )
    model.add_argument(
        "--action_checkpoint",
        help="trained action directory (causal_action_config.json + causal_action.safetensors)",
    )
    model.add_argument("--text_encoder_path", help="transformers UMT5 directory replacing the model's")
    model.add_argument("--tokenizer_path", help="tokenizer directory replacing the model's")
    model.add_argument("--vae_path", help="diffusers AutoencoderKLWan directory replacing the model's")
    model.add_argument("--dtype", choices=sorted(DTYPES), default="bf16", help="weights dtype (default bf16)")
    model.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: cuda when available)")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--out", required=True, type=Path, help="output .mp4, written as frames arrive")
    parser.add_argument("--image", type=Path, help="first frame (TI2V image-to-video); none: text-to-video")
    parser.add_argument("--actions", help="per-block actions: spec, JSON list or text file (see below)")
    parser.add_argument("--keyboard", action="store_true", help="steer with the keyboard while it runs")
    parser.add_argument("--blocks", type=int, help="blocks to generate (default: the rollout config's, 7)")
    rollout = parser.add_argument_group(
        "rollout (default: the action checkpoint's settings, else the defaults)"
    )
    rollout.add_argument("--block_size", type=int, help="latent frames per block (default 3)")
    rollout.add_argument("--window", help="self-attention window in latent frames, or 'none' (default 21)")
    rollout.add_argument("--steps", help="denoising timesteps per block, e.g. 1000,750,500,250")
    rollout.add_argument("--sampler", choices=SAMPLERS, help="euler (default) or renoise")
    rollout.add_argument("--height", type=int, help="default 480")
    rollout.add_argument("--width", type=int, help="default 832")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate of the mp4 (default 16)")
    parser.add_argument("--display", choices=("auto", "on", "off"), default="auto", help="show frames live")
    parser.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks")
    parser.add_argument(
        "--overlap_decode", action="store_true", help="CUDA: decode a block while the next one is generated"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.set_defaults(run=run)


def _rollout_config(args: argparse.Namespace, base: CausalRolloutConfig) -> CausalRolloutConfig:
    direct = {
        "block_size": args.block_size,
        "sampler": args.sampler,
        "height": args.height,
        "width": args.width,
        "num_blocks": args.blocks,
    }
    changes = {name: value for name, value in direct.items() if value is not None}
    if args.window is not None:
        if args.window.lower() == "none":
            changes["window_frames"] = None
        elif args.window.isdigit():
            changes["window_frames"] = int(args.window)
        else:
            raise ValueError(f"--window: expected a number of latent frames or 'none', got {args.window!r}")
    if args.steps is not None:
        try:
            changes["denoising_steps"] = tuple(int(s) for s in args.steps.split(","))
        except ValueError:
            raise ValueError(f"--steps: expected comma-separated integers, got {args.steps!r}") from None
    return dataclasses.replace(base, **changes)


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise FileExistsError(f"--out: {args.out} exists (pass --overwrite to replace it)")
    if args.out.suffix.lower() != ".mp4":
        raise ValueError(f"--out: expected an .mp4 path, got {args.out}")
    if args.image is not None and not args.image.is_file():
        raise FileNotFoundError(f"--image: no file at {args.image}")
    checkpoint = None if args.action_checkpoint is None else load_action_checkpoint(args.action_checkpoint)
    config = _rollout_config(args, checkpoint.rollout if checkpoint is not None else CausalRolloutConfig())
    num_blocks = config.num_blocks
    file_actions = None if args.actions is None else parse_block_actions(args.actions, num_blocks)
    module = None if checkpoint is None else checkpoint.action_module
    steerable = isinstance(module, ActionSequenceEncoder)
    if module is not None and not steerable and (args.actions or args.keyboard):
        raise ValueError(
            f"--action_checkpoint: its {type(module).__name__} derives actions itself; --actions / --keyboard "
            "only steer a checkpoint with a sequence (discrete action) module"
        )
    if steerable and module.action_vocab_size < len(PLAY_ACTIONS):
        raise ValueError(
            f"--action_checkpoint: its action vocabulary has {module.action_vocab_size} ids, play uses "
            f"{len(PLAY_ACTIONS)} ({', '.join(PLAY_ACTIONS)})"
        )
    if checkpoint is None:
        print(
            "note: no --action_checkpoint: the action projection is untrained (zero), actions change nothing"
        )

    device = resolve_device(args.device)
    pipe = load_causal_pipeline(
        args.model_dir,
        args.action_checkpoint,
        config=config,
        torch_dtype=DTYPES[args.dtype],
        device=device,
        text_encoder_path=args.text_encoder_path,
        tokenizer_path=args.tokenizer_path,
        vae_path=args.vae_path,
    )
    if args.compile:
        pipe.model.compile_blocks()
    vae = pipe.vae
    scale = vae.config.scale_factor_spatial
    rng = torch.Generator().manual_seed(args.seed)
    noise = torch.randn(config.latent_shape(pipe.model.in_channels, 1, scale), generator=rng)
    initial = None
    if args.image is not None:
        image = Image.open(args.image).convert("RGB")
        pixels = VideoProcessor(vae_scale_factor=scale).preprocess(
            image, height=config.height, width=config.width
        )
        initial = encode_video(vae, pixels.to(device).unsqueeze(2)).permute(0, 2, 1, 3, 4)  # (1, 1, C, h, w)

    targets = torch.zeros(1, num_blocks, dtype=torch.long)
    if file_actions is not None:
        targets[0] = torch.tensor(file_actions)
    show = args.display == "on" or (args.display == "auto" and display_available())
    if args.display == "on" and not display_available():
        print(
            "note: --display on, but no display / interactive matplotlib backend: frames go to the file only"
        )
        show = False

    with KeyboardActions() as keys:
        use_keyboard = args.keyboard and keys.is_terminal
        if args.keyboard and not keys.is_terminal:
            source = "--actions" if file_actions is not None else "idle actions"
            print(f"note: stdin is not a terminal; using {source} instead of the keyboard")
        if use_keyboard:
            print("keys: W/S forward/back, A/D left/right, arrows yaw/pitch, space idle, q stop")
        decided = [time.perf_counter()] * num_blocks
        stop = False

        def decide(first_block: int) -> None:
            """Fixes the action of the blocks not started yet (the keyboard's latest, or the file's)."""
            nonlocal stop
            if first_block >= num_blocks:
                return
            if use_keyboard:
                pressed = keys.poll()
                stop = stop or "quit" in pressed
                targets[0, first_block:] = action_id(choose_action(pressed))
            decided[first_block:] = [time.perf_counter()] * (num_blocks - first_block)

        decide(0)
        blocks = pipe.stream(
            noise,
            [args.prompt],
            {"target_actions": targets} if steerable else None,
            initial_latent=initial,
            rng=rng,
            frames_to_cpu=True,
            overlap_decode=args.overlap_decode,
        )
        display = FrameDisplay() if show else None
        start = time.perf_counter()
        first_frame, latencies, total = None, [], 0
        with ProgressiveVideoWriter(args.out, args.fps) as writer:
            try:
                for block in blocks:
                    frames = (block.frames[0].permute(0, 2, 3, 1) * 255).round().clamp(0, 255)
                    frames = frames.to(torch.uint8).numpy()  # (T, H, W, 3)
                    writer.write(frames)
                    if display is not None:
                        display.show(frames)
                    now = time.perf_counter()
                    first_frame = first_frame if first_frame is not None else now - start
                    latencies.append(now - decided[block.index])
                    total += frames.shape[0]
                    name = PLAY_ACTIONS[int(targets[0, block.index])]
                    print(
                        f"block {block.index + 1}/{num_blocks} [{name}]: {frames.shape[0]} frames, "
                        f"latency {latencies[-1]:.2f} s, {total / (now - start):.1f} frames/s",
                        flush=True,
                    )
                    decide(block.next_unstarted)
                    if stop:
                        print("stopped (q)")
                        break
            except KeyboardInterrupt:
                print("interrupted: keeping the frames so far")
        if display is not None:
            display.close()
    elapsed = time.perf_counter() - start
    if total == 0:
        raise ValueError("play: no frames were generated")
    print(
        f"wrote {args.out} ({total} frames): {total / elapsed:.1f} generated frames/s, first frames after "
        f"{first_frame:.2f} s, block latency mean {sum(latencies) / len(latencies):.2f} s, max {max(latencies):.2f} s"
    )
    return 0
