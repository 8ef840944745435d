"""Temporal windows: which frames of a long clip each dataset item covers.

A clip offers ``positions`` start positions for a window (counted in ``unit`` frames: 4 for action-video clips,
whose actions steer groups of 4 frames, 1 for VACE-E episodes). ``window`` chooses among them:

- ``"first"``: position 0 for every item (the dataset has one item per clip);
- ``"random"``: a start drawn for each item from ``(seed, epoch, index)`` alone, so a run resumed at any epoch and
  index draws exactly the windows the uninterrupted run drew (one item per clip; ``set_epoch`` moves on);
- ``"all"``: every window at ``stride`` positions apart, starting at 0 (one item per window; a tail shorter than
  the stride is not covered).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

WINDOWS = ("first", "random", "all")


def check_window(window: str, stride: int | None, seed: int, unit: int) -> None:
    """Validates the window options of a dataset config (``stride`` in frames, a multiple of ``unit``)."""
    if window not in WINDOWS:
        raise ValueError(f"window: expected one of {WINDOWS}, got {window!r}")
    if stride is not None and (
        not isinstance(stride, int) or isinstance(stride, bool) or stride < 1 or stride % unit
    ):
        multiple = f" and a multiple of {unit} (frames per action step)" if unit > 1 else ""
        raise ValueError(f"window_stride: expected a positive integer{multiple}, got {stride!r}")
    if stride is not None and window != "all":
        raise ValueError(f"window_stride: only window='all' uses it, got window={window!r}")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: expected an integer >= 0, got {seed!r}")


class Windows:
    """Maps dataset items to (clip, start position); ``positions[c]`` >= 1 start positions of clip c."""

    def __init__(self, window: str, positions: Sequence[int], stride: int, seed: int):
        self.window, self.seed, self.stride = window, seed, stride
        self.positions = np.asarray(positions, dtype=np.int64)
        self.epoch = 0
        if window == "all":
            counts = (self.positions - 1) // stride + 1 if len(self.positions) else self.positions
            self._offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def __len__(self) -> int:
        """Items per pass over the clips: clips (``"first"``, ``"random"``) or windows (``"all"``)."""
        return int(self._offsets[-1]) if self.window == "all" else len(self.positions)

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int | np.integer) or epoch < 0:
            raise ValueError(f"epoch: expected an integer >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def locate(self, item: int, index: int) -> tuple[int, int]:
        """(clip, start position) of ``item`` (< len(self)), sampled as dataset ``index`` (random draws key on
        it, so the copies of a clip made by ``repeat`` get different windows)."""
        if self.window == "all":
            clip = int(np.searchsorted(self._offsets, item, side="right")) - 1
            return clip, (item - int(self._offsets[clip])) * self.stride
        if self.window == "first":
            return item, 0
        generator = np.random.default_rng([self.seed, self.epoch, int(index)])
        return item, int(generator.integers(self.positions[item]))
