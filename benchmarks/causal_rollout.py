"""Block-causal rollout (kinema ActionCausalInferencePipeline) against the plain-diffusers serial loop, in one run.

Wan2.2-TI2V-5B shape with random bf16 weights (hidden 3072 = 24 heads x 128, 30 layers, FFN 14336, 48 latent
channels, text dim 4096) and the Wan2.2 VAE (``WAN22_VAE_CONFIG``, random weights), batch 1, 480x832, blocks of 3
latent frames (12 video frames; the first block 9), 4 denoising steps per block (1000, 750, 500, 250, warped by
shift 5), 512 random text states (the UMT5 encoder runs once per prompt and is not timed).

Rows, each a whole rollout of ``--blocks`` blocks after a warm-up rollout (compilation happens there):
- ``diffusers_serial``: per block, 4 plain-diffusers ``WanTransformer3DModel`` forwards on the block alone (1,170
  tokens, no cache, no context), then the VAE decode, one after the other (eager). The decode is diffusers' own
  frame-by-frame decoder loop with its causal cache carried across blocks (``StreamingVAEDecoder``), so every
  row decodes the same frames: 4 * blocks * 3 - 3 in all.
- ``causal_eager``: kinema's cached block-causal rollout (4 denoising forwards + 1 clean re-encode per block,
  rolling KV cache of ``--window`` latent frames, text K/V cached), eager, decode after each block.
- ``causal_compiled_overlap``: the same with ``torch.compile`` of the per-block function and the VAE decode of
  block k on a side CUDA stream while block k + 1 is generated.
- ``causal_compiled_overlap_fast_decode``: the same with the fastest of the decoder settings measured in the
  components (``StreamingVAEDecoder``'s ``frames_per_call`` / ``channels_last``: a block per decoder call and/or
  channels-last convolutions; the same frames up to rounding, the largest difference is reported).
Each row is measured for every ``--vae_dtypes`` entry. Frames/s counts decoded frames copied to host memory
(uint8-ready float frames in pinned memory), over the rollout's wall time; time to first frame is from the start
of the rollout to the first block's frames on the host. Components are timed alone as well: one transformer
forward (no cache, and with a full cache), one block's VAE decode with each decoder setting.

Goal of the issue (one H100): >= 30 frames/s including decoding and <= 0.5 s to the first frame.

    python benchmarks/causal_rollout.py [--blocks 10] [--window 21] [--vae_dtypes fp32,bf16] [--json OUT]
    python benchmarks/causal_rollout.py --smoke      # tiny CPU shapes: checks the script only
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time

import torch
from _shapes import WAN_TI2V_5B, WAN_TI2V_5B_SMOKE, random_model
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from diffusers.utils import logging as diffusers_logging

from kinema.video_world_model.causal import (
    ActionCausalInferencePipeline,
    CausalRolloutConfig,
    StreamingVAEDecoder,
)
from kinema.video_world_model.loading._wan import WAN22_VAE_CONFIG
from kinema.video_world_model.testing import TINY_VAE

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
GOAL_FPS, GOAL_FIRST_FRAME_S = 30.0, 0.5


def sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def build_transformer(config: dict, device: torch.device) -> WanTransformer3DModel:
    return random_model(WanTransformer3DModel, config, device, torch.bfloat16)


def build_vae(config: dict, device: torch.device, dtype: torch.dtype) -> AutoencoderKLWan:
    z = config["z_dim"]
    stats = {"latents_mean": [0.0] * z, "latents_std": [1.0] * z} if "latents_mean" not in config else {}
    with device:
        vae = AutoencoderKLWan(**(config | stats)).eval().requires_grad_(False)
    return vae.to(dtype)


def to_host(frames: torch.Tensor) -> torch.Tensor:
    if frames.device.type == "cpu":
        return frames
    host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
    return host.copy_(frames, non_blocking=True)


def diffusers_serial(transformer, vae, noise, text, config: CausalRolloutConfig, device) -> dict:
    """Per block: 4 plain forwards on the block alone, then its decode; nothing overlaps."""
    decoder = StreamingVAEDecoder(vae)
    sigmas = config.sigmas().tolist()
    block = config.block_size
    batch, _, frames, height, width = noise.shape
    tokens = (height // 2) * (width // 2)
    start = sync(device)
    first, total = None, 0
    with torch.no_grad():
        for b in range(frames // block):
            x = noise[:, :, b * block : (b + 1) * block]
            for sigma, sigma_next in itertools.pairwise(sigmas):
                timestep = torch.full((batch, block * tokens), sigma * 1000.0, device=device)
                flow = transformer(x.to(torch.bfloat16), timestep, text, return_dict=False)[0].float()
                x = x + (sigma_next - sigma) * flow
            video = decoder.decode(x)
            host = to_host(((video + 1) / 2).permute(0, 2, 1, 3, 4))
            end = sync(device)
            first = first if first is not None else end - start
            total += host.shape[1]
    seconds = sync(device) - start
    return {"frames": total, "seconds": seconds, "fps": total / seconds, "first_frame_s": first}


def causal(pipe: ActionCausalInferencePipeline, noise, text, overlap: bool, device) -> dict:
    """The cached rollout with an action (the adaLN-Zero projection runs and its modulation is added)."""
    actions = {"action_features": torch.ones(noise.shape[0], pipe.action_dim, device=device)}
    start = sync(device)
    first, total = None, 0
    for block in pipe.stream(noise, text, actions, frames_to_cpu=True, overlap_decode=overlap):
        now = time.perf_counter()  # the pipeline hands a block out once its frames are in host memory
        first = first if first is not None else now - start
        total += block.frames.shape[1]
    seconds = sync(device) - start
    return {"frames": total, "seconds": seconds, "fps": total / seconds, "first_frame_s": first}


def components(pipe, transformer, vae, noise, text, config, device, iters) -> dict:
    """Medians of one plain forward (1 block, no cache), one cached forward (full window), one block decode."""
    block = config.block_size
    batch, _, frames, height, width = noise.shape
    tokens = (height // 2) * (width // 2)
    x = noise[:, :, :block].to(torch.bfloat16)
    timestep = torch.full((batch, block * tokens), 750.0, device=device)
    model = pipe.model
    text_kv = model.text_cache(text)
    window = config.window_frames or frames
    table = model.rotary_table(max(window, block), height, width)
    decoder = StreamingVAEDecoder(vae)

    def plain():
        transformer(x, timestep, text, return_dict=False)

    def cached():
        from kinema.video_world_model.causal._attention import RollingKVCache

        cache = RollingKVCache(model.num_layers, tokens, block, window, window)
        cache.context_frames = window - block  # a full window of (uninitialized) context
        cache.allocate(batch, transformer.config.num_attention_heads, transformer.config.attention_head_dim,
                       torch.bfloat16, device)  # fmt: skip
        for buffer in (*cache.k, *cache.v):
            buffer.zero_()
        model(
            x, timestep[:, ::tokens], text_kv, model.rotary(table, slice(window - block, window)), cache=cache
        )

    def decode(decoder=decoder, keep=None):
        decoder.reset()
        decoder.decode(noise[:, :, :1])  # the first chunk, then a steady-state block
        sync(device)
        t0 = time.perf_counter()
        frames = decoder.decode(noise[:, :, 1 : 1 + block])
        seconds = sync(device) - t0
        if keep is not None:
            keep.append(frames)
        return seconds

    out = {}
    with torch.no_grad():
        for name, step in (
            ("diffusers_forward_no_cache_eager_ms", plain),
            ("kinema_cached_forward_full_window_eager_ms", cached),
        ):
            step()
            times = []
            for _ in range(iters):
                t0 = sync(device)
                step()
                times.append(sync(device) - t0)
            out[name] = 1000 * statistics.median(times)
        reference: list = []
        decode(keep=reference)
        out["vae_decode_block_eager_ms"] = 1000 * statistics.median(decode() for _ in range(iters))
        out["vae_decode_fps"] = 4 * block / (out["vae_decode_block_eager_ms"] / 1000)
        # decoder settings, each on its own copy of the VAE (channels-last converts the weights in place)
        out["decode_settings"] = {}
        for name, options in DECODE_SETTINGS.items():
            fast = StreamingVAEDecoder(copy.deepcopy(vae), **options)
            frames: list = []
            decode(fast, keep=frames)
            ms = 1000 * statistics.median(decode(fast) for _ in range(iters))
            out["decode_settings"][name] = {
                **options,
                "block_ms": ms,
                "fps": 4 * block / (ms / 1000),
                "max_abs_diff_vs_frame_by_frame": (frames[0] - reference[0]).abs().max().item(),
            }
            del fast
    return out


# StreamingVAEDecoder settings measured in the components; the fastest drives the fast-decode row
DECODE_SETTINGS = {
    "block_per_call": {"frames_per_call": None, "channels_last": False},
    "frame_by_frame_channels_last": {"frames_per_call": 1, "channels_last": True},
    "block_per_call_channels_last": {"frames_per_call": None, "channels_last": True},
}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--blocks", type=int, default=10, help="blocks per rollout (default 10 = 117 frames)")
    parser.add_argument(
        "--window", type=int, default=21, help="KV-cache window in latent frames (default 21)"
    )
    parser.add_argument("--vae_dtypes", default="fp32,bf16", help="VAE dtypes to measure, comma-separated")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per row (median)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU (checks the script)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 1
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    model_config = WAN_TI2V_5B_SMOKE if args.smoke else WAN_TI2V_5B
    vae_config = TINY_VAE if args.smoke else WAN22_VAE_CONFIG
    height, width = (64, 64) if args.smoke else (480, 832)
    if args.smoke:
        args.blocks, args.window, args.repeats, args.compile, args.vae_dtypes = 3, 6, 1, False, "fp32"
        torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    diffusers_logging.set_verbosity_error()  # the bf16-cast notice: fp32 modules are restored in build_transformer
    torch.manual_seed(0)

    config = CausalRolloutConfig(
        window_frames=args.window, height=height, width=width, num_blocks=args.blocks
    )
    transformer = build_transformer(model_config, device)
    generator = torch.Generator().manual_seed(0)
    shape = config.latent_shape(model_config["in_channels"])  # (1, F, C, h, w)
    noise_bfchw = torch.randn(shape, generator=generator).to(device)
    noise = noise_bfchw.permute(0, 2, 1, 3, 4).contiguous()  # (1, C, F, h, w) for the plain loop
    text = torch.randn(1, 512, model_config["text_dim"], generator=generator).to(device, torch.bfloat16)

    results: dict = {"rows": {}, "components": {}}
    for dtype_name in args.vae_dtypes.split(","):
        vae = build_vae(vae_config, device, DTYPES[dtype_name])
        pipe = ActionCausalInferencePipeline(config, device, generator=transformer, vae=vae, action_dim=512)
        rows = {
            "diffusers_serial": lambda vae=vae: diffusers_serial(
                transformer, vae, noise, text, config, device
            ),
            "causal_eager": lambda pipe=pipe: causal(pipe, noise_bfchw, text, False, device),
        }
        parts = components(pipe, transformer, vae, noise, text, config, device, iters=2 if args.smoke else 10)
        results["components"][f"vae_{dtype_name}"] = parts
        fastest = min(parts["decode_settings"], key=lambda k: parts["decode_settings"][k]["block_ms"])
        if args.compile or args.smoke:
            rows["causal_compiled_overlap"] = lambda pipe=pipe: causal(pipe, noise_bfchw, text, True, device)
            rows["causal_compiled_overlap_fast_decode"] = lambda pipe=pipe: causal(
                pipe, noise_bfchw, text, True, device
            )
        for name, run in rows.items():
            if name == "causal_compiled_overlap" and args.compile:
                pipe.model.compile_blocks()
            if name == "causal_compiled_overlap_fast_decode":  # last: the VAE copy's weights are converted
                pipe.vae = copy.deepcopy(vae)
                options = DECODE_SETTINGS[fastest]
                pipe.configure_decoder(**options)
                print(f"fast decode: {fastest} {options}", flush=True)
            run()  # warm-up (and compilation)
            measured = [run() for _ in range(args.repeats)]
            best = sorted(measured, key=lambda r: r["seconds"])[len(measured) // 2]
            key = f"{name}/vae_{dtype_name}"
            if name == "causal_compiled_overlap_fast_decode":
                best["decode_setting"] = {"name": fastest, **DECODE_SETTINGS[fastest]}
            results["rows"][key] = best
            print(
                f"{key:<40} {best['fps']:7.2f} frames/s   first frames {best['first_frame_s']:.3f} s   "
                f"({best['frames']} frames in {best['seconds']:.3f} s)",
                flush=True,
            )
        baseline = results["rows"][f"diffusers_serial/vae_{dtype_name}"]
        for name in rows:
            row = results["rows"][f"{name}/vae_{dtype_name}"]
            row["speedup_vs_diffusers_serial"] = row["fps"] / baseline["fps"]
            row["goal_fps_met"] = row["fps"] >= GOAL_FPS
            row["goal_first_frame_met"] = row["first_frame_s"] <= GOAL_FIRST_FRAME_S
        del pipe, vae
        if device.type == "cuda":
            torch.cuda.empty_cache()
    results["meta"] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "shape": f"{height}x{width}",
        "blocks": args.blocks,
        "block_size": config.block_size,
        "window_frames": config.window_frames,
        "denoising_steps": list(config.denoising_steps),
        "compile": args.compile,
        "smoke": args.smoke,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "goal": {"fps": GOAL_FPS, "first_frame_s": GOAL_FIRST_FRAME_S},
    }
    text_out = json.dumps(results, indent=2)
    print(text_out)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
