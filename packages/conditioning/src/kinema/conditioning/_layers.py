"""Which layers receive a condition, and their learnable per-layer output scales."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def select_layers(spec: str | int | Iterable[int] | None, num_layers: int) -> tuple[int, ...]:
    """The layer indices a spec names, sorted.

    - ``None`` or ``"all"``: every layer;
    - an explicit list, e.g. ``[0, 5, 10]`` or ``"0,5,10"``;
    - every k-th from layer 0: ``"every:3"`` (0, 3, 6, ...).
    Indices outside [0, num_layers) and duplicates are errors.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers: expected >= 1, got {num_layers}")
    if spec is None or spec == "all":
        return tuple(range(num_layers))
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("every:"):
            step_text = text.removeprefix("every:")
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"layers: 'every:k' needs a positive integer k, got {spec!r}")
            return tuple(range(0, num_layers, int(step_text)))
        try:
            layers = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"layers: expected 'all', 'every:k' or comma-separated indices, got {spec!r}"
            ) from None
    elif isinstance(spec, int):
        raise ValueError(f"layers: an int is ambiguous; write [{spec}] or 'every:{spec}'")
    else:
        layers = [int(i) for i in spec]
    if not layers:
        raise ValueError(f"layers: {spec!r} names no layer")
    outside = [i for i in layers if not 0 <= i < num_layers]
    if outside:
        raise ValueError(f"layers: {outside} outside the model's {num_layers} layers (0..{num_layers - 1})")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers: duplicate indices in {spec!r}")
    return tuple(sorted(layers))


def output_scales(num_layers: int, initial_scale: float = 0.01) -> nn.Parameter:
    """A learnable scale per layer, all ``initial_scale`` at init.

    Multiply an injector's output by ``scales[layer]``. 0.0 makes every injection an exact identity; the other
    injector parameters then receive zero gradient until the scales move, so training starts slower.
    """
    return nn.Parameter(torch.full((num_layers,), float(initial_scale)))
