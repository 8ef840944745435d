"""``kinema-data shard``: an action-video dataset (metadata CSV + files) -> WebDataset tar shards + index.json.

Each shard is written to a hidden temporary file and renamed when whole, then the index records it, so an
interrupted run leaves only finished shards behind and the same command goes on from the next row.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import webdataset as wds
from tqdm.auto import tqdm

from .._action_video import REQUIRED_COLUMNS, read_metadata_csv
from .._actions import DRONE_ACTIONS, parse_action_json
from .._errors import MissingFileError, RobotDataError, SkippedItem, require_exists, warn_skipped
from ._index import INDEX_NAME, ShardIndex, read_index, write_index

KIND = "action_video"
SHARD_PATTERN = "shard-{:06d}.tar"


class _Statistics:
    """Running totals of the source's actions (per action: share of steps on, magnitude mean and std)."""

    def __init__(self, saved: dict | None = None):
        dims = len(DRONE_ACTIONS)
        saved = saved or {}
        self.steps = saved.get("_steps", 0)
        self.on = np.asarray(saved.get("_on", [0.0] * dims))
        self.sum = np.asarray(saved.get("_sum", [0.0] * dims))
        self.sum_sq = np.asarray(saved.get("_sum_sq", [0.0] * dims))

    def add(self, binary: np.ndarray, magnitude: np.ndarray) -> None:
        self.steps += len(binary)
        self.on += binary.sum(0)
        self.sum += magnitude.sum(0)
        self.sum_sq += np.square(magnitude.astype(np.float64)).sum(0)

    def to_json(self, samples: int) -> dict:
        n = max(1, self.steps)
        mean = self.sum / n
        std = np.sqrt(np.maximum(self.sum_sq / n - mean**2, 0.0))
        named = lambda values: {a: round(float(v), 6) for a, v in zip(DRONE_ACTIONS, values, strict=True)}  # noqa: E731
        return {
            "samples": samples,
            "action_steps": self.steps,
            "action_on_share": named(self.on / n),
            "magnitude_mean": named(mean),
            "magnitude_std": named(std),
            # the raw sums, so that a resumed writer continues them
            "_steps": self.steps,
            "_on": self.on.tolist(),
            "_sum": self.sum.tolist(),
            "_sum_sq": self.sum_sq.tolist(),
        }


def _member_suffix(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        raise RobotDataError(path, None, "a file without a suffix cannot be typed inside a shard")
    return suffix


def _sample(row: str, values: dict, base: Path, source: Path, file_keys: Sequence[str], index: int) -> tuple:
    """(webdataset sample dict, binary, magnitude) of one CSV row; a bad row raises RobotDataError."""
    binary, magnitude = parse_action_json(values["action"], source=str(source), row=row)
    key = f"{index:08d}"
    sample = {"__key__": key, "prompt.txt": (values.get("prompt") or "").encode()}
    files = {}
    for column in file_keys:
        name = (values.get(column) or "").strip()
        if not name:
            raise RobotDataError(source, f"row {row}: {column}", "empty path")
        path = base / name
        if not path.is_file():
            raise MissingFileError(path, f"row {row}: {column}")
        sample[f"{column}.{_member_suffix(path)}"] = path.read_bytes()
        files[column] = name
    sample["action.json"] = values["action"].encode()
    others = {k: v for k, v in values.items() if k not in (*REQUIRED_COLUMNS, *file_keys)}
    meta = {"index": index, "row": row, "files": files, "columns": others}
    sample["meta.json"] = json.dumps(meta).encode()
    return sample, binary, magnitude


def _sample_bytes(sample: dict) -> int:
    return sum(512 + (len(v) + 511) // 512 * 512 for k, v in sample.items() if k != "__key__")


def write_action_video_shards(
    base_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    metadata_path: str | os.PathLike | None = None,
    data_file_keys: Sequence[str] = ("video",),
    max_shard_bytes: int = 512 * 2**20,
    max_shard_samples: int | None = None,
    strict: bool = False,
    progress: bool = True,
) -> ShardIndex:
    """Writes the rows of ``metadata_path`` (default ``<base_path>/metadata.csv``) into shards in ``out_dir``.

    A shard is closed before a sample would take it past ``max_shard_bytes`` (counting its members with their
    tar headers and padding; the tar file adds its end blocks, up to 10 KiB) or ``max_shard_samples`` (a sample
    larger than the limit gets a shard of its own). Bad rows (unparsable actions, missing files) are skipped with
    one warning (``strict=True`` raises instead) and listed in the index. Run again on an unfinished folder to go
    on; the options must be the same. Returns the index."""
    base = require_exists(base_path, "base_path")
    source = Path(metadata_path) if metadata_path is not None else base / "metadata.csv"
    if isinstance(data_file_keys, str):
        data_file_keys = [k.strip() for k in data_file_keys.split(",") if k.strip()]
    file_keys = tuple(data_file_keys)
    if "video" not in file_keys:
        raise ValueError(f"data_file_keys: expected to include 'video', got {file_keys}")
    if not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes: expected a positive integer, got {max_shard_bytes!r}")
    if max_shard_samples is not None and (not isinstance(max_shard_samples, int) or max_shard_samples < 1):
        raise ValueError(f"max_shard_samples: expected a positive integer or None, got {max_shard_samples!r}")
    rows = read_metadata_csv(source, (*REQUIRED_COLUMNS, *file_keys))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "data_file_keys": list(file_keys),
        "max_shard_bytes": max_shard_bytes,
        "max_shard_samples": max_shard_samples,
        "rows": len(rows),
    }
    index = _start_or_resume(out, source, settings)
    if index.complete:
        return index
    for stale in out.glob(".shard-*.tar.tmp"):
        stale.unlink()  # the shard an interrupted run was writing
    statistics = _Statistics(index.statistics)
    skipped = [SkippedItem(*item) for item in index.skipped]
    written = index.samples
    bar = tqdm(total=len(rows), initial=index.rows_done, desc="shard", unit="row", disable=not progress)
    limits = (max_shard_bytes, max_shard_samples)
    position = index.rows_done
    while position < len(rows):
        number = len(index.shards)
        name = SHARD_PATTERN.format(number)
        tmp = out / f".{name}.tmp"
        shard = {"name": name, "samples": 0, "bytes": 0, "action_steps": []}
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=0.0)
            try:
                position, written = _fill(writer, shard, rows, position, written, base, source, file_keys,
                                          limits, statistics, skipped, strict, bar)  # fmt: skip
            finally:
                writer.close()
        if shard["samples"] == 0:  # only skipped rows were left
            tmp.unlink()
        else:
            os.replace(tmp, out / name)
            shard["bytes"] = (out / name).stat().st_size
            index.shards.append(shard)
        index.rows_done = position
        index.skipped = [[s.path, s.field, s.reason] for s in skipped]
        index.statistics = statistics.to_json(written)
        write_index(out, index)
    bar.close()
    index.complete = True
    write_index(out, index)
    warn_skipped(f"sharding {source}", skipped, len(rows))
    return index


def _fill(
    writer, shard, rows, position, written, base, source, file_keys, limits, statistics, skipped, strict, bar
):
    """Writes rows from ``position`` into one shard until it is full; returns (next row, samples written)."""
    max_bytes, max_samples = limits
    while position < len(rows):
        row, values = rows[position]
        try:
            sample, binary, magnitude = _sample(row, values, base, source, file_keys, written)
        except RobotDataError as error:
            if strict:
                raise
            skipped.append(SkippedItem.from_error(error))
            position += 1
            bar.update(1)
            continue
        size = _sample_bytes(sample)
        full = shard["samples"] and (
            shard["bytes"] + size > max_bytes or (max_samples is not None and shard["samples"] >= max_samples)
        )
        if full:
            break
        writer.write(sample)
        statistics.add(binary, magnitude)
        shard["samples"] += 1
        shard["bytes"] += size
        shard["action_steps"].append(len(binary))
        written += 1
        position += 1
        bar.update(1)
    return position, written


def _start_or_resume(out: Path, source: Path, settings: dict) -> ShardIndex:
    if (out / INDEX_NAME).exists():
        index = read_index(out)
        if index.kind != KIND or index.source != str(source.resolve()):
            raise RobotDataError(
                out, "out_dir", f"holds the shards of another dataset ({index.kind} from {index.source})"
            )
        changed = [k for k in settings if index.settings.get(k) != settings[k]]
        if changed:
            raise RobotDataError(
                out,
                "out_dir",
                "holds shards written with other options ("
                + ", ".join(f"{k}: {index.settings.get(k)!r} then, {settings[k]!r} now" for k in changed)
                + "); give the same options to go on, or another folder",
            )
        return index
    if any(out.glob("shard-*.tar")):
        raise RobotDataError(out, "out_dir", f"holds shards but no {INDEX_NAME}: not a folder kinema wrote")
    index = ShardIndex(kind=KIND, source=str(source.resolve()), settings=settings)
    write_index(out, index)
    return index
