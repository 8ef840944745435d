"""Labelled video grids (mp4) and contact sheets (PNG) for looking at several generations side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kinema.robot_data import write_video

from .._atomic import write_atomic

LABEL_HEIGHT = 14


def _to_uint8(video: np.ndarray) -> np.ndarray:
    return (np.clip(video, 0, 1) * 255).round().astype(np.uint8) if video.dtype != np.uint8 else video


def _label(frame: np.ndarray, text: str) -> np.ndarray:
    """(H, W, 3) uint8 -> (H + LABEL_HEIGHT, W, 3) with ``text`` on a black strip above it."""
    strip = Image.new("RGB", (frame.shape[1], LABEL_HEIGHT))
    ImageDraw.Draw(strip).text((2, 1), text, fill=(255, 255, 255), font=ImageFont.load_default())
    return np.concatenate([np.asarray(strip), frame], axis=0)


def tile_videos(videos: list[np.ndarray], labels: list[str], columns: int) -> np.ndarray:
    """Equal-shape videos (F, H, W, 3) -> one (F, rows*(H+label), columns*W, 3) uint8 video, row-major."""
    if len(videos) != len(labels) or not videos:
        raise ValueError(
            f"videos, labels: expected the same non-zero count, got {len(videos)} and {len(labels)}"
        )
    shapes = {v.shape for v in videos}
    if len(shapes) != 1:
        raise ValueError(f"videos: expected one shape, got {sorted(shapes)}")
    frames, height, width, _ = videos[0].shape
    rows = -(-len(videos) // columns)
    out = np.zeros((frames, rows * (height + LABEL_HEIGHT), columns * width, 3), np.uint8)
    for i, (video, label) in enumerate(zip(videos, labels)):
        r, c = divmod(i, columns)
        video = _to_uint8(video)
        for f in range(frames):
            out[
                f,
                r * (height + LABEL_HEIGHT) : (r + 1) * (height + LABEL_HEIGHT),
                c * width : (c + 1) * width,
            ] = _label(video[f], label)
    return out


def contact_sheet(videos: list[np.ndarray], labels: list[str], samples: int = 5) -> np.ndarray:
    """One row per video: ``samples`` evenly spaced frames, the label on each; (rows*(H+label), samples*W, 3)."""
    rows = []
    for video, label in zip(videos, labels):
        video = _to_uint8(video)
        picks = np.linspace(0, len(video) - 1, samples).round().astype(int)
        rows.append(np.concatenate([_label(video[f], f"{label} f{f}") for f in picks], axis=1))
    return np.concatenate(rows, axis=0)


def write_grid(path: str | Path, videos: list[np.ndarray], labels: list[str], columns: int, fps: int) -> Path:
    grid = tile_videos(videos, labels, columns)
    if grid.shape[1] % 2 or grid.shape[2] % 2:  # H.264 with yuv420p needs even sides
        grid = np.pad(grid, ((0, 0), (0, grid.shape[1] % 2), (0, grid.shape[2] % 2), (0, 0)))
    return write_video(path, grid, fps=fps)


def write_contact_sheet(
    path: str | Path, videos: list[np.ndarray], labels: list[str], samples: int = 5
) -> Path:
    path = Path(path)
    return write_atomic(path, Image.fromarray(contact_sheet(videos, labels, samples)).save)
