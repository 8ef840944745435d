"""Input validation at the public boundary: every error names the argument, what was expected and what came.

The checks read only shapes, dtypes and devices (no data), so they cost nothing on the GPU and trace
cleanly under ``torch.compile(fullgraph=True)``.
"""

from __future__ import annotations

import torch


def check_tensor(
    name: str,
    value: object,
    expected: str,
    ndim: int | tuple[int, ...],
    sizes: dict[int, int] | None = None,
) -> torch.Tensor:
    """Checks that ``value`` is a floating tensor with ``ndim`` dimensions and the given sizes.

    ``expected`` is the shape as a reader would write it, e.g. ``"(B, F*HW, D=3072)"``; it goes into the error.
    ``sizes`` maps a dimension index (negative allowed) to its required size.
    """
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor of shape {expected}, got {type(value).__name__}")
    allowed = (ndim,) if isinstance(ndim, int) else ndim
    if value.ndim not in allowed:
        raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
    if not value.is_floating_point():
        raise ValueError(
            f"{name}: expected a floating-point tensor of shape {expected}, got dtype {value.dtype}"
        )
    for dim, size in (sizes or {}).items():
        if value.shape[dim] != size:
            raise ValueError(f"{name}: expected shape {expected}, got {tuple(value.shape)}")
    return value


def check_same_device(names: tuple[str, ...], *tensors: torch.Tensor) -> None:
    devices = {t.device for t in tensors}
    if len(devices) > 1:
        found = ", ".join(f"{n} on {t.device}" for n, t in zip(names, tensors))
        raise ValueError(f"expected {' and '.join(names)} on one device, got {found}")


def check_same_dtype(names: tuple[str, ...], *tensors: torch.Tensor) -> None:
    dtypes = {t.dtype for t in tensors}
    if len(dtypes) > 1:
        found = ", ".join(f"{n} is {t.dtype}" for n, t in zip(names, tensors))
        raise ValueError(f"expected {' and '.join(names)} to share a dtype, got {found}")


def check_batch(name: str, value: torch.Tensor, batch: int, expected: str) -> None:
    if value.shape[0] != batch:
        raise ValueError(f"{name}: expected batch size {batch} in shape {expected}, got {tuple(value.shape)}")


def check_frames(tokens_name: str, num_tokens: int, num_frames: int) -> int:
    """Returns HW, the tokens per frame; raises when ``num_frames`` does not divide the token count."""
    if not isinstance(num_frames, int) or num_frames < 1:
        raise ValueError(f"num_frames: expected a positive int, got {num_frames!r}")
    if num_tokens % num_frames != 0:
        raise ValueError(
            f"num_frames: {num_frames} frames do not divide the {num_tokens} tokens of {tokens_name} "
            f"(expected F*HW tokens, frame-major)"
        )
    return num_tokens // num_frames


def check_module_inputs(module: torch.nn.Module, *named: tuple[str, torch.Tensor]) -> None:
    """Inputs must sit on the module's device and, outside autocast, share its parameters' dtype."""
    parameter = next(module.parameters(), None)
    if parameter is None:
        return
    for name, tensor in named:
        if tensor.device != parameter.device:
            raise ValueError(
                f"{name}: on {tensor.device}, but {type(module).__name__}'s parameters are on {parameter.device}"
            )
        if tensor.dtype != parameter.dtype and not torch.is_autocast_enabled(tensor.device.type):
            raise ValueError(
                f"{name}: dtype {tensor.dtype}, but {type(module).__name__}'s parameters are {parameter.dtype} "
                f"(cast the module or run under torch.autocast)"
            )
