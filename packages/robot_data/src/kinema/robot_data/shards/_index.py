"""index.json of a shard folder: what the shards hold, so that readers know each process's epoch length without
opening a tar, and an interrupted writer knows where to go on."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .._errors import RobotDataError

INDEX_NAME = "index.json"
FORMAT = "kinema.shards"
VERSION = 1


@dataclass
class ShardIndex:
    """``shards``: one dict per finished shard, ``{"name", "samples", "bytes", "positions": [the source item of
    each sample], ...}`` plus what readers plan windows with (``action_steps`` per sample; VACE-E: ``frames`` and
    ``fps``); ``rows_done``: source items consumed so far (written or skipped); ``complete``: the writer finished;
    ``settings``: what the shards were written with (a resumed writer must be given the same);
    ``statistics``: the totals of what the shards hold (per-action statistics for action-video), written when the
    writer completes."""

    kind: str
    source: str
    settings: dict
    shards: list[dict] = field(default_factory=list)
    rows_done: int = 0
    skipped: list[str] = field(default_factory=list)
    complete: bool = False
    statistics: dict = field(default_factory=dict)

    @property
    def samples(self) -> int:
        return sum(shard["samples"] for shard in self.shards)

    def to_json(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "samples": self.samples} | asdict(self)


def read_index(path: str | os.PathLike) -> ShardIndex:
    """The index of a shard folder (or the index file itself); a missing or foreign file raises, naming it."""
    path = Path(path)
    if path.is_dir():
        path = path / INDEX_NAME
    if not path.is_file():
        raise RobotDataError(path, None, f"no shard index: {INDEX_NAME} is written by `kinema-data shard`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise RobotDataError(path, None, f"unreadable shard index: {error}") from error
    if data.get("format") != FORMAT:
        raise RobotDataError(path, "format", f"expected {FORMAT!r}, got {data.get('format')!r}")
    if data.get("version") != VERSION:
        raise RobotDataError(path, "version", f"expected {VERSION}, got {data.get('version')!r}")
    fields = {k: data[k] for k in ShardIndex.__dataclass_fields__ if k in data}
    return ShardIndex(**fields)


def write_index(folder: Path, index: ShardIndex) -> None:
    """Atomically: a reader or a resumed writer never sees half a file."""
    tmp = folder / f".{INDEX_NAME}.tmp"
    tmp.write_text(json.dumps(index.to_json(), indent=1))
    os.replace(tmp, folder / INDEX_NAME)
