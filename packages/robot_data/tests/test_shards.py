"""WebDataset shards: the writer (boundaries, index, statistics, resume, bad rows), the validator, and the
streaming reader (round trip against the folder reader, process and worker splits, exact resume, damage)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import warnings

import numpy as np
import pytest
import torch

from kinema.robot_data import ActionVideoDataset, RobotDataError, RobotDataWarning, parse_action_json
from kinema.robot_data.shards import (
    ShardedActionVideoDataset,
    read_index,
    validate_shards,
    write_action_video_shards,
)
from kinema.robot_data.shards import _write as write_module
from kinema.robot_data.testing import write_action_video_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """10 clips of 17 frames (4 action steps each)."""
    root = tmp_path_factory.mktemp("clips") / "data"
    write_action_video_dataset(root, num_clips=10, num_frames=17, height=32, width=32)
    return root


@pytest.fixture(scope="module")
def shards(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "shards"
    write_action_video_shards(dataset, out, max_shard_samples=3, progress=False)
    return out


def keys(samples) -> list[int]:
    return [int(s["index"]) for s in samples]


def test_writer_index_boundaries_and_statistics(dataset, shards):
    index = read_index(shards)
    assert index.complete and index.samples == 10
    assert [s["samples"] for s in index.shards] == [3, 3, 3, 1]
    assert [s["name"] for s in index.shards] == [f"shard-{i:06d}.tar" for i in range(4)]
    rows = (dataset / "metadata.csv").read_text().splitlines()[1:]
    assert len(rows) == 10
    # statistics from the CSV's actions, computed here by hand
    import csv

    with open(dataset / "metadata.csv", newline="") as f:
        actions = [parse_action_json(r["action"]) for r in csv.DictReader(f)]
    binary = np.concatenate([b for b, _ in actions])
    magnitude = np.concatenate([m for _, m in actions])
    assert index.statistics["action_steps"] == len(binary) == 40
    assert list(index.statistics["action_on_share"].values()) == pytest.approx(binary.mean(0), abs=1e-6)
    assert list(index.statistics["magnitude_mean"].values()) == pytest.approx(magnitude.mean(0), abs=1e-5)
    assert all(s["action_steps"] == [4] * s["samples"] for s in index.shards)
    # members of a sample, as any WebDataset reader sees them
    with tarfile.open(shards / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert sorted(names[:4]) == [
        "00000000.action.json",
        "00000000.meta.json",
        "00000000.prompt.txt",
        "00000000.video.mp4",
    ]
    with tarfile.open(shards / "shard-000000.tar") as tar:
        video = tar.extractfile("00000000.video.mp4").read()
    assert video == (dataset / "clips" / "clip_000.mp4").read_bytes()  # stored as it was, not re-encoded


def test_byte_limit_closes_shards(dataset, tmp_path):
    size = (dataset / "clips" / "clip_000.mp4").stat().st_size
    index = write_action_video_shards(
        dataset, tmp_path / "s", max_shard_bytes=2 * size + 8192, progress=False
    )
    assert all(1 <= s["samples"] <= 2 for s in index.shards) and index.samples == 10
    assert [s["samples"] for s in index.shards] == [2] * 5  # 3 of these samples would pass the limit


def test_an_interrupted_writer_goes_on_to_the_same_shards(dataset, shards, tmp_path, monkeypatch):
    real_replace = os.replace

    def fail_on_the_third_shard(src, dst):
        if str(dst).endswith("shard-000002.tar"):
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(write_module.os, "replace", fail_on_the_third_shard)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        write_action_video_shards(dataset, out, max_shard_samples=3, progress=False)
    assert sorted(p.name for p in out.glob("shard-*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not read_index(out).complete and read_index(out).rows_done == 6
    monkeypatch.setattr(write_module.os, "replace", real_replace)
    index = write_action_video_shards(dataset, out, max_shard_samples=3, progress=False)
    assert index.complete and not list(out.glob(".*.tmp"))
    for entry in index.shards:
        assert (out / entry["name"]).read_bytes() == (shards / entry["name"]).read_bytes(), entry["name"]
    assert json.loads((out / "index.json").read_text())["statistics"] == read_index(shards).statistics
    with pytest.raises(RobotDataError, match=r"max_shard_samples: 3 then, 4 now"):
        write_action_video_shards(dataset, out, max_shard_samples=4, progress=False)


def test_bad_rows_are_listed_or_stop_the_writer(tmp_path):
    root = tmp_path / "data"
    write_action_video_dataset(root, num_clips=3, num_frames=9, broken=["missing_video", "action_not_json"])
    with pytest.warns(RobotDataWarning, match="skipped 2 of 5"):
        index = write_action_video_shards(root, tmp_path / "lenient", progress=False)
    assert index.samples == 3 and len(index.skipped) == 2
    with pytest.raises(RobotDataError, match="row 3"):
        write_action_video_shards(root, tmp_path / "strict", strict=True, progress=False)


def test_round_trip_equals_the_folder_reader(dataset, shards):
    folder = ActionVideoDataset(base_path=dataset, num_frames=17)
    streamed = list(ShardedActionVideoDataset(shards, num_frames=17, shuffle_shards=False))
    assert keys(streamed) == list(range(10))
    for sample in streamed:
        expected = folder[sample["index"]]
        for key in ("video", "input_image", "action_binary", "action_magnitude", "frame_indices"):
            assert torch.equal(sample[key], expected[key]), key
        assert sample["prompt"] == expected["prompt"]


def test_random_and_all_windows_match_the_folder_reader(dataset, shards):
    for epoch in (0, 3):
        folder = ActionVideoDataset(base_path=dataset, num_frames=9, window="random", seed=5)
        folder.set_epoch(epoch)
        streamed = ShardedActionVideoDataset(
            shards, num_frames=9, window="random", seed=5, shuffle_shards=False
        )
        streamed.set_epoch(epoch)
        for sample in streamed:
            assert torch.equal(sample["frame_indices"], folder[sample["index"]]["frame_indices"])
    # "all": 4 action steps, windows of 2 steps every 2 -> 2 windows per clip
    streamed = ShardedActionVideoDataset(shards, num_frames=9, window="all", shuffle_shards=False)
    assert len(streamed) == 20
    starts = [(s["index"], int(s["frame_indices"][0])) for s in streamed]
    assert starts == [(i, f) for i in range(10) for f in (0, 8)]


def test_processes_and_workers_read_disjoint_items_that_cover_the_epoch(shards):
    # 4 shards of 3, 3, 3, 1 over 2 processes: each process yields the smaller share
    parts = []
    for rank in range(2):
        data = ShardedActionVideoDataset(
            shards, num_frames=9, rank=rank, world_size=2, shuffle_buffer=4, seed=1
        )
        data.set_epoch(2)
        parts.append(keys(data))
        assert len(parts[-1]) == len(data)
    assert len(parts[0]) == len(parts[1]) and not set(parts[0]) & set(parts[1])
    # the epoch's shard order is a permutation of (seed, epoch): the two processes' shares hold 4 + 6 or 6 + 4
    # samples, and both stop at the smaller
    assert len(parts[0]) in (4, 6) and len(parts[0]) == min(len(parts[0]), len(parts[1]))
    one = ShardedActionVideoDataset(shards, num_frames=9, rank=0, world_size=1, shuffle_shards=False)
    assert sorted(keys(one)) == list(range(10))
    # two DataLoader workers: the same items as one process alone, the order being the loader's round robin
    two = ShardedActionVideoDataset(shards, num_frames=9, shuffle_shards=False, loader_workers=2)
    loader = torch.utils.data.DataLoader(two, batch_size=None, num_workers=2)
    assert sorted(int(s["index"]) for s in loader) == list(range(10))
    with pytest.raises(ValueError, match="loader_workers"):
        list(torch.utils.data.DataLoader(one, batch_size=None, num_workers=2))


def test_resume_continues_with_exactly_the_next_item(shards):
    def stream(start, workers):
        data = ShardedActionVideoDataset(
            shards, num_frames=9, shuffle_buffer=3, seed=7, loader_batch_size=2, loader_workers=workers
        )
        data.set_epoch(1, position=start)
        loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=workers, collate_fn=lambda b: b)
        batches = list(loader)
        assert all(len(batch) == 2 for batch in batches)  # whole batches only: a worker drops its ragged tail
        assert sum(len(batch) for batch in batches) == len(data)
        return [int(s["index"]) for batch in batches for s in batch]

    for workers in (0, 2):
        uninterrupted = stream(0, workers)
        # 4 shards of 3, 3, 3, 1 samples: one worker takes all 10; two workers take 2 shards each, 6 and 4 or
        # 4 and 6 items (or 7 and 3: the odd one drops 1), so 8 to 10 items in whole batches of 2
        assert len(set(uninterrupted)) == len(uninterrupted) >= 8
        for start in (2, 4, 6, 8):
            assert stream(start, workers) == uninterrupted[start:], (workers, start)


def test_damaged_members_and_shards(dataset, tmp_path):
    root = tmp_path / "data"
    write_action_video_dataset(root, num_clips=4, num_frames=9)
    (root / "clips" / "clip_001.mp4").write_bytes(b"not a video at all" * 64)
    out = tmp_path / "shards"
    write_action_video_shards(root, out, max_shard_samples=2, progress=False)
    report = validate_shards(out, deep=True)
    assert [item.status for item in report.items] == ["error", "ok"]
    assert "00000001" in report.items[0].field
    with pytest.warns(RobotDataWarning, match="sample 00000001 failed to decode"):
        lenient = keys(ShardedActionVideoDataset(out, num_frames=9, shuffle_shards=False))
    assert lenient == [0, 0, 2, 3]  # replaced by the sample before it: every process keeps its item count
    with pytest.raises(RobotDataError):
        list(ShardedActionVideoDataset(out, num_frames=9, shuffle_shards=False, strict=True))
    # a shard cut in the middle (of a dataset whose videos are whole)
    write_action_video_dataset(tmp_path / "good", num_clips=4, num_frames=9)
    out = tmp_path / "good_shards"
    write_action_video_shards(tmp_path / "good", out, max_shard_samples=2, progress=False)
    data = (out / "shard-000001.tar").read_bytes()
    (out / "shard-000001.tar").write_bytes(data[: len(data) // 2])
    assert validate_shards(out).items[1].status == "error"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cut = keys(ShardedActionVideoDataset(out, num_frames=9, shuffle_shards=False))
    assert len(cut) == 4 and any("damaged" in str(w.message) for w in caught)
    with pytest.raises(RobotDataError, match="damaged shard"):
        list(ShardedActionVideoDataset(out, num_frames=9, shuffle_shards=False, strict=True))


WORKER = """
import json, sys, torch.distributed as dist
from kinema.robot_data.shards import ShardedActionVideoDataset
dist.init_process_group("gloo")
data = ShardedActionVideoDataset(sys.argv[1], num_frames=9, shuffle_buffer=4, seed=3)
data.set_epoch(1)
with open(f"{sys.argv[2]}.{dist.get_rank()}", "w") as f:
    json.dump([int(s["index"]) for s in data], f)
dist.destroy_process_group()
"""


def test_two_torchrun_processes_split_the_shards(shards, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, str(script), str(shards), str(tmp_path / "out")],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parts = [json.loads((tmp_path / f"out.{rank}").read_text()) for rank in range(2)]
    assert len(parts[0]) == len(parts[1]) > 0 and not set(parts[0]) & set(parts[1])
    by_hand = []
    for rank in range(2):
        data = ShardedActionVideoDataset(
            shards, num_frames=9, shuffle_buffer=4, seed=3, rank=rank, world_size=2
        )
        data.set_epoch(1)
        by_hand.append(keys(data))
    assert sorted(parts[0]) == sorted(by_hand[0]) and sorted(parts[1]) == sorted(by_hand[1])


def test_brace_patterns_and_pipe_commands_read_the_same_samples(shards):
    folder = keys(ShardedActionVideoDataset(shards, num_frames=9, shuffle_shards=False))
    pattern = str(shards / "shard-{000000..000003}.tar")
    assert keys(ShardedActionVideoDataset(pattern, num_frames=9, shuffle_shards=False)) == folder
    # a pipe: command, as `aws s3 cp s3://... -` or `gsutil cat gs://...` would be given; the index is local
    piped = f"pipe:cat {shards}/shard-{{000000..000003}}.tar"
    with pytest.raises(ValueError, match="index: give a local copy"):
        ShardedActionVideoDataset(piped, num_frames=9)
    data = ShardedActionVideoDataset(piped, index=shards / "index.json", num_frames=9, shuffle_shards=False)
    assert keys(data) == folder
    with pytest.raises(RobotDataError, match=r"shard-000009\.tar is not in the index"):
        ShardedActionVideoDataset(str(shards / "shard-000009.tar"), index=shards, num_frames=9)


@pytest.fixture(scope="module")
def vace_e(tmp_path_factory):
    from kinema.robot_data.testing import write_vace_e_dataset

    root = tmp_path_factory.mktemp("vace_e")
    fixture = write_vace_e_dataset(root / "data", num_frames=13, broken=["missing_control_video"])
    return fixture, root


def test_vace_e_episodes_round_trip_through_shards(vace_e):
    from kinema.robot_data import VaceEEpisodeDataset
    from kinema.robot_data.shards import ShardedVaceEEpisodeDataset, write_vace_e_shards

    fixture, root = vace_e
    with pytest.warns(RobotDataWarning, match="skipped 1 of 4"):
        index = write_vace_e_shards(
            fixture.root, fixture.metadata, root / "shards", max_shard_samples=2, progress=False
        )
    assert index.kind == "vace_e" and index.samples == 3 and len(index.skipped) == 1
    assert [s["frames"] for s in index.shards] == [[13, 13], [13]]
    assert (root / "shards" / "task_metadata.json").read_bytes() == fixture.metadata.read_bytes()
    assert [item.status for item in validate_shards(root / "shards", deep=True).items] == [
        "warning",
        "ok",
        "ok",
    ]
    for window in ("first", "random", "all"):
        options = {"num_frames": 5, "window": window, "seed": 3}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RobotDataWarning)  # the broken episode, skipped again
            folder = VaceEEpisodeDataset(base_path=fixture.root, metadata_path=fixture.metadata, **options)
        folder.set_epoch(2)
        streamed = ShardedVaceEEpisodeDataset(root / "shards", shuffle_shards=False, **options)
        streamed.set_epoch(2)
        samples = list(streamed)
        assert len(samples) == len(streamed) == len(folder)  # "all": 3 windows of 5 frames in 13, per episode
        if window == "all":
            starts = [(s["index"], int(s["frame_indices"][0])) for s in samples]
            assert starts == [(i, f) for i in range(3) for f in (0, 4, 8)]
            continue
        for sample in samples:
            expected = folder[sample["index"]]
            for key in ("video", "control_video", "mask", "frame_indices"):
                assert torch.equal(sample[key], expected[key]), key
            for key in ("hand_motion", "object_trajectory", "embodiment_image"):
                assert (sample[key] is None) == (expected[key] is None), key
                assert sample[key] is None or torch.equal(sample[key], expected[key]), key
            for key in ("prompt", "task", "embodiment_type", "episode"):
                assert sample[key] == expected[key], key
    with pytest.raises(RobotDataError, match="expected action_video shards"):
        ShardedActionVideoDataset(root / "shards", num_frames=5)
