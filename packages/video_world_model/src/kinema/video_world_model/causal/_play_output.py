"""Where ``kinema-wm play`` puts frames as they arrive: an mp4 encoded incrementally, and a window when possible.

:class:`ProgressiveVideoWriter` encodes each block's frames with PyAV (H.264, yuv420p) the moment they exist, into
a temporary file beside the target that is renamed to the target when the rollout ends (also after q or Ctrl-C),
so a finished file appears atomically and memory holds one block at a time. :class:`FrameDisplay` shows frames
with matplotlib when a display and an interactive backend are there; otherwise it is off, never an error.
"""

from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class ProgressiveVideoWriter:
    """``with ProgressiveVideoWriter(path, fps) as out: out.write(frames (T, H, W, 3) uint8)``; renamed on exit."""

    def __init__(self, path: str | os.PathLike, fps: float, crf: int = 18):
        self.path = Path(path)
        if self.path.suffix.lower() != ".mp4":
            raise ValueError(f"--out: expected an .mp4 path, got {self.path}")
        if not fps or fps <= 0:
            raise ValueError(f"fps: expected a positive frame rate, got {fps}")
        self.fps, self.crf = fps, crf
        self.frames_written = 0
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self._container = None
        self._stream = None

    def __enter__(self) -> ProgressiveVideoWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(self._tmp), "w", format="mp4")
        return self

    def write(self, frames: np.ndarray) -> None:
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"frames: expected (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        if self._stream is None:
            if frames.shape[1] % 2 or frames.shape[2] % 2:
                raise ValueError(
                    f"frames: H and W must be even for H.264, got {frames.shape[1]}x{frames.shape[2]}"
                )
            stream = self._container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf)}
            self._stream = stream
        for image in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in self._stream.encode(video_frame):
                self._container.mux(packet)
            self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if self._stream is not None:
                for packet in self._stream.encode():
                    self._container.mux(packet)
            self._container.close()
            keep = self.frames_written > 0 and (exc_type is None or issubclass(exc_type, KeyboardInterrupt))
            if keep:
                os.replace(self._tmp, self.path)
        finally:
            if self._tmp.exists():
                self._tmp.unlink()


def display_available() -> bool:
    """A graphical display and an interactive matplotlib backend."""
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return False
    try:
        import matplotlib

        backend = matplotlib.get_backend().lower()
    except ImportError:
        return False
    return backend not in ("agg", "pdf", "ps", "svg", "cairo", "template") and "inline" not in backend


class FrameDisplay:
    """Shows (H, W, 3) uint8 frames in a matplotlib window as they arrive (no waiting between frames)."""

    def __init__(self, title: str = "kinema-wm play"):
        import matplotlib.pyplot as plt

        self._plt = plt
        plt.ion()
        self._figure, axes = plt.subplots(num=title)
        axes.set_axis_off()
        self._axes = axes
        self._image = None

    def show(self, frames: np.ndarray) -> None:
        for frame in frames:
            if self._image is None:
                self._image = self._axes.imshow(frame)
            else:
                self._image.set_data(frame)
            self._figure.canvas.draw_idle()
            self._figure.canvas.flush_events()

    def close(self) -> None:
        self._plt.close(self._figure)
