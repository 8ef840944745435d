"""``kinema-wm train``: the action controller (and optionally LoRA) of the Wan world model, on kinema's loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file

from ..loading._lora import add_lora, load_lora_state_dict, lora_state_dict
from ..loading._wan import TRAIN_CONFIG, load_wan_components, write_controller_dir
from ..modeling._controller import WanActionController
from ..modeling._flow_matching import FlowMatchingObjective
from ..modeling._prompt import WanPromptEncoder
from ..modeling._transformer import WanActionTransformer
from ._loop import Trainer, TrainingDiverged, TrainResult
from ._train_config import TrainConfig
from ._train_data import build_dataset
from ._train_model import ActionTrainingModule

__all__ = ["TrainResult", "TrainingDiverged", "WorldModelTrainer"]


class WorldModelTrainer(Trainer):
    """``WorldModelTrainer(config).run()``. ``components`` (transformer, vae, text_encoder, tokenizer, scheduler,
    as :func:`load_wan_components` returns them) replaces loading from ``config.model_dir`` (benchmarks, tests)."""

    marker = TRAIN_CONFIG

    def __init__(
        self,
        config: TrainConfig,
        accelerator: Accelerator | None = None,
        components: dict[str, Any] | None = None,
    ):
        self.components = components
        super().__init__(config, accelerator)

    def build(self) -> tuple[Any, torch.nn.Module]:
        config, accelerator = self.config, self.accelerator
        dataset, magnitude_scale = build_dataset(config)
        weight_dtype = torch.bfloat16 if accelerator.mixed_precision == "bf16" else torch.float32
        if accelerator.mixed_precision == "fp16":
            weight_dtype = torch.float16
        components = self.components or load_wan_components(
            config.model_dir, weight_dtype, config.text_encoder_path, config.tokenizer_path, config.vae_path
        )
        device = torch.device("cpu") if config.initialize_model_on_cpu else accelerator.device
        transformer = components["transformer"].to(device).requires_grad_(False)
        controller = WanActionController(
            **config.controller_arguments(magnitude_scale, transformer.config)
        ).to(device)
        if config.action_controller_checkpoint:
            path = Path(config.action_controller_checkpoint)
            if not path.is_file():
                raise FileNotFoundError(f"--action_controller_checkpoint: no file at {path}")
            state = (
                load_file(str(path))
                if path.suffix == ".safetensors"
                else torch.load(path, map_location="cpu", weights_only=True)
            )
            controller.load_reference_state_dict(state)
        if "action_controller" not in config.trainable:
            controller.requires_grad_(False)
        if "lora" in config.trainable or config.lora_checkpoint:
            add_lora(transformer, config.lora_rank, config.lora_modules())
            if config.lora_checkpoint:
                path = Path(config.lora_checkpoint)
                if not path.is_file():
                    raise FileNotFoundError(f"--lora_checkpoint: no file at {path}")
                load_lora_state_dict(transformer, load_file(str(path)), str(path))
            for name, parameter in transformer.named_parameters():
                parameter.requires_grad_("lora" in config.trainable and ".lora_" in name)
        model = WanActionTransformer(transformer, controller)
        model.enable_gradient_checkpointing(config.use_gradient_checkpointing)
        needs_encoders = config.cache_dir is None
        vae = components["vae"].to(accelerator.device).requires_grad_(False) if needs_encoders else None
        prompt_encoder = None
        if needs_encoders:
            text_encoder = components["text_encoder"].to(accelerator.device).requires_grad_(False)
            prompt_encoder = WanPromptEncoder(components["tokenizer"], text_encoder)
        objective = FlowMatchingObjective(
            shift=config.flow_shift,
            prediction=config.prediction_type,
            min_timestep_boundary=config.min_timestep_boundary,
            max_timestep_boundary=config.max_timestep_boundary,
            weighting=config.loss_weighting,
            sigma_schedule=config.sigma_schedule,
        )
        module = ActionTrainingModule(
            model, objective, vae, prompt_encoder, config.use_gradient_checkpointing_offload
        )
        return dataset, module

    def exported_name(self, name: str) -> str:
        """Controller keys without prefix (as in action_controller.safetensors), LoRA keys as diffusers saves them."""
        if name.startswith("model.controller."):
            return name.removeprefix("model.controller.")
        return "transformer." + name.removeprefix("model.transformer.").replace(".default.", ".")

    def export(self, step: int) -> None:
        """action_controller.safetensors, lora.safetensors (when trained) and action_train_config.json."""
        config = self.config
        lora = None
        lora_state = None
        if "lora" in config.trainable:
            lora = {
                "lora_base_model": config.lora_base_model,
                "lora_target_modules": config.lora_target_modules,
                "lora_rank": config.lora_rank,
            }
            lora_state = lora_state_dict(self.raw.model.transformer)
        write_controller_dir(
            self.output,
            self.raw.controller,
            base_model=str(config.model_dir),
            lora=lora,
            lora_state=lora_state,
            extra={"train_args": config.to_dict(), "step": step},
        )
