"""Options every kinema training loop shares (optimization, checkpoints, logging), and the config-file machinery.

Each training command's config dataclass extends :class:`LoopConfig`; every field is a command-line flag of the
same name, a YAML or JSON file given with ``--config`` sets any of them, and flags on the command line win.
Unknown keys in the file are an error.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
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
    config: str | None = None  # a YAML or JSON file of these options

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
    """One flag per field of ``cls`` (mappings such as training stages are file-only), in the groups of
    :data:`~kinema.video_world_model.training._option_help.OPTION_HELP`, each with its help, default and choices. Parsed
    defaults are None so that a config file can fill them; the default shown is the field's."""
    from ._option_help import GROUPS, OPTION_CHOICES, OPTION_HELP

    groups = {name: parser.add_argument_group(f"{name} options") for name in GROUPS}
    for f in fields(cls):
        if str(f.type).startswith("dict"):
            continue
        group_name, text = OPTION_HELP.get(f.name, ("options", f.metadata.get("help", "")))
        if group_name not in groups:
            groups[group_name] = parser.add_argument_group(f"{group_name}")
        flag, default = f"--{f.name}", f.default if f.default is not MISSING else None
        shown = "" if default is None else f" (default: {str(default).replace('%', '%%')})"
        if f.type in ("bool", bool):
            add_switch(groups[group_name], f.name, text + shown)
            continue
        kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
        choices = OPTION_CHOICES.get(f.name)
        groups[group_name].add_argument(
            flag, type=kind, default=None, choices=choices, metavar=None if choices else f.name.upper(),
            help=text + shown,
        )  # fmt: skip


def switch_value(name: str) -> Callable[[str], bool]:
    """The type of switch ``--name``'s optional value: True/False, true/false, 1/0, yes/no (on/off)."""

    def parse(text: str) -> bool:
        value = text.strip().lower()
        if value in _TRUE | _FALSE:
            return value in _TRUE
        raise argparse.ArgumentTypeError(
            f"--{name}: expected True or False (true/false, 1/0, yes/no), got {text!r}"
        )

    parse.__name__ = "bool"
    return parse


_NO_VALUE = object()  # a switch given without a value


class _Switch(argparse.Action):
    """``--name`` / ``--name VALUE`` / ``--no-name`` in one action (as BooleanOptionalAction, plus a value)."""

    def __call__(self, parser, namespace, values, option_string=None):
        negative = option_string is not None and option_string.startswith("--no-")
        if negative and values is not _NO_VALUE:
            parser.error(f"{option_string}: takes no value (use {self.option_strings[0]} False)")
        setattr(namespace, self.dest, (not negative) if values is _NO_VALUE else values)


def add_switch(parser, name: str, help: str, dest: str | None = None) -> None:
    """``--name`` (True), ``--name True|False`` (the design notes' spelling) and ``--no-name`` (False); None when
    not given, so that a config file can fill it."""
    parser.add_argument(
        f"--{name}", f"--no-{name}", dest=dest or name, action=_Switch, nargs="?", const=_NO_VALUE, default=None,
        type=switch_value(name), metavar="BOOL", help=help,
    )  # fmt: skip


def load_config_file(
    path: str | os.PathLike,
    cls: type[LoopConfig],
    translate: Callable[[dict[str, Any], str], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The file's options, each coerced to its field's type. ``translate(values, path)`` may first rewrite other
    spellings (a design note's nested blocks) into field names; what is left must be fields."""
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
    if translate is not None:
        values = translate(values, str(path))
    types = {f.name: str(f.type) for f in fields(cls)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"--config: unknown keys {unknown} in {path}")
    return {key: coerce_option(value, types[key], f"{path}: {key}") for key, value in values.items()}


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def coerce_option(value: Any, kind: str, where: str) -> Any:
    """``value`` read from a config file as the field type ``kind`` ("float", "int | None", "bool", ...), or a
    ValueError naming ``where``. YAML 1.1 reads ``1e-4`` (no dot) as a string and ``5.0e-5`` as a float; both are
    written in the design notes, so numbers written as strings are parsed; anything else of the wrong kind is
    refused here rather than failing as a TypeError after the model has loaded."""
    base = kind.split(" |")[0].strip()
    if value is None:
        if "None" in kind:
            return None
        raise ValueError(f"{where}: expected a value of type {base}, got null")
    if base.startswith("dict"):
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if base == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{where}: expected true or false, got {value!r}")
    if base in ("int", "float"):
        number = value
        if isinstance(value, str):
            try:
                number = float(value.strip()) if base == "float" else _int_from_text(value.strip())
            except ValueError:
                raise ValueError(f"{where}: expected a number ({base}), got {value!r}") from None
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ValueError(f"{where}: expected a number ({base}), got {type(value).__name__} {value!r}")
        if base == "float":
            return float(number)
        if float(number) != int(number):
            raise ValueError(f"{where}: expected a whole number, got {value!r}")
        return int(number)
    if isinstance(value, (dict, list)):
        raise ValueError(f"{where}: expected a {base}, got {type(value).__name__} {value!r}")
    # YAML 1.1 reads the words no / yes / off / on as booleans: `mixed_precision: no` arrives as False
    if isinstance(value, bool):
        return "no" if not value else "yes"
    return value if isinstance(value, str) else str(value)  # `vace_e_layers: 0` is the text "0"


def _int_from_text(text: str) -> float:
    try:
        return int(text)
    except ValueError:
        return float(
            text
        )  # "1e3": whole numbers written as floats are accepted, fractions refused by the caller


def config_from_args(args: argparse.Namespace, cls: type[C]) -> C:
    """File values, then command-line flags (those given) on top."""
    values = load_config_file(args.config, cls) if args.config else {}
    flags = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return cls(**(values | flags))
