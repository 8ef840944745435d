"""The one training loop of kinema.act_policy: accelerate (bf16 on GPUs, several GPUs through DDP), in-memory
data, validation loss, crash-safe checkpoints and resume, step and time limits.

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
import json
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._checkpoint import NOT_STRUCTURAL, load_weights, save_act, save_weights
from ._config import ACTConfig
from ._data import check_episodes, load_episodes, split_episodes
from ._io import load_torch, save_torch_atomic, write_json_atomic
from ._logging import RunLogger
from ._losses import masked_l1
from ._model import ACT

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
LR_SCHEDULES = ("constant", "cosine")
MIXED_PRECISION = ("auto", "bf16", "fp16", "no")
DATA_DEVICES = ("auto", "device", "cpu")
EXIT_REASONS_COMPLETE = ("max_steps", "max_minutes")


@dataclass
class TrainConfig:
    """How to train (the model is an :class:`ACTConfig`). Defaults are ACT's: AdamW, lr 1e-5 for everything,
    weight decay 1e-4, batch 8, gradient clipping at 10 (LeRobot), constant learning rate.

    - ``data``: a folder of policy episodes (``*.hdf5``) or a list of files; ``out_dir``: the run's folder.
    - ``max_steps`` and/or ``max_minutes`` (training time, summed over resumed sessions) end the run;
      ``session_minutes`` ends this process early with a checkpoint (``complete`` False), to be continued with
      ``resume`` (for machines that lend time in pieces).
    - ``val_fraction`` of the episodes (split by episode, seeded) are held out for the validation loss.
    - ``data_device``: where decoded images live ("auto": the GPU when they fit).
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
    load_workers: int = 0
    resume: bool = False
    wandb: bool = False
    wandb_project: str = "kinema-act"
    run_name: str | None = None
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
        for name in ("lr", "lr_backbone", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"TrainConfig.{name}: expected a finite number >= 0, got {value!r}")
        for name in ("max_minutes", "session_minutes", "grad_clip"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int | float) or not value > 0):
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
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"TrainConfig.mixed_precision: expected one of {MIXED_PRECISION}, got {self.mixed_precision!r}"
            )
        if self.data_device not in DATA_DEVICES:
            raise ValueError(
                f"TrainConfig.data_device: expected one of {DATA_DEVICES}, got {self.data_device!r}"
            )
        if (
            isinstance(self.load_workers, bool)
            or not isinstance(self.load_workers, int)
            or self.load_workers < 0
        ):
            raise ValueError(f"TrainConfig.load_workers: expected an integer >= 0, got {self.load_workers!r}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["data"] = [str(p) for p in self.data] if isinstance(self.data, list | tuple) else str(self.data)
        data["out_dir"] = str(self.out_dir)
        return data


@dataclass
class TrainResult:
    """What a training session did. ``complete``: the run reached max_steps / max_minutes (else it stopped at
    session_minutes or an interrupt, with a checkpoint to resume from)."""

    out_dir: str
    step: int
    complete: bool
    stop_reason: str
    train_seconds: float  # training loop time of the whole run, over all sessions
    session_seconds: float  # this process, data loading included
    data_seconds: float  # reading and decoding the episodes in this session
    samples_per_second: float  # optimizer steps x batch x processes per second of step time, this session
    val: dict[str, float]
    num_processes: int
    device: str

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- helpers


def episode_files(data: str | os.PathLike | list) -> list[Path]:
    """A folder's ``*.hdf5`` / ``*.h5`` files (sorted, hidden files skipped), one file, or a list of files."""
    if isinstance(data, list | tuple):
        return [Path(p) for p in data]
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--data: {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.iterdir() if p.suffix in (".hdf5", ".h5") and not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"--data: {root} holds no episode files (*.hdf5)")
    return files


def latest_checkpoint(out_dir: str | os.PathLike) -> Path | None:
    """The newest complete ``checkpoints/step-*`` folder of a run, or None."""
    root = Path(out_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return None
    done = [
        p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-") and (p / STATE_FILE).is_file()
    ]
    return max(done, key=lambda p: int(p.name.removeprefix("step-")), default=None)


def _lr_lambda(config: TrainConfig, clock):
    """Linear warm-up, then constant or cosine decay to 0 at the end of the run: the end is max_steps or
    max_minutes of training (``clock()`` seconds so far), whichever comes first, so a time-bounded run decays
    too."""

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
    """Puts ACT.compute_loss behind forward, so DDP (accelerate) sees the call and synchronizes gradients."""

    def __init__(self, model: ACT):
        super().__init__()
        self.model = model

    def forward(self, batch: dict):
        return self.model.compute_loss(batch)


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


def _mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


# ------------------------------------------------------------------------------------------------ train


def train(model_config: ACTConfig, config: TrainConfig) -> TrainResult:
    """Trains ACT on the episodes of ``config.data``; see :class:`TrainConfig` and the module docstring.

    Raises before any training: ``RobotDataError`` for data that does not fit the model config (missing camera,
    state, coordinates; mismatched dims), ``FileExistsError`` when ``out_dir`` already holds a run and
    ``resume`` is False, ``ValueError`` when resuming a run made with another model config or other data.
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
    train_files, val_files = split_episodes(files, config.val_fraction, config.seed)
    found = check_episodes(files, model_config)  # every bad-input error before anything is loaded
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
        saved = ACTConfig.load(resume_from)
        different = model_config.differences(saved, ignore=NOT_STRUCTURAL)
        if different:
            lines = ", ".join(f"{k}: checkpoint {v[1]!r}, now {v[0]!r}" for k, v in sorted(different.items()))
            raise ValueError(f"--resume: {resume_from} was trained with another model config ({lines})")
        if saved.notes.get("train_episodes") != notes["train_episodes"]:
            raise ValueError(
                f"--resume: {resume_from} was trained on other episodes ({len(saved.notes.get('train_episodes') or [])} "
                f"files, now {len(notes['train_episodes'])}; first {saved.notes.get('train_episodes', [])[:3]})"
            )
        state = json.loads((resume_from / STATE_FILE).read_text())

    accelerator = Accelerator(mixed_precision=_mixed_precision(config.mixed_precision))
    main = accelerator.is_main_process
    device = accelerator.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    set_seed(config.seed)  # the same initial weights in every process
    stats = compute_policy_stats(train_files, strict=True)
    model = ACT(model_config)
    model.set_normalization(stats)
    if resume_from is not None:
        load_weights(model, resume_from / "model.safetensors")
    model.to(device)
    if config.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.lr, config.lr_backbone, config.weight_decay),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    clock = {"before": 0.0, "start": None}  # training seconds of earlier sessions; this session's start

    def train_seconds() -> float:
        now = time.perf_counter()
        return clock["before"] + (now - clock["start"] if clock["start"] is not None else 0.0)

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, train_seconds))
    if resume_from is not None:
        optimizer.load_state_dict(load_torch(resume_from / "optimizer.pt"))
        scheduler.load_state_dict(load_torch(resume_from / "scheduler.pt"))

    data_start = time.perf_counter()
    memory = load_episodes(
        train_files + val_files,
        model_config,
        device=device,
        data_device=config.data_device,
        workers=config.load_workers,
        progress=config.progress and main,
    )
    data_seconds = time.perf_counter() - data_start
    num_train = sum(found["lengths"][files.index(p)] for p in train_files)
    num_val = len(memory) - num_train
    val_indices = (
        torch.linspace(num_train, len(memory) - 1, min(config.val_samples, num_val)).round().long()
        if num_val
        else None
    )

    sampler = torch.Generator(device=memory.device)
    sampler.manual_seed(config.seed * 1_000_003 + accelerator.process_index)
    step = 0
    best_val = None
    if state is not None:
        step = int(state["step"])
        clock["before"] = float(state["train_seconds"])
        best_val = state.get("best_val")
        rng = load_torch(resume_from / "rng.pt")
        torch.set_rng_state(rng["torch"])
        if device.type == "cuda" and "cuda" in rng:
            torch.cuda.set_rng_state(rng["cuda"], device)
        key = f"sampler_{accelerator.process_index}"
        try:
            sampler.set_state(rng[key])
        except (KeyError, RuntimeError):  # another process count or data device than before: a fresh stream
            sampler.manual_seed(config.seed * 1_000_003 + accelerator.process_index + 7919 * step)

    module = _LossModule(model)
    if config.compile:
        module = torch.compile(module)
    module, optimizer = accelerator.prepare(module, optimizer)

    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            out_dir / "train_config.json", {"train": config.to_dict(), "model": model_config.to_dict()}
        )
    logger = (
        RunLogger(
            out_dir,
            use_wandb=config.wandb and main,
            project=config.wandb_project,
            name=config.run_name,
            config={
                "train": config.to_dict(),
                "model": {k: v for k, v in model_config.to_dict().items() if k != "notes"},
            },
        )
        if main
        else None
    )
    save_info = {
        "task": attrs.get("task"),
        "image_size": tuple(found["image_size"]),
        "render_quality": attrs.get("render_quality"),
    }

    def save(reason: str, val: dict | None) -> None:
        """Writes checkpoints/step-XXXXXXXXX (complete or not at all) and the top-level checkpoint."""
        if main:
            name = f"step-{step:09d}"
            root = out_dir / CHECKPOINTS_DIR
            final = root / name
            temporary = root / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
            save_weights(model, temporary / "model.safetensors")
            model.config.save(temporary)
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
                {
                    "step": step,
                    "train_seconds": train_seconds(),
                    "best_val": best_val,
                    "reason": reason,
                    "val": val,
                    "samples_seen": step * config.batch_size * accelerator.num_processes,
                },
            )
            if final.exists():
                shutil.rmtree(final)
            os.replace(temporary, final)
            older = sorted(
                (p for p in root.iterdir() if p.name.startswith("step-") and p != final), key=lambda p: p.name
            )
            for old in older[: max(0, len(older) - (config.keep_checkpoints - 1))]:
                shutil.rmtree(old, ignore_errors=True)
            save_act(model, out_dir, stats=stats, **save_info)
        accelerator.wait_for_everyone()

    interrupted = {"flag": False}

    def on_signal(signum, frame):
        interrupted["flag"] = True

    previous_handler = None
    if main and hasattr(signal, "SIGTERM"):
        try:
            previous_handler = signal.signal(signal.SIGTERM, on_signal)
        except ValueError:  # not the main thread
            previous_handler = None

    loop_start = clock["start"] = time.perf_counter()

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
        if interrupted["flag"]:
            return "interrupted"
        return None

    reasons = ("max_steps", "max_minutes", "session_minutes", "interrupted")

    def agreed_stop() -> str | None:
        """Every process stops at the same step: the first reason any of them sees."""
        reason = stop_reason()
        if accelerator.num_processes == 1:
            return reason
        code = torch.tensor([reasons.index(reason) + 1 if reason else 0], device=device)
        value = int(accelerator.gather(code).max().item())
        return reasons[value - 1] if value else None

    val = {}
    val_step = None
    autocast = accelerator.autocast
    module.train()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc="train act",
        unit="step",
        disable=not (config.progress and main),
        dynamic_ncols=True,
    )
    sums: dict[str, torch.Tensor] = {}
    interval_steps = 0
    interval_start = time.perf_counter()
    step_seconds = 0.0
    timed_steps = 0
    session_steps = 0
    reason = None
    try:
        while True:
            check = accelerator.num_processes == 1 or step % 10 == 0
            reason = agreed_stop() if check else None
            if reason is not None:
                break
            indices = torch.randint(num_train, (config.batch_size,), generator=sampler, device=memory.device)
            batch = memory.batch(indices, model_config.chunk_size, device)
            loss, terms = module(batch)
            accelerator.backward(loss)
            if config.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            session_steps += 1
            interval_steps += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0) + value
            if step % config.log_every == 0 or step == 1:
                metrics = {f"train/{k}": float(v) / interval_steps for k, v in sums.items()}  # syncs the GPU
                elapsed = time.perf_counter() - interval_start
                if (
                    session_steps > interval_steps
                ):  # the session's first interval (warm-up, compilation) is left out
                    step_seconds += elapsed
                    timed_steps += interval_steps
                metrics["train/samples_per_second"] = (
                    interval_steps * config.batch_size * accelerator.num_processes / elapsed
                )
                metrics["train/lr"] = optimizer.param_groups[0]["lr"]
                metrics["train/lr_backbone"] = optimizer.param_groups[-1]["lr"]
                metrics["train/minutes"] = train_seconds() / 60
                if main:
                    logger.log(metrics, step)
                    bar.set_postfix(
                        loss=f"{metrics['train/loss']:.4f}", sps=f"{metrics['train/samples_per_second']:.0f}"
                    )
                sums, interval_steps = {}, 0
                interval_start = time.perf_counter()
            bar.update(1)
            if val_indices is not None and step % config.val_every == 0:
                pause = time.perf_counter()
                if main:
                    val = evaluate_loss(model, memory, val_indices, config.batch_size, device, autocast)
                    val_step = step
                    best_val = val["val/l1_prior"] if best_val is None else min(best_val, val["val/l1_prior"])
                    logger.log(val, step)
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
    if timed_steps == 0 and session_steps:  # one interval only: warm-up included
        step_seconds, timed_steps = time.perf_counter() - loop_start, session_steps
    complete = reason in EXIT_REASONS_COMPLETE
    if complete and val_indices is not None and main and val_step != step:
        val = evaluate_loss(model, memory, val_indices, config.batch_size, device, autocast)
        best_val = val["val/l1_prior"] if best_val is None else min(best_val, val["val/l1_prior"])
        logger.log(val, step)
    save(reason, val or None)
    result = TrainResult(
        out_dir=str(out_dir),
        step=step,
        complete=complete,
        stop_reason=reason,
        train_seconds=round(train_seconds(), 3),
        session_seconds=round(time.perf_counter() - session_start, 3),
        data_seconds=round(data_seconds, 3),
        samples_per_second=round(
            timed_steps * config.batch_size * accelerator.num_processes / step_seconds, 2
        )
        if step_seconds > 0
        else 0.0,
        val=val,
        num_processes=accelerator.num_processes,
        device=str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
    )
    if main:
        write_json_atomic(out_dir / "train_result.json", result.to_dict())
        logger.finish()
    return result
