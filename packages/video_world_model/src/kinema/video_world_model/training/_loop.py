"""kinema's training loop (accelerate: devices, bf16, DDP), shared by every training command.

A subclass of :class:`Trainer` says what to train (:meth:`Trainer.build`: the dataset and a module whose
``forward(batch, generator)`` returns the loss) and what to export (:meth:`Trainer.export`); the loop owns the
optimizer, the schedule, gradient accumulation and clipping, NaN handling, checkpoints, resume and logging.

Determinism that makes resume exact: the data order is a permutation drawn from (seed, epoch), a dataset with
``set_epoch`` (random windows of long clips) is told the epoch before each pass, and the noise and
sigmas of optimizer step s, micro-batch m, process r come from a generator seeded with (seed, s, m, r). A run
resumed from a checkpoint therefore computes the same losses as the uninterrupted run.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from abc import ABC, abstractmethod
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, DistributedType, set_seed
from diffusers.training_utils import cast_training_params
from torch.utils.data import DataLoader, IterableDataset
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from .._state_dict import check_state_dict
from ..loading._checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from ._loop_config import LoopConfig
from ._sharded_state import (
    full_trainable_parameters,
    is_sharded,
    load_optimizer_checkpoint_state,
    load_trainable,
    optimizer_checkpoint_state,
)
from ._train_data import EpochSampler, collate


class TrainingDiverged(RuntimeError):
    """Too many consecutive steps with a NaN or Inf loss; the last good checkpoint is intact."""


@dataclass
class TrainResult:
    """What a run did. ``losses``: optimizer step -> mean loss over its micro-batches; ``step_seconds``: wall time of
    each optimizer step, ``data_wait_seconds``: of which waiting for the next batch. Under several processes the
    losses are means over all of them; ``main_process`` is False on every process but the first."""

    step: int
    main_process: bool = True
    losses: dict[int, float] = field(default_factory=dict)
    skipped_steps: list[int] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    data_wait_seconds: list[float] = field(default_factory=list)


def lr_schedule(optimizer: torch.optim.Optimizer, config: LoopConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear warmup over ``lr_warmup_ratio * max_steps`` steps, then cosine decay to ``lr_min_lr``.

    Until 0.5 kinema wrote this schedule by hand, with warmup step s at (s + 1) / warmup of the learning rate;
    transformers' starts at 0 (s / warmup), so each warmup step runs one step's worth lower. After the warmup the
    two are the same (tests/test_training.py checks both)."""
    return get_cosine_with_min_lr_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(config.lr_warmup_ratio * config.max_steps),
        num_training_steps=config.max_steps,
        min_lr_rate=config.lr_min_lr / config.learning_rate if config.learning_rate > 0 else 0.0,
    )


class BatchStream:
    """Batches in the resumable order; ``position`` counts samples of the current epoch consumed by all processes."""

    def __init__(
        self,
        dataset,
        config: LoopConfig,
        rank: int,
        world: int,
        epoch: int = 0,
        position: int = 0,
        collate_fn=collate,
    ):
        self.collate_fn = collate_fn
        self.dataset, self.config, self.rank, self.world = dataset, config, rank, world
        self.epoch, self.position = epoch, position
        self.global_batch = config.batch_size * world
        # a streamed dataset (WebDataset shards) plans each process's share itself: its len() is per process
        self.streamed = isinstance(dataset, IterableDataset)
        available = len(dataset) * (world if self.streamed else 1)
        if available < self.global_batch:
            raise ValueError(
                f"dataset: {available} samples, fewer than one global batch ({self.global_batch})"
            )
        self._iterator = None

    def _start(self) -> None:
        sampler = None
        if self.streamed:
            # every process consumed position / world samples of its own stream this epoch
            self.dataset.set_epoch(self.epoch, self.position // self.world)
        else:
            if hasattr(self.dataset, "set_epoch"):
                # random windows are drawn from (seed, epoch, index): set before the workers copy the dataset, so a
                # run resumed in this epoch draws the windows the uninterrupted run drew
                self.dataset.set_epoch(self.epoch)
            order_sampler = EpochSampler(len(self.dataset), self.config.seed)
            order_sampler.set_epoch(self.epoch, self.position)
            remaining = list(order_sampler)
            usable = (
                len(remaining) // self.global_batch * self.global_batch
            )  # drop the ragged tail: every process steps
            sampler = remaining[:usable][self.rank :: self.world]
        loader = DataLoader(
            self.dataset,
            batch_size=self.config.batch_size,
            sampler=sampler,
            num_workers=self.config.dataset_num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=False,
        )
        self._iterator = iter(loader)

    def __next__(self) -> dict[str, Any]:
        if self._iterator is None:
            self._start()
        try:
            batch = next(self._iterator)
        except StopIteration:
            self.epoch, self.position = self.epoch + 1, 0
            self._start()
            batch = next(self._iterator)
        self.position += self.global_batch
        return batch


def _encode_rng() -> dict[str, Any]:
    state = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np.random.get_state()[0], np.random.get_state()[1].tolist(), *np.random.get_state()[2:]],
        "torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [
            base64.b64encode(s.numpy().tobytes()).decode() for s in torch.cuda.get_rng_state_all()
        ]
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        states = [torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8) for s in state["cuda"]]
        torch.cuda.set_rng_state_all(states[: torch.cuda.device_count()])


def _wandb_kwargs(config: LoopConfig) -> dict[str, Any]:
    """wandb runs online with credentials and offline without (never a crash for lack of network)."""
    netrc = Path.home() / ".netrc"
    has_key = bool(os.environ.get("WANDB_API_KEY")) or (
        netrc.is_file() and "api.wandb.ai" in netrc.read_text()
    )
    if not has_key and os.environ.get("WANDB_MODE") is None:
        os.environ["WANDB_MODE"] = "offline"
        print("wandb: no credentials found, logging offline (sync later with `wandb sync`)")
    return {"wandb": {"name": config.wandb_run_name, "dir": config.output_path}}


class Trainer(ABC):
    """The loop. Subclasses implement :meth:`build` and :meth:`export`; ``run()`` trains.

    The output directory holds a run once :meth:`export` has written ``marker`` into it; another run there is
    refused unless resuming."""

    marker = "train_config.json"
    # True where a batch may leave trainable parameters unused (DDP must then look for them every step, or the
    # next step fails waiting for their gradients)
    find_unused_parameters = False

    def __init__(self, config: LoopConfig, accelerator: Accelerator | None = None):
        self.config = config
        self.output = Path(config.output_path)
        self.checkpoint = None
        if config.resume_from is not None:
            self.checkpoint = resolve_checkpoint(self.output, config.resume_from)
            saved = json.loads((self.checkpoint / "trainer_state.json").read_text())["config"]
            differences = config.differences(saved)
            if differences:
                listed = ", ".join(
                    f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in sorted(differences.items())
                )
                raise ValueError(
                    f"--resume_from: the command line differs from the checkpoint's run in {listed}"
                )
        elif (self.output / self.marker).exists() or (self.output / "checkpoints").exists():
            raise FileExistsError(
                f"--output_path: {self.output} holds another run; pass --resume_from latest to continue it or choose "
                "another --output_path"
            )
        if config.use_wandb:
            try:
                import wandb  # noqa: F401
            except ImportError:
                raise ValueError(
                    "--use_wandb: wandb is not installed (pip install 'kinema-video-world-model[wandb]')"
                ) from None
        cuda = torch.cuda.is_available()
        self.accelerator = accelerator or Accelerator(
            # cpu=True without CUDA: processes started by torchrun then join one gloo group (MULTI_CPU); without
            # it each would train alone as a world of one and all would write the same output folder
            cpu=not cuda,
            mixed_precision=config.mixed_precision if cuda else "no",
            kwargs_handlers=[
                DistributedDataParallelKwargs(find_unused_parameters=self.find_unused_parameters)
            ],
            log_with="wandb" if config.use_wandb else None,
            project_dir=str(self.output),
        )

    # --- what to train (subclasses) ---------------------------------------------------------------------------
    @abstractmethod
    def build(self) -> tuple[Any, torch.nn.Module]:
        """(dataset, module): ``module(batch, generator)`` returns the loss of a batch; its parameters with
        ``requires_grad`` are what the optimizer trains."""

    @abstractmethod
    def export(self, step: int) -> None:
        """Writes the exported weights and the run's config (and ``marker``) into the output directory."""

    collate_fn = staticmethod(collate)

    def after_step(self, step: int, stream: BatchStream) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Called on every process after each optimizer step (validation, extra logging); default nothing."""

    def exported_name(self, name: str) -> str:
        """The key of a trainable parameter in a checkpoint's trainable.safetensors (default: its full name in the
        module; trainable_full.safetensors always holds the full names, for resume)."""
        return name

    def _build(self) -> None:
        config, accelerator = self.config, self.accelerator
        set_seed(config.seed)  # initial weights of whatever the subclass creates
        self.dataset, module = self.build()
        module.to(accelerator.device)
        trainable = [p for p in module.parameters() if p.requires_grad]
        if not trainable:
            raise ValueError(
                "nothing to train: every parameter is frozen (check the trainable models option)"
            )
        # Trained weights are kept in fp32 while the frozen ones stay in the load dtype (bf16 under mixed
        # precision), as diffusers' training scripts do: AdamW steps of lr 1e-5 on bf16 weights of size ~0.02 are
        # mostly rounded away (a bf16 number near 0.02 moves in steps of 1.2e-4), so a bf16 LoRA or backbone
        # barely trains. Autocast runs the matmuls in bf16 all the same.
        cast_training_params(module, torch.float32)
        optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = lr_schedule(optimizer, config)
        # the scheduler stays outside accelerator.prepare: prepared, it steps once per process at every optimizer
        # step, so under N processes the warmup and the cosine would run N times too fast
        if accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
            # FSDP1 flattens parameters into FlatParameters: the trained weights lose their names
            raise ValueError(
                "accelerate config: FSDP version 1 is not supported by kinema's trainers; set fsdp_version: 2 "
                "(fsdp_config in the file given to accelerate launch --config_file)"
            )
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            # the loop builds its own DataLoaders (resumable order), so DeepSpeed learns the batch from here
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds_config["train_micro_batch_size_per_gpu"] = config.batch_size
        self.module, self.optimizer = accelerator.prepare(module, optimizer)
        self.scheduler = scheduler
        self.raw = accelerator.unwrap_model(self.module)

    # --- checkpoints ------------------------------------------------------------------------------------------
    def _trainable_state(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        names = {n for n, p in self.raw.named_parameters() if p.requires_grad}
        full = {n: t for n, t in self.raw.state_dict().items() if n in names}
        return {self.exported_name(name): tensor for name, tensor in full.items()}, full

    def _save(self, step: int, stream: BatchStream) -> None:
        accelerator = self.accelerator
        accelerator.wait_for_everyone()
        # under FSDP2 gathering the weights and the optimizer state is a collective: every process takes part
        sharded = is_sharded(self.raw)
        if not (sharded or accelerator.is_main_process):
            return
        save_full = self.config.save_full_state
        optimizer_state = optimizer_checkpoint_state(self.raw, self.optimizer) if save_full else None
        with full_trainable_parameters(self.raw):
            if not accelerator.is_main_process:
                return
            self.export(step)
            if save_full:
                exported, full = self._trainable_state()
                save_checkpoint(
                    self.output,
                    step,
                    trainable=exported,
                    trainable_full=full,
                    optimizer_state=optimizer_state,
                    scheduler_state=self.scheduler.state_dict(),
                    trainer_state={
                        "global_step": step,
                        "epoch": stream.epoch,
                        "data_position": stream.position,
                        "rng": _encode_rng(),
                        "config": self.config.to_dict(),
                        "num_processes": accelerator.num_processes,
                    },
                    max_checkpoints=self.config.max_checkpoints,
                )

    def _resume(self) -> tuple[int, int, int]:
        state = load_checkpoint(self.checkpoint)
        full = state["trainable_full"]
        own = {n: p for n, p in self.raw.named_parameters() if p.requires_grad}
        check_state_dict(
            own,
            full,
            f"--resume_from: {self.checkpoint}",
            owner="this run",
            note=" (the checkpoint holds other trainable weights)",
        )
        load_trainable(self.raw, full)
        load_optimizer_checkpoint_state(self.raw, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        trainer = state["trainer_state"]
        _restore_rng(trainer["rng"])
        return trainer["global_step"], trainer["epoch"], trainer["data_position"]

    # --- the loop ---------------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        config, accelerator = self.config, self.accelerator
        self._build()
        step, epoch, position = self._resume() if self.checkpoint is not None else (0, 0, 0)
        if accelerator.is_main_process:
            self.output.mkdir(parents=True, exist_ok=True)
        if step == 0:
            with full_trainable_parameters(self.raw):  # a collective under FSDP2
                if accelerator.is_main_process:
                    self.export(
                        0
                    )  # the layout exists from the start, so the directory is recognized as a run
        if config.use_wandb:
            accelerator.init_trackers(
                config.wandb_project, config=config.to_dict(), init_kwargs=_wandb_kwargs(config)
            )
        stream = BatchStream(
            self.dataset,
            config,
            accelerator.process_index,
            accelerator.num_processes,
            epoch,
            position,
            self.collate_fn,
        )
        result = TrainResult(step=step, main_process=accelerator.is_main_process)
        bad_in_a_row = 0
        progress = tqdm(
            total=config.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train"
        )
        trainable = [p for p in self.module.parameters() if p.requires_grad]
        start = time.perf_counter()
        while step < config.max_steps:
            accumulated, finite = 0.0, True
            step_start, waited = time.perf_counter(), 0.0
            for micro in range(config.gradient_accumulation_steps):
                wait_start = time.perf_counter()
                batch = next(stream)
                waited += time.perf_counter() - wait_start
                seed = ((config.seed * 1_000_003 + step) * 101 + micro) * 1009 + accelerator.process_index
                generator = torch.Generator(device=accelerator.device).manual_seed(seed)
                last = micro == config.gradient_accumulation_steps - 1
                sync = nullcontext() if last else accelerator.no_sync(self.module)
                with sync, accelerator.autocast():
                    loss = self.module(batch, generator)
                # one collective per micro-batch: whether every process's loss is finite, and their mean
                check = torch.stack([torch.isfinite(loss.detach()).float(), loss.detach().float()])
                if accelerator.num_processes > 1:
                    check = accelerator.reduce(check, reduction="mean")
                ok, value = check.tolist()
                if ok < 1.0 or not finite:
                    finite = False
                    continue
                accelerator.backward(loss / config.gradient_accumulation_steps)
                accumulated += value / config.gradient_accumulation_steps
            step += 1
            if not finite:
                self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                bad_in_a_row += 1
                result.skipped_steps.append(step)
                progress.write(f"step {step}: loss is NaN or Inf, step skipped ({bad_in_a_row} in a row)")
                if bad_in_a_row >= config.max_bad_steps:
                    raise TrainingDiverged(
                        f"{bad_in_a_row} consecutive steps with a NaN or Inf loss (up to step {step}); training stopped. "
                        f"The last good checkpoint in {self.output} is intact; lower --learning_rate or check the data."
                    )
                progress.update(1)
                continue
            bad_in_a_row = 0
            if config.max_grad_norm > 0:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            result.losses[step] = accumulated
            result.step_seconds.append(time.perf_counter() - step_start)
            result.data_wait_seconds.append(waited)
            progress.update(1)
            if step % config.log_steps == 0 or step == config.max_steps:
                lr = self.scheduler.get_last_lr()[0]
                progress.set_postfix(loss=f"{accumulated:.4f}", lr=f"{lr:.2e}")
                if config.use_wandb:
                    elapsed = time.perf_counter() - start
                    wait_share = sum(result.data_wait_seconds) / max(1e-9, sum(result.step_seconds))
                    accelerator.log(
                        {
                            "loss": accumulated,
                            "lr": lr,
                            "steps_per_s": step / elapsed,
                            "data_wait_share": wait_share,
                        },
                        step=step,
                    )
            if step % config.save_steps == 0 and step < config.max_steps:
                self._save(step, stream)
            self.after_step(step, stream)
        progress.close()
        self._save(step, stream)
        result.step = step
        if config.use_wandb:
            accelerator.end_training()
        return result
