"""The action-conditioned Wan transformer against plain diffusers, at the Wan2.2-TI2V-5B shape, in one run.

Random bf16 weights (hidden 3072, 24 heads, 30 layers, FFN 14336, 48 latent channels), batch 1, 512 text tokens.
480x832x81 -> latents (48, 21, 30, 52) -> 8,190 tokens; 704x1280x121 -> (48, 31, 44, 80) -> 27,280 tokens.

Paths, each timed eager and with the blocks compiled (diffusers' ``compile_repeated_blocks``; the controller's
injections run eager between them):
- forward: the denoising forward (no grad), TI2V per-token timesteps;
- train step: frozen backbone, gradient checkpointing, forward + backward. For plain diffusers the gradient goes
  to the input latents (the only thing that could learn); with the controller it goes to the controller.
Rows: diffusers (WanTransformer3DModel itself), ours without a controller (the same backbone path through
kinema's wrapper), ours with the ``wan_ti2v_5b`` controller (cross_attn_frame, all 30 layers). Overhead is
"with" against "without" on the same path; peak memory is torch.cuda.max_memory_allocated per path.

    python benchmarks/world_model_step.py [--iters 5] [--sizes 480x832x81,704x1280x121] [--json OUT]
    python benchmarks/world_model_step.py --smoke     # tiny CPU shapes: checks the script only
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _shapes import WAN_TI2V_5B, WAN_TI2V_5B_SMOKE, random_model, timed
from diffusers import WanTransformer3DModel

from kinema.video_world_model import ACTION_CONTROLLER_CONFIGS, WanActionController
from kinema.video_world_model.modeling import WanActionTransformer, token_timesteps


def bench_size(size, transformer, ours, ours_plain, controller, config, device, dtype, args, results) -> None:
    height, width, frames = (int(v) for v in size.split("x"))
    latent_frames, h, w = (frames - 1) // 4 + 1, height // 16, width // 16
    tokens_per_frame = (h // 2) * (w // 2)
    latents = torch.randn(1, config["in_channels"], latent_frames, h, w, device=device, dtype=dtype)
    text = torch.randn(1, 512, config["text_dim"], device=device, dtype=dtype)
    timestep = token_timesteps(torch.tensor([700.0]), latent_frames, tokens_per_frame).to(device)
    binary = (torch.rand(1, latent_frames - 1, 8, device=device) > 0.5).to(dtype)
    magnitude = torch.rand(1, latent_frames - 1, 8, device=device, dtype=dtype)

    def forward_plain():
        with torch.no_grad():
            return transformer(latents, timestep, text, return_dict=False)[0]

    def forward_ours(model=ours, actions=True):
        with torch.no_grad():
            return model(latents, timestep, text, *((binary, magnitude) if actions else ()))

    def train_plain():
        transformer.enable_gradient_checkpointing()
        x = latents.detach().requires_grad_(True)
        transformer(x, timestep, text, return_dict=False)[0].float().pow(2).mean().backward()
        transformer.disable_gradient_checkpointing()

    def train_ours(model=ours, actions=True):
        model.enable_gradient_checkpointing()
        x = latents.detach().requires_grad_(not actions)
        model(x, timestep, text, *((binary, magnitude) if actions else ())).float().pow(2).mean().backward()
        controller.zero_grad(set_to_none=True)

    cases = {
        "forward/diffusers": forward_plain,
        "forward/ours_without_controller": lambda: forward_ours(ours_plain, False),
        "forward/ours_with_controller": forward_ours,
        "train_step/diffusers": train_plain,
        "train_step/ours_without_controller": lambda: train_ours(ours_plain, False),
        "train_step/ours_with_controller": train_ours,
    }
    for mode in ("eager",) + (() if args.no_compile else ("compiled",)):
        if mode == "compiled":
            transformer.compile_repeated_blocks(fullgraph=True)
        for name, step in cases.items():
            seconds, peak = timed(step, args.iters)
            key = f"{size}/{mode}/{name}"
            results[key] = {"seconds": seconds, "peak_gib": peak}
            print(f"{key:<62} {seconds:8.4f} s   peak {peak:6.2f} GiB", flush=True)
        for path in ("forward", "train_step"):
            with_c = results[f"{size}/{mode}/{path}/ours_with_controller"]["seconds"]
            without = results[f"{size}/{mode}/{path}/ours_without_controller"]["seconds"]
            plain = results[f"{size}/{mode}/{path}/diffusers"]["seconds"]
            results[f"{size}/{mode}/{path}/overhead"] = {
                "vs_same_path": with_c / without - 1,
                "vs_diffusers": with_c / plain - 1,
            }
            print(
                f"{size}/{mode}/{path}: controller overhead {with_c / without - 1:+.2%} on the same path, {with_c / plain - 1:+.2%} vs diffusers"
            )
    if not args.no_compile:  # back to eager blocks for the next size
        for block in transformer.blocks:
            block._compiled_call_impl = None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--sizes", default="480x832x81,704x1280x121")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json")
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    config = WAN_TI2V_5B_SMOKE if args.smoke else WAN_TI2V_5B
    if args.smoke:
        args.iters, args.sizes, args.no_compile = 1, "64x64x9", True
    elif not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16
    torch.manual_seed(0)
    transformer = random_model(WanTransformer3DModel, config, device, dtype)
    with device:
        controller_config = ACTION_CONTROLLER_CONFIGS["wan_ti2v_5b"] | {
            "hidden_size": config["num_attention_heads"] * config["attention_head_dim"],
            "num_heads": config["num_attention_heads"],
            "num_layers": config["num_layers"],
            "num_latent_frames": 40,
        }
        controller = WanActionController(**controller_config).to(dtype)
    ours_plain = WanActionTransformer(transformer, None)
    ours = WanActionTransformer(transformer, controller)

    results: dict[str, dict] = {}
    for size in args.sizes.split(","):
        bench_size(size, transformer, ours, ours_plain, controller, config, device, dtype, args, results)
    meta = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
    }
    print(json.dumps(meta))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
