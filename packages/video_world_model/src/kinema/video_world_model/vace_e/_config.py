"""The options of ``kinema-wm vace-e train``: a staged YAML config (dev, LoRA, full ship with the package) and flags.

    training_stages:
      stage_1: {description: "task encoder warm-up", trainable_models: vace_e, learning_rate: 5.0e-5, num_epochs: 10}
      stage_2: {description: "joint", trainable_models: "dit,vace_e", learning_rate: 1.0e-5, num_epochs: 20}

Trainable models: ``vace_e`` (task-embodiment encoder + injectors (+ guidance head)), ``dit`` (every weight of the
VACE transformer), ``vace`` (only VACE's control blocks and patch embedding), ``lora`` (LoRA on the transformer's
attention and FFN). A stage may set ``trainable_models``, ``learning_rate``, ``num_epochs`` (or ``epochs``, the design
note's spelling) or ``max_steps`` and ``description``; anything else in a stage is an error.
"""

from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from ..training._loop_config import (
    LoopConfig,
    add_config_arguments,
    add_switch,
    coerce_option,
    load_config_file,
)
from ..training._train_config import DATASET_WINDOWS, check_flow_options, lora_module_names

TRAINABLE = ("vace_e", "dit", "vace", "lora")
STAGE_KEYS = {"description", "trainable_models", "learning_rate", "num_epochs", "epochs", "max_steps"}
LENGTH_KEYS = ("num_epochs", "epochs", "max_steps")  # how long a stage trains
STAGE_KINDS = {"learning_rate": "float", "trainable_models": "str"}  # stage options a flag may replace
SHIPPED_CONFIGS = ("vace_e_dev", "vace_e_lora", "vace_e_full")
# what a run saved before these options existed trained with (shift 3 was fixed; kinema <= 0.4's sigmas and loss)
FLOW_FIELDS_ADDED_WITH_VALUE = {"flow_shift": 3.0, "sigma_schedule": "inference", "loss_weighting": "none"}
# the design note's switches (issue 26), off in runs saved before them
SWITCHES_ADDED_OFF = {"verbose_logging": False, "save_intermediate_outputs": False}


@dataclass(frozen=True)
class Stage:
    name: str
    trainable_models: str
    learning_rate: float
    num_epochs: int | None = None
    max_steps: int | None = None
    description: str = ""


@dataclass
class VaceEConfig(LoopConfig):
    # data (kinema.robot_data.VaceEEpisodeDataset)
    dataset_base_path: str | None = None
    task_metadata_path: str | None = None
    dataset_repeat: int = 1
    num_frames: int = 81
    height: int | None = None
    width: int | None = None
    max_pixels: int | None = 832 * 480
    max_hand_motion_length: int = 512
    max_object_trajectory_length: int = 512
    max_objects: int = 10
    fallback_to_video_only: bool = True
    # which num_frames of a longer episode a training sample takes: "random" (a start per sample drawn from (seed,
    # epoch, index): the same after a resume), "first" or "all" (every window); validation always takes "first"
    dataset_window: str = "random"
    validation_base_path: str | None = None  # held-out episodes for validation (default: none)
    # model
    model_dir: str | None = None  # Wan2.1-VACE in the diffusers layout
    clip_path: str | None = None  # transformers CLIPVisionModel directory for the embodiment image
    text_encoder_path: str | None = None
    tokenizer_path: str | None = None
    enable_vace_e: bool = True
    vace_e_task_processing: bool = True
    vace_e_layers: str = "0,5,10,15,20,25"
    encoder_width: int = 512
    encoder_layers: int = 2
    encoder_heads: int = 8
    use_reference_image: bool = True  # the embodiment image as VACE's reference frame when present
    guidance_loss_weight: float = 0.0  # the task-alignment guidance loss (off by default)
    # flow matching (see kinema.video_world_model.modeling._flow_matching): Wan2.1 (VACE-1.3B) trains and samples at shift 3
    flow_shift: float = 3.0
    sigma_schedule: str = "train"
    loss_weighting: str = "diffsynth"
    trainable_models: str = "vace_e"
    lora_rank: int = 32
    lora_target_modules: str = "q,k,v,o,ffn.0,ffn.2"
    # training
    num_epochs: int | None = None  # when set, max_steps = epochs x steps per epoch
    training_stages: dict[str, Any] | None = None
    validate_every_epochs: int | None = None
    validation_episodes: int = 2
    validation_inference_steps: int = 20
    compile_model: bool = False
    debug: bool = False  # tiny step count, every step logged
    verbose_logging: bool = field(
        default=False,
        metadata={"help": "log every step and print the first sample's shapes (as --debug does)"},
    )
    save_intermediate_outputs: bool = field(
        default=False,
        metadata={
            "help": "no intermediate latents are saved (a warning says what is: checkpoints, validation videos)"
        },
    )
    output_path: str = "./models/train/vace_e"
    wandb_project: str = "kinema-vace-e"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_dir is None:
            raise ValueError("--model_dir: required (a local Wan2.1-VACE directory in the diffusers layout)")
        if self.dataset_base_path is None or self.task_metadata_path is None:
            raise ValueError("--dataset_base_path and --task_metadata_path: both required")
        if self.clip_path is not None and not Path(self.clip_path).is_dir():
            raise FileNotFoundError(
                f"--clip_path: {self.clip_path} is not a directory (a CLIPVisionModel saved locally)"
            )
        self.trainable()  # validates
        lora_module_names(self.lora_target_modules)
        if self.num_epochs is not None and self.num_epochs < 1:
            raise ValueError(f"--num_epochs: expected >= 1, got {self.num_epochs}")
        if self.guidance_loss_weight < 0:
            raise ValueError(f"--guidance_loss_weight: expected >= 0, got {self.guidance_loss_weight}")
        if self.dataset_window not in DATASET_WINDOWS:
            raise ValueError(
                f"--dataset_window: expected one of {DATASET_WINDOWS}, got {self.dataset_window!r}"
            )
        check_flow_options(self)
        self.stages()  # validates
        if self.debug or self.verbose_logging:
            self.log_steps = 1

    def value_before_field(self, key: str, saved: dict[str, Any]) -> Any:
        if key == "dataset_window":
            return "first"  # each episode's first num_frames frames, before the field existed
        if key in FLOW_FIELDS_ADDED_WITH_VALUE:
            return FLOW_FIELDS_ADDED_WITH_VALUE[key]
        if key in SWITCHES_ADDED_OFF:
            return SWITCHES_ADDED_OFF[key]
        return super().value_before_field(key, saved)

    def trainable(self, spec: str | None = None) -> list[str]:
        names = [m.strip() for m in (spec or self.trainable_models).split(",") if m.strip()]
        unknown = sorted(set(names) - set(TRAINABLE))
        if unknown or not names:
            raise ValueError(f"trainable_models: unknown {unknown or names}; expected some of {TRAINABLE}")
        return names

    def stages(self) -> list[Stage]:
        """The training stages in order (one implicit stage from the top-level options when none are given)."""
        if not self.training_stages:
            return [Stage("stage_1", self.trainable_models, self.learning_rate, self.num_epochs, None)]
        if not isinstance(self.training_stages, dict):
            raise ValueError("training_stages: expected a mapping of stage names to stage options")
        stages = []
        for name, options in self.training_stages.items():
            if not isinstance(options, dict):
                raise ValueError(f"training_stages.{name}: expected a mapping, got {type(options).__name__}")
            unknown = sorted(set(options) - STAGE_KEYS)
            if unknown:
                raise ValueError(
                    f"training_stages.{name}: unknown keys {unknown}; expected some of {sorted(STAGE_KEYS)}"
                )
            trainable = options.get("trainable_models", self.trainable_models)
            try:
                self.trainable(trainable)
            except ValueError as error:
                raise ValueError(f"training_stages.{name}: {error}") from None
            where = f"training_stages.{name}"
            options = _stage_epochs_alias(options, where)
            for key in ("num_epochs", "max_steps"):
                count = coerce_option(options.get(key), "int | None", f"{where}.{key}")
                if count is not None and count < 1:
                    raise ValueError(f"{where}.{key}: expected >= 1, got {count}")
            stages.append(
                Stage(
                    name,
                    trainable,
                    coerce_option(
                        options.get("learning_rate", self.learning_rate), "float", f"{where}.learning_rate"
                    ),
                    coerce_option(options.get("num_epochs"), "int | None", f"{where}.num_epochs"),
                    coerce_option(options.get("max_steps"), "int | None", f"{where}.max_steps"),
                    coerce_option(options.get("description", ""), "str", f"{where}.description"),
                )
            )
        return stages


def _stage_epochs_alias(options: dict[str, Any], where: str) -> dict[str, Any]:
    """A stage's options with the design note's ``epochs`` read as ``num_epochs`` (both given: they must agree)."""
    if "epochs" not in options:
        return options
    options = dict(options)
    epochs = coerce_option(options.pop("epochs"), "int | None", f"{where}.epochs")
    if "num_epochs" in options:
        num_epochs = coerce_option(options["num_epochs"], "int | None", f"{where}.num_epochs")
        if num_epochs != epochs:
            raise ValueError(f"{where}: epochs and num_epochs disagree ({epochs} and {num_epochs}); give one")
    options["num_epochs"] = epochs
    return options


def shipped_config(name: str) -> Path:
    """The path of a config shipped with the package: vace_e_dev, vace_e_lora or vace_e_full."""
    if name not in SHIPPED_CONFIGS:
        raise ValueError(f"config: unknown shipped config {name!r}; expected one of {SHIPPED_CONFIGS}")
    return Path(str(resources.files("kinema.video_world_model.vace_e") / "configs" / f"{name}.yaml"))


def resolve_config_path(value: str) -> Path:
    """A file path, or the name (or file name) of a shipped config such as ``configs/vace_e_dev.yaml``."""
    path = Path(value)
    if path.is_file():
        return path
    stem = path.stem
    if stem in SHIPPED_CONFIGS:
        return shipped_config(stem)
    raise FileNotFoundError(f"--config: no file at {path} (shipped configs: {', '.join(SHIPPED_CONFIGS)})")


def add_vace_e_arguments(parser: argparse.ArgumentParser) -> None:
    """``kinema-wm vace-e train``'s flags: one per VaceEConfig field, and the design note's ``--vram_optimization``
    and ``--cpu_offload`` switches (see :func:`_note_switches`)."""
    add_config_arguments(parser, VaceEConfig)
    group = parser.add_argument_group("design note switches")
    add_switch(
        group,
        "vram_optimization",
        "= --use_gradient_checkpointing (True) / no checkpointing, no offload (False)",
    )
    add_switch(
        group,
        "cpu_offload",
        "= --use_gradient_checkpointing_offload: the checkpointed activations go to the CPU",
    )


def _note_switches(args: argparse.Namespace) -> dict[str, bool]:
    """The fields ``--vram_optimization`` and ``--cpu_offload`` set (fields given as flags win)."""
    values: dict[str, bool] = {}
    vram, offload = getattr(args, "vram_optimization", None), getattr(args, "cpu_offload", None)
    if vram is not None:
        values |= {"use_gradient_checkpointing": vram} if vram else {
            "use_gradient_checkpointing": False, "use_gradient_checkpointing_offload": False}  # fmt: skip
    if offload is not None:
        values["use_gradient_checkpointing_offload"] = offload
        if offload:
            values["use_gradient_checkpointing"] = True  # the offload is of checkpointed activations
    return values


def _stages_with_flags(stages: Any, flags: dict[str, Any]) -> Any:
    """The file's stages with what the command line gives (``--num_epochs`` / ``--max_steps``, ``--learning_rate``,
    ``--trainable_models``) in place of each stage's own, saying so: a flag wins over the file, and a staged file
    says these per stage."""
    if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
        return stages  # VaceEConfig.stages() names the problem
    stages = {name: dict(options) for name, options in stages.items()}
    length = {key: flags[key] for key in ("num_epochs", "max_steps") if key in flags}
    if length:
        replaced = [
            f"{name} ({', '.join(f'{k}: {v}' for k, v in options.items() if k in LENGTH_KEYS)})"
            if any(k in LENGTH_KEYS for k in options)
            else name
            for name, options in stages.items()
        ]
        given = " ".join(f"--{key} {value}" for key, value in length.items())
        warnings.warn(f"{given} replaces the length of {', '.join(replaced)}", UserWarning, stacklevel=3)
        stages = {
            name: {k: v for k, v in options.items() if k not in LENGTH_KEYS} | length
            for name, options in stages.items()
        }
    for key in ("learning_rate", "trainable_models"):
        if key not in flags:
            continue
        replaced = [
            f"{name} ({coerce_option(options[key], STAGE_KINDS[key], f'training_stages.{name}.{key}')})"
            if key in options
            else name
            for name, options in stages.items()
        ]
        warnings.warn(
            f"--{key} {flags[key]} replaces the {key} of {', '.join(replaced)}", UserWarning, stacklevel=3
        )
        stages = {name: options | {key: flags[key]} for name, options in stages.items()}
    return stages


def vace_e_config_from_args(args: argparse.Namespace) -> VaceEConfig:
    """The config file's options (the design note's blocks read through :mod:`._note_options`), then the flags
    given on the command line on top."""
    from ._note_options import read_note_options

    path = resolve_config_path(args.config) if args.config else None
    values = load_config_file(path, VaceEConfig, read_note_options) if path else {}
    flags = {
        f.name: getattr(args, f.name) for f in fields(VaceEConfig) if getattr(args, f.name, None) is not None
    }
    if values.get("training_stages") and set(flags) & {"num_epochs", "max_steps", *STAGE_KINDS}:
        values["training_stages"] = _stages_with_flags(values["training_stages"], flags)
    config = VaceEConfig(**(values | _note_switches(args) | flags))
    if config.save_intermediate_outputs:
        warnings.warn(
            "save_intermediate_outputs: kinema saves no intermediate latents; a run keeps its checkpoints every "
            "save_steps, the exported weights of each stage and, with validation_base_path and "
            "validate_every_epochs, each validation's videos (target | generated) and metrics under "
            "<output_path>/<stage>/validation/; --debug or --verbose_logging print the first sample's shapes",
            UserWarning,
            stacklevel=2,
        )
    if config.validate_every_epochs and config.validation_base_path is None:
        warnings.warn(
            f"validation: validate_every_epochs is {config.validate_every_epochs} but validation_base_path is not "
            "set, so no validation runs during training (give --validation_base_path, a folder of held-out "
            "episodes)",
            UserWarning,
            stacklevel=2,
        )
    return config
