"""The design note's option blocks (``logging``, ``validation``, ``vram_optimization``, ``robot_data_path``), read
into :class:`~kinema.video_world_model.vace_e.VaceEConfig`'s flat fields.

:data:`NOTE_OPTIONS` is the whole mapping, one entry per key the note writes. Each entry gives the value's type,
the fields it sets, fields it sets only when the file does not (``implied``), and for values kinema cannot honour a
warning that says so and what kinema does instead. A key the table lacks is an error, as any unknown key is.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..training._loop_config import coerce_option

NOTE_METRICS = ("video_quality", "task_alignment", "motion_accuracy")
EXPORTED = (
    "it exports the trained weights (vace_e.safetensors, + lora.safetensors or transformer/) into "
    "<output_path>/<stage>/ every save_steps steps and at the end of each stage"
)


@dataclass(frozen=True)
class NoteOption:
    kind: str  # the value's type, as a field type ("int", "bool", ...)
    sets: Callable[[Any], dict[str, Any]] = lambda value: {}
    implied: Callable[[Any], dict[str, Any]] = lambda value: {}  # set unless the file sets the field itself
    warning: Callable[[Any], str | None] = lambda value: None
    check: Callable[[Any, str], None] = field(default=lambda value, where: None)


def _metrics_warning(names: list[str]) -> str | None:
    missing = [name for name in names if name != "video_quality"]
    if not missing:
        return None
    return (
        f"validation.metrics: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not computed; kinema "
        "reports PSNR and SSIM over the whole frame (video_quality), inside the hand mask and outside it"
    )


def _check_metrics(names: Any, where: str) -> None:
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{where}: expected a list of metric names, got {names!r}")
    unknown = sorted(set(names) - set(NOTE_METRICS))
    if unknown:
        raise ValueError(f"{where}: unknown {unknown}; expected some of {list(NOTE_METRICS)}")


NOTE_OPTIONS: dict[str, NoteOption] = {
    # the W&B project; a logging block asks for W&B, so it turns use_wandb on (a use_wandb in the file wins)
    "logging.wandb_project": NoteOption("str", lambda v: {"wandb_project": v}, lambda v: {"use_wandb": True}),
    # the W&B run's name
    "logging.experiment_name": NoteOption("str", lambda v: {"wandb_run_name": v}),
    # log the loss every this many steps
    "logging.log_frequency": NoteOption("int", lambda v: {"log_steps": v}),
    # kinema uploads no W&B artifacts; the exported weights are always written, every save_steps
    "logging.save_model_artifacts": NoteOption(
        "bool",
        warning=lambda v: (
            f"logging.save_model_artifacts: kinema uploads no W&B artifacts; {EXPORTED}"
            if v
            else f"logging.save_model_artifacts: false cannot be honoured: kinema always saves; {EXPORTED}"
        ),
    ),
    # false: no validation during training (the block's other keys are then ignored)
    "validation.enabled": NoteOption("bool", lambda v: {} if v else {"validate_every_epochs": None}),
    # validate every this many epochs (on validation_base_path's held-out episodes)
    "validation.frequency": NoteOption("int", lambda v: {"validate_every_epochs": v}),
    # how many held-out episodes each validation generates
    "validation.num_samples": NoteOption("int", lambda v: {"validation_episodes": v}),
    # kinema always writes each validated episode's video (target | generated)
    "validation.save_videos": NoteOption(
        "bool",
        warning=lambda v: (
            None
            if v
            else "validation.save_videos: false cannot be honoured: kinema always writes each validated episode's "
            "video (target | generated) beside metrics.json"
        ),
    ),
    # video_quality is PSNR/SSIM (whole frame, hand mask, context); the other two are not computed
    "validation.metrics": NoteOption("list", warning=_metrics_warning, check=_check_metrics),
    # on: gradient checkpointing; off: no checkpointing, no offload (the block's other keys are then ignored)
    "vram_optimization.enabled": NoteOption(
        "bool",
        lambda v: (
            {"use_gradient_checkpointing": True}
            if v
            else {"use_gradient_checkpointing": False, "use_gradient_checkpointing_offload": False}
        ),
    ),
    # no DeepSpeed in this loop: the optimizer states stay where the model is
    "vram_optimization.offload_optimizer": NoteOption(
        "bool",
        warning=lambda v: (
            "vram_optimization.offload_optimizer: not applied: kinema's VACE-E training loop has no "
            "DeepSpeed, so the optimizer states stay on the accelerator; use_gradient_checkpointing(_offload) are the "
            "memory savings it has"
            if v
            else None
        ),
    ),
    # offloads the checkpointed activations (not the frozen models) to the CPU
    "vram_optimization.cpu_offload": NoteOption(
        "bool",
        lambda v: {"use_gradient_checkpointing_offload": v},
        lambda v: {"use_gradient_checkpointing": True} if v else {},
        lambda v: (
            "vram_optimization.cpu_offload: kinema offloads the checkpointed activations to the CPU "
            "(use_gradient_checkpointing_offload: true); the frozen VAE, text encoder and CLIP stay on the accelerator"
            if v
            else None
        ),
    ),
    # no gradient compression in kinema
    "vram_optimization.gradient_compression": NoteOption(
        "float | None",
        warning=lambda v: (
            f"vram_optimization.gradient_compression: {v} is not applied: kinema has no gradient "
            "compression; gradients are reduced uncompressed"
            if v
            else None
        ),
    ),
    # the note's "HDF5 demonstration data": the episode folders (with their *_trajectories.hdf5) of dataset_base_path
    "robot_data_path": NoteOption("str", lambda v: {"dataset_base_path": v}),
}
NOTE_BLOCKS = sorted({key.split(".")[0] for key in NOTE_OPTIONS if "." in key})


def read_note_options(values: dict[str, Any], where: str) -> dict[str, Any]:
    """``values`` (a config file's) with the note's blocks replaced by the flat fields they map to; warns once per
    value kinema cannot honour. A block key the table lacks, or a mapped value that contradicts the same field
    written flat in the file, is a ValueError naming ``where``."""
    given: dict[str, Any] = {}
    for name in NOTE_BLOCKS:
        if name not in values:
            continue
        block = values[name]
        if not isinstance(block, dict):
            raise ValueError(f"{where}: {name}: expected a mapping, got {type(block).__name__} {block!r}")
        unknown = sorted(
            set(block) - {key.split(".", 1)[1] for key in NOTE_OPTIONS if key.startswith(name + ".")}
        )
        if unknown:
            raise ValueError(f"{where}: {name}: unknown keys {unknown}")
        if "enabled" in block and not coerce_option(block["enabled"], "bool", f"{where}: {name}.enabled"):
            ignored = sorted(set(block) - {"enabled"})
            if ignored:
                warnings.warn(
                    f"{name}: enabled is false, so {ignored} are ignored", UserWarning, stacklevel=3
                )
            block = {"enabled": block["enabled"]}
        given |= {f"{name}.{key}": value for key, value in block.items()}
    if "robot_data_path" in values:
        given["robot_data_path"] = values["robot_data_path"]
    flat = {key: value for key, value in values.items() if key not in given and key not in NOTE_BLOCKS}
    mapped: dict[str, tuple[str, Any]] = {}
    implied: dict[str, Any] = {}
    messages = []
    for key, raw in given.items():
        option = NOTE_OPTIONS[key]
        if option.kind == "list":
            option.check(raw, f"{where}: {key}")
            value = raw
        else:
            value = coerce_option(raw, option.kind, f"{where}: {key}")
        for name, mapped_value in option.sets(value).items():
            if name in flat and coerce_option(flat[name], _kind_of(name), f"{where}: {name}") != mapped_value:
                raise ValueError(
                    f"{where}: {key} and {name} disagree ({mapped_value!r} and {flat[name]!r}); give one"
                )
            mapped[name] = (key, mapped_value)
        implied |= option.implied(value)
        if (message := option.warning(value)) is not None:
            messages.append(message)
    for message in messages:
        warnings.warn(message, UserWarning, stacklevel=3)
    result = {name: value for name, (_, value) in mapped.items()}
    result |= {name: value for name, value in implied.items() if name not in flat and name not in result}
    return flat | result


def _kind_of(name: str) -> str:
    from dataclasses import fields

    from ._config import VaceEConfig

    return next(str(f.type) for f in fields(VaceEConfig) if f.name == name)
