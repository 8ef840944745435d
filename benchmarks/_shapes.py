"""What the GPU benchmarks share: the Wan2.2-TI2V-5B transformer shape, random models built the way
``from_pretrained(torch_dtype=bf16)`` leaves them, and a timer. Benchmarks run as scripts from the repo root
(``python3 benchmarks/NAME.py``), so this module is importable as ``_shapes``."""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Callable

import torch

WAN_TI2V_5B = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 24,
    "attention_head_dim": 128,
    "in_channels": 48,
    "out_channels": 48,
    "text_dim": 4096,
    "freq_dim": 256,
    "ffn_dim": 14336,
    "num_layers": 30,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
}
WAN_TI2V_5B_SMOKE = WAN_TI2V_5B | {  # the same code path at tiny size, for --smoke runs on a CPU
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 16,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
}


def random_model(cls, config: dict, device: torch.device, dtype: torch.dtype):
    """A randomly initialized diffusers model in ``dtype``, with the modules diffusers keeps in fp32 (norms,
    time embedder, scale-shift tables, rope tables) in fp32, frozen, in eval mode."""
    with device, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bf16 cast warning: the fp32 modules are restored below
        model = cls(**config).to(dtype)
    keep = getattr(cls, "_keep_in_fp32_modules", None) or []
    for name, parameter in model.named_parameters():
        if any(part in keep for part in name.split(".")):
            parameter.data = parameter.data.float()
    if hasattr(model, "rope"):
        model.rope.float()
    return model.eval().requires_grad_(False)


def timed(step: Callable[[], object], iters: int, warmup: int = 2) -> tuple[float, float]:
    """(median seconds, peak GiB allocated; NaN without CUDA) of ``step`` after ``warmup`` runs."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"))
