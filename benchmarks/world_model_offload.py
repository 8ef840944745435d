"""Peak GPU memory and seconds of one ``WanActionPipeline`` generation at the Wan2.2-TI2V-5B shape, with the
whole pipeline on the GPU, with ``enable_model_cpu_offload()`` and with ``enable_sequential_cpu_offload()``.

The models are random (the shapes of Wan2.2-TI2V-5B's transformer, its umT5-XXL text encoder and its VAE, the
controller at the transformer's width), built in the dtypes a user loads them in (bf16; the VAE fp32), so the
memory is what the real weights would take. Each mode runs on the same pipeline object, from the CPU, after the
previous mode's hooks are removed; peak = ``torch.cuda.max_memory_allocated`` over the whole call (text
encoding, denoising, decoding).

    python3 benchmarks/world_model_offload.py --out $OUT/offload.json
    python3 benchmarks/world_model_offload.py --smoke          # the same code path at tiny size on a CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from _shapes import WAN_TI2V_5B, WAN_TI2V_5B_SMOKE, random_model
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from kinema.video_world_model import WanActionController, WanActionPipeline
from kinema.video_world_model.loading._wan import WAN22_VAE_CONFIG
from kinema.video_world_model.testing import TINY_VAE, tiny_scheduler, tiny_tokenizer

# google/umt5-xxl's encoder, as Wan2.2 ships it (text_encoder/config.json)
UMT5_XXL = {
    "vocab_size": 256384,
    "d_model": 4096,
    "d_kv": 64,
    "d_ff": 10240,
    "num_layers": 24,
    "num_heads": 64,
    "relative_attention_num_buckets": 32,
    "relative_attention_max_distance": 128,
    "feed_forward_proj": "gated-gelu",
    "is_encoder_decoder": False,
}
UMT5_SMOKE = UMT5_XXL | {
    "vocab_size": 256384,
    "d_model": 16,
    "d_kv": 4,
    "d_ff": 32,
    "num_layers": 2,
    "num_heads": 4,
}


def build(smoke: bool, frames: int, build_device: torch.device) -> WanActionPipeline:
    """The pipeline on the CPU (models are initialised on ``build_device``, which is fast on a GPU, then moved)."""
    shape = WAN_TI2V_5B_SMOKE if smoke else WAN_TI2V_5B
    dtype = torch.bfloat16
    transformer = random_model(WanTransformer3DModel, shape, build_device, dtype).to("cpu")
    with build_device:
        text_encoder = UMT5EncoderModel(UMT5Config(**(UMT5_SMOKE if smoke else UMT5_XXL))).to(dtype).eval()
        # the latent statistics only normalise values: zero mean and unit std stand in for Wan2.2's 48 numbers
        stats = {"latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}
        vae = AutoencoderKLWan(**(TINY_VAE if smoke else WAN22_VAE_CONFIG | stats)).eval()
        controller = WanActionController(
            action_dim=8,
            hidden_size=shape["num_attention_heads"] * shape["attention_head_dim"],
            num_heads=shape["num_attention_heads"],
            num_latent_frames=(frames - 1) // 4 + 1,
            num_layers=shape["num_layers"],
            injection_type="cross_attn_frame",
        ).to(dtype)
    return WanActionPipeline(
        tokenizer=tiny_tokenizer(),
        text_encoder=text_encoder.to("cpu"),
        vae=vae.to("cpu"),
        scheduler=tiny_scheduler(),
        transformer=transformer,
        action_controller=controller.to("cpu"),
    )


def generate(pipe: WanActionPipeline, args) -> np.ndarray:
    latent_frames = (args.frames - 1) // 4 + 1
    generator = torch.Generator().manual_seed(0)
    actions = torch.zeros(latent_frames - 1, 8)
    actions[:, 0] = 1.0
    magnitude = actions * torch.tensor([0.01, 0, 0, 0, 0.5, 0, 0, 0])
    image = np.full((args.height, args.width, 3), 128, np.uint8)
    return pipe(
        "a drone flies over hills", image, actions, magnitude, height=args.height, width=args.width,
        num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=5.0, generator=generator,
        max_sequence_length=args.max_sequence_length,
    ).frames  # fmt: skip


def run_mode(pipe: WanActionPipeline, mode: str, device: torch.device, args) -> tuple[dict, np.ndarray]:
    pipe.remove_all_hooks()
    pipe.to("cpu")
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    if mode == "none":
        pipe.to(device)
    elif cuda:
        getattr(pipe, f"enable_{mode}_cpu_offload")(device=device)
    start = time.perf_counter()
    frames = generate(pipe, args)
    if cuda:
        torch.cuda.synchronize()
    row = {
        "mode": mode,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
    }
    return row, frames


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny models on the CPU (the code path only)")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--max_sequence_length", type=int, default=512)
    parser.add_argument("--modes", default="none,model,sequential")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    if args.smoke:
        args.height, args.width, args.frames, args.max_sequence_length = 64, 64, 9, 16
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    pipe = build(args.smoke, args.frames, device)
    rows, reference = [], None
    for mode in args.modes.split(","):
        row, frames = run_mode(pipe, mode, device, args)
        if reference is None:
            reference = frames
        # the same weights and seed: offload must not change the video (bf16 kernels may differ by rounding)
        row["max_abs_diff_to_first_mode"] = float(np.abs(frames.astype(np.float32) - reference).max())
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {
        "shape": "smoke" if args.smoke else "Wan2.2-TI2V-5B + umT5-XXL + Wan2.2 VAE",
        "size": f"{args.frames}x{args.height}x{args.width}",
        "steps": args.steps,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
