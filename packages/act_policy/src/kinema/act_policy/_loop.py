"""The training loop shared by the chunk policies (ACT here, the hybrid in kinema.hybrid_policy): accelerate (bf16
on GPUs, several GPUs through DDP), episodes decoded once into memory, validation, optional weight averaging
(EMA), crash-safe checkpoints and exact resume, step / time / session limits, SIGTERM-safe stops.

What differs between the policies comes in :class:`LoopHooks`; the training settings come from the package's
``TrainConfig`` (the fields read here are listed in :func:`run_training`).

Files written under ``config.out_dir``::

    <the policy's checkpoint files>            the latest weights (averaged when averaging), by ``hooks.export``
    train_config.json                          the TrainConfig and the model config of the run
    training_log.jsonl                         losses, learning rates, samples/s, validation (and wandb when asked)
    train_result.json                          written when a session ends
    checkpoints/step-XXXXXXXXX/{model.safetensors, <model config>, optimizer.pt, scheduler.pt, rng.pt,
                                [ema.pt,] trainer_state.json}    the training state, for resume

A step folder is written under a temporary name and renamed when complete, so a crash never leaves a partial
checkpoint that resume would pick; top-level files are each replaced atomically; ``.pt`` files are read with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kinema.robot_data import list_policy_episodes

from ._data import check_episodes, load_episodes, split_episodes
from ._io import load_torch, save_torch_atomic, write_json_atomic
from ._logging import RunLogger

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.json"
COMPLETE_REASONS = ("max_steps", "max_minutes")
STOP_REASONS = ("max_steps", "max_minutes", "session_minutes", "interrupted")


@dataclass
class TrainResult:
    """What a training session did. ``complete``: the run reached max_steps / max_minutes (else it stopped at
    session_minutes or an interrupt, with a checkpoint to resume from). ``main_process``: False on every
    process of a multi-process run but the first (which reports; the others only train)."""

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
    main_process: bool = True

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class LoopHooks:
    """What a policy brings to :func:`run_training`.

    - ``name``: the progress bar's label; ``config_type``: the model config class (``load(dir)``,
      ``differences(other, ignore=)``); ``not_structural``: config fields a run may resume with changed.
    - ``build(model_config)`` -> the model (the loop sets its normalization, loads resumed weights, moves it);
      ``prepare(model)``: after it is on the device (e.g. channels-last), optional.
    - ``loss(model, batch, step)`` -> (loss, {name: tensor}); ``make_batch(memory, indices, chunk_size, device)``.
    - ``validate(model, memory, indices, batch_size, device, autocast, step)`` -> {"val/...": float}, in eval mode;
      ``best_key``: the validation value whose minimum is kept in the trainer state, optional.
    - ``averager(model)`` -> an EMA (diffusers' ``EMAModel`` interface: step, store, copy_to, restore, to,
      state_dict, load_state_dict) or None; its weights are the ones validated and exported.
    - ``export(model, out_dir, stats=, task=, image_size=, render_quality=)``: the top-level checkpoint.
    - ``save_weights(model, path)`` / ``load_weights(model, path)``: the policy's own weights file (its format in
      the metadata, errors naming its config), used for the step checkpoints and resume.
    """

    name: str
    config_type: type
    not_structural: tuple[str, ...]
    build: Callable[[Any], torch.nn.Module]
    loss: Callable[[torch.nn.Module, dict, int], tuple]
    make_batch: Callable[..., dict]
    validate: Callable[..., dict]
    export: Callable[..., None]
    save_weights: Callable[[torch.nn.Module, Path], Path]
    load_weights: Callable[[torch.nn.Module, Path], None]
    prepare: Callable[[torch.nn.Module], None] | None = None
    best_key: str | None = None
    averager: Callable[[torch.nn.Module], Any] | None = None


def episode_files(data: str | os.PathLike | list) -> list[Path]:
    """A folder's ``*.hdf5`` / ``*.h5`` files (in numeric order, ``episode_2`` before ``episode_10``; hidden files
    skipped), one file, a list of files (kept in its order), or the episodes of a LeRobot dataset folder (v3.0 or
    v2.1, as ``<root>#episode_<n>``, which kinema.robot_data's policy readers accept). "The first N" / "the last K"
    of it are by number."""
    if isinstance(data, list | tuple):
        return [Path(p) for p in data]
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--data: {root} does not exist")
    files = list_policy_episodes(root)  # kinema.robot_data's listing, LeRobot folders included
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


def lr_factor(config, clock):
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


def make_ema(model: torch.nn.Module, config):
    """diffusers' ``EMAModel`` over ``model``'s parameters with ``config.ema_power`` / ``config.ema_max_decay``
    (its warm-up: decay 0 at the first update, then 1 - (1 + n)^-power at the (n + 1)-th, capped at the max);
    the averager both policies train with when ``TrainConfig.ema`` is set."""
    try:
        from diffusers.training_utils import EMAModel
    except ImportError as error:
        raise ImportError(
            "TrainConfig.ema: weight averaging uses diffusers' EMAModel, which is not installed "
            "(pip install 'kinema-act-policy[ema]')"
        ) from error
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


class _LossModule(torch.nn.Module):
    """The policy's loss behind forward, so DDP (accelerate) sees the call and synchronizes gradients."""

    def __init__(self, model: torch.nn.Module, loss: Callable):
        super().__init__()
        self.model = model
        self._loss = loss

    def forward(self, batch: dict, step: int):
        return self._loss(self.model, batch, step)


def _check_resume(hooks: LoopHooks, model_config, resume_from: Path) -> dict:
    """The trainer state of ``resume_from``; refuses a checkpoint of another model config or other episodes."""
    saved = hooks.config_type.load(resume_from)
    different = model_config.differences(saved, ignore=hooks.not_structural)
    if different:
        lines = ", ".join(f"{k}: checkpoint {v[1]!r}, now {v[0]!r}" for k, v in sorted(different.items()))
        raise ValueError(f"--resume: {resume_from} was trained with another model config ({lines})")
    episodes = model_config.notes["train_episodes"]
    if saved.notes.get("train_episodes") != episodes:
        raise ValueError(
            f"--resume: {resume_from} was trained on other episodes ({len(saved.notes.get('train_episodes') or [])} "
            f"files, now {len(episodes)}; first {saved.notes.get('train_episodes', [])[:3]})"
        )
    return json.loads((resume_from / STATE_FILE).read_text())


def run_training(model_config, config, hooks: LoopHooks) -> TrainResult:
    """Trains ``hooks.build(model_config)`` on the episodes of ``config.data``.

    ``config`` fields read: data, out_dir, resume, val_fraction, seed, batch_size, lr, lr_backbone, weight_decay,
    grad_clip, lr_schedule, warmup_steps, max_steps, max_minutes, session_minutes, val_every, val_samples,
    save_every, keep_checkpoints, log_every, mixed_precision, data_device, load_workers, progress; and when
    present val_data (held-out episodes instead of val_fraction), compile, wandb, wandb_project, run_name, device.

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
    if getattr(config, "val_data", None) is not None:
        train_files, val_files = files, episode_files(config.val_data)
    else:
        train_files, val_files = split_episodes(files, config.val_fraction, config.seed)
    found = check_episodes(train_files + val_files, model_config)  # every bad-input error before loading
    attrs = found["attrs"]
    notes = {
        **model_config.notes,
        "task": attrs.get("task"),
        "train_episodes": [f"{p.parent.name}/{p.name}" for p in train_files],
        "val_episodes": [f"{p.parent.name}/{p.name}" for p in val_files],
    }
    model_config = dataclasses.replace(model_config, notes=notes)
    state = _check_resume(hooks, model_config, resume_from) if resume_from is not None else None

    wanted = getattr(config, "device", "auto")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig.device: 'cuda' was asked for, but torch sees no CUDA device here")
    # cpu=True also without CUDA: processes started by torchrun then join one gloo group instead of each
    # training alone
    accelerator = Accelerator(
        cpu=wanted == "cpu" or not torch.cuda.is_available(),
        mixed_precision=_mixed_precision(config.mixed_precision),
    )
    main = accelerator.is_main_process
    device = accelerator.device
    process_seed = config.seed * 1_000_003 + accelerator.process_index  # batches, dropout and z noise
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    set_seed(config.seed)  # the same initial weights in every process
    stats = compute_policy_stats(train_files, strict=True)
    model = hooks.build(model_config)
    model.set_normalization(stats)
    if accelerator.process_index > 0:  # same weights everywhere, but each process its own dropout and z noise
        torch.manual_seed(process_seed)
    if resume_from is not None:
        hooks.load_weights(model, resume_from / "model.safetensors")
    model.to(device)
    if hooks.prepare is not None:
        hooks.prepare(model)
    averager = hooks.averager(model) if hooks.averager is not None else None
    if averager is not None:
        if resume_from is not None:
            if not (resume_from / "ema.pt").is_file():
                raise ValueError(
                    f"--resume: {resume_from} was trained without weight averaging (no ema.pt); resume it with "
                    "ema off, or start a new run"
                )
            averager.load_state_dict(load_torch(resume_from / "ema.pt"))
        averager.to(device)
    optimizer = torch.optim.AdamW(
        model.parameter_groups(config.lr, config.lr_backbone, config.weight_decay),
        lr=config.lr,
        weight_decay=config.weight_decay,
        fused=device.type == "cuda",
    )
    clock = {"before": 0.0, "start": None}  # training seconds of earlier sessions; this session's start

    def train_seconds() -> float:
        running = time.perf_counter() - clock["start"] if clock["start"] is not None else 0.0
        return clock["before"] + running

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, train_seconds))
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
    num_train = sum(found["lengths"][: len(train_files)])
    num_val = len(memory) - num_train
    val_indices = (
        torch.linspace(num_train, len(memory) - 1, min(config.val_samples, num_val)).round().long()
        if num_val
        else None
    )

    sampler = torch.Generator(device=memory.device)
    sampler.manual_seed(process_seed)
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
        if accelerator.process_index > 0:  # rng.pt holds the first process's state: the others draw their own
            torch.manual_seed(process_seed + 7919 * step)
        try:
            sampler.set_state(rng[f"sampler_{accelerator.process_index}"])
        except (KeyError, RuntimeError):  # another process count or data device than before: a fresh stream
            sampler.manual_seed(process_seed + 7919 * step)

    module = _LossModule(model, hooks.loss)
    if getattr(config, "compile", False):
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
            use_wandb=getattr(config, "wandb", False),
            project=getattr(config, "wandb_project", "kinema"),
            name=getattr(config, "run_name", None),
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

    @contextmanager
    def averaged_weights():
        """The model holds the averaged weights inside (when averaging), its own after."""
        if averager is not None:
            averager.store(model.parameters())
            averager.copy_to(model.parameters())
        try:
            yield
        finally:
            if averager is not None:
                averager.restore(model.parameters())

    def validate() -> dict:
        nonlocal best_val
        with averaged_weights():
            val = hooks.validate(
                model, memory, val_indices, config.batch_size, device, accelerator.autocast, step
            )
        if hooks.best_key is not None:
            value = val[hooks.best_key]
            best_val = value if best_val is None else min(best_val, value)
        logger.log(val, step)
        return val

    def save(reason: str, val: dict | None) -> None:
        """Writes checkpoints/step-XXXXXXXXX (complete or not at all) and the top-level checkpoint."""
        if main:
            name = f"step-{step:09d}"
            root = out_dir / CHECKPOINTS_DIR
            final = root / name
            temporary = root / f".{name}.tmp-{os.getpid()}"
            shutil.rmtree(temporary, ignore_errors=True)
            temporary.mkdir(parents=True)
            hooks.save_weights(model, temporary / "model.safetensors")
            model.config.save(temporary)
            if averager is not None:
                save_torch_atomic(temporary / "ema.pt", averager.state_dict())
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
            with averaged_weights():
                hooks.export(model, out_dir, stats=stats, **save_info)
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

    def agreed_stop() -> str | None:
        """Every process stops at the same step: the first reason any of them sees."""
        reason = stop_reason()
        if accelerator.num_processes == 1:
            return reason
        code = torch.tensor([STOP_REASONS.index(reason) + 1 if reason else 0], device=device)
        value = int(accelerator.gather(code).max().item())
        return STOP_REASONS[value - 1] if value else None

    val: dict = {}
    val_step = None
    module.train()
    loop_start = clock["start"] = time.perf_counter()
    bar = tqdm(
        total=config.max_steps,
        initial=step,
        desc=f"train {hooks.name}",
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
            if config.max_steps is not None and step >= config.max_steps:
                reason = "max_steps"  # the same step in every process: nothing to agree on
            else:  # time limits and signals differ between processes: agreed every 10 steps (a sync each)
                reason = agreed_stop() if accelerator.num_processes == 1 or step % 10 == 0 else None
            if reason is not None:
                break
            indices = torch.randint(num_train, (config.batch_size,), generator=sampler, device=memory.device)
            loss, terms = module(hooks.make_batch(memory, indices, model_config.chunk_size, device), step)
            accelerator.backward(loss)
            if config.grad_clip is not None:
                accelerator.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            if averager is not None:
                averager.step(model.parameters())
            step += 1
            session_steps += 1
            interval_steps += 1
            for key, value in terms.items():
                sums[key] = sums.get(key, 0) + value
            if step % config.log_every == 0 or step == 1:
                metrics = {f"train/{k}": float(v) / interval_steps for k, v in sums.items()}  # syncs the GPU
                elapsed = time.perf_counter() - interval_start
                if session_steps > interval_steps:  # the session's first interval (warm-up) is left out
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
                    val, val_step = validate(), step
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
    complete = reason in COMPLETE_REASONS
    if complete and val_indices is not None and main and val_step != step:
        val = validate()
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
        main_process=main,
    )
    if main:
        write_json_atomic(out_dir / "train_result.json", result.to_dict())
        logger.finish()
    return result
