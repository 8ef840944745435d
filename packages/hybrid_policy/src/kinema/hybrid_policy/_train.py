"""The training loop of kinema.hybrid_policy: accelerate (bf16 on GPUs, several GPUs through DDP), episodes in
memory, EMA weights (diffusers' EMAModel), validation, crash-safe checkpoints, resume, step / time limits.

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

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from kinema.act_policy import (
    check_episodes,
    episode_files,
    load_episodes,
    load_torch,
    save_torch_atomic,
    split_episodes,
    write_json_atomic,
)

from ._checkpoint import load_weights, save_hybrid, save_weights
from ._config import HybridConfig
from ._data import chunk_batch
from ._model import HybridPolicyModel

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
LOG_FILE = "training_log.jsonl"
LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
COMPLETE = ("max_steps", "max_minutes")
# Fields that change how chunks are sampled or executed, not the weights: a run may resume with others.
NOT_STRUCTURAL = ("notes", "pretrained_backbone", "n_action_steps", "temporal_ensemble_coeff", "sampler",
                  "num_inference_steps", "z_temperature")  # fmt: skip


@dataclass
class TrainConfig:
    """How to train a :class:`HybridConfig` model. Defaults follow Diffusion Policy (AdamW lr 1e-4, 500 warm-up
    steps, cosine decay, EMA with power 0.75) and ACT (batch, weight decay 1e-4, gradient clip 10).

    - ``data``: a folder of policy episodes or a list of files; ``val_data`` (optional) the validation episodes,
      else ``val_fraction`` of ``data`` (split by episode, seeded) is held out.
    - ``max_steps`` and/or ``max_minutes`` (training time summed over sessions) end the run; ``session_minutes``
      ends this process early with a checkpoint (``complete`` False), to be continued with ``resume``.
    - ``ema``: keep an exponential moving average of the weights (decay 1 - (1 + step)^-ema_power, at most
      ``ema_max_decay``); the checkpoint at the top of ``out_dir`` holds the EMA weights.
    """

    data: str | list[str]
    out_dir: str
    val_data: str | list[str] | None = None
    batch_size: int = 64
    lr: float = 1e-4
    lr_backbone: float = 1e-4
    weight_decay: float = 1e-4
    grad_clip: float | None = 10.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 500
    max_steps: int | None = 100_000
    max_minutes: float | None = None
    session_minutes: float | None = None
    val_fraction: float = 0.1
    val_every: int = 1000
    val_samples: int = 256
    save_every: int = 2000
    keep_checkpoints: int = 2
    log_every: int = 50
    seed: int = 0
    mixed_precision: str = "auto"
    ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    data_device: str = "auto"
    load_workers: int = 0
    resume: bool = False
    progress: bool = True
    notes: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        def positive_int(name):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}: expected an integer >= 1, got {value!r}")

        for name in ("batch_size", "val_every", "val_samples", "save_every", "keep_checkpoints", "log_every"):
            positive_int(name)
        if self.max_steps is not None:
            positive_int("max_steps")
        for name in ("lr", "lr_backbone", "weight_decay", "ema_power"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise ValueError(f"TrainConfig.{name}: expected a finite number >= 0, got {value!r}")
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
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"TrainConfig.warmup_steps: expected an integer >= 0, got {self.warmup_steps!r}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(
                f"TrainConfig.val_fraction: expected 0 <= val_fraction < 1, got {self.val_fraction!r}"
            )
        if not 0.0 < self.ema_max_decay < 1.0:
            raise ValueError(
                f"TrainConfig.ema_max_decay: expected a number in (0, 1), got {self.ema_max_decay!r}"
            )
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"TrainConfig.mixed_precision: expected one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.data_device not in ("auto", "device", "cpu"):
            raise ValueError(
                f"TrainConfig.data_device: expected auto, device or cpu, got {self.data_device!r}"
            )

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        for name in ("data", "val_data"):
            value = getattr(self, name)
            data[name] = [str(p) for p in value] if isinstance(value, list | tuple) else value and str(value)
        data["out_dir"] = str(self.out_dir)
        return data


@dataclass
class TrainResult:
    """What a session did; ``complete``: the run reached max_steps / max_minutes."""

    out_dir: str
    step: int
    complete: bool
    stop_reason: str
    train_seconds: float
    session_seconds: float
    samples_per_second: float
    val: dict[str, float]
    device: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoints/step-*`` folder of a run, or None."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    done = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()
    ]
    return max(done, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def _lr_factor(config: TrainConfig, clock):
    """Linear warm-up, then constant or cosine to 0 at max_steps or max_minutes, whichever comes first."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "cosine":
            done = 0.0
            if config.max_steps is not None:
                done = (step - config.warmup_steps) / max(1, config.max_steps - config.warmup_steps)
            if config.max_minutes is not None:
                done = max(done, clock() / (config.max_minutes * 60))
            return 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, done))))
        return 1.0

    return factor


class _LossModule(torch.nn.Module):
    """compute_loss behind forward, so DDP (accelerate) sees the call and synchronizes gradients."""

    def __init__(self, model: HybridPolicyModel):
        super().__init__()
        self.model = model

    def forward(self, batch: dict, step: int):
        return self.model.compute_loss(batch, step)


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


def _make_ema(model: HybridPolicyModel, config: TrainConfig):
    from diffusers.training_utils import EMAModel

    return EMAModel(
        model.parameters(),
        decay=config.ema_max_decay,
        use_ema_warmup=True,
        inv_gamma=1.0,
        power=config.ema_power,
    )


def _mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def train(model_config: HybridConfig, config: TrainConfig) -> TrainResult:
    """Trains the hybrid on the episodes of ``config.data``; see :class:`TrainConfig` and the module docstring.

    Raises before any training: ``RobotDataError`` for data that does not fit the model config,
    ``FileExistsError`` when ``out_dir`` holds a run and ``resume`` is False, ``ValueError`` when resuming a run
    made with another config (another variant included) or other episodes.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm import tqdm

    from kinema.robot_data import compute_policy_stats

    session_start = time.perf_counter()
    out_dir = Path(config.out_dir)
    resume_from = latest_checkpoint(out_dir)
    if resume_from is not None and not config.resume:
        raise FileExistsError(
            f"{out_dir} already holds a training run (latest {resume_from.name}); pass --resume to continue it "
            "or choose another output folder"
        )
    files = episode_files(config.data)
    if config.val_data is not None:
        train_files, val_files = files, episode_files(config.val_data)
    else:
        train_files, val_files = split_episodes(files, config.val_fraction, config.seed)
    found = check_episodes(train_files + val_files, model_config)
    attrs = found["attrs"]
    notes = {
        **model_config.notes,
        "task": attrs.get("task"),
        "train_episodes": [f"{p.parent.name}/{p.name}" for p in train_files],
        "val_episodes": [f"{p.parent.name}/{p.name}" for p in val_files],
    }
    model_config = dataclasses.replace(model_config, notes=notes)
    state = None
    if resume_from is not None:
        saved = HybridConfig.load(resume_from)
        different = model_config.differences(saved, ignore=NOT_STRUCTURAL)
        if different:
            lines = ", ".join(f"{k}: checkpoint {v[1]!r}, now {v[0]!r}" for k, v in sorted(different.items()))
            raise ValueError(f"resume: {resume_from} was trained with another model config ({lines})")
        if saved.notes.get("train_episodes") != notes["train_episodes"]:
            raise ValueError(
                f"resume: {resume_from} was trained on other episodes ({len(saved.notes.get('train_episodes') or [])}"
                f" files, now {len(notes['train_episodes'])})"
            )
        state = json.loads((resume_from / STATE_FILE).read_text())

    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision))
    main = accelerator.is_main_process
    device = accelerator.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    set_seed(config.seed)
    stats = compute_policy_stats(train_files, strict=True)
    model = HybridPolicyModel(model_config)
    model.set_normalization(stats)
    if resume_from is not None:
        load_weights(model, resume_from / "model.safetensors")
    model.to(device)
    ema = _make_ema(model, config) if config.ema else None
    if ema is not None and resume_from is not None:
        ema.load_state_dict(load_torch(resume_from / "ema.pt"))
    if ema is not None:
        ema.to(device)
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.lr, config.lr_backbone, config.weight_decay),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    clock = {"before": 0.0, "start": None}

    def train_seconds() -> float:
        running = time.perf_counter() - clock["start"] if clock["start"] is not None else 0.0
        return clock["before"] + running

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(config, train_seconds))
    if resume_from is not None:
        optimizer.load_state_dict(load_torch(resume_from / "optimizer.pt"))
        scheduler.load_state_dict(load_torch(resume_from / "scheduler.pt"))

    memory = load_episodes(
        train_files + val_files,
        model_config,
        device=device,
        data_device=config.data_device,
        workers=config.load_workers,
        progress=config.progress and main,
    )
    num_train = sum(found["lengths"][: len(train_files)])
    num_val = len(memory) - num_train
    val_indices = (
        torch.linspace(num_train, len(memory) - 1, min(config.val_samples, num_val)).round().long()
        if num_val
        else None
    )
    sampler = torch.Generator(device=memory.device)
    sampler.manual_seed(config.seed * 1_000_003 + accelerator.process_index)
    step = 0
    if state is not None:
        step = int(state["step"])
        clock["before"] = float(state["train_seconds"])
        rng = load_torch(resume_from / "rng.pt")
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
        try:
            sampler.set_state(rng[f"sampler_{accelerator.process_index}"])
        except (KeyError, RuntimeError):  # another process count or data device: a fresh stream
            sampler.manual_seed(config.seed * 1_000_003 + accelerator.process_index + 7919 * step)

    module, optimizer = accelerator.prepare(_LossModule(model), optimizer)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out_dir / "train_config.json", {"train": config.to_dict(), "model": model_config.to_dict()}
        )
    save_info = {
        "task": attrs.get("task"),
        "image_size": found["image_size"],
        "render_quality": attrs.get("render_quality"),
    }

    def log(metrics: dict) -> None:
        if main:
            with open(out_dir / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps({"step": step, **metrics}) + "\n")

    def evaluate_val() -> dict:
        if val_indices is None:
            return {}
        if ema is not None:
            ema.store(model.parameters())
            ema.copy_to(model.parameters())
        try:
            return validate(model, memory, val_indices, config.batch_size, device, accelerator.autocast, step)
        finally:
            if ema is not None:
                ema.restore(model.parameters())

    def save(reason: str, val: dict | None) -> None:
        """checkpoints/step-XXXXXXXXX (complete or not at all), then the top-level checkpoint (EMA weights)."""
        if main:
            name = f"step-{step:09d}"
            root = out_dir / CHECKPOINTS_DIR
            final = root / name
            temporary = root / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
            save_weights(model, temporary / "model.safetensors")
            model.config.save(temporary)
            if ema is not None:
                save_torch_atomic(temporary / "ema.pt", ema.state_dict())
            save_torch_atomic(temporary / "optimizer.pt", optimizer.state_dict())
            save_torch_atomic(temporary / "scheduler.pt", scheduler.state_dict())
            rng = {
                "torch": torch.get_rng_state(),
                f"sampler_{accelerator.process_index}": sampler.get_state(),
            }
            if device.type == "cuda":
                rng["cuda"] = torch.cuda.get_rng_state(device)
            save_torch_atomic(temporary / "rng.pt", rng)
            write_json_atomic(
                temporary / STATE_FILE,
                {"step": step, "train_seconds": train_seconds(), "reason": reason, "val": val},
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            older = sorted(
                (p for p in root.iterdir() if p.name.startswith("step-") and p != final), key=lambda p: p.name
            )
            for old in older[: max(0, len(older) - (config.keep_checkpoints - 1))]:
                shutil.rmtree(old, ignore_errors=True)
            if ema is not None:
                ema.store(model.parameters())
                ema.copy_to(model.parameters())
            try:
                save_hybrid(model, out_dir, stats=stats, **save_info)
            finally:
                if ema is not None:
                    ema.restore(model.parameters())
        accelerator.wait_for_everyone()

    interrupted = {"flag": False}
    previous_handler = None
    if main and hasattr(signal, "SIGTERM"):
        try:
            previous_handler = signal.signal(signal.SIGTERM, lambda *_: interrupted.update(flag=True))
        except ValueError:  # not the main thread
            previous_handler = None

    def stop_reason() -> str | None:
        if config.max_steps is not None and step >= config.max_steps:
            return "max_steps"
        if config.max_minutes is not None and train_seconds() >= config.max_minutes * 60:
            return "max_minutes"
        if (
            config.session_minutes is not None
            and time.perf_counter() - session_start >= config.session_minutes * 60
        ):
            return "session_minutes"
        return "interrupted" if interrupted["flag"] else None

    reasons = ("max_steps", "max_minutes", "session_minutes", "interrupted")

    def agreed_stop() -> str | None:
        reason = stop_reason()
        if accelerator.num_processes == 1:
            return reason
        code = torch.tensor([reasons.index(reason) + 1 if reason else 0], device=device)
        value = int(accelerator.gather(code).max().item())
        return reasons[value - 1] if value else None

    val: dict = {}
    module.train()
    clock["start"] = time.perf_counter()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc=f"train hybrid {model_config.variant}",
        unit="step",
        disable=not (config.progress and main),
        dynamic_ncols=True,
    )
    sums: dict[str, torch.Tensor] = {}
    interval_steps, session_steps, timed_steps, step_seconds = 0, 0, 0, 0.0
    interval_start = time.perf_counter()
    reason = None
    try:
        while True:
            reason = agreed_stop() if accelerator.num_processes == 1 or step % 10 == 0 else None
            if reason is not None:
                break
            indices = torch.randint(num_train, (config.batch_size,), generator=sampler, device=memory.device)
            loss, terms = module(chunk_batch(memory, indices, model_config.chunk_size, device), step)
            accelerator.backward(loss)
            if config.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.step(model.parameters())
            step += 1
            session_steps += 1
            interval_steps += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0) + value
            if step % config.log_every == 0 or step == 1:
                metrics = {f"train/{k}": float(v) / interval_steps for k, v in sums.items()}
                elapsed = time.perf_counter() - interval_start
                if session_steps > interval_steps:  # the session's first interval (warm-up) is left out
                    step_seconds += elapsed
                    timed_steps += interval_steps
                metrics["train/samples_per_second"] = (
                    interval_steps * config.batch_size * accelerator.num_processes / elapsed
                )
                metrics["train/lr"] = optimizer.param_groups[0]["lr"]
                metrics["train/minutes"] = train_seconds() / 60
                log(metrics)
                bar.set_postfix(
                    loss=f"{metrics['train/loss']:.4f}", sps=f"{metrics['train/samples_per_second']:.0f}"
                )
                sums, interval_steps = {}, 0
                interval_start = time.perf_counter()
            bar.update(1)
            if val_indices is not None and step % config.val_every == 0:
                pause = time.perf_counter()
                if main:
                    val = evaluate_val()
                    log(val)
                    bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in val.items()))
                accelerator.wait_for_everyone()
                interval_start += time.perf_counter() - pause
            if step % config.save_every == 0:
                pause = time.perf_counter()
                save("periodic", val or None)
                interval_start += time.perf_counter() - pause
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        bar.close()
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
    if interval_steps and session_steps > interval_steps:
        step_seconds += time.perf_counter() - interval_start
        timed_steps += interval_steps
    if timed_steps == 0 and session_steps:
        step_seconds, timed_steps = time.perf_counter() - clock["start"], session_steps
    complete = reason in COMPLETE
    if complete and main and val_indices is not None:
        val = evaluate_val()
        log(val)
    save(reason, val or None)
    result = TrainResult(
        out_dir=str(out_dir),
        step=step,
        complete=complete,
        stop_reason=reason,
        train_seconds=round(train_seconds(), 3),
        session_seconds=round(time.perf_counter() - session_start, 3),
        samples_per_second=round(
            timed_steps * config.batch_size * accelerator.num_processes / step_seconds, 2
        )
        if step_seconds > 0
        else 0.0,
        val=val,
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
    )
    if main:
        write_json_atomic(out_dir / "train_result.json", result.to_dict())
    return result
