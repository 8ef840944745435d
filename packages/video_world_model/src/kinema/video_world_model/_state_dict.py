"""The one strict check before a state dict is loaded: errors that name the missing keys, the unexpected keys and
the first tensor whose shape differs (torch's own strict load names no shapes for LoRA and lists every key)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch

SHOWN_KEYS = 8  # an error lists this many keys of a kind, then how many there are


def _keys(keys: list[str]) -> str:
    if len(keys) <= SHOWN_KEYS:
        return str(keys)
    return f"{keys[:SHOWN_KEYS]} and {len(keys) - SHOWN_KEYS} more"


def check_state_dict(
    own: Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor],
    where: str,
    *,
    owner: str = "the model",
    may_lack: Collection[str] = (),
    note: str = "",
) -> None:
    """Raises ValueError unless ``state`` has exactly the keys of ``own`` (less any in ``may_lack``) with the same
    shapes. ``where`` opens the message (the file or argument); ``owner`` names what expects the shapes; ``note``
    ends the key message (a hint about why keys could differ)."""
    missing = sorted(set(own) - set(state) - set(may_lack))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{where}: missing keys {_keys(missing)}, unexpected keys {_keys(unexpected)}{note}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(
                f"{where}: {key} has shape {tuple(value.shape)}, {owner} expects {tuple(own[key].shape)}"
            )
