"""LeRobot datasets: reading v3.0 and v2.1 folders as policy episodes, exporting kinema episodes as v3.0."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kinema.robot_data import RobotDataError, read_policy_episode, write_policy_episode, write_video
from kinema.robot_data._detect import LEROBOT, detect_format
from kinema.robot_data._stats import summarize
from kinema.robot_data.cli import main
from kinema.robot_data.lerobot import LeRobotEpisodes, export_lerobot, is_lerobot_dataset
from kinema.robot_data.testing import decode_frame_code, frame_code_image

FPS = 10
LENGTHS = (7, 5, 6)  # episode 2 lives in a second data file and a second video file (v3.0)
STATE, ACTION = 3, 2
TASKS = ("pick the cube", "place the cube")


def _state(episode: int, steps: int) -> np.ndarray:
    t = np.arange(steps, dtype=np.float32)[:, None]
    return (100.0 * episode + t + np.arange(STATE, dtype=np.float32) / 10).astype(np.float32)


def _action(episode: int, steps: int) -> np.ndarray:
    return (_state(episode, steps)[:, :ACTION] + 0.25).astype(np.float32)


def _frames(episode: int, steps: int, camera: int) -> np.ndarray:
    """Frame t of an episode shows the code 1000 * camera + 100 * episode + t."""
    return np.stack([frame_code_image(1000 * camera + 100 * episode + t) for t in range(steps)])


def _features(cameras) -> dict:
    features = {
        "observation.state": {"dtype": "float32", "shape": [STATE], "names": [f"s{i}" for i in range(STATE)]},
        "action": {"dtype": "float32", "shape": [ACTION], "names": [f"a{i}" for i in range(ACTION)]},
    }
    for camera in cameras:
        features[f"observation.images.{camera}"] = {
            "dtype": "video",
            "shape": [32, 32, 3],
            "names": ["height", "width", "channels"],
            "info": {"video.fps": FPS, "video.codec": "h264", "video.pix_fmt": "yuv420p"},
        }
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        features[key] = {"dtype": "float32" if key == "timestamp" else "int64", "shape": [1], "names": None}
    return features


def _frame_table(episodes: list[int], start: int) -> pa.Table:
    """Data rows of ``episodes`` as LeRobot writes them (list columns, one row per frame)."""
    rows = {
        k: []
        for k in (
            "observation.state",
            "action",
            "timestamp",
            "frame_index",
            "episode_index",
            "index",
            "task_index",
        )
    }
    index = start
    for e in episodes:
        steps = LENGTHS[e]
        rows["observation.state"] += _state(e, steps).tolist()
        rows["action"] += _action(e, steps).tolist()
        rows["timestamp"] += [t / FPS for t in range(steps)]
        rows["frame_index"] += list(range(steps))
        rows["episode_index"] += [e] * steps
        rows["index"] += list(range(index, index + steps))
        rows["task_index"] += [e % 2] * steps
        index += steps
    types = {
        "observation.state": pa.list_(pa.float32()),
        "action": pa.list_(pa.float32()),
        "timestamp": pa.float32(),
    }
    return pa.table({k: pa.array(v, type=types.get(k, pa.int64())) for k, v in rows.items()})


def write_lerobot_v30(root: Path, cameras=("top", "wrist"), stats_shift: float | None = 1.0) -> Path:
    """A LeRobot v3.0 folder laid out as lerobot 0.4 writes it: episodes 0 and 1 share data file-000 and video
    file-000 (episode 1 starts at from_timestamp 0.7 s), episode 2 is in file-001. ``stats.json`` holds the data's
    statistics with ``stats_shift`` added to the means (None: no stats.json)."""
    meta = root / "meta"
    (meta / "episodes/chunk-000").mkdir(parents=True)
    info = {
        "codebase_version": "v3.0",
        "robot_type": "so100",
        "total_episodes": 3,
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "chunks_size": 1000,
        "data_files_size_in_mb": 100,
        "video_files_size_in_mb": 200,
        "fps": FPS,
        "splits": {"train": "0:3"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
        "features": _features(cameras),
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    tasks = pa.table({"task_index": pa.array([0, 1], pa.int64()), "task": pa.array(list(TASKS))})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [],
        "columns": [
            {
                "name": "task_index",
                "field_name": "task_index",
                "pandas_type": "int64",
                "numpy_type": "int64",
                "metadata": None,
            },
            {
                "name": "task",
                "field_name": "task",
                "pandas_type": "unicode",
                "numpy_type": "object",
                "metadata": None,
            },
        ],
    }
    pq.write_table(
        tasks.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()}), meta / "tasks.parquet"
    )
    files = {0: [0, 1], 1: [2]}
    (root / "data/chunk-000").mkdir(parents=True)
    start = 0
    rows = []
    for file_index, episodes in files.items():
        pq.write_table(_frame_table(episodes, start), root / f"data/chunk-000/file-{file_index:03d}.parquet")
        for c, camera in enumerate(cameras):
            frames = np.concatenate([_frames(e, LENGTHS[e], c) for e in episodes])
            write_video(
                root / f"videos/observation.images.{camera}/chunk-000/file-{file_index:03d}.mp4", frames, FPS
            )
        offset = 0
        for e in episodes:
            row = {
                "episode_index": e,
                "tasks": [TASKS[e % 2]],
                "length": LENGTHS[e],
                "data/chunk_index": 0,
                "data/file_index": file_index,
                "dataset_from_index": start,
                "dataset_to_index": start + LENGTHS[e],
            }
            for camera in cameras:
                key = f"observation.images.{camera}"
                row |= {
                    f"videos/{key}/chunk_index": 0,
                    f"videos/{key}/file_index": file_index,
                    f"videos/{key}/from_timestamp": offset / FPS,
                    f"videos/{key}/to_timestamp": (offset + LENGTHS[e]) / FPS,
                }
            row |= {
                "stats/action/mean": _action(e, LENGTHS[e]).mean(0).tolist(),
                "meta/episodes/chunk_index": 0,
                "meta/episodes/file_index": 0,
            }
            rows.append(row)
            start += LENGTHS[e]
            offset += LENGTHS[e]
    pq.write_table(pa.Table.from_pylist(rows), meta / "episodes/chunk-000/file-000.parquet")
    if stats_shift is not None:
        stats = {}
        for key, fn in (("observation.state", _state), ("action", _action)):
            values = np.concatenate([fn(e, LENGTHS[e]) for e in range(3)])
            stats[key] = {
                "mean": (values.mean(0) + stats_shift).tolist(),
                "std": values.std(0).tolist(),
                "min": values.min(0).tolist(),
                "max": values.max(0).tolist(),
                "count": [len(values)],
            }
        (meta / "stats.json").write_text(json.dumps(stats))
    return root


def write_lerobot_v21(root: Path, cameras=("top",)) -> Path:
    """A LeRobot v2.1 folder as lerobot 0.3 writes it: one parquet and one mp4 per episode, jsonl metadata,
    per-episode statistics (no stats.json)."""
    meta = root / "meta"
    meta.mkdir(parents=True)
    info = {
        "codebase_version": "v2.1",
        "robot_type": "aloha",
        "total_episodes": 3,
        "total_frames": sum(LENGTHS),
        "total_tasks": 2,
        "total_videos": 3 * len(cameras),
        "total_chunks": 1,
        "chunks_size": 1000,
        "fps": FPS,
        "splits": {"train": "0:3"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": _features(cameras),
    }
    (meta / "info.json").write_text(json.dumps(info, indent=4))
    (meta / "tasks.jsonl").write_text(
        "".join(json.dumps({"task_index": i, "task": t}) + "\n" for i, t in enumerate(TASKS))
    )
    episodes, episode_stats = [], []
    start = 0
    for e, steps in enumerate(LENGTHS):
        episodes.append(json.dumps({"episode_index": e, "tasks": [TASKS[e % 2]], "length": steps}))
        stats = {}
        for key, fn in (("observation.state", _state), ("action", _action)):
            values = fn(e, steps).astype(np.float64)
            stats[key] = {
                "min": values.min(0).tolist(),
                "max": values.max(0).tolist(),
                "mean": values.mean(0).tolist(),
                "std": values.std(0).tolist(),
                "count": [steps],
            }
        episode_stats.append(json.dumps({"episode_index": e, "stats": stats}))
        path = root / f"data/chunk-000/episode_{e:06d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = _frame_table([e], start)
        pq.write_table(table, path)
        for c, camera in enumerate(cameras):
            write_video(
                root / f"videos/chunk-000/observation.images.{camera}/episode_{e:06d}.mp4",
                _frames(e, steps, c),
                FPS,
            )
        start += steps
    (meta / "episodes.jsonl").write_text("\n".join(episodes) + "\n")
    (meta / "episodes_stats.jsonl").write_text("\n".join(episode_stats) + "\n")
    return root


def _codes(frames: np.ndarray) -> list[int]:
    return [decode_frame_code(f) for f in frames]


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_reads_each_episode_with_its_own_rows_and_frames(tmp_path, version):
    cameras = ("top", "wrist") if version == "v3.0" else ("top",)
    root = (write_lerobot_v30 if version == "v3.0" else write_lerobot_v21)(tmp_path / "ds", cameras)
    assert is_lerobot_dataset(root) and detect_format(root).format == LEROBOT
    episodes = LeRobotEpisodes(root)
    assert episodes.version == version and len(episodes) == 3
    assert episodes.key_map == {
        "observation.state": "qpos",
        "action": "action",
        **{f"observation.images.{c}": f"images/{c}" for c in cameras},
    }
    for e, ref in enumerate(episodes.episodes):
        info = episodes.check_episode(ref)
        assert (info.num_steps, info.qpos_dim, info.action_dim, info.environment_state_dim) == (
            LENGTHS[e],
            3,
            2,
            None,
        )
        assert info.cameras == {c: (32, 32) for c in cameras}
        episode = episodes.read_episode(ref)
        np.testing.assert_array_equal(episode["qpos"], _state(e, LENGTHS[e]))
        np.testing.assert_array_equal(episode["action"], _action(e, LENGTHS[e]))
        for c, camera in enumerate(cameras):  # the episode's frames, none of its neighbour's
            assert _codes(episode["images"][camera]) == [1000 * c + 100 * e + t for t in range(LENGTHS[e])]
        assert episode["attrs"]["task"] == TASKS[e % 2] and episode["attrs"]["fps"] == FPS


def test_stats_from_stats_json_when_present(tmp_path):
    episodes = LeRobotEpisodes(write_lerobot_v30(tmp_path / "ds", stats_shift=1.0))
    stats = episodes.stats()
    data = {
        "qpos": np.concatenate([_state(e, n) for e, n in enumerate(LENGTHS)]),
        "action": np.concatenate([_action(e, n) for e, n in enumerate(LENGTHS)]),
    }
    for name, values in data.items():
        np.testing.assert_allclose(
            stats[name]["mean"], values.mean(0) + 1.0, rtol=1e-6
        )  # the file's, shifted
        np.testing.assert_allclose(stats[name]["std"], values.std(0), rtol=1e-5)
        np.testing.assert_allclose(stats[name]["q01"], np.quantile(values, 0.01, axis=0), rtol=1e-6)
        assert stats[name]["count"] == sum(LENGTHS)
    assert episodes.stats_source["qpos"] == "meta/stats.json (q01/q99 computed from the data)"


def test_stats_recomputed_without_stats_json(tmp_path):
    episodes = LeRobotEpisodes(write_lerobot_v30(tmp_path / "ds", stats_shift=None))
    stats = episodes.stats()
    values = np.concatenate([_action(e, n) for e, n in enumerate(LENGTHS)])
    for key, expected in summarize(values).items():
        np.testing.assert_allclose(stats["action"][key], expected)
    assert episodes.stats_source["action"] == "computed from the data"


def test_v21_stats_aggregate_episode_stats(tmp_path):
    episodes = LeRobotEpisodes(write_lerobot_v21(tmp_path / "ds"))
    stats = episodes.stats()
    values = np.concatenate([_state(e, n) for e, n in enumerate(LENGTHS)]).astype(np.float64)
    np.testing.assert_allclose(stats["qpos"]["mean"], values.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["qpos"]["std"], values.std(0), rtol=1e-5)  # pooled variance, exact
    np.testing.assert_allclose(stats["qpos"]["max"], values.max(0))
    assert stats["qpos"]["count"] == sum(LENGTHS)
    assert episodes.stats_source["qpos"].startswith("meta/episodes_stats.jsonl (aggregated)")


def test_key_map_and_its_errors(tmp_path):
    root = write_lerobot_v30(tmp_path / "ds")
    custom = {"observation.state": "qpos", "action": "action", "observation.images.wrist": "images/cam_high"}
    episodes = LeRobotEpisodes(root, key_map=custom)
    assert list(episodes.check_episode(0).cameras) == ["cam_high"]
    assert _codes(episodes.read_episode(1)["images"]["cam_high"])[:2] == [1100, 1101]
    with pytest.raises(RobotDataError, match="lacks"):
        LeRobotEpisodes(root, key_map={**custom, "observation.effort": "qvel"})
    with pytest.raises(RobotDataError, match="no feature maps to 'action'"):
        LeRobotEpisodes(root, key_map={"observation.state": "qpos", "observation.images.top": "images/top"})
    with pytest.raises(RobotDataError, match="cannot map"):
        LeRobotEpisodes(root, key_map={**custom, "observation.images.top": "environment_state"})


def test_rows_that_do_not_match_the_episode_table_raise(tmp_path):
    root = write_lerobot_v30(tmp_path / "ds")
    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # episode 1 lost its last frame
    episodes = LeRobotEpisodes(root)
    episodes.read_arrays(0)
    with pytest.raises(RobotDataError, match="4 rows, the episode's length is 5"):
        episodes.read_arrays(1)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(RobotDataError, match="codebase_version"):
        LeRobotEpisodes(root)


def _kinema_episodes(root: Path, with_env: bool = True) -> list[dict]:
    episodes = []
    for e, steps in enumerate(LENGTHS):
        arrays = {
            "qpos": _state(e, steps) * 1.37,
            "qvel": np.full((steps, STATE), 0.5, np.float32),
            "action": _action(e, steps) - 3.1,
            "images": {"top": _frames(e, steps, 0), "wrist": _frames(e, steps, 1)},
        }
        if with_env:
            arrays["environment_state"] = np.full((steps, 2), e + 0.5, np.float32)
        write_policy_episode(
            root / f"episode_{e}.hdf5", **arrays, attrs={"sim": True, "fps": 50.0, "task": TASKS[e % 2]}
        )
        episodes.append(arrays)
    return episodes


def test_export_reads_back(tmp_path):
    originals = _kinema_episodes(tmp_path / "src")
    out = export_lerobot(tmp_path / "src", tmp_path / "out", progress=False)
    info = json.loads((out / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_frames"] == sum(LENGTHS) and info["fps"] == 50
    assert info["features"]["observation.images.top"]["shape"] == [32, 32, 3]
    assert sorted(p.name for p in out.iterdir()) == ["data", "meta", "videos"]
    assert not list(tmp_path.glob(".out.*"))  # the temporary folder was renamed
    stats = json.loads((out / "meta/stats.json").read_text())
    np.testing.assert_allclose(
        stats["action"]["mean"], np.concatenate([o["action"] for o in originals]).mean(0), rtol=1e-6
    )
    episodes = LeRobotEpisodes(out)
    assert episodes.key_map["observation.velocity"] == "qvel"
    for e, ref in enumerate(episodes.episodes):
        back, original = episodes.read_episode(ref), originals[e]
        for name in ("qpos", "qvel", "action", "environment_state"):
            np.testing.assert_array_equal(back[name], original[name])  # exact
        for camera, frames in original["images"].items():
            assert _codes(back["images"][camera]) == _codes(frames)
            assert np.abs(back["images"][camera].astype(int) - frames).mean() < 2.0  # codec tolerance
        assert back["attrs"]["task"] == TASKS[e % 2]
    np.testing.assert_allclose(
        episodes.stats()["qvel"]["std"], 0.01
    )  # a constant joint: clipped as kinema does
    assert episodes.stats_source["qpos"] == "meta/stats.json (q01/q99 computed from the data)"


def test_export_refuses_an_existing_out_and_leaves_nothing_on_failure(tmp_path):
    _kinema_episodes(tmp_path / "src")
    (tmp_path / "out").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        export_lerobot(tmp_path / "src", tmp_path / "out", progress=False)
    read_policy_episode(tmp_path / "src/episode_0.hdf5")
    write_policy_episode(
        tmp_path / "src/episode_9.hdf5",
        qpos=np.zeros((3, 4), np.float32),
        qvel=np.zeros((3, 4), np.float32),
        action=np.zeros((3, 2), np.float32),
        images={"top": np.zeros((3, 32, 32, 3), np.uint8)},
        attrs={"sim": True, "fps": 50.0, "task": "x"},
    )
    with pytest.raises(RobotDataError, match="cameras"):
        export_lerobot(tmp_path / "src", tmp_path / "out2", progress=False)
    assert not (tmp_path / "out2").exists() and not list(tmp_path.glob(".out2.*"))


def test_cli_export_validate_inspect_stats(tmp_path, capsys):
    _kinema_episodes(tmp_path / "src")
    out = tmp_path / "out"
    assert main(["export-lerobot", str(tmp_path / "src"), str(out), "--no-progress"]) == 0
    assert main(["export-lerobot", str(tmp_path / "src"), str(out)]) == 2
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lerobot dataset" in text and "3 ok, 0 warning(s), 0 error(s)" in text
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lerobot v3.0" in text and "total 18" in text and "meta/stats.json" in text
    assert main(["stats", str(out), "--out", str(tmp_path / "stats.json")]) == 0
    saved = json.loads((tmp_path / "stats.json").read_text())["fields"]
    assert sorted(saved) == ["action", "environment_state", "qpos", "qvel"]


def test_validate_lists_a_broken_lerobot_episode(tmp_path, capsys):
    root = write_lerobot_v30(tmp_path / "ds")
    (root / "videos/observation.images.top/chunk-000/file-001.mp4").unlink()
    assert main(["validate", str(root)]) == 1
    text = capsys.readouterr().out
    assert "2 ok, 0 warning(s), 1 error(s)" in text and "episode_000002" in text


def test_lerobot_observation_names_map_to_kinema_names():
    from kinema.robot_data.lerobot import kinema_observation

    state, top = np.zeros((2, 3)), np.zeros((2, 4, 4, 3), np.uint8)
    plain = {"qpos": state, "images": {"top": top}, "step": np.array([0, 1])}
    assert kinema_observation(plain) == plain  # kinema's own names pass as they are
    mapped = kinema_observation({"observation.state": state, "observation.images.top": top, "task": "pick"})
    assert mapped.keys() == {"qpos", "images", "task"} and mapped["images"]["top"] is top
    custom = kinema_observation(
        {"joints": state, "cam": top}, key_map={"joints": "qpos", "cam": "images/wrist"}
    )
    assert custom["qpos"] is state and custom["images"] == {"wrist": top}
    with pytest.raises(ValueError, match="camera 'top' given twice"):
        kinema_observation({"observation.images.top": top, "images": {"top": top}})
