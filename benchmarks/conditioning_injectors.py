"""Cost of each kinema.conditioning injector against one diffusers WanTransformerBlock, same shape, same run.

Shape: Wan2.2-TI2V-5B at 480x832x81 -> 21 latent frames x 390 tokens = 8,190 tokens, hidden 3072, 24 heads,
FFN 14336, 512 text tokens, bf16, batch 1, TI2V per-token timestep modulation. Every number is forward +
backward on a frozen backbone (the step of training an injector: gradients flow to the injector's parameters,
its condition, and through x).

Three measurements per injector:
- GPU kernel time: the profiler's sum of the injector's CUDA kernels per forward + backward (gradients by
  torch.autograd.grad to x, the condition and the parameters, as inside a model), against the same sum for
  the block. This is the cost in a GPU-bound model and the number the goals are judged on.
- in a block: (block, then the injector) minus (block alone). This is the cost a model pays: the injector's
  kernels queue behind the block's, so Python launch overhead hides as it does in a real forward. Block-alone
  and block-plus-injector steps are interleaved and the median difference is reported (drift cancels).
- alone: the injector by itself, where launch overhead of a few small kernels is exposed.

    python benchmarks/conditioning_injectors.py [--iters 30] [--json OUT.json] [--markdown OUT.md]
    python benchmarks/conditioning_injectors.py --profile cross_attn_k4_width3072
    python benchmarks/conditioning_injectors.py --smoke      # tiny CPU shapes: checks the script only

Needs a CUDA GPU and diffusers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from kinema.conditioning import AdaLNZero, FiLM, PerFrameCrossAttention, ResidualInjector, frame_window
from kinema.conditioning.testing import reference_per_frame_attention

SHAPE = {"frames": 21, "hw": 390, "dim": 3072, "heads": 24, "ffn": 14336, "text": 512}
SMOKE = {"frames": 3, "hw": 6, "dim": 256, "heads": 2, "ffn": 512, "text": 8}


def time_ms(step: Callable[[], object], iters: int, warmup: int = 5) -> float:
    """Median milliseconds of ``step`` over ``iters`` runs (CUDA events on a GPU, perf_counter otherwise)."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        if cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            step()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def paired_ms(base: Callable[[], object], step: Callable[[], object], iters: int) -> float:
    """Median of (step - base) over interleaved runs, so clock drift during the run cancels."""
    for _ in range(3):
        base()
        step()
    return statistics.median(time_ms(step, 1, warmup=0) - time_ms(base, 1, warmup=0) for _ in range(iters))


def macs_per_token(s: dict) -> dict[str, int]:
    """Forward multiply-adds per token of a Wan block at this shape, and of one hidden x hidden projection."""
    n, d = s["frames"] * s["hw"], s["dim"]
    self_attn = 4 * d * d + 2 * n * d  # q, k, v, o projections + QK^T and PV over n keys
    cross_attn = 2 * d * d + 2 * s["text"] * d  # q, o on tokens (k, v act on the text tokens) + attention
    return {"block": self_attn + cross_attn + 2 * d * s["ffn"], "hidden_x_hidden_projection": d * d}


def build_injectors(s: dict, x: torch.Tensor, actions: torch.Tensor, temb: torch.Tensor) -> dict:
    """name -> (module, call returning the injector's output, note)."""
    frames, hw, dim, heads = s["frames"], s["hw"], s["dim"], s["heads"]
    n = frames * hw
    cases = {}
    residual = ResidualInjector(dim, dim)
    cases["residual"] = (
        residual,
        lambda x: residual(x, actions, frames),
        "projection on the F condition vectors",
    )
    ada = AdaLNZero(dim, dim)
    cases["adaln_zero"] = (ada, lambda x: ada(actions), "(1, F, 6, D) modulation from F condition vectors")
    ada_temb = AdaLNZero(dim, dim, zero_init=False)

    def ada_into_temb(x):  # per-frame modulation broadcast onto Wan2.2 TI2V's per-token temb (1, N, 6, D)
        mod = ada_temb(actions)  # (1, F, 6, D)
        return (temb.view(1, frames, hw, 6, dim) + mod.unsqueeze(2)).view(1, n, 6, dim)

    cases["adaln_zero_added_to_per_token_temb"] = (ada_temb, ada_into_temb, "includes the (1, N, 6, D) add")
    film = FiLM(dim, dim, channel_dim=-1)
    cases["film_tokens"] = (film, lambda x: film(x, actions[:, 0]), "x + (x * delta + beta), elementwise")
    cross1 = PerFrameCrossAttention(dim, dim, heads)
    cases["cross_attn_k1"] = (cross1, lambda x: cross1(x, actions.unsqueeze(2), frames), "K=1 reduction")
    for width in (dim, min(768, dim)):
        width_heads = heads if width == dim else max(1, width // 128)
        for keys in (2, 3, 4, 8):
            layer = PerFrameCrossAttention(dim, dim, width_heads, attn_dim=width)
            if keys == 3:

                def call(x, layer=layer):
                    window, mask = frame_window(actions, radius=1)  # (1, F, 3, D), (F, 3)
                    return layer(x, window, frames, cond_mask=mask)

                note = f"{width_heads} heads, frame_window(radius=1) + mask"
            else:

                def call(x, layer=layer, keys=keys):
                    return layer(x, actions.unsqueeze(2).expand(-1, -1, keys, -1), frames)  # (1, F, K, D)

                note = f"{width_heads} heads"
            cases[f"cross_attn_k{keys}_width{width}"] = (layer, call, note)
    return cases


def per_frame_add_variants(s: dict, dev: torch.device, iters: int) -> dict[str, float]:
    """fwd+bwd ms of three ways to add a (B, F, D) quantity to each frame's tokens of (B, F*HW, D)."""
    frames, hw, dim = s["frames"], s["hw"], s["dim"]
    x = torch.randn(frames, hw, dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
    delta = torch.randn(frames, 1, dim, device=dev, dtype=torch.bfloat16, requires_grad=True)
    grad = torch.randn(frames, hw, dim, device=dev, dtype=torch.bfloat16)
    ones = torch.ones(frames, hw, 1, device=dev, dtype=torch.bfloat16)
    variants = {
        "broadcast_add": lambda: x + delta,
        "baddbmm_ones_column": lambda: torch.baddbmm(x, ones, delta),
        "expand_contiguous_add": lambda: x + delta.expand(-1, hw, -1).contiguous(),
    }
    out = {}
    for name, fn in variants.items():

        def step(fn=fn):
            x.grad = delta.grad = None
            fn().backward(grad)

        out[name] = time_ms(step, iters)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--iters", type=int, default=40)
    parser.add_argument("--json", help="write the results as JSON here")
    parser.add_argument("--markdown", help="write the results table as markdown here")
    parser.add_argument(
        "--profile", metavar="NAME", help="print the CUDA kernel table of one injector and exit"
    )
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU: checks the script only")
    args = parser.parse_args()
    s = SMOKE if args.smoke else SHAPE
    if args.smoke:
        args.iters = 1
    elif not torch.cuda.is_available():
        print("this benchmark needs a CUDA GPU (or --smoke)", file=sys.stderr)
        return 1
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed, WanTransformerBlock

    torch.manual_seed(0)
    dev, dt = torch.device("cuda" if torch.cuda.is_available() else "cpu"), torch.bfloat16
    frames, hw, dim, heads = s["frames"], s["hw"], s["dim"], s["heads"]
    n = frames * hw
    x = torch.randn(1, n, dim, device=dev, dtype=dt, requires_grad=True)
    grad_out = torch.randn(1, n, dim, device=dev, dtype=dt)
    actions = torch.randn(1, frames, dim, device=dev, dtype=dt, requires_grad=True)

    block = WanTransformerBlock(
        dim, s["ffn"], heads, qk_norm="rms_norm_across_heads", cross_attn_norm=True, eps=1e-6
    )
    block = block.to(dev, dt).requires_grad_(False)
    rope = WanRotaryPosEmbed(dim // heads, (1, 2, 2), 1024).to(dev)
    freqs = rope(torch.empty(1, 48, frames, 2, 2 * hw, device=dev))  # an (F, 1, HW) grid after 2x2 patches
    text = torch.randn(1, s["text"], dim, device=dev, dtype=dt)
    temb = torch.randn(1, n, 6, dim, device=dev, dtype=dt) * 0.1
    cases = build_injectors(s, x, actions, temb)

    def backward(out: torch.Tensor) -> None:
        out.backward(grad_out if out.shape == grad_out.shape else torch.ones_like(out))

    def step_for(
        module: torch.nn.Module | None, call: Callable | None, with_block: bool
    ) -> Callable[[], None]:
        def step():
            x.grad = actions.grad = None
            if module is not None:
                module.zero_grad(set_to_none=True)
            h = block(x, text, temb, freqs) if with_block else x
            if call is None:
                backward(h)
                return
            out = call(h)
            if out.shape == h.shape:
                backward(out)
            else:  # adaLN outputs a modulation, not tokens: backpropagate both
                torch.autograd.backward([h, out], [grad_out, torch.ones_like(out)])

        return step

    for module, _, _ in cases.values():
        module.to(dev, dt)

    def kernel_ms(module: torch.nn.Module | None, call: Callable | None) -> float:
        """GPU kernel time per step from the profiler: forward + torch.autograd.grad to x, the condition and the
        parameters (no .grad accumulation, so a pass-through gradient costs no copy, as inside a model)."""

        def step():
            if call is None:
                out, inputs = block(x, text, temb, freqs), [x]
            else:
                out, inputs = call(x), [x, actions, *module.parameters()]
            grad = grad_out if out.shape == grad_out.shape else torch.ones_like(out)
            torch.autograd.grad(out, inputs, grad, allow_unused=True)

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        return sum(e.self_device_time_total for e in prof.key_averages()) / 5 / 1e3

    if args.profile:
        module, call, _ = cases[args.profile]
        step = step_for(module, call, with_block=False)
        for _ in range(3):
            step()
        activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=activities, record_shapes=True) as prof:
            for _ in range(5):
                step()
            torch.cuda.synchronize()
        table = prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cuda_time_total", row_limit=40
        )
        print(table)
        return 0

    block_step = step_for(None, None, with_block=True)
    block_ms = time_ms(block_step, args.iters)
    with torch.no_grad():
        block_fwd_ms = time_ms(lambda: block(x, text, temb, freqs), args.iters)
    block_kernel_ms = kernel_ms(None, None) if torch.cuda.is_available() else float("nan")
    results = {}
    for name, (module, call, note) in cases.items():
        in_block = paired_ms(block_step, step_for(module, call, with_block=True), args.iters)
        alone = time_ms(step_for(module, call, with_block=False), args.iters)
        kernels = kernel_ms(module, call) if torch.cuda.is_available() else float("nan")
        results[name] = {
            "kernel_ms": kernels,
            "kernel_ratio": kernels / block_kernel_ms,
            "in_block_ms": in_block,
            "alone_ms": alone,
            "ratio": in_block / block_ms,
            "note": note,
        }

    add_variants = per_frame_add_variants(s, dev, args.iters)
    print("per-frame add, fwd+bwd ms:", json.dumps(add_variants))
    compiled_rows = {}
    if torch.cuda.is_available():
        for name in ("cross_attn_k4_width3072", "cross_attn_k4_width768", "cross_attn_k8_width3072"):
            module, call, _ = cases[name]
            compiled = torch.compile(call, fullgraph=True)
            in_block = paired_ms(block_step, step_for(module, compiled, with_block=True), args.iters)
            compiled_rows[name + "_compiled"] = {"in_block_ms": in_block, "ratio": in_block / block_ms}

    with torch.no_grad():  # correctness on the GPU: the fast K > 1 path against plain multi-head attention
        layer = PerFrameCrossAttention(dim, dim, heads, initial_scale=1.0).to(dev, dt)
        cond = torch.randn(1, frames, 4, dim, device=dev, dtype=dt)
        xs = x.detach()
        fast = layer(xs, cond, frames).float() - xs.float()
        slow = reference_per_frame_attention(xs, cond, frames, layer, 1.0).float() - xs.float()
        rel = ((fast - slow).norm() / slow.norm()).item()

    meta = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "shape": f"1 x {n} tokens ({frames} frames x {hw}) x {dim}, {heads} heads, bf16",
        "macs_per_token": macs_per_token(s),
        "block_fwd_bwd_ms": block_ms,
        "block_fwd_ms": block_fwd_ms,
        "k4_relative_error_vs_plain_attention": rel,
        "per_frame_add_fwd_bwd_ms": add_variants,
    }
    print(json.dumps(meta))
    nan = float("nan")
    # (what, GPU kernel ms, kernel share of the block, in-block wall ms, in-block share, alone wall ms, note)
    rows = [("WanTransformerBlock (frozen weights)", block_kernel_ms, 1.0, block_ms, 1.0, nan, "baseline")]
    rows += [
        (k, r["kernel_ms"], r["kernel_ratio"], r["in_block_ms"], r["ratio"], r["alone_ms"], r["note"])
        for k, r in results.items()
    ]
    rows += [
        (k, nan, nan, r["in_block_ms"], r["ratio"], nan, "torch.compile(fullgraph=True)")
        for k, r in compiled_rows.items()
    ]

    def cell(value: float, fmt: str) -> str:
        return "" if value != value else format(value, fmt)

    header = (
        f"{'what':<40} {'kernel ms':>9} {'share':>7} {'in-block ms':>11} {'share':>7} {'alone ms':>8}  note"
    )
    lines = [header, "-" * len(header)]
    for what, k_ms, k_share, b_ms, b_share, a_ms, note in rows:
        lines.append(
            f"{what:<40} {cell(k_ms, '.3f'):>9} {cell(k_share, '.2%'):>7} {cell(b_ms, '.3f'):>11} "
            f"{cell(b_share, '.2%'):>7} {cell(a_ms, '.3f'):>8}  {note}"
        )
    print("\n".join(lines))
    print(f"K=4 fast path vs plain multi-head attention, relative error of the attention output: {rel:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "results": results | compiled_rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(
                "| what | GPU kernel ms | of the block | wall ms in a block | of the block | wall ms alone | note |\n"
                "|---|---:|---:|---:|---:|---:|---|\n"
            )
            for what, k_ms, k_share, b_ms, b_share, a_ms, note in rows:
                f.write(
                    f"| {what} | {cell(k_ms, '.3f')} | {cell(k_share, '.2%')} | {cell(b_ms, '.3f')} | "
                    f"{cell(b_share, '.2%')} | {cell(a_ms, '.3f')} | {note} |\n"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
