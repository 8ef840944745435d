"""Options every kinema training loop shares (optimization, checkpoints, logging), and the config-file machinery.

Each training command's config dataclass extends :class:`LoopConfig`; every field is a command-line flag of the
same name, a YAML or JSON file given with ``--config`` sets any of them, and flags on the command line win.
Unknown keys in the file are an error.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

# Keys a resumed run may change; any other difference from the checkpoint's run is refused.
RESUMABLE_CHANGES = {
    "max_steps",
    "log_steps",
    "save_steps",
    "max_checkpoints",
    "resume_from",
    "use_wandb",
    "wandb_project",
    "wandb_run_name",
    "dataset_num_workers",
    "config",
    "save_full_state",
    "max_bad_steps",
}


@dataclass
class LoopConfig:
    dataset_num_workers: int = 4
    batch_size: int = 1
    learning_rate: float = 1e-4
    lr_warmup_ratio: float = 0.05
    lr_min_lr: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"
    use_gradient_checkpointing: bool = True
    use_gradient_checkpointing_offload: bool = False
    seed: int = 0
    max_bad_steps: int = 10
    output_path: str = "./models/train/run"
    log_steps: int = 10
    save_steps: int = 500
    save_full_state: bool = False
    resume_from: str | None = None
    max_checkpoints: int | None = None
    use_wandb: bool = False
    wandb_project: str = "kinema"
    wandb_run_name: str | None = None
    config: str | None = field(default=None, metadata={"help": "YAML or JSON file of these options"})

    def __post_init__(self) -> None:
        positive = ("max_steps", "batch_size", "gradient_accumulation_steps", "log_steps", "save_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_checkpoints is not None and self.max_checkpoints < 1:
            raise ValueError(f"--max_checkpoints: expected >= 1, got {self.max_checkpoints}")
        if not 0 <= self.lr_warmup_ratio < 1:
            raise ValueError(f"--lr_warmup_ratio: expected [0, 1), got {self.lr_warmup_ratio}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"--mixed_precision: expected no, bf16 or fp16, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Keys (other than RESUMABLE_CHANGES) whose values differ from ``other`` (a checkpoint's run):
        {key: (theirs, ours)}. A key ``other`` lacks takes :meth:`value_before_field`'s value."""
        ours = self.to_dict()
        theirs = {key: other[key] if key in other else self.value_before_field(key, other) for key in ours}
        return {
            key: (theirs[key], ours[key])
            for key in ours
            if key not in RESUMABLE_CHANGES and theirs[key] != ours[key]
        }

    def value_before_field(self, key: str, saved: dict[str, Any]) -> Any:
        """What a run saved before field ``key`` existed (``saved``: its options) did in its place; None unless a
        subclass says otherwise for a field it added, so that a resume cannot change behaviour unnoticed."""
        return None


C = TypeVar("C", bound=LoopConfig)


def add_config_arguments(parser: argparse.ArgumentParser, cls: type[LoopConfig]) -> None:
    """One flag per field of ``cls`` (mappings such as training stages are file-only); defaults are left as None so
    a config file can fill them."""
    for f in fields(cls):
        if str(f.type).startswith("dict"):
            continue
        flag = f"--{f.name}"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            parser.add_argument(flag, type=kind, default=None, help=f.metadata.get("help"))


def load_config_file(path: str | os.PathLike, cls: type[LoopConfig]) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no file at {path}")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise ValueError(f"--config: {path} is not valid {kind}: {error}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} must hold a mapping of option names to values")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config: unknown keys {unknown} in {path}")
    return values


def config_from_args(args: argparse.Namespace, cls: type[C]) -> C:
    """File values, then command-line flags (those given) on top."""
    values = load_config_file(args.config, cls) if args.config else {}
    flags = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**(values | flags))
