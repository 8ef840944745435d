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


class ActionVideoSource:
    """The rows of an action-video metadata CSV as shard samples (see the package docstring for the members)."""

    kind = KIND
    info_keys = ("action_steps",)

    def __init__(self, base: Path, metadata: Path, file_keys: tuple[str, ...]):
        self.base, self.path, self.file_keys = base, metadata, file_keys
        self.candidates = read_metadata_csv(metadata, (*REQUIRED_COLUMNS, *file_keys))
        self.statistics = _Statistics()

    def settings(self) -> dict:
        return {"data_file_keys": list(self.file_keys), "rows": len(self.candidates)}

    def sample(self, candidate: tuple[str, dict], index: int) -> tuple[dict, dict]:
        """(webdataset sample, per-sample info for the index) of one CSV row; a bad row raises RobotDataError."""
        row, values = candidate
        binary, magnitude = parse_action_json(values["action"], source=str(self.path), row=row)
        sample = {"__key__": f"{index:08d}", "prompt.txt": (values.get("prompt") or "").encode()}
        files = {}
        for column in self.file_keys:
            name = (values.get(column) or "").strip()
            if not name:
                raise RobotDataError(self.path, f"row {row}: {column}", "empty path")
            path = self.base / name
            if not path.is_file():
                raise MissingFileError(path, f"row {row}: {column}")
            sample[f"{column}.{_member_suffix(path)}"] = path.read_bytes()
            files[column] = name
        sample["action.json"] = values["action"].encode()
        others = {k: v for k, v in values.items() if k not in (*REQUIRED_COLUMNS, *self.file_keys)}
        sample["meta.json"] = json.dumps(
            {"index": index, "row": row, "files": files, "columns": others}
        ).encode()
        self.pending = (binary, magnitude)
        return sample, {"action_steps": len(binary)}

    def commit(self) -> None:
        """The last sample went into a shard: count it in the statistics."""
        self.statistics.add(*self.pending)

    def resume_statistics(self, saved: dict) -> None:
        """Continue the totals an interrupted writer recorded in the index."""
        self.statistics = _Statistics(saved)

    def statistics_json(self, samples: int) -> dict:
        return self.statistics.to_json(samples)


def _sample_bytes(sample: dict) -> int:
    return sum(512 + (len(v) + 511) // 512 * 512 for k, v in sample.items() if k != "__key__")


def _check_limits(max_shard_bytes: int, max_shard_samples: int | None) -> None:
    if not isinstance(max_shard_bytes, int) or max_shard_bytes < 1:
        raise ValueError(f"max_shard_bytes: expected a positive integer, got {max_shard_bytes!r}")
    if max_shard_samples is not None and (not isinstance(max_shard_samples, int) or max_shard_samples < 1):
        raise ValueError(f"max_shard_samples: expected a positive integer or None, got {max_shard_samples!r}")


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
    metadata = Path(metadata_path) if metadata_path is not None else base / "metadata.csv"
    if isinstance(data_file_keys, str):
        data_file_keys = [k.strip() for k in data_file_keys.split(",") if k.strip()]
    file_keys = tuple(data_file_keys)
    if "video" not in file_keys:
        raise ValueError(f"data_file_keys: expected to include 'video', got {file_keys}")
    _check_limits(max_shard_bytes, max_shard_samples)
    source = ActionVideoSource(base, metadata, file_keys)
    return write_shards(source, out_dir, max_shard_bytes, max_shard_samples, strict=strict, progress=progress)


def write_shards(source, out_dir, max_shard_bytes: int, max_shard_samples: int | None, *, strict: bool,
                 progress: bool, extra_files: dict[str, bytes] | None = None) -> ShardIndex:  # fmt: skip
    """Writes ``source``'s candidates (``source.sample(candidate, index)`` -> (members, info)) into shards of
    ``out_dir``, resuming an unfinished folder; ``extra_files`` are written beside the index (e.g. task metadata)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    candidates = source.candidates
    settings = source.settings() | {
        "max_shard_bytes": max_shard_bytes,
        "max_shard_samples": max_shard_samples,
    }
    index = _start_or_resume(out, source.kind, source.path, settings)
    if index.complete:
        return index
    for name, data in (extra_files or {}).items():
        (out / name).write_bytes(data)
    for stale in out.glob(".shard-*.tar.tmp"):
        stale.unlink()  # the shard an interrupted run was writing
    source.resume_statistics(index.statistics)
    # items the source left out while indexing (it warned about them) are listed too, when the index is new
    skipped = [SkippedItem(*item) for item in index.skipped] or list(getattr(source, "skipped", []))
    found_here = len(skipped)
    written = index.samples
    bar = tqdm(
        total=len(candidates), initial=index.rows_done, desc="shard", unit="item", disable=not progress
    )
    position = index.rows_done
    while position < len(candidates):
        name = SHARD_PATTERN.format(len(index.shards))
        tmp = out / f".{name}.tmp"
        shard = {"name": name, "samples": 0, "bytes": 0} | {key: [] for key in source.info_keys}
        with open(tmp, "wb") as stream:
            writer = wds.TarWriter(stream, encoder=False, mtime=0.0)
            try:
                while position < len(candidates):
                    try:
                        sample, info = source.sample(candidates[position], written)
                    except RobotDataError as error:
                        if strict:
                            raise
                        skipped.append(SkippedItem.from_error(error))
                        position += 1
                        bar.update(1)
                        continue
                    size = _sample_bytes(sample)
                    full = shard["samples"] and (
                        shard["bytes"] + size > max_shard_bytes
                        or (max_shard_samples is not None and shard["samples"] >= max_shard_samples)
                    )
                    if full:
                        break
                    writer.write(sample)
                    source.commit()
                    shard["samples"] += 1
                    shard["bytes"] += size
                    for key in source.info_keys:
                        shard[key].append(info[key])
                    written += 1
                    position += 1
                    bar.update(1)
            finally:
                writer.close()
        if shard["samples"] == 0:  # only skipped items were left
            tmp.unlink()
        else:
            os.replace(tmp, out / name)
            shard["bytes"] = (out / name).stat().st_size
            index.shards.append(shard)
        index.rows_done = position
        index.skipped = [[s.path, s.field, s.reason] for s in skipped]
        index.statistics = source.statistics_json(written)
        write_index(out, index)
    bar.close()
    index.complete = True
    write_index(out, index)
    warn_skipped(f"sharding {source.path}", skipped[found_here:], len(candidates))
    return index


def _start_or_resume(out: Path, kind: str, source: Path, settings: dict) -> ShardIndex:
    if (out / INDEX_NAME).exists():
        index = read_index(out)
        if index.kind != kind or index.source != str(source.resolve()):
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
    index = ShardIndex(kind=kind, source=str(source.resolve()), settings=settings)
    write_index(out, index)
    return index
