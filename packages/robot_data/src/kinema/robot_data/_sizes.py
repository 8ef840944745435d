"""Frame-count and frame-size rules of Wan clips.

- Frame counts are 4n+1: the Wan VAE compresses time by 4 and keeps frame 0 apart, so an 81-frame clip has
  21 latent frames and 20 action steps (latent frames 1..20; frame 0 is the first image).
- H and W are divisible by 16 (VAE stride 8 x patch 2 for Wan2.1; the TI2V VAE strides 16 x patch 2 = 32, which
  the model package checks on top of this rule).
"""

from __future__ import annotations

import math

SIZE_MULTIPLE = 16
TIME_COMPRESSION = 4


def wan_num_frames(available: int) -> int:
    """The largest 4n+1 frame count <= ``available`` (>= 1): 600 -> 597, 81 -> 81, 80 -> 77."""
    if available < 1:
        raise ValueError(f"available: expected at least 1 frame, got {available}")
    return (available - 1) // TIME_COMPRESSION * TIME_COMPRESSION + 1


def check_wan_num_frames(num_frames: int, name: str = "num_frames") -> int:
    """``num_frames`` if it is 4n+1 (1, 5, 9, ..., 81), else ``ValueError`` naming ``name``."""
    if not isinstance(num_frames, int) or num_frames < 1 or (num_frames - 1) % TIME_COMPRESSION:
        raise ValueError(f"{name}: expected a frame count of the form 4n+1 (e.g. 81), got {num_frames!r}")
    return num_frames


def num_action_steps(num_frames: int) -> int:
    """Actions per clip: one per latent frame after the first, (num_frames - 1) / 4 (81 -> 20)."""
    return (check_wan_num_frames(num_frames) - 1) // TIME_COMPRESSION


def resolve_size(
    source_hw: tuple[int, int],
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    multiple: int = SIZE_MULTIPLE,
) -> tuple[int, int]:
    """The output (H, W) for a source of ``source_hw``.

    ``size`` (H, W) wins and must be divisible by ``multiple``. Otherwise ``max_pixels`` scales the source down
    (never up) to at most that many pixels and floors both sides to multiples of ``multiple``. With neither, the
    source size is kept as it is.
    """
    src_h, src_w = (int(v) for v in source_hw)
    if size is not None:
        if max_pixels is not None:
            raise ValueError("size and max_pixels: give one of them, not both")
        h, w = (int(v) for v in size)
        if h <= 0 or w <= 0 or h % multiple or w % multiple:
            raise ValueError(
                f"size: expected (H, W) both positive and divisible by {multiple}, got {tuple(size)}"
            )
        return h, w
    if max_pixels is None:
        return src_h, src_w
    if max_pixels < multiple * multiple:
        raise ValueError(f"max_pixels: expected at least {multiple * multiple}, got {max_pixels}")
    scale = min(1.0, math.sqrt(max_pixels / (src_h * src_w)))
    h = max(multiple, int(src_h * scale) // multiple * multiple)
    w = max(multiple, int(src_w * scale) // multiple * multiple)
    return h, w


def cover_size(source_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """The size to resize ``source_hw`` to so that it covers ``target_hw`` keeping its aspect ratio.

    A centre crop of the result then gives exactly ``target_hw``.
    """
    (src_h, src_w), (h, w) = source_hw, target_hw
    scale = max(h / src_h, w / src_w)
    return max(h, round(src_h * scale)), max(w, round(src_w * scale))
