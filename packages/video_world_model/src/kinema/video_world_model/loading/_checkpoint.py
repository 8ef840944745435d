"""Checkpoints of ``kinema-wm train``, written so a crash never leaves one that resume would pick up.

    <output_path>/checkpoints/step-000010000/
        trainable.safetensors        the trained weights, keys as in the exported files (controller keys without
                                     prefix; LoRA keys as diffusers saves them, ``transformer.blocks.0.attn1.to_q.
                                     lora_A.weight``); frozen parameters (unused controller heads) are absent
        trainable_full.safetensors   the same tensors under their full names in the training module (for resume)
        trainer_state.json           step, epoch, data position, RNG states, the run's options
        optimizer.pt  scheduler.pt   state dicts, loaded with torch.load(weights_only=True)

A checkpoint is written into ``checkpoints/.step-XXXXXXXXX.tmp/`` and renamed into place only when every file is
complete; ``latest`` is the highest-numbered ``step-*`` directory that holds all five files.

The reference design's checkpoints have the same folder layout; their trainable.safetensors holds the controller's
keys without prefix and DiffSynth's LoRA keys (``pipe.dit.blocks.0.self_attn.q.lora_A.default.weight``). Both are
read where a controller is expected (:func:`split_trainable`, :func:`checkpoint_weights`); the run's
``action_train_config.json`` is two folders up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._atomic import write_dir_atomic

TRAINABLE = "trainable.safetensors"
FILES = (
    TRAINABLE,
    "trainable_full.safetensors",
    "trainer_state.json",
    "optimizer.pt",
    "scheduler.pt",
)


def checkpoint_weights(source: str | os.PathLike) -> Path | None:
    """The trainable.safetensors of a checkpoint when ``source`` is that file or a folder holding it, else None."""
    path = Path(source)
    if path.is_file() and path.name == TRAINABLE:
        return path
    if path.is_dir() and (path / TRAINABLE).is_file():
        return path / TRAINABLE
    return None


def split_trainable(
    state: dict[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(controller tensors, LoRA tensors) of a trainable.safetensors, kinema's or the reference's: LoRA keys hold
    ``.lora_``, the controller's are everything else (both writers strip the controller's prefix)."""
    lora = {k: v for k, v in state.items() if ".lora_" in k}
    return {k: v for k, v in state.items() if k not in lora}, lora


def step_dir(output_path: str | os.PathLike, step: int) -> Path:
    return Path(output_path) / "checkpoints" / f"step-{step:09d}"


def complete_checkpoints(output_path: str | os.PathLike) -> list[Path]:
    """Complete step directories, oldest first."""
    root = Path(output_path) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step-*") if p.is_dir() and all((p / f).is_file() for f in FILES)]
    return sorted(found, key=lambda p: int(p.name.removeprefix("step-")))


def resolve_checkpoint(output_path: str | os.PathLike, resume_from: str) -> Path:
    """``latest`` -> the newest complete checkpoint of output_path; otherwise a step directory, checked."""
    if resume_from == "latest":
        found = complete_checkpoints(output_path)
        if not found:
            raise FileNotFoundError(
                f"--resume_from latest: no complete checkpoint under {Path(output_path) / 'checkpoints'}"
            )
        return found[-1]
    path = Path(resume_from)
    if not path.is_dir():
        raise FileNotFoundError(f"--resume_from: {path} is not a directory")
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"--resume_from: {path} lacks {missing} (an incomplete or foreign checkpoint)"
        )
    return path


def save_checkpoint(
    output_path: str | os.PathLike,
    step: int,
    *,
    trainable: dict[str, torch.Tensor],
    trainable_full: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    scheduler_state: dict[str, Any],
    trainer_state: dict[str, Any],
    max_checkpoints: int | None = None,
) -> Path:
    final = step_dir(output_path, step)

    def cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}

    def write(tmp: Path) -> None:
        tmp.mkdir(parents=True)
        save_file(cpu(trainable), str(tmp / "trainable.safetensors"))
        save_file(cpu(trainable_full), str(tmp / "trainable_full.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        torch.save(scheduler_state, tmp / "scheduler.pt")
        (tmp / "trainer_state.json").write_text(json.dumps(trainer_state, indent=2))

    # the same step may be saved again (the final save right after a periodic one): the folder is replaced
    write_dir_atomic(final, write)
    if max_checkpoints is not None:
        for old in complete_checkpoints(output_path)[:-max_checkpoints]:
            shutil.rmtree(old)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    return {
        "trainable_full": load_file(str(path / "trainable_full.safetensors")),
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "scheduler": torch.load(path / "scheduler.pt", map_location="cpu", weights_only=True),
        "trainer_state": json.loads((path / "trainer_state.json").read_text()),
    }
