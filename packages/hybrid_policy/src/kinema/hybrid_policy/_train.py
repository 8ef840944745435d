"""The hybrid's training: :class:`TrainConfig` (Diffusion Policy's defaults) and :func:`train`, which runs the
loop it shares with ACT (``kinema.act_policy.run_training``: accelerate, episodes in memory, validation,
crash-safe checkpoints and exact resume, step / time / session limits) with the hybrid's loss, validation and
EMA weights (diffusers' EMAModel).

Output folder::

    hybrid_config.json, model.safetensors, policy_stats.json, policy.json   the latest checkpoint, EMA weights
    train_config.json                                                      the TrainConfig and HybridConfig
    training_log.jsonl                                                     losses, beta, lr, samples/s, val
    train_result.json                                                      written when a session ends
    checkpoints/step-XXXXXXXXX/{model.safetensors, ema.pt, optimizer.pt, scheduler.pt, rng.pt,
                                hybrid_config.json, trainer_state.json}   the training state, for resume

A step folder is written under a temporary name and renamed when complete; top-level files are replaced
atomically; ``.pt`` files are read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kinema.act_policy import LoopHooks, TrainResult, make_ema, run_training
from kinema.act_policy import TrainConfig as ACTTrainConfig

from ._checkpoint import load_weights, save_hybrid, save_weights
from ._config import HybridConfig
from ._data import chunk_batch
from ._model import HybridPolicyModel

# Fields that change how chunks are sampled or executed, not the weights: a run may resume with others.
NOT_STRUCTURAL = ("notes", "pretrained_backbone", "n_action_steps", "temporal_ensemble_coeff", "sampler",
                  "num_inference_steps", "z_temperature")  # fmt: skip


def train_device(device: str | None) -> str:
    """A policy device ("cpu", "cuda", "cuda:1", None) as ``TrainConfig.device``: None -> "auto", "cuda:N" ->
    "cuda" (training takes its process's GPU; choose one with CUDA_VISIBLE_DEVICES)."""
    if device is None:
        return "auto"
    return "cuda" if str(device).startswith("cuda") else str(device)


@dataclass
class TrainConfig(ACTTrainConfig):
    """How to train a :class:`HybridConfig` model: kinema.act_policy's TrainConfig (every field and check, the
    schedule and EMA settings included) with defaults from Diffusion Policy (AdamW lr 1e-4, 500 warm-up steps,
    cosine decay, batch 64, EMA weights with power 0.75 and max decay 0.9999) and ACT (weight decay 1e-4,
    gradient clip 10).

    - ``data``: a folder of policy episodes or a list of files; ``val_data`` (optional) the validation episodes,
      else ``val_fraction`` of ``data`` (split by episode, seeded) is held out.
    - ``max_steps`` and/or ``max_minutes`` (training time summed over sessions) end the run; ``session_minutes``
      ends this process early with a checkpoint (``complete`` False), to be continued with ``resume``.
    - ``ema`` (on here, off for ACT's own defaults): the checkpoint at the top of ``out_dir`` holds the EMA
      weights (see kinema.act_policy's TrainConfig for the decay).
    - ``channels_last`` is off here (on for ACT): the hybrid's CPU results in the README were measured without it.
    """

    batch_size: int = 64
    lr: float = 1e-4
    lr_backbone: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_steps: int = 500
    val_samples: int = 256
    channels_last: bool = False
    wandb_project: str = "kinema-hybrid"
    ema: bool = True


@torch.no_grad()
def validate(
    model: HybridPolicyModel, memory, indices: torch.Tensor, batch_size: int, device, autocast, step: int
) -> dict[str, float]:
    """Validation in eval mode with fixed noise (the same numbers for the same weights): the training terms, and
    ``l1`` / ``l2`` of one sampled chunk (z from the prior) against the ground truth, over real steps."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    sums: dict[str, float] = {}
    count = 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):  # training's RNG untouched
        torch.manual_seed(1234)
        generator = torch.Generator(device=device).manual_seed(1234)
        for start in range(0, len(indices), batch_size):
            batch = chunk_batch(memory, indices[start : start + batch_size], model.config.chunk_size, device)
            with autocast():
                _, terms = model.compute_loss(batch, step)
                chunk = model.predict(batch, generator=generator)
            keep = ~batch["is_pad"]
            error = (chunk.float() - batch["action"].float())[keep]  # (real steps, A)
            terms["l1"] = error.abs().mean()
            terms["l2"] = error.norm(dim=-1).mean()
            n = len(batch["qpos"])
            for key, value in terms.items():
                sums[key] = sums.get(key, 0.0) + float(value) * n
            count += n
    model.train(was_training)
    return {f"val/{k}": v / max(count, 1) for k, v in sums.items() if k != "beta"}


def train(model_config: HybridConfig, config: TrainConfig) -> TrainResult:
    """Trains the hybrid on the episodes of ``config.data``; see :class:`TrainConfig` and the module docstring.

    Raises before any training: ``RobotDataError`` for data that does not fit the model config,
    ``FileExistsError`` when ``out_dir`` holds a run and ``resume`` is False, ``ValueError`` when resuming a run
    made with another config (another variant included) or other episodes.
    """
    hooks = LoopHooks(
        name=f"hybrid {model_config.variant}",
        config_type=HybridConfig,
        not_structural=NOT_STRUCTURAL,
        build=HybridPolicyModel,
        loss=lambda model, batch, step: model.compute_loss(batch, step),
        make_batch=chunk_batch,
        validate=validate,
        export=save_hybrid,
        save_weights=save_weights,
        load_weights=load_weights,
        averager=(lambda model: make_ema(model, config)) if config.ema else None,
        prepare=(lambda model: model.observation.backbone.to(memory_format=torch.channels_last))
        if config.channels_last
        else None,
    )
    return run_training(model_config, config, hooks)
