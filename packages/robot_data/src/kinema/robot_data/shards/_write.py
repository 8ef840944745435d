"""``kinema-data shard``: a dataset's samples (action-video rows here, VACE-E episodes in :mod:`._vace_e`) ->
WebDataset tar shards + index.json.

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

from .._action_video import REQUIRED_COLUMNS, read_metadata_csv, row_file
from .._actions import DRONE_ACTIONS, parse_action_json
from .._errors import RobotDataError, SkippedItem, require_exists, warn_skipped
from ._index import INDEX_NAME, ShardIndex, read_index, write_index

KIND = "action_video"
SHARD_PATTERN = "shard-{:06d}.tar"


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

    def settings(self) -> dict:
        return {"data_file_keys": list(self.file_keys), "rows": len(self.candidates)}

    def sample(self, candidate: tuple[str, dict], index: int) -> tuple[dict, dict]:
        """(webdataset sample, per-sample info for the index) of one CSV row; a bad row raises RobotDataError."""
        row, values = candidate
        binary, _ = parse_action_json(values["action"], source=str(self.path), row=row)
        sample = {"__key__": f"{index:08d}", "prompt.txt": (values.get("prompt") or "").encode()}
        files = {}
        for column in self.file_keys:
            path = row_file(self.base, values, column, self.path, row)
            sample[f"{column}.{_member_suffix(path)}"] = path.read_bytes()
            files[column] = values[column].strip()
        sample["action.json"] = values["action"].encode()
        others = {k: v for k, v in values.items() if k not in (*REQUIRED_COLUMNS, *self.file_keys)}
        sample["meta.json"] = json.dumps(
            {"index": index, "row": row, "files": files, "columns": others}
        ).encode()
        return sample, {"action_steps": len(binary)}

    def statistics(self, index: ShardIndex) -> dict:
        """Totals and per-action statistics of the rows the shards hold (their actions parsed again)."""
        positions = [p for shard in index.shards for p in shard["positions"]]
        actions = [parse_action_json(self.candidates[p][1]["action"]) for p in positions]
        if not actions:
            return {"samples": 0, "action_steps": 0}
        binary = np.concatenate([b for b, _ in actions]).astype(np.float64)
        magnitude = np.concatenate([m for _, m in actions]).astype(np.float64)

        def named(values):
            return {a: round(float(v), 6) for a, v in zip(DRONE_ACTIONS, values, strict=True)}

        return {
            "samples": len(positions),
            "action_steps": len(binary),
            "action_on_share": named(binary.mean(0)),
            "magnitude_mean": named(magnitude.mean(0)),
            "magnitude_std": named(magnitude.std(0)),
        }


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
        # positions: which of the source's candidates the samples are (the statistics are computed from them)
        shard = {"name": name, "samples": 0, "bytes": 0, "positions": []} | {
            key: [] for key in source.info_keys
        }
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
                    shard["positions"].append(position)
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
        write_index(out, index)
    bar.close()
    index.statistics = source.statistics(index)
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
