"""LoRA on the Wan transformer through peft (diffusers' PeftAdapterMixin), and its state dicts.

Saved LoRA weights use peft's keys without the adapter name or any wrapper prefix
(``blocks.0.attn1.to_q.lora_A.weight``), which diffusers' ``load_lora_weights`` reads (with a ``transformer.``
prefix) and which ``set_peft_model_state_dict`` loads back for training.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

ADAPTER = "default"


def add_lora(transformer: WanTransformer3DModel, rank: int, target_modules: list[str]) -> None:
    """Adds a trainable LoRA adapter (alpha = rank, so its scale is 1) to every module named in ``target_modules``."""
    config = LoraConfig(r=rank, lora_alpha=rank, target_modules=target_modules, init_lora_weights=True)
    transformer.add_adapter(config, adapter_name=ADAPTER)


def lora_state_dict(transformer: WanTransformer3DModel) -> dict[str, torch.Tensor]:
    return get_peft_model_state_dict(transformer, adapter_name=ADAPTER)


def load_lora_state_dict(
    transformer: WanTransformer3DModel, state: dict[str, torch.Tensor], source: str
) -> None:
    """Loads LoRA weights saved by :func:`lora_state_dict` into the adapter (keys and shapes must match)."""
    own = lora_state_dict(transformer)
    state = {k.removeprefix("transformer."): v for k, v in state.items()}
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(
            f"{source}: LoRA keys do not match the adapter: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the adapter expects {tuple(own[key].shape)}"
            )
    set_peft_model_state_dict(transformer, state, adapter_name=ADAPTER)
