"""ACT's training: :class:`TrainConfig` (ACT's defaults) and :func:`train`, which runs the loop shared with
kinema.hybrid_policy (:func:`kinema.act_policy._loop.run_training`: accelerate, in-memory data, validation,
crash-safe checkpoints and exact resume, step / time / session limits) with ACT's loss and validation.

Output folder::

    act_config.json, model.safetensors, policy_stats.json, policy.json   the latest checkpoint (load_act / eval)
    train_config.json                                                   the TrainConfig of the run
    training_log.jsonl                                                  losses, learning rates, samples/s, val
    train_result.json                                                   written when a session ends
    checkpoints/step-XXXXXXXXX/{model.safetensors, act_config.json,     the training state, for --resume
                                optimizer.pt, scheduler.pt, rng.pt, trainer_state.json}

A step folder is written under a temporary name and renamed when complete, so a crash never leaves a partial
checkpoint that --resume would pick; the top-level files are each replaced atomically.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch

from ._checkpoint import NOT_STRUCTURAL, load_weights, save_act, save_weights
from ._config import ACTConfig
from ._config_base import FieldChecks
from ._loop import (  # noqa: F401  (episode_files, latest_checkpoint, lr_factor: part of this module's interface)
    LoopHooks,
    TrainResult,
    episode_files,
    latest_checkpoint,
    lr_factor,
    make_ema,
    run_training,
)
from ._losses import masked_l1
from ._model import ACT

LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
DATA_DEVICES = ("auto", "device", "cpu")
TRAIN_DEVICES = ("auto", "cuda", "cpu")


@dataclass
class TrainConfig(FieldChecks):
    """How to train (the model is an :class:`ACTConfig`). Defaults are ACT's: AdamW, lr 1e-5 for everything,
    weight decay 1e-4, batch 8, gradient clipping at 10 (LeRobot), constant learning rate, no warm-up, no weight
    averaging.

    - ``data``: a folder of policy episodes (``*.hdf5``) or a list of files; ``out_dir``: the run's folder.
    - ``max_steps`` and/or ``max_minutes`` (training time, summed over resumed sessions) end the run;
      ``session_minutes`` ends this process early with a checkpoint (``complete`` False), to be continued with
      ``resume`` (for machines that lend time in pieces).
    - ``val_fraction`` of the episodes (split by episode, seeded) are held out for the validation loss, or
      ``val_data`` (a folder or list of files) gives the held-out episodes.
    - ``data_device``: where decoded images live ("auto": the GPU when they fit).
    - ``device``: where training runs: "auto" (CUDA when available), "cuda" (an error without it) or "cpu"
      (also on a GPU machine). Under ``accelerate launch`` each process takes its own GPU.
    - Schedule: ``warmup_steps`` of linear warm-up ((step + 1) / warmup_steps of the lr), then
      ``lr_schedule`` "constant" or "cosine" (0.5 (1 + cos(pi p)) of the lr, p the fraction of the run after the
      warm-up; see :func:`lr_factor`).
    - ``ema``: keep an exponential moving average of the weights (diffusers' ``EMAModel`` with its warm-up:
      decay 0 for the first update, then 1 - (1 + n)^-ema_power at the (n + 1)-th, at most ``ema_max_decay``;
      Diffusion Policy's 0.75 and 0.9999); validation and the checkpoint at the top of ``out_dir`` use the
      averaged weights, ``checkpoints/step-*`` keep the raw ones beside ``ema.pt``. Needs diffusers
      (``pip install 'kinema-act-policy[ema]'``). Off by default (the ACT paper averages nothing); the hybrid's
      TrainConfig turns it on, and ``kinema-hybrid ablate`` gives every cell the same setting.
    """

    data: str | list[str]
    out_dir: str
    batch_size: int = 8
    lr: float = 1e-5
    lr_backbone: float = 1e-5
    weight_decay: float = 1e-4
    grad_clip: float | None = 10.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    max_steps: int | None = 100_000
    max_minutes: float | None = None
    session_minutes: float | None = None
    val_fraction: float = 0.1
    val_every: int = 1000
    val_samples: int = 512
    save_every: int = 2000
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    mixed_precision: str = "auto"
    compile: bool = False
    channels_last: bool = True
    data_device: str = "auto"
    device: str = "auto"
    load_workers: int = 0
    resume: bool = False
    wandb: bool = False
    wandb_project: str = "kinema-act"
    run_name: str | None = None
    progress: bool = True
    notes: dict = field(default_factory=dict)
    val_data: str | list[str] | None = None
    ema: bool = False
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999

    def __post_init__(self) -> None:
        for name in ("batch_size", "val_every", "val_samples", "save_every", "keep_checkpoints", "log_every"):
            self.check_positive_int(name)
        if self.max_steps is not None:
            self.check_positive_int("max_steps")
        for name in ("lr", "lr_backbone", "weight_decay"):
            self.check_non_negative(name)
        for name in ("max_minutes", "session_minutes", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ValueError(f"TrainConfig.{name}: expected a number > 0 or None, got {value!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError("TrainConfig: give max_steps and/or max_minutes, or the run never ends")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"TrainConfig.lr_schedule: expected one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        self.check_non_negative_int("warmup_steps")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                f"TrainConfig.val_fraction: expected 0 <= val_fraction < 1, got {self.val_fraction!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"TrainConfig.mixed_precision: expected one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.data_device not in DATA_DEVICES:
            raise ValueError(
                f"TrainConfig.data_device: expected one of {DATA_DEVICES}, got {self.data_device!r}"
            )
        if self.device not in TRAIN_DEVICES:
            raise ValueError(
                f"TrainConfig.device: expected one of {TRAIN_DEVICES}, got {self.device!r} (pick a GPU with "
                "CUDA_VISIBLE_DEVICES)"
            )
        self.check_non_negative_int("load_workers")
        self.check_non_negative("ema_power")
        if isinstance(self.ema_max_decay, bool) or not 0.0 < self.ema_max_decay < 1.0:
            raise ValueError(
                f"TrainConfig.ema_max_decay: expected a number in (0, 1), got {self.ema_max_decay!r}"
            )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("data", "val_data"):
            value = getattr(self, name)
            data[name] = [str(p) for p in value] if isinstance(value, list | tuple) else value and str(value)
        data["out_dir"] = str(self.out_dir)
        return data


@torch.no_grad()
def evaluate_loss(
    model: ACT, memory, indices: torch.Tensor, batch_size: int, device, autocast
) -> dict[str, float]:
    """Validation losses over the samples ``indices`` in eval mode: the training terms with z = the posterior mean,
    and ``l1_prior``, the L1 with z = 0 as at inference."""
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    count = 0
    for start in range(0, len(indices), batch_size):
        batch = memory.batch(indices[start : start + batch_size], model.config.chunk_size, device)
        with autocast():
            _, terms = model.compute_loss(batch)
            prior = model({k: v for k, v in batch.items() if k not in ("action", "is_pad")})["actions"]
        terms["l1_prior"] = masked_l1(
            prior, model.normalize("action", batch["action"].float()), batch["is_pad"]
        )
        n = len(batch["qpos"])
        for key, value in terms.items():
            sums[key] = sums.get(key, 0.0) + float(value) * n
        count += n
    model.train(was_training)
    return {f"val/{k}": v / max(count, 1) for k, v in sums.items()}


# ------------------------------------------------------------------------------------------------ train


def train(model_config: ACTConfig, config: TrainConfig) -> TrainResult:
    """Trains ACT on the episodes of ``config.data``; see :class:`TrainConfig` and the module docstring.

    Raises before any training: ``RobotDataError`` for data that does not fit the model config (missing camera,
    state, coordinates; mismatched dims), ``FileExistsError`` when ``out_dir`` already holds a run and
    ``resume`` is False, ``ValueError`` when resuming a run made with another model config or other data.
    """

    def prepare(model: ACT) -> None:
        if config.channels_last:
            model.backbone.to(memory_format=torch.channels_last)

    hooks = LoopHooks(
        name="act",
        config_type=ACTConfig,
        not_structural=NOT_STRUCTURAL,
        build=ACT,
        loss=lambda model, batch, step: model.compute_loss(batch),
        make_batch=lambda memory, indices, chunk, device: memory.batch(indices, chunk, device),
        validate=lambda model, memory, indices, batch_size, device, autocast, step: evaluate_loss(
            model, memory, indices, batch_size, device, autocast
        ),
        export=save_act,
        save_weights=save_weights,
        load_weights=load_weights,
        prepare=prepare,
        best_key="val/l1_prior",
        averager=(lambda model: make_ema(model, config)) if config.ema else None,
    )
    return run_training(model_config, config, hooks)
