"""LoRA on the Wan transformer through peft (diffusers' PeftAdapterMixin), and its state dicts.

Saved LoRA weights use peft's keys without the adapter name or any wrapper prefix
(``blocks.0.attn1.to_q.lora_A.weight``), which diffusers' ``load_lora_weights`` reads (with a ``transformer.``
prefix) and which ``set_peft_model_state_dict`` loads back for training.

Files written elsewhere are read too (:func:`diffusers_lora_state`): the reference design's (DiffSynth's)
``lora.safetensors`` names the original Wan modules and keeps peft's adapter name
(``blocks.0.self_attn.q.lora_A.default.weight``; ``pipe.dit.`` in front inside a checkpoint's
``trainable.safetensors``); diffusers' own Wan LoRA converter maps those names.
"""

from __future__ import annotations

import re

import torch
from diffusers import WanPipeline, WanTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from .._state_dict import check_state_dict

ADAPTER = "default"
WRAPPER_PREFIXES = ("pipe.dit.", "dit.", "model.transformer.", "transformer.", "diffusion_model.")
"""Prefixes of the transformer inside the modules that saved LoRA weights (DiffSynth's pipeline, kinema's training
module, diffusers' pipelines, the original Wan checkpoints)."""
ORIGINAL_WAN_NAMES = (".self_attn.", ".cross_attn.", ".ffn.0.", ".ffn.2.", "head.head.", "time_projection.")
"""Module-name fragments found only in the original Wan (and DiffSynth) naming, never in diffusers'."""
_ADAPTER_NAME = re.compile(r"\.(lora_[AB])\.[^.]+\.weight$")  # peft's "lora_A.<adapter>.weight"


def add_lora(transformer: WanTransformer3DModel, rank: int, target_modules: list[str]) -> None:
    """Adds a trainable LoRA adapter (alpha = rank, so its scale is 1) to every module named in ``target_modules``."""
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=target_modules, init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=ADAPTER)


def lora_state_dict(transformer: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER)


def diffusers_lora_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The LoRA tensors of ``state`` under diffusers' Wan keys with the ``transformer.`` prefix (what
    ``load_lora_weights`` reads), from kinema's layout, diffusers' or DiffSynth's (original Wan module names, see the
    module docstring). Other tensors (a checkpoint's file also holds the controller) are not LoRA and are left out;
    a state with no LoRA tensor, or one diffusers' converter cannot map, raises a ValueError naming ``source``."""
    lora = {k: v for k, v in state.items() if ".lora_" in k or k.endswith(".alpha")}
    if not any(".lora_" in key for key in lora):
        raise ValueError(
            f"{source}: holds no LoRA tensors (no key contains '.lora_'; keys start {sorted(state)[:3]})"
        )
    renamed = {}
    for key, value in lora.items():
        prefix = next((p for p in WRAPPER_PREFIXES if key.startswith(p)), "")
        renamed[_ADAPTER_NAME.sub(r".\1.weight", key.removeprefix(prefix))] = value
    if not any(fragment in key for key in renamed for fragment in ORIGINAL_WAN_NAMES):
        return {f"transformer.{key}": value for key, value in renamed.items()}
    try:  # the converter diffusers applies to original-Wan LoRAs ("diffusion_model." keys); public API
        return WanPipeline.lora_state_dict({f"diffusion_model.{k}": v for k, v in renamed.items()})
    except (ValueError, KeyError) as error:
        raise ValueError(
            f"{source}: original-Wan (DiffSynth) LoRA keys that diffusers' Wan converter cannot map "
            f"({type(error).__name__}: {error})"
        ) from error


def load_lora_state_dict(
    transformer: WanTransformer3DModel, state: dict[str, torch.Tensor], source: str
) -> None:
    """Loads LoRA weights into the adapter (keys and shapes must match): the file :func:`lora_state_dict` saved, or
    any layout :func:`diffusers_lora_state` reads (a reference run's lora.safetensors, a checkpoint's
    trainable.safetensors)."""
    own = lora_state_dict(transformer)
    state = {k.removeprefix("transformer."): v for k, v in diffusers_lora_state(state, source).items()}
    check_state_dict(
        own, state, source, owner="the adapter", note=" (LoRA keys of another model or other target modules?)"
    )
    set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
