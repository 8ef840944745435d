"""Honest reconstruction metrics of a generated video against its target, inside and outside the hand mask.

PSNR = 10 log10(1 / MSE) over the pixels of a region (values in [0, 1]); SSIM from torchmetrics' SSIM map
(Gaussian window 11, sigma 1.5), averaged over the pixels of a region. Regions: ``hand`` (mask True), ``context``
(mask False) and ``all``. A region with no pixel gets None, never a made-up number.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.image import structural_similarity_index_measure


def masked_video_metrics(
    generated: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> dict[str, float | None]:
    """generated, target (T, 3, H, W) float in [0, 1]; mask (T, 1, H, W) bool -> psnr_* and ssim_* per region."""
    if generated.shape != target.shape:
        raise ValueError(
            f"generated: shape {tuple(generated.shape)} differs from target {tuple(target.shape)}"
        )
    if mask.shape[0] != target.shape[0] or mask.shape[2:] != target.shape[2:]:
        raise ValueError(
            f"mask: expected (T, 1, H, W) matching {tuple(target.shape)}, got {tuple(mask.shape)}"
        )
    generated, target = generated.float().clamp(0, 1), target.float().clamp(0, 1)
    squared = (generated - target).pow(2).mean(dim=1, keepdim=True)  # (T, 1, H, W)
    _, ssim_map = structural_similarity_index_measure(
        generated, target, data_range=1.0, return_full_image=True, reduction="none"
    )
    ssim_map = ssim_map.mean(dim=1, keepdim=True)  # (T, 1, H, W)
    regions = {"all": torch.ones_like(mask, dtype=torch.bool), "hand": mask.bool(), "context": ~mask.bool()}
    out: dict[str, float | None] = {}
    for name, region in regions.items():
        count = int(region.sum())
        if count == 0:
            out[f"psnr_{name}"] = out[f"ssim_{name}"] = None
            continue
        mse = float(squared[region].mean())
        out[f"psnr_{name}"] = float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)
        out[f"ssim_{name}"] = float(ssim_map[region].mean())
    return out
