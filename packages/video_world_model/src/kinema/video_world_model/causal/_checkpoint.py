"""Trained action weights of the causal rollout (projection + action module) and loading a whole causal pipeline.

An action checkpoint directory holds

- ``causal_action_config.json``: ``action_dim``, ``hidden_dim``, ``action_module`` ({"kind", "config"} of a shipped
  module, or null), ``rollout`` (the :class:`CausalRolloutConfig` it was trained with), ``base_model`` and any
  extra fields the trainer adds;
- ``causal_action.safetensors``: ``projection.*`` (the ``ActionModulationProjection``) and ``module.*``.

Both are written atomically (temporary name, then rename), the weights first.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .._atomic import write_atomic
from .._state_dict import check_state_dict
from ..loading._wan import ModelFileError, load_wan_components
from ..modeling._action_modules import action_module_kind, build_action_module
from ..modeling._prompt import WanPromptEncoder
from ._config import CausalRolloutConfig
from ._pipeline import ActionCausalInferencePipeline

ACTION_CONFIG = "causal_action_config.json"
ACTION_WEIGHTS = "causal_action.safetensors"
FORMAT = "kinema-causal-action/1"


@dataclass
class ActionCheckpoint:
    """What an action checkpoint directory holds, ready to put into a pipeline."""

    config: dict[str, Any]
    projection_state: dict[str, torch.Tensor]
    action_module: nn.Module | None

    @property
    def action_dim(self) -> int:
        return int(self.config["action_dim"])

    @property
    def rollout(self) -> CausalRolloutConfig:
        return CausalRolloutConfig.from_args(self.config.get("rollout") or {})


def write_action_checkpoint(
    out_dir: str | os.PathLike,
    pipeline: ActionCausalInferencePipeline,
    *,
    base_model: str = "",
    extra: dict[str, Any] | None = None,
) -> Path:
    """Writes the pipeline's action projection and action module (a shipped kind) to ``out_dir``."""
    if pipeline.action_projection is None:
        raise ValueError("pipeline: no action projection to save (built with enable_adaln_zero=False)")
    module = pipeline.action_module
    kind = None if module is None else action_module_kind(module)
    if module is not None and kind is None:
        raise ValueError(
            f"action_module: {type(module).__name__} is not one of the shipped modules (history, sequence, "
            "multimodal); save a custom module's weights yourself"
        )
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    state = {f"projection.{k}": v for k, v in pipeline.action_projection.state_dict().items()}
    if module is not None:
        state |= {f"module.{k}": v for k, v in module.state_dict().items()}
    state = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    config = {
        "format": FORMAT,
        "base_model": base_model,
        "action_dim": pipeline.action_dim,
        "hidden_dim": pipeline.model.hidden_size,
        "action_module": None if module is None else {"kind": kind, "config": module.config},
        "rollout": pipeline.config.to_dict(),
    } | (extra or {})
    write_atomic(root / ACTION_WEIGHTS, lambda tmp: save_file(state, str(tmp)))
    write_atomic(root / ACTION_CONFIG, lambda tmp: tmp.write_text(json.dumps(config, indent=2)))
    return root


def load_action_checkpoint(checkpoint_dir: str | os.PathLike) -> ActionCheckpoint:
    """Reads an action checkpoint directory; the action module is rebuilt with its trained weights."""
    root = Path(checkpoint_dir)
    config_path, weights_path = root / ACTION_CONFIG, root / ACTION_WEIGHTS
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelFileError(f"action checkpoint: {path} does not exist")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{config_path}: not valid JSON ({error.msg})") from None
    missing = sorted({"action_dim", "hidden_dim", "action_module"} - set(config))
    if missing:
        raise ValueError(f"{config_path}: lacks {missing}")
    state = load_file(str(weights_path))
    projection = {k.removeprefix("projection."): v for k, v in state.items() if k.startswith("projection.")}
    module_state = {k.removeprefix("module."): v for k, v in state.items() if k.startswith("module.")}
    module = None
    spec = config["action_module"]
    if spec is not None:
        module = build_action_module(spec["kind"], spec["config"])
        _load_strict(module, module_state, f"{weights_path} (module.*)")
    elif module_state:
        raise ValueError(f"{weights_path}: holds module.* weights but {config_path} names no action module")
    return ActionCheckpoint(config=config, projection_state=projection, action_module=module)


def load_causal_pipeline(
    model_dir: str | os.PathLike,
    action_checkpoint: str | os.PathLike | None = None,
    config: CausalRolloutConfig | None = None,
    torch_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    text_encoder_path: str | os.PathLike | None = None,
    tokenizer_path: str | os.PathLike | None = None,
    vae_path: str | os.PathLike | None = None,
    action_dim: int = 512,
) -> ActionCausalInferencePipeline:
    """The causal pipeline from local directories: the Wan model (the layouts of ``load_wan_components``) and,
    optionally, a trained action checkpoint, whose rollout settings are used unless ``config`` is given."""
    checkpoint = None if action_checkpoint is None else load_action_checkpoint(action_checkpoint)
    components = load_wan_components(model_dir, torch_dtype, text_encoder_path, tokenizer_path, vae_path)
    if config is None:
        config = checkpoint.rollout if checkpoint is not None else CausalRolloutConfig()
    pipeline = ActionCausalInferencePipeline(
        config,
        device,
        generator=components["transformer"],
        text_encoder=WanPromptEncoder(
            components["tokenizer"], components["text_encoder"].to(device), config.max_sequence_length
        ),
        vae=components["vae"],
        action_module=None if checkpoint is None else checkpoint.action_module,
        action_dim=action_dim if checkpoint is None else checkpoint.action_dim,
    )
    if checkpoint is not None:
        hidden = pipeline.model.hidden_size
        if int(checkpoint.config["hidden_dim"]) != hidden:
            raise ValueError(
                f"action checkpoint {action_checkpoint}: trained for hidden size {checkpoint.config['hidden_dim']}, "
                f"the model in {model_dir} has {hidden}"
            )
        _load_strict(
            pipeline.action_projection, checkpoint.projection_state, f"{action_checkpoint} (projection.*)"
        )
    return pipeline


def _load_strict(module: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    check_state_dict(module.state_dict(), state, where, owner="the pipeline")
    module.load_state_dict(state, strict=True)
