"""Natural order of file and folder names: numbers in a name compare as numbers (``episode_2`` before
``episode_10``), wherever "the first N" or "the last K" episodes are taken."""

from __future__ import annotations

import os
import re
from pathlib import Path


def natural_key(path: str | os.PathLike) -> tuple:
    """Sort key of a path's name in which runs of digits compare as numbers: ``episode_2`` < ``episode_10``.

    ``sorted(paths, key=natural_key)``. The name splits into text, number, text, ... (text at even positions,
    numbers at odd ones, so equal positions always hold the same kind); names equal as numbers
    (``episode_02``, ``episode_2``) are ordered by the name itself.
    """
    name = Path(path).name
    parts = re.split(r"(\d+)", name)
    return tuple(int(part) if i % 2 else part for i, part in enumerate(parts)), name
