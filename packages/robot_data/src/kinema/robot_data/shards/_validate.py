"""``kinema-data validate`` of a shard folder: every shard the index lists is present, whole, and holds the
samples the index says, each with its members; with ``deep``, every video is probed to its last frame."""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
from pathlib import Path

from .._actions import parse_action_json
from .._errors import RobotDataError
from .._validate import ERROR, OK, WARNING, ItemResult, ValidationReport
from .._video import probe_video
from ._index import read_index


def _required_members(kind: str, settings: dict) -> list[str]:
    """Member-name prefixes every sample of a shard folder of ``kind`` must have."""
    if kind == "vace_e":
        return ["video.", "control_video.", "mask.", "meta.json"]
    return [f"{column}." for column in settings["data_file_keys"]] + [
        "action.json",
        "meta.json",
        "prompt.txt",
    ]


def _check_sample(path: Path, kind: str, key: str, members: dict, entry: dict, position: int) -> str | None:
    """Why sample ``key`` (the ``position``-th of its shard) is bad, or None."""
    try:
        json.loads(members["meta.json"])
        if kind == "action_video":
            binary, _ = parse_action_json(members["action.json"].decode(), source=str(path), row=key)
            if len(binary) != entry["action_steps"][position]:
                return f"{len(binary)} action steps, {entry['action_steps'][position]} in the index"
    except (RobotDataError, ValueError) as error:
        return str(error)
    return None


def _check_shard(
    path: Path, entry: dict, kind: str, settings: dict, deep: bool
) -> tuple[str, str | None, str]:
    if not path.is_file():
        return ERROR, None, "missing"
    if path.stat().st_size != entry["bytes"]:
        return (
            ERROR,
            "bytes",
            f"{path.stat().st_size} on disk, {entry['bytes']} in the index (changed or cut)",
        )
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, _, suffix = member.name.partition(".")
                data = tar.extractfile(member).read() if member.isreg() else b""
                samples.setdefault(key, {})[suffix] = data
    except (tarfile.TarError, OSError, EOFError) as error:
        return ERROR, None, f"not a readable tar file ({error})"
    if len(samples) != entry["samples"]:
        return ERROR, "samples", f"{len(samples)} in the tar, {entry['samples']} in the index"
    required = _required_members(kind, settings)
    for position, (key, members) in enumerate(samples.items()):
        for prefix in required:
            if not any(name.startswith(prefix) for name in members):
                return ERROR, f"sample {key}", f"no {prefix.rstrip('.')} member"
        problem = _check_sample(path, kind, key, members, entry, position)
        if problem:
            return ERROR, f"sample {key}", problem
        if deep:
            videos = [name for name in members if name.split(".")[-1] in ("mp4", "mov", "mkv", "avi", "webm")]
            for video in videos:
                with tempfile.TemporaryDirectory(prefix="kinema-validate-") as scratch:
                    file = Path(scratch) / video
                    file.write_bytes(members[video])
                    try:
                        probe_video(file, deep=True)
                    except RobotDataError as error:
                        return ERROR, f"sample {key}: {video}", error.reason
    return OK, None, f"{entry['samples']} samples"


def validate_shards(folder: str | os.PathLike, *, deep: bool = False) -> ValidationReport:
    """A report with one item per shard (and one for the index); ``deep`` decodes every video's last frame."""
    folder = Path(folder)
    report = ValidationReport("WebDataset shards", str(folder))
    try:
        index = read_index(folder)
    except RobotDataError as error:
        report.items.append(ItemResult(str(error.path or folder), ERROR, error.field, error.reason))
        return report
    report.notes.append(
        f"{index.samples} samples in {len(index.shards)} shards of {index.kind} from {index.source}"
        + ("" if index.complete else " (unfinished: run `kinema-data shard` again to go on)")
    )
    if not index.complete:
        report.items.append(
            ItemResult(str(folder / "index.json"), WARNING, "complete", "the writer did not finish")
        )
    for item in index.skipped:
        report.items.append(ItemResult(item[0], WARNING, item[1], f"left out when sharding: {item[2]}"))
    for entry in index.shards:
        status, field, reason = _check_shard(folder / entry["name"], entry, index.kind, index.settings, deep)
        report.items.append(ItemResult(str(folder / entry["name"]), status, field, reason))
    return report
