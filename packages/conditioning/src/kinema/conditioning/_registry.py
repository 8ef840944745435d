"""build_injector: an injector by name, for configs and command lines."""

from __future__ import annotations

from typing import Any

from torch import nn

from ._adaln import AdaLNZero
from ._cross_attention import PerFrameCrossAttention
from ._film import FiLM
from ._residual import ResidualInjector

INJECTORS: dict[str, type[nn.Module]] = {
    "adaln_zero": AdaLNZero,
    "film": FiLM,
    "cross_attn_frame": PerFrameCrossAttention,
    "residual": ResidualInjector,
}


def build_injector(kind: str, **config: Any) -> nn.Module:
    """``build_injector("cross_attn_frame", hidden_dim=3072, cond_dim=3072, num_heads=24)`` and so on.

    kinds: adaln_zero (AdaLNZero), film (FiLM), cross_attn_frame (PerFrameCrossAttention), residual
    (ResidualInjector); ``config`` holds that class's constructor arguments.
    """
    if kind not in INJECTORS:
        raise ValueError(f"kind: unknown injector {kind!r}; expected one of {sorted(INJECTORS)}")
    cls = INJECTORS[kind]
    try:
        return cls(**config)
    except TypeError as error:
        raise ValueError(f"build_injector({kind!r}): bad config for {cls.__name__}: {error}") from None
