"""The options of ``kinema-wm train``: the reference training script's flags, plus a config file they override.

Every field is a command-line flag of the same name (``--learning_rate 1e-4``); a YAML or JSON file given with
``--config`` sets any of them, and flags on the command line win. Unknown keys in the file are an error.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES

TRAINABLE_MODELS = ("action_controller", "lora")
LORA_TARGETS = {  # reference (DiffSynth/Wan) names -> diffusers' WanTransformerBlock module names
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "o": "to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}
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
class TrainConfig:
    # data
    dataset_base_path: str | None = None
    dataset_metadata_path: str | None = None
    data_file_keys: str = "video"
    dataset_repeat: int = 1
    dataset_num_workers: int = 4
    cache_dir: str | None = None  # latents + text embeddings written by `kinema-wm cache`
    height: int | None = None
    width: int | None = None
    num_frames: int = 81
    max_pixels: int | None = 1280 * 720
    # model
    model_dir: str | None = None
    model_id_with_origin_paths: str | None = None
    tokenizer_path: str | None = None
    text_encoder_path: str | None = None
    vae_path: str | None = None
    trainable_models: str = "action_controller"
    action_controller_config: str = "wan_ti2v_5b"
    action_injection_type: str | None = None
    action_initial_scale: float | None = None
    action_window: int | None = None
    action_controller_checkpoint: str | None = None
    lora_base_model: str | None = None
    lora_target_modules: str = "q,k,v,o,ffn.0,ffn.2"
    lora_rank: int = 32
    lora_checkpoint: str | None = None
    initialize_model_on_cpu: bool = False
    # optimization
    learning_rate: float = 1e-4
    lr_warmup_ratio: float = 0.05
    lr_min_lr: float = 0.0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int = 1000
    batch_size: int = 1
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "bf16"
    use_gradient_checkpointing: bool = True
    use_gradient_checkpointing_offload: bool = False
    max_timestep_boundary: float = 1.0
    min_timestep_boundary: float = 0.0
    loss_weighting: str = "none"
    seed: int = 0
    max_bad_steps: int = 10
    # output
    output_path: str = "./models/train/Wan2.2-TI2V-5B_action_controller"
    log_steps: int = 10
    save_steps: int = 500
    save_full_state: bool = False
    resume_from: str | None = None
    max_checkpoints: int | None = None
    use_wandb: bool = False
    wandb_project: str = "kinema-wm"
    wandb_run_name: str | None = None
    config: str | None = field(default=None, metadata={"help": "YAML or JSON file of these options"})

    def __post_init__(self) -> None:
        if self.model_dir is None and self.model_id_with_origin_paths is not None:
            self.model_dir = str(_model_dir_from_origin_paths(self.model_id_with_origin_paths))
        if self.model_dir is None:
            raise ValueError("--model_dir: required (a local Wan2.2-TI2V directory)")
        if self.dataset_base_path is None and self.cache_dir is None:
            raise ValueError(
                "--dataset_base_path: required unless --cache_dir names a cache made by `kinema-wm cache`"
            )
        unknown = sorted(set(self.trainable) - set(TRAINABLE_MODELS))
        if unknown or not self.trainable:
            raise ValueError(
                f"--trainable_models: expected some of {TRAINABLE_MODELS}, got {self.trainable_models!r}"
            )
        if self.action_controller_config not in ACTION_CONTROLLER_CONFIGS:
            raise ValueError(
                f"--action_controller_config: expected one of {sorted(ACTION_CONTROLLER_CONFIGS)}, "
                f"got {self.action_controller_config!r}"
            )
        if self.action_injection_type is not None and self.action_injection_type not in INJECTION_TYPES:
            raise ValueError(
                f"--action_injection_type: expected one of {INJECTION_TYPES}, got {self.action_injection_type!r}"
            )
        if "lora" in self.trainable and self.lora_base_model is None:
            self.lora_base_model = "dit"
        if self.lora_base_model not in (None, "dit", "transformer"):
            raise ValueError(
                f"--lora_base_model: expected 'dit' (the transformer), got {self.lora_base_model!r}"
            )
        self.lora_modules()  # validates the target names
        positive = (
            "max_steps",
            "batch_size",
            "gradient_accumulation_steps",
            "log_steps",
            "save_steps",
            "lora_rank",
        )
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        if self.max_checkpoints is not None and self.max_checkpoints < 1:
            raise ValueError(f"--max_checkpoints: expected >= 1, got {self.max_checkpoints}")
        if not 0 <= self.lr_warmup_ratio < 1:
            raise ValueError(f"--lr_warmup_ratio: expected [0, 1), got {self.lr_warmup_ratio}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"--mixed_precision: expected no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"--num_frames: {self.num_frames} is not 4n+1")
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value % 32:
                raise ValueError(f"--{name}: {value} is not a multiple of 32 (16x VAE x 2x2 patches)")

    @property
    def trainable(self) -> list[str]:
        return [m.strip() for m in self.trainable_models.split(",") if m.strip()]

    def lora_modules(self) -> list[str]:
        """--lora_target_modules as diffusers module names (reference names are mapped, diffusers names kept)."""
        names = [m.strip() for m in self.lora_target_modules.split(",") if m.strip()]
        known = set(LORA_TARGETS) | set(LORA_TARGETS.values())
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(
                f"--lora_target_modules: unknown {unknown}; expected some of {sorted(LORA_TARGETS)}"
            )
        return [LORA_TARGETS.get(n, n) for n in names]

    def controller_arguments(self, magnitude_scale, transformer_config) -> dict[str, Any]:
        """The preset, with the flags applied and the widths taken from the transformer being trained (a preset
        names an injection scheme; its 3072/24/30 sizes are Wan2.2-TI2V-5B's)."""
        arguments = dict(ACTION_CONTROLLER_CONFIGS[self.action_controller_config])
        arguments["hidden_size"] = (
            transformer_config.num_attention_heads * transformer_config.attention_head_dim
        )
        arguments["num_heads"] = transformer_config.num_attention_heads
        arguments["num_layers"] = transformer_config.num_layers
        arguments["num_latent_frames"] = max(arguments["num_latent_frames"], (self.num_frames - 1) // 4)
        if self.action_injection_type is not None:
            arguments["injection_type"] = self.action_injection_type
        if self.action_initial_scale is not None:
            arguments["initial_scale"] = self.action_initial_scale
        if self.action_window is not None:
            arguments["action_window"] = self.action_window
        arguments["magnitude_scale"] = list(magnitude_scale)
        return arguments

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def differences(self, other: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
        """Keys (other than RESUMABLE_CHANGES) whose values differ from ``other``: {key: (theirs, ours)}."""
        ours = self.to_dict()
        return {
            key: (other.get(key), ours[key])
            for key in ours
            if key not in RESUMABLE_CHANGES and other.get(key) != ours[key]
        }


def _model_dir_from_origin_paths(spec: str) -> Path:
    """'DIR:pattern, DIR:pattern' with local directories only -> DIR (all entries must share it)."""
    directories = set()
    for entry in (e.strip() for e in spec.split(",") if e.strip()):
        directory = entry.split(":", 1)[0]
        if not Path(directory).is_dir():
            raise ValueError(
                f"--model_id_with_origin_paths: {directory!r} is not a local directory (only local paths are "
                "supported; nothing is downloaded). Use --model_dir DIR."
            )
        directories.add(str(Path(directory).resolve()))
    if len(directories) != 1:
        raise ValueError(
            f"--model_id_with_origin_paths: expected one model directory, got {sorted(directories)}"
        )
    return Path(directories.pop())


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults are left as None so a config file can fill them."""
    for f in fields(TrainConfig):
        flag = f"--{f.name}"
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
        else:
            kind = {"int": int, "float": float}.get(str(f.type).split(" |")[0], str)
            parser.add_argument(flag, type=kind, default=None, help=f.metadata.get("help"))


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config: no file at {path}")
    text = path.read_text()
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(
            f"--config: {path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}"
        ) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ValueError(f"--config: {path} must hold a mapping of option names to values")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config: unknown keys {unknown} in {path}")
    return values


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """File values, then command-line flags (those given) on top."""
    values = load_config_file(args.config) if args.config else {}
    flags = {
        f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None
    }
    return TrainConfig(**(values | flags))
