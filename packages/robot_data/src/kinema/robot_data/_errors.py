"""Typed errors and the lenient-mode bookkeeping shared by every loader.

Every problem with one item (a row, an episode, a file) is a :class:`RobotDataError` that names the file and the
field. Strict mode raises it; lenient mode (the default for training) records it as a :class:`SkippedItem`, drops
the item at index time and emits ONE warning listing every skipped item.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path


class RobotDataError(ValueError):
    """A dataset item is unreadable or malformed. ``path`` is the file, ``field`` the part of it that is wrong.

    ``str(error)`` reads ``"<path>: <field>: <reason>"``.
    """

    def __init__(self, path: str | os.PathLike | None, field: str | None, reason: str):
        self.path = None if path is None else str(path)
        self.field = field
        self.reason = reason
        parts = [p for p in (self.path, field, reason) if p]
        super().__init__(": ".join(parts))

    def __reduce__(self):  # keeps the attributes through pickling (DataLoader workers re-raise in the parent)
        return (type(self), (self.path, self.field, self.reason))


class MissingFileError(RobotDataError, FileNotFoundError):
    """A file or directory that should exist does not (also catchable as ``FileNotFoundError``)."""

    def __init__(self, path: str | os.PathLike | None, field: str | None, reason: str = "does not exist"):
        super().__init__(path, field, reason)

    def __str__(self) -> str:  # FileNotFoundError would otherwise format (errno, strerror)
        return ": ".join(p for p in (self.path, self.field, self.reason) if p)


@dataclass(frozen=True)
class SkippedItem:
    """One item left out in lenient mode: where it is, which field is wrong and why."""

    path: str
    field: str | None
    reason: str

    @classmethod
    def from_error(cls, error: RobotDataError) -> SkippedItem:
        return cls(error.path or "?", error.field, error.reason)

    def __str__(self) -> str:
        return ": ".join(p for p in (self.path, self.field, self.reason) if p)


class RobotDataWarning(UserWarning):
    """Lenient mode left items out (the message lists them), or a reader filled in what a file lacks (the
    root attributes the original ACT / ALOHA recorders do not write)."""


def warn_skipped(dataset: str, skipped: Iterable[SkippedItem], total: int) -> None:
    """One aggregated warning naming every skipped item of ``dataset`` (nothing when none was skipped)."""
    skipped = list(skipped)
    if not skipped:
        return
    lines = "\n".join(f"  - {item}" for item in skipped)
    warnings.warn(
        f"{dataset}: skipped {len(skipped)} of {total} item(s) (lenient mode; strict=True raises instead):\n{lines}",
        RobotDataWarning,
        stacklevel=3,
    )


def require_exists(path: str | os.PathLike, field: str) -> Path:
    """``path`` as a Path, or :class:`MissingFileError` naming ``field``."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(path, field)
    return path
