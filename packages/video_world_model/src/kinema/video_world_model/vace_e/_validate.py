"""Validation of a VACE-E model: generate held-out episodes, write the videos and honest metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from kinema.robot_data import collate_vace_e

from ..pipelines._grid import write_grid
from ._config import VaceEConfig
from ._inputs import to_unit_range
from ._metrics import masked_video_metrics
from ._model import VaceETransformer
from ._pipeline import VaceEPipeline
from ._train import episode_dataset

METRICS = ("psnr_all", "psnr_hand", "psnr_context", "ssim_all", "ssim_hand", "ssim_context")


def validate(
    model: VaceETransformer,
    inputs,
    config: VaceEConfig,
    out_dir: Path,
    episodes: int | None = None,
    base_path: str | None = None,
    num_inference_steps: int | None = None,
    seed: int = 0,
    guidance_scale: float = 5.0,
) -> list[dict]:
    """Generates up to ``episodes`` episodes of ``base_path`` (default the config's validation set) with
    classifier-free guidance ``guidance_scale`` (1: none); writes ``<episode>.mp4`` (target | generated),
    ``metrics.json`` and ``metrics.md`` in ``out_dir``. Returns the rows."""
    dataset = episode_dataset(config, base_path or config.validation_base_path)
    pipe_parts = inputs.pipe
    pipe = VaceEPipeline(
        pipe_parts.tokenizer, pipe_parts.text_encoder, pipe_parts.vae, pipe_parts.scheduler,
        transformer=model.vace, vace_e_model=model, clip=inputs.clip, clip_processor=inputs.clip_processor,
        use_reference_image=inputs.use_reference,
    )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = len(dataset) if episodes is None else min(episodes, len(dataset))
    rows = []
    was_training = model.training
    model.eval()
    try:
        for index in tqdm(range(count), desc="validate"):
            sample = dataset[index]
            batch = collate_vace_e([sample])
            generator = torch.Generator().manual_seed(seed + index)
            reference = batch["embodiment_image"][0] if bool(batch["has_embodiment_image"][0]) else None
            hand = None if int(batch["hand_motion_lengths"][0]) == 0 else batch["hand_motion"][0]
            objects = (
                None if int(batch["object_trajectory_lengths"][0]) == 0 else batch["object_trajectory"][0]
            )
            frames = pipe(
                sample["prompt"],
                batch["control_video"][0],
                batch["mask"][0],
                reference,
                hand,
                objects,
                num_inference_steps=num_inference_steps or config.validation_inference_steps,
                guidance_scale=guidance_scale,
                generator=generator,
            ).frames[0]  # fmt: skip  (T, H, W, 3) in [0, 1]
            target = ((to_unit_range(batch["video"][0]) + 1) / 2).permute(1, 0, 2, 3)  # (T, 3, H, W)
            generated = torch.from_numpy(frames).permute(0, 3, 1, 2)
            metrics = masked_video_metrics(generated, target, batch["mask"][0].permute(1, 0, 2, 3))
            name = f"{index:04d}_{Path(sample['episode']).name}"
            write_grid(
                out_dir / f"{name}.mp4",
                [target.permute(0, 2, 3, 1).numpy(), frames],
                ["target", "generated"],
                2,
                16,
            )
            rows.append(
                {"episode": str(sample["episode"]), "task": sample["task"], "video": f"{name}.mp4"} | metrics
            )
    finally:
        model.train(was_training)
    summary = {m: _mean([r[m] for r in rows]) for m in METRICS}
    (out_dir / "metrics.json").write_text(json.dumps({"episodes": rows, "mean": summary}, indent=2))
    lines = ["| episode | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
    for r in rows:
        lines.append(f"| {Path(r['episode']).name} | " + " | ".join(_cell(r[m]) for m in METRICS) + " |")
    lines.append("| **mean** | " + " | ".join(_cell(summary[m]) for m in METRICS) + " |")
    (out_dir / "metrics.md").write_text("\n".join(lines) + "\n")
    return rows


def _mean(values) -> float | None:
    finite = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"
