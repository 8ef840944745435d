"""Summaries of a dataset (the ``inspect`` command) and the statistics the ``stats`` command writes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ._action_video import ActionVideoDataset
from ._actions import DRONE_ACTIONS
from ._detect import ACTION_VIDEO, LEROBOT, POLICY, VACE_E, DetectedDataset
from ._errors import RobotDataError
from ._policy_io import check_policy_episode
from ._stats import compute_policy_stats, list_policy_episodes, summarize
from ._trajectories import read_hand_motion, read_object_trajectories
from ._vace_e import VaceEEpisodeDataset, episode_files
from ._validate import _quiet, infer_num_frames
from ._video import probe_video

STATS_FILE_NAMES = {
    POLICY: "policy_stats.json",
    ACTION_VIDEO: "action_stats.json",
    VACE_E: "vace_e_stats.json",
    LEROBOT: "policy_stats.json",
}


def _lengths(values: list[int | float]) -> str:
    if not values:
        return "-"
    array = np.asarray(values, dtype=np.float64)
    return f"min {array.min():g}, mean {array.mean():.4g}, max {array.max():g}"


def _counts(counter: Counter) -> str:
    return ", ".join(f"{key} ({n})" for key, n in counter.most_common()) or "-"


def inspect_dataset(dataset: DetectedDataset, num_frames: int | None = None) -> list[tuple[str, str]]:
    """(label, value) lines describing ``dataset``: counts, lengths, fps, tasks, embodiments, action statistics."""
    if dataset.format == POLICY:
        return _inspect_policy(dataset)
    if dataset.format == ACTION_VIDEO:
        return _inspect_action_video(dataset, num_frames)
    if dataset.format == LEROBOT:
        return _inspect_lerobot(dataset)
    return _inspect_vace_e(dataset, num_frames)


def _inspect_lerobot(dataset: DetectedDataset) -> list[tuple[str, str]]:
    from .lerobot import LeRobotEpisodes

    episodes = LeRobotEpisodes(dataset.root)
    infos = [episodes.check_episode(ref) for ref in episodes.episodes]
    lines = [
        ("format", f"{dataset.format} {episodes.version}"),
        ("episodes", str(len(infos))),
        ("key map", ", ".join(f"{k} -> {v}" for k, v in episodes.key_map.items())),
    ]
    if not infos:
        return lines
    cameras = Counter(f"{c} {h}x{w}" for i in infos for c, (h, w) in i.cameras.items())
    lines += [
        ("steps", _lengths([i.num_steps for i in infos]) + f" (total {sum(i.num_steps for i in infos)})"),
        ("fps", f"{episodes.fps:g}"),
        ("tasks", _counts(Counter(str(i.attrs.get("task")) for i in infos))),
        ("cameras", _counts(cameras)),
        (
            "qpos / action / env dims",
            _counts(Counter(f"{i.qpos_dim} / {i.action_dim} / {i.environment_state_dim}" for i in infos)),
        ),
    ]
    stats = episodes.stats()
    for name in ("action", "qpos", "environment_state"):
        if name in stats:
            s = stats[name]
            lines.append((f"{name} mean", np.array2string(s["mean"], precision=3, max_line_width=200)))
            lines.append((f"{name} std", np.array2string(s["std"], precision=3, max_line_width=200)))
            lines.append((f"{name} stats from", episodes.stats_source[name]))
    return lines


def _inspect_policy(dataset: DetectedDataset) -> list[tuple[str, str]]:
    infos, bad = [], 0
    for path in tqdm(list_policy_episodes(dataset.root), desc="reading episodes", unit="episode"):
        try:
            infos.append(check_policy_episode(path))
        except RobotDataError:
            bad += 1
    lines = [("format", dataset.format), ("episodes", f"{len(infos)} readable, {bad} unreadable")]
    if not infos:
        return lines
    cameras = Counter(f"{c} {h}x{w}" for i in infos for c, (h, w) in i.cameras.items())
    lines += [
        ("steps", _lengths([i.num_steps for i in infos]) + f" (total {sum(i.num_steps for i in infos)})"),
        ("fps", _counts(Counter(str(i.attrs.get("fps")) for i in infos))),
        ("tasks", _counts(Counter(str(i.attrs.get("task")) for i in infos))),
        ("sim", _counts(Counter(str(i.attrs.get("sim")) for i in infos))),
        ("cameras", _counts(cameras)),
        (
            "qpos / action / env dims",
            _counts(Counter(f"{i.qpos_dim} / {i.action_dim} / {i.environment_state_dim}" for i in infos)),
        ),
    ]
    stats = compute_policy_stats([Path(i.path) for i in infos])
    for name in ("action", "qpos", "environment_state"):
        if name in stats:
            s = stats[name]
            lines.append((f"{name} mean", np.array2string(s["mean"], precision=3, max_line_width=200)))
            lines.append((f"{name} std", np.array2string(s["std"], precision=3, max_line_width=200)))
            lines.append((f"{name} min..max", f"{s['min'].min():.4g} .. {s['max'].max():.4g}"))
    return lines


def _inspect_action_video(dataset: DetectedDataset, num_frames: int | None) -> list[tuple[str, str]]:
    num_frames = num_frames or infer_num_frames(dataset.metadata)
    ds = _quiet(
        lambda: ActionVideoDataset(
            base_path=dataset.root, metadata_path=dataset.metadata, num_frames=num_frames, max_pixels=None
        )
    )
    infos = [probe_video(c.files["video"]) for c in tqdm(ds.clips, desc="reading clips", unit="clip")]
    lines = [
        ("format", dataset.format),
        ("metadata", str(dataset.metadata)),
        ("clips", f"{len(ds.clips)} usable, {len(ds.skipped)} skipped"),
        ("num_frames used", str(num_frames)),
    ]
    if not infos:
        return lines
    lines += [
        ("video frames", _lengths([i.num_frames for i in infos])),
        ("fps", _counts(Counter(f"{i.fps:g}" for i in infos))),
        ("size (HxW)", _counts(Counter(f"{i.height}x{i.width}" for i in infos))),
        ("prompts", f"{len({c.prompt for c in ds.clips})} distinct"),
    ]
    binary = np.concatenate([c.binary for c in ds.clips])
    magnitude = np.concatenate([c.magnitude for c in ds.clips])
    for k, name in enumerate(DRONE_ACTIONS):
        active = binary[:, k] == 1
        mags = magnitude[active, k]
        text = f"active {active.mean():.1%}"
        if mags.size:
            text += f", raw magnitude when active: mean {mags.mean():.4g}, max {mags.max():.4g}"
        lines.append((f"action {name}", text))
    return lines


def _inspect_vace_e(dataset: DetectedDataset, num_frames: int | None) -> list[tuple[str, str]]:
    if dataset.metadata is None:
        raise RobotDataError(
            dataset.root, "metadata", "a VACE-E dataset needs its task metadata JSON (--metadata)"
        )
    options = {} if num_frames is None else {"num_frames": num_frames}
    ds = _quiet(
        lambda: VaceEEpisodeDataset(base_path=dataset.root, metadata_path=dataset.metadata, **options)
    )
    infos = [
        probe_video(e.videos["video"]) for e in tqdm(ds.episodes, desc="reading episodes", unit="episode")
    ]
    lines = [
        ("format", dataset.format),
        ("metadata", str(dataset.metadata)),
        ("episodes", f"{len(ds.episodes)} usable, {len(ds.skipped)} skipped"),
    ]
    if not infos:
        return lines
    lines += [
        ("video frames", _lengths([i.num_frames for i in infos])),
        ("fps", _counts(Counter(f"{i.fps:g}" for i in infos))),
        ("tasks", _counts(Counter(e.task.task_id for e in ds.episodes))),
        ("embodiments", _counts(Counter(e.task.embodiment_type for e in ds.episodes))),
        ("with hand trajectories", str(sum(e.hand_motion is not None for e in ds.episodes))),
        ("with object trajectories", str(sum(e.object_trajectory is not None for e in ds.episodes))),
        ("with end-effector image", str(sum(e.embodiment_image is not None for e in ds.episodes))),
    ]
    hands = [e.hand_motion for e in ds.episodes if e.hand_motion is not None]
    if hands:
        s = summarize(np.concatenate(hands))
        lines.append(("hand motion mean (20)", np.array2string(s["mean"], precision=3, max_line_width=200)))
        lines.append(("gripper open fraction (L, R)", f"{s['mean'][18]:.2f}, {s['mean'][19]:.2f}"))
    return lines


def dataset_stats(dataset: DetectedDataset, num_frames: int | None = None) -> dict[str, dict]:
    """Normalization statistics of a dataset (fields as :func:`kinema.robot_data.save_stats` writes them).

    Policy episodes: qpos, qvel, action (and environment_state). Action-video: ``action_binary`` (its mean is the
    fraction of steps each action is on) and ``action_magnitude`` (raw). VACE-E: ``hand_motion`` (20 dims) and
    ``object_pose`` (9 dims, over every object).
    """
    if dataset.format == POLICY:
        return compute_policy_stats(dataset.root)
    if dataset.format == LEROBOT:
        from .lerobot import LeRobotEpisodes

        return LeRobotEpisodes(dataset.root).stats()
    if dataset.format == ACTION_VIDEO:
        num_frames = num_frames or infer_num_frames(dataset.metadata)
        ds = _quiet(
            lambda: ActionVideoDataset(
                base_path=dataset.root,
                metadata_path=dataset.metadata,
                num_frames=num_frames,
                check_videos=False,
                max_pixels=None,
            )
        )
        if not ds.clips:
            raise RobotDataError(dataset.metadata, "action", "no usable row")
        return {
            "action_binary": summarize(np.concatenate([c.binary for c in ds.clips])),
            "action_magnitude": summarize(np.concatenate([c.magnitude for c in ds.clips])),
        }
    if dataset.metadata is None:
        raise RobotDataError(
            dataset.root, "metadata", "a VACE-E dataset needs its task metadata JSON (--metadata)"
        )
    options = {} if num_frames is None else {"num_frames": num_frames}
    ds = _quiet(
        lambda: VaceEEpisodeDataset(base_path=dataset.root, metadata_path=dataset.metadata, **options)
    )
    stats = {}
    files = [episode_files(e.path) for e in ds.episodes]  # whole trajectories, not only the sampled frames
    hands = [read_hand_motion(f["hand_trajectories"]).data for f in files if f["hand_trajectories"].exists()]
    if hands:
        stats["hand_motion"] = summarize(np.concatenate(hands))
    objects = [
        read_object_trajectories(f["object_trajectories"], ds.config.max_objects).data.reshape(-1, 9)
        for f in files
        if f["object_trajectories"].exists()
    ]
    if objects:
        stats["object_pose"] = summarize(np.concatenate(objects))
    if not stats:
        raise RobotDataError(
            dataset.root, "trajectories", "no episode has trajectories to compute statistics from"
        )
    return stats
