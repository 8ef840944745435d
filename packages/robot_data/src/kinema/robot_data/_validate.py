"""Checks every item of a dataset and reports what is fine and what is not (the ``validate`` command)."""

from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from ._act_aloha import check_frame_size, read_jpeg_frame
from ._action_video import REQUIRED_COLUMNS, VIDEO_SUFFIXES, ActionVideoDataset, read_metadata_csv
from ._detect import ACTION_VIDEO, LEROBOT, POLICY, VACE_E, DetectedDataset
from ._errors import RobotDataError, RobotDataWarning, SkippedItem
from ._policy_io import PolicyEpisodeInfo, check_policy_episode
from ._stats import list_policy_episodes
from ._vace_e import VaceEEpisodeDataset
from ._video import probe_video

OK, WARNING, ERROR = "ok", "warning", "error"


@dataclass
class ItemResult:
    """One checked item: its path, ``ok``/``warning``/``error``, the field at fault and why."""

    path: str
    status: str
    field: str | None = None
    reason: str = ""


@dataclass
class ValidationReport:
    """All items of one dataset. ``passed(strict)``: no error (and, when strict, no warning either)."""

    format: str
    path: str
    items: list[ItemResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(item.status == status for item in self.items)

    def passed(self, strict: bool = False) -> bool:
        return self.count(ERROR) == 0 and (not strict or self.count(WARNING) == 0) and bool(self.items)

    def to_json(self, strict: bool = False) -> dict:
        return {
            "format": self.format,
            "path": self.path,
            "strict": strict,
            "passed": self.passed(strict),
            "counts": {s: self.count(s) for s in (OK, WARNING, ERROR)},
            "notes": self.notes,
            "items": [asdict(item) for item in self.items],
        }

    def write_json(self, path: str | os.PathLike, strict: bool = False) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.to_json(strict), indent=2))
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path


def _error(item: SkippedItem | RobotDataError) -> ItemResult:
    if isinstance(item, RobotDataError):
        item = SkippedItem.from_error(item)
    return ItemResult(item.path, ERROR, item.field, item.reason)


def _quiet(build):
    """Builds a dataset in lenient mode without its aggregated warning (the report lists the items instead)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        return build()


def infer_num_frames(metadata: Path) -> int:
    """The clip length implied by the most common action length A of a metadata CSV: 4A + 1."""
    lengths = Counter()
    for _, row in read_metadata_csv(metadata, REQUIRED_COLUMNS):
        try:
            value = json.loads(row["action"])
            if isinstance(value, list) and value:
                lengths[len(value)] += 1
        except json.JSONDecodeError:
            continue
    if not lengths:
        raise RobotDataError(metadata, "action", "no row holds a readable action list")
    return 4 * lengths.most_common(1)[0][0] + 1


def validate_dataset(
    dataset: DetectedDataset, *, num_frames: int | None = None, deep: bool = False
) -> ValidationReport:
    """Checks every item of ``dataset`` (see :func:`detect_format`).

    Videos are demuxed to the last packet and their last frame decoded (finds files cut after their header);
    episode images are read at their last step (every step with ``deep``).
    """
    report = ValidationReport(dataset.format, str(dataset.root))
    if dataset.format == POLICY:
        _validate_policy(dataset, report, deep)
    elif dataset.format == ACTION_VIDEO:
        _validate_action_video(dataset, report, num_frames)
    elif dataset.format == VACE_E:
        _validate_vace_e(dataset, report, num_frames)
    elif dataset.format == LEROBOT:
        _validate_lerobot(dataset, report)
    return report


def _validate_lerobot(dataset: DetectedDataset, report: ValidationReport) -> None:
    """A LeRobot folder: its metadata (a bad info.json or episode table raises), then per episode its parquet
    rows (count, frame_index, index range, NaN/Inf) and each camera's file, decoded at the episode's last frame."""
    from .lerobot import LeRobotEpisodes

    episodes = LeRobotEpisodes(dataset.root)
    report.notes.append(f"LeRobot {episodes.version}, {episodes.fps:g} fps, key map {episodes.key_map}")
    for ref in tqdm(episodes.episodes, desc="checking episodes", unit="episode"):
        try:
            arrays, _ = episodes.read_arrays(ref)
            episodes.check_videos(ref)
        except RobotDataError as error:
            report.items.append(ItemResult(str(ref), ERROR, error.field, f"{error.path}: {error.reason}"))
            continue
        report.items.append(ItemResult(str(ref), OK, reason=f"{arrays['qpos'].shape[0]} steps"))


def _validate_policy(dataset: DetectedDataset, report: ValidationReport, deep: bool) -> None:
    infos = []
    for path in tqdm(list_policy_episodes(dataset.root), desc="checking episodes", unit="episode"):
        try:
            infos.append(check_policy_episode(path, deep=deep))
        except RobotDataError as error:
            report.items.append(_error(error))
            continue
        if not deep:
            try:
                _read_last_frames(path, infos[-1])
            except RobotDataError as error:
                report.items.append(_error(error))
                infos.pop()
    if not infos:
        return
    signature = Counter(
        (i.qpos_dim, i.action_dim, i.environment_state_dim, tuple(sorted(i.cameras))) for i in infos
    )
    common = signature.most_common(1)[0][0]
    fps = Counter(i.attrs.get("fps") for i in infos).most_common(1)[0][0]
    for info in infos:
        mine = (info.qpos_dim, info.action_dim, info.environment_state_dim, tuple(sorted(info.cameras)))
        if mine != common:
            report.items.append(
                ItemResult(
                    info.path,
                    ERROR,
                    "dims",
                    f"(qpos, action, environment_state dims, cameras) = {mine}, most episodes have {common}",
                )
            )
        elif info.attrs.get("fps") != fps:
            report.items.append(
                ItemResult(info.path, WARNING, "attrs.fps", f"{info.attrs.get('fps')}, most have {fps}")
            )
        else:
            report.items.append(ItemResult(info.path, OK, reason=f"{info.num_steps} steps"))


def _read_last_frames(path: Path, info: PolicyEpisodeInfo) -> None:
    from ._trajectories import open_hdf5

    with open_hdf5(path, "episode") as f:
        for camera, size in info.cameras.items():
            name = f"observations/images/{camera}"
            last = info.num_steps - 1
            if info.compressed:  # JPEG rows: decoded, so a row that is not a JPEG is found too
                check_frame_size(read_jpeg_frame(f[name], last, path), size, path, name, last)
                continue
            try:
                f[name][-1]
            except OSError as error:
                raise RobotDataError(path, name, f"last frame unreadable ({error})") from error


def _validate_action_video(
    dataset: DetectedDataset, report: ValidationReport, num_frames: int | None
) -> None:
    if num_frames is None:
        num_frames = infer_num_frames(dataset.metadata)
        report.notes.append(
            f"num_frames={num_frames} inferred from the action lengths (pass --num-frames to set it)"
        )
    ds = _quiet(
        lambda: ActionVideoDataset(
            base_path=dataset.root, metadata_path=dataset.metadata, num_frames=num_frames, max_pixels=None
        )
    )
    report.items += [_error(item) for item in ds.skipped]
    for clip in tqdm(ds.clips, desc="decoding clips", unit="clip"):
        try:
            for key, path in clip.files.items():
                if path.suffix.lower() in VIDEO_SUFFIXES:
                    try:
                        probe_video(path, deep=True)
                    except RobotDataError as error:
                        raise RobotDataError(path, f"row {clip.row}: {key}", error.reason) from error
        except RobotDataError as error:
            report.items.append(_error(error))
            continue
        report.items.append(ItemResult(str(clip.files["video"]), OK, reason=f"row {clip.row}"))


def _validate_vace_e(dataset: DetectedDataset, report: ValidationReport, num_frames: int | None) -> None:
    if dataset.metadata is None:
        raise RobotDataError(
            dataset.root, "metadata", "a VACE-E dataset needs its task metadata JSON (--metadata)"
        )
    options = {} if num_frames is None else {"num_frames": num_frames}
    ds = _quiet(
        lambda: VaceEEpisodeDataset(base_path=dataset.root, metadata_path=dataset.metadata, **options)
    )
    report.items += [_error(item) for item in ds.skipped]
    for episode in tqdm(ds.episodes, desc="decoding episodes", unit="episode"):
        try:
            for path in episode.videos.values():
                probe_video(path, deep=True)
        except RobotDataError as error:
            report.items.append(_error(error))
            continue
        if episode.notes:
            report.items.append(
                ItemResult(str(episode.path), WARNING, "trajectories", "; ".join(episode.notes))
            )
        else:
            report.items.append(ItemResult(str(episode.path), OK, reason=episode.prompt))
