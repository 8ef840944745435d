"""The options of ``kinema-wm train``: the reference training script's flags, plus a config file they override.

Every field is a command-line flag of the same name (``--learning_rate 1e-4``); a YAML or JSON file given with
``--config`` sets any of them, and flags on the command line win. Unknown keys in the file are an error. The
optimization, checkpoint and logging options are :class:`LoopConfig`'s, shared with every kinema training loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..modeling._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES
from ..modeling._flow_matching import PREDICTIONS, SIGMA_SCHEDULES, WEIGHTINGS
from ._loop_config import LoopConfig

TRAINABLE_MODELS = ("action_controller", "lora")
DATASET_WINDOWS = ("first", "random", "all")  # kinema.robot_data's ActionVideoConfig.window
# options added later whose default is what every run did before they existed: a checkpoint without them resumes
FIELDS_ADDED_WITH_VALUE = {
    "flow_shift": 5.0,
    "prediction_type": "flow",
    "sigma_schedule": "inference",
    "dataset_shuffle_buffer": 0,
}
LORA_TARGETS = {  # reference (DiffSynth/Wan) names -> diffusers' WanTransformerBlock module names
    "q": "to_q",
    "k": "to_k",
    "v": "to_v",
    "o": "to_out.0",
    "ffn.0": "ffn.net.0.proj",
    "ffn.2": "ffn.net.2",
}


def lora_module_names(spec: str) -> list[str]:
    """A comma-separated LoRA target list as diffusers module names (reference names mapped, diffusers kept)."""
    names = [m.strip() for m in spec.split(",") if m.strip()]
    known = set(LORA_TARGETS) | set(LORA_TARGETS.values())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--lora_target_modules: unknown {unknown}; expected some of {sorted(LORA_TARGETS)}")
    return [LORA_TARGETS.get(n, n) for n in names]


@dataclass
class TrainConfig(LoopConfig):
    # data
    dataset_base_path: str | None = None
    dataset_metadata_path: str | None = None
    data_file_keys: str = "video"
    dataset_repeat: int = 1
    cache_dir: str | None = None  # latents + text embeddings written by `kinema-wm cache`
    dataset_shards: str | None = None  # WebDataset shards written by `kinema-data shard`
    dataset_shards_index: str | None = None
    dataset_shuffle_buffer: int = 0
    height: int | None = None
    width: int | None = None
    num_frames: int = 81
    max_pixels: int | None = 1280 * 720
    dataset_window: str | None = None  # None: random for train, all for cache
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
    max_timestep_boundary: float = 1.0
    min_timestep_boundary: float = 0.0
    loss_weighting: str = "diffsynth"
    # flow matching; every option's --help text is in _option_help.OPTION_HELP
    flow_shift: float = 5.0
    sigma_schedule: str = "train"
    prediction_type: str = "flow"
    # defaults of the reference script that differ from LoopConfig's
    output_path: str = "./models/train/Wan2.2-TI2V-5B_action_controller"
    wandb_project: str = "kinema-wm"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_dir is None and self.model_id_with_origin_paths is not None:
            self.model_dir = str(_model_dir_from_origin_paths(self.model_id_with_origin_paths))
        if self.model_dir is None:
            raise ValueError("--model_dir: required (a local Wan2.2-TI2V directory)")
        sources = [f"--{k}" for k in ("dataset_base_path", "cache_dir", "dataset_shards") if getattr(self, k)]
        if not sources:
            raise ValueError(
                "--dataset_base_path: required unless --cache_dir names a cache made by `kinema-wm cache` or "
                "--dataset_shards names shards made by `kinema-data shard`"
            )
        if self.dataset_shards is not None and len(sources) > 1:
            raise ValueError(f"--dataset_shards: give one source of training data, got {', '.join(sources)}")
        if self.dataset_shards is None and (
            self.dataset_shards_index is not None or self.dataset_shuffle_buffer
        ):
            raise ValueError(
                "--dataset_shards_index, --dataset_shuffle_buffer: only --dataset_shards uses them"
            )
        if self.dataset_shuffle_buffer < 0:
            raise ValueError(f"--dataset_shuffle_buffer: expected >= 0, got {self.dataset_shuffle_buffer}")
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
        if self.prediction_type not in PREDICTIONS:
            raise ValueError(
                f"--prediction_type: expected one of {PREDICTIONS}, got {self.prediction_type!r}"
            )
        check_flow_options(self)
        if self.lora_rank < 1:
            raise ValueError(f"--lora_rank: expected >= 1, got {self.lora_rank}")
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"--num_frames: {self.num_frames} is not 4n+1")
        if self.dataset_window is not None and self.dataset_window not in DATASET_WINDOWS:
            raise ValueError(
                f"--dataset_window: expected one of {DATASET_WINDOWS}, got {self.dataset_window!r}"
            )
        if self.dataset_window is not None and self.cache_dir is not None:
            raise ValueError(
                "--dataset_window: a cache holds the windows `kinema-wm cache` encoded; leave it unset with "
                "--cache_dir"
            )
        for name in ("height", "width"):
            value = getattr(self, name)
            if value is not None and value % 32:
                raise ValueError(f"--{name}: {value} is not a multiple of 32 (16x VAE x 2x2 patches)")

    def value_before_field(self, key: str, saved: dict[str, Any]) -> Any:
        if key == "dataset_window" and saved.get("cache_dir") is None:
            return "first"  # runs on clips took each clip's first num_frames frames before the field existed
        if key in FIELDS_ADDED_WITH_VALUE:
            return FIELDS_ADDED_WITH_VALUE[key]
        return super().value_before_field(key, saved)

    @property
    def trainable(self) -> list[str]:
        return [m.strip() for m in self.trainable_models.split(",") if m.strip()]

    def lora_modules(self) -> list[str]:
        return lora_module_names(self.lora_target_modules)

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


def check_flow_options(config) -> None:
    """The flow-matching options a config shares (flow_shift, sigma_schedule, loss_weighting), named on error."""
    if not config.flow_shift > 0:
        raise ValueError(f"--flow_shift: expected > 0, got {config.flow_shift}")
    if config.sigma_schedule not in SIGMA_SCHEDULES:
        raise ValueError(
            f"--sigma_schedule: expected one of {SIGMA_SCHEDULES}, got {config.sigma_schedule!r}"
        )
    if config.loss_weighting not in WEIGHTINGS:
        raise ValueError(f"--loss_weighting: expected one of {WEIGHTINGS}, got {config.loss_weighting!r}")


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
