"""Strict and lenient handling of bad items, shared by the datasets.

Index time: every candidate item is checked; a bad one raises (strict) or is left out and listed (lenient), with one
aggregated warning. Load time: a file that breaks only when its frames are read (e.g. a fast-start mp4 cut short)
raises (strict) or is replaced by the next readable item with a warning (lenient), so a DataLoader never dies
mid-epoch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import TypeVar

from tqdm.auto import tqdm

from ._errors import RobotDataError, RobotDataWarning, SkippedItem, warn_skipped

C = TypeVar("C")
I = TypeVar("I")  # noqa: E741 - the item type


def index_items(
    name: str,
    candidates: Iterable[C],
    check: Callable[[C], I],
    *,
    strict: bool,
    total: int | None = None,
) -> tuple[list[I], list[SkippedItem]]:
    """Runs ``check`` on every candidate; returns (good items, skipped items) and warns once about the skipped."""
    items: list[I] = []
    skipped: list[SkippedItem] = []
    candidates = list(candidates)
    for candidate in tqdm(
        candidates, desc=f"indexing {name}", unit="item", leave=False, disable=len(candidates) < 64
    ):
        try:
            items.append(check(candidate))
        except RobotDataError as error:
            if strict:
                raise
            skipped.append(SkippedItem.from_error(error))
    warn_skipped(name, skipped, len(candidates) if total is None else total)
    return items, skipped


class FallbackLoader:
    """Loads item ``index``; in lenient mode a load error moves on to the next item (warned once per item)."""

    def __init__(self, name: str, strict: bool):
        self.name = name
        self.strict = strict
        self.failed: set[int] = set()  # per process: DataLoader workers each keep their own

    def __call__(self, index: int, length: int, load: Callable[[int], dict]) -> dict:
        if not 0 <= index < length:
            raise IndexError(f"index: expected 0 <= index < {length}, got {index}")
        for step in range(length):
            i = (index + step) % length
            if i in self.failed and not self.strict:
                continue
            try:
                return load(i)
            except (RobotDataError, OSError) as error:
                if self.strict:
                    raise
                self.failed.add(i)
                warnings.warn(
                    f"{self.name}: item {i} failed to load and is replaced by the next readable item "
                    f"(lenient mode): {error}",
                    RobotDataWarning,
                    stacklevel=3,
                )
        raise RobotDataError(None, None, f"{self.name}: no item could be loaded ({len(self.failed)} failed)")
