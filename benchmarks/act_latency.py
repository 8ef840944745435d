"""Benchmark: ACT training-step throughput and chunk-query latency, kinema vs LeRobot's ACT in the same run.

Synthetic inputs at the ACT shape (one 480x640 camera, 14-D state and actions, chunk 100, dim 512, ResNet18),
random weights, no data or simulator needed:

- train: samples/s of a full optimizer step (forward, loss, backward, AdamW) at --batch-size, bf16 autocast on a
  GPU, median over --iters steps after warm-up; kinema eager, kinema torch.compile, and LeRobot's ACTPolicy
  (``lerobot.policies.act``) when it is importable (its forward syncs once per step for its loss dict, as in
  its own training loop);
- query: one chunk at batch 1 in eval mode, model only: kinema eager fp32, eager bf16,
  torch.compile(mode="reduce-overhead") bf16 (CUDA graphs), and LeRobot's ``predict_action_chunk`` (fp32, bf16).

Prints one JSON line; ``--json FILE`` also writes it. Ratios are kinema / LeRobot (throughput) and LeRobot /
kinema (latency), so > 1 means kinema is faster.

    python benchmarks/act_latency.py --json act_latency.json              # GPU machine
    python benchmarks/act_latency.py --batch-size 2 --image-size 96 128 --iters 3   # CPU smoke run

LeRobot 0.4.x needs torch < 2.11 and torchvision; where it cannot be imported, its entries say why.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import time

import torch

from kinema.act_policy import ACT, ACTConfig


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median_ms(fn, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync()
        started = time.perf_counter()
        fn()
        _sync()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def kinema_numbers(args, device: torch.device) -> dict:
    height, width = args.image_size
    config = ACTConfig(chunk_size=100, n_action_steps=100)
    autocast = device.type == "cuda"
    out = {}
    batch = {
        "image": torch.randint(
            0, 256, (args.batch_size, 1, height, width, 3), dtype=torch.uint8, device=device
        ),
        "qpos": torch.randn(args.batch_size, 14, device=device),
        "action": torch.randn(args.batch_size, 100, 14, device=device),
        "is_pad": torch.zeros(args.batch_size, 100, dtype=torch.bool, device=device),
    }
    for name, compiled in (("train_eager", False), ("train_compiled", True)):
        if compiled and args.skip_compile:
            continue
        torch.manual_seed(0)
        model = ACT(config).to(device).train()
        model.backbone.to(memory_format=torch.channels_last)
        optimizer = torch.optim.AdamW(model.parameter_groups(1e-5, 1e-5, 1e-4), fused=device.type == "cuda")
        loss_fn = torch.compile(model.compute_loss) if compiled else model.compute_loss

        def step(loss_fn=loss_fn, optimizer=optimizer):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss, _ = loss_fn(batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        ms = _median_ms(step, args.iters, args.warmup)
        out[name] = {"step_ms": round(ms, 3), "samples_per_second": round(args.batch_size / ms * 1000, 1)}
    model = ACT(config).to(device).eval()
    query = {k: v[:1] for k, v in batch.items() if k in ("image", "qpos")}
    for name, use_bf16, compiled in (
        ("query_eager_fp32", False, False),
        ("query_eager_bf16", True, False),
        ("query_compiled_reduce_overhead_bf16", True, True),
    ):
        if compiled and args.skip_compile:
            continue

        def predict(batch, use_bf16=use_bf16):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16 and autocast):
                return model.predict(batch)

        fn = torch.compile(predict, mode="reduce-overhead", dynamic=False) if compiled else predict
        out[name] = {"ms": round(_median_ms(lambda fn=fn: fn(query), args.iters * 4, args.warmup), 3)}
    return out


def lerobot_numbers(args, device: torch.device) -> dict:
    try:
        from lerobot.configs.types import FeatureType, PolicyFeature
        from lerobot.policies.act.configuration_act import ACTConfig as LeRobotACTConfig
        from lerobot.policies.act.modeling_act import ACTPolicy as LeRobotACTPolicy
    except Exception as error:  # not installed, or incompatible with this torch
        return {"error": f"lerobot not importable: {type(error).__name__}: {error}"}
    height, width = args.image_size
    config = LeRobotACTConfig(
        input_features={
            "observation.state": PolicyFeature(type=FeatureType.STATE, shape=(14,)),
            "observation.images.top": PolicyFeature(type=FeatureType.VISUAL, shape=(3, height, width)),
        },
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(14,))},
        pretrained_backbone_weights=None,  # no download; kinema's side is randomly initialized too
        chunk_size=100,
        n_action_steps=100,
        device=device.type,
    )
    autocast = device.type == "cuda"
    torch.manual_seed(0)
    policy = LeRobotACTPolicy(config).to(device).train()
    optimizer = torch.optim.AdamW(policy.get_optim_params(), lr=1e-5, weight_decay=1e-4)
    batch = {
        "observation.state": torch.randn(args.batch_size, 14, device=device),
        "observation.images.top": torch.rand(args.batch_size, 3, height, width, device=device),
        "action": torch.randn(args.batch_size, 100, 14, device=device),
        "action_is_pad": torch.zeros(args.batch_size, 100, dtype=torch.bool, device=device),
    }

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, _ = policy.forward(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ms = _median_ms(step, args.iters, args.warmup)
    out = {
        "train_eager": {"step_ms": round(ms, 3), "samples_per_second": round(args.batch_size / ms * 1000, 1)}
    }
    policy.eval()
    query = {k: v[:1] for k, v in batch.items() if k.startswith("observation")}
    for name, use_bf16 in (("query_eager_fp32", False), ("query_eager_bf16", True)):

        def predict(use_bf16=use_bf16):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16 and autocast):
                return policy.predict_action_chunk(query)

        out[name] = {"ms": round(_median_ms(predict, args.iters * 4, args.warmup), 3)}
    import lerobot

    out["version"] = getattr(lerobot, "__version__", "?")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--json", help="also write the JSON here")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    kinema = kinema_numbers(args, device)
    lerobot = lerobot_numbers(args, device)
    ratios = {}
    if "error" not in lerobot:
        ratios["train_samples_per_second_kinema_eager_over_lerobot"] = round(
            kinema["train_eager"]["samples_per_second"] / lerobot["train_eager"]["samples_per_second"], 3
        )
        for name in ("query_eager_fp32", "query_eager_bf16"):
            ratios[f"{name}_lerobot_over_kinema"] = round(lerobot[name]["ms"] / kinema[name]["ms"], 3)
    report = {
        "benchmark": "act_latency",
        "batch_size": args.batch_size,
        "image_size": list(args.image_size),
        "kinema": kinema,
        "lerobot": lerobot,
        "ratios": ratios,
        "goal_query_ms_batch_1": 3.0,
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
