"""Benchmark: the hybrid's (variant C) chunk-query latency at batch 1 with 10 DDIM steps and its training
throughput, with ACT's in the same run as the baseline.

Synthetic inputs at the ALOHA shape (one 480x640 camera, 14-D state and actions, chunk 100, dim 512, ResNet18),
random weights, no data or simulator needed:

- query: one chunk at batch 1 in eval mode, model only, bf16 autocast on a GPU: the hybrid's sample (z from the
  learned prior, 10 DDIM steps; the observation encoder runs once, the denoiser 10 times) and ACT's predict;
  eager, then compiled with CUDA graphs (the hybrid's ``compile_inference("reduce-overhead")``: with DDIM the
  whole query, encoder, latent and every reverse step, is one graph; ACT's predict whole); ratio hybrid / ACT.
  Goal (issue 8): at most 10 ms per chunk on an H100.
- train: samples/s of a full optimizer step (forward, loss, backward, AdamW) at --batch-size for both.

Prints one JSON line; ``--json FILE`` also writes it. Timing is ``_shapes.timed`` (median after warm-up, CUDA
synchronized).

    python benchmarks/hybrid_latency.py --json hybrid_latency.json     # GPU machine
    python benchmarks/hybrid_latency.py --query-only --json q.json     # the query rows only
    python benchmarks/hybrid_latency.py --tiny --iters 2               # CPU smoke run: small images and widths
"""

from __future__ import annotations

import argparse
import datetime
import json
import math

import torch
from _shapes import timed

from kinema.act_policy import ACT, ACTConfig
from kinema.hybrid_policy import HybridConfig, HybridPolicyModel

TINY = {"dim_model": 64, "n_heads": 4, "dim_feedforward": 128, "backbone_width": 16}


def _batch(size: int, height: int, width: int, chunk: int, device: torch.device) -> dict:
    return {
        "image": torch.randint(0, 256, (size, 1, height, width, 3), dtype=torch.uint8, device=device),
        "qpos": torch.randn(size, 14, device=device),
        "action": torch.rand(size, chunk, 14, device=device) * 2 - 1,
        "is_pad": torch.zeros(size, chunk, dtype=torch.bool, device=device),
    }


def _train_row(model, batch: dict, args, device: torch.device) -> dict:
    """ms per optimizer step (forward, loss, backward, AdamW) at --batch-size, and samples/s."""
    hybrid = isinstance(model, HybridPolicyModel)
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-4, 1e-4, 1e-4), fused=device.type == "cuda")
    model.train()

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, _ = model.compute_loss(batch, 0) if hybrid else model.compute_loss(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step_ms = timed(step, args.iters, args.warmup)[0] * 1000
    return {
        "train_step_ms": round(step_ms, 3),
        "train_samples_per_second": round(args.batch_size / step_ms * 1000, 1),
    }


def measure(name: str, model, args, device: torch.device) -> dict:
    """train samples/s (unless --query-only) and batch-1 query ms of ``model`` (an ACT or a HybridPolicyModel)."""
    height, width = args.image_size
    autocast = device.type == "cuda"
    hybrid = isinstance(model, HybridPolicyModel)
    batch = _batch(args.batch_size, height, width, model.config.chunk_size, device)
    train = (
        _train_row(model, batch, args, device)
        if args.train
        else {"train_step_ms": None, "train_samples_per_second": None}
    )
    model.eval()
    query = {k: v[:1] for k, v in batch.items() if k in ("image", "qpos")}
    generator = torch.Generator(device=device).manual_seed(0)

    @torch.no_grad()
    def predict():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            if hybrid:
                return model.sample(query, num_inference_steps=args.steps, generator=generator)
            return model.predict(query)

    query_seconds, peak_gib = timed(predict, args.iters * 4, args.warmup)
    query_ms = query_seconds * 1000
    compiled = {}
    if args.compile:  # CUDA graphs: the hybrid's compile_inference, ACT's whole predict
        try:
            if hybrid:
                model.compile_inference("reduce-overhead")
                predict_compiled = predict
            else:
                predict_compiled = torch.compile(predict, mode="reduce-overhead", dynamic=False)
            compiled["query_ms_batch_1_compiled"] = round(
                timed(predict_compiled, args.iters * 4, max(args.warmup, 3))[0] * 1000, 3
            )
        except Exception as error:  # keep the eager numbers when compilation fails
            compiled["compile_error"] = f"{type(error).__name__}: {str(error)[:300]}"
    return {
        "model": name,
        **train,
        "query_ms_batch_1": round(query_ms, 3),
        "query_peak_gib": round(peak_gib, 3) if math.isfinite(peak_gib) else None,  # None without CUDA
        **compiled,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per chunk (default 10)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument(
        "--tiny", action="store_true", help="CPU smoke run: 96x128 images, narrow models, batch 2"
    )
    parser.add_argument(
        "--no-compile", dest="compile", action="store_false", help="skip the CUDA-graph query rows"
    )
    parser.add_argument(
        "--query-only", dest="train", action="store_false", help="skip the training rows (a short GPU call)"
    )
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    sizes = {}
    if args.tiny:
        args.image_size, args.batch_size, args.warmup, args.compile = (
            [96, 128],
            min(args.batch_size, 2),
            min(args.warmup, 1),
            False,
        )
        sizes = TINY
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    shape = {"state_dim": 14, "action_dim": 14, "chunk_size": 100, "n_action_steps": 100, **sizes}
    hybrid = HybridPolicyModel(HybridConfig(variant="C", num_inference_steps=args.steps, **shape)).to(device)
    act = ACT(ACTConfig(**shape)).to(device)
    results = {}
    for key, name, model in (("hybrid_C", "hybrid C", hybrid), ("act", "ACT", act)):
        results[key] = measure(name, model, args, device)
        print(json.dumps(results[key]), flush=True)  # each row as soon as it exists
    report = {
        "benchmark": "hybrid_latency",
        "batch_size": args.batch_size,
        "image_size": list(args.image_size),
        "ddim_steps": args.steps,
        "tiny": args.tiny,
        **results,
        "ratios": {
            "query_ms_hybrid_over_act": round(
                results["hybrid_C"]["query_ms_batch_1"] / results["act"]["query_ms_batch_1"], 3
            ),
            "train_samples_per_second_hybrid_over_act": round(
                results["hybrid_C"]["train_samples_per_second"] / results["act"]["train_samples_per_second"],
                3,
            )
            if args.train
            else None,
        },
        "goal_query_ms_batch_1": 10.0,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    line = json.dumps(report)
    print(line)
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(line + "\n")


if __name__ == "__main__":
    main()
