"""Temporal windows of ActionVideoDataset and VaceEEpisodeDataset: "first", "random" (seeded by seed, epoch and
index, so a resumed run draws the same windows) and "all" (every window at a stride), with actions,
trajectories and masks sliced to the frames of the window."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch

from kinema.robot_data import (
    ActionVideoDataset,
    RobotDataError,
    RobotDataWarning,
    VaceEEpisodeDataset,
    format_action_json,
)
from kinema.robot_data.testing import decode_frame_code, write_coded_video, write_vace_e_dataset

CLIP_FRAMES = 41  # 10 actions
STEPS = 10


def codes(video: torch.Tensor) -> list[int]:
    """(3, T, H, W) -> the frame code of each frame."""
    return [decode_frame_code(frame.numpy()) for frame in video.permute(1, 2, 3, 0)]


def _actions(clip: int, steps: int = STEPS) -> str:
    """Magnitude [k, 0] = 100 * clip + k: a sample's actions tell which steps of the row it got."""
    binary = np.zeros((steps, 8))
    binary[:, 0] = 1
    magnitude = np.zeros((steps, 8))
    magnitude[:, 0] = 100 * clip + np.arange(steps)
    return format_action_json(binary, magnitude)


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    """Two 41-frame clips (frame i of clip c shows 1000 c + i) with 10 actions each, and a control video."""
    root = tmp_path_factory.mktemp("long_clips")
    (root / "clips").mkdir()
    rows = [["video", "prompt", "action", "control"]]
    for c in range(2):
        write_coded_video(
            root / "clips" / f"{c}.mp4", CLIP_FRAMES, first_index=1000 * c, keyframe_interval=12
        )
        write_coded_video(root / "clips" / f"{c}_control.mp4", CLIP_FRAMES, first_index=1000 * c + 500)
        rows.append([f"clips/{c}.mp4", f"clip {c}", _actions(c), f"clips/{c}_control.mp4"])
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root


def _dataset(root, **options) -> ActionVideoDataset:
    return ActionVideoDataset(
        base_path=root, num_frames=9, max_pixels=None, data_file_keys=("video", "control"), **options
    )


def check_action_sample(sample: dict, clip: int, start: int) -> None:
    """Frames start..start+8 of the clip, its control video at the same frames, actions start/4 .. start/4 + 1."""
    assert start % 4 == 0
    assert sample["frame_indices"].tolist() == list(range(start, start + 9))
    assert codes(sample["video"]) == [1000 * clip + i for i in range(start, start + 9)]
    assert codes(sample["control"]) == [1000 * clip + 500 + i for i in range(start, start + 9)]
    assert torch.equal(sample["input_image"], sample["video"][:, 0])
    # action k steers latent frame k + 1 of the window = frames start + 4k + 1 .. start + 4k + 4 of the clip,
    # which the row's action start / 4 + k steers
    assert sample["action_magnitude"][:, 0].tolist() == [100 * clip + start // 4 + k for k in range(2)]
    assert sample["action_binary"].shape == (2, 8)


def test_first_window_is_the_default_and_the_old_behaviour(long_clips):
    ds = _dataset(long_clips)
    assert len(ds) == 2 and ds.config.window == "first"
    for i in range(2):
        assert ds.window(i) == (i, 0)
        check_action_sample(ds[i], i, 0)


@pytest.mark.parametrize(
    ("stride", "starts"), [(None, [0, 8, 16, 24, 32]), (4, list(range(0, 33, 4))), (12, [0, 12, 24])]
)
def test_all_windows_enumerate_every_window_at_the_stride(long_clips, stride, starts):
    ds = _dataset(long_clips, window="all", window_stride=stride, repeat=2)
    assert len(ds) == 2 * 2 * len(starts)
    expected = [(c, s) for c in range(2) for s in starts] * 2
    assert [ds.window(i) for i in range(len(ds))] == expected
    for i in range(0, len(ds), 3):
        check_action_sample(ds[i], *expected[i])


def test_default_all_windows_use_every_action_once(long_clips):
    ds = _dataset(long_clips, window="all")
    used = [ds[i]["action_magnitude"][:, 0].tolist() for i in range(len(ds)) if ds.window(i)[0] == 0]
    assert [step for steps in used for step in steps] == list(range(STEPS))


def test_random_windows_are_a_pure_function_of_seed_epoch_and_index(long_clips):
    ds = _dataset(long_clips, window="random", seed=7, repeat=40)
    windows = [ds.window(i) for i in range(len(ds))]
    assert {c for c, _ in windows} == {0, 1} and all(c == i % 2 for i, (c, _) in enumerate(windows))
    assert {s for _, s in windows} == set(range(0, 33, 4))  # every start on the 4-frame grid is drawn
    again = _dataset(long_clips, window="random", seed=7, repeat=40)
    assert [again.window(i) for i in range(len(ds))] == windows
    ds.set_epoch(3)
    epoch3 = [ds.window(i) for i in range(len(ds))]
    assert epoch3 != windows
    resumed = _dataset(long_clips, window="random", seed=7, repeat=40)  # a run resumed at epoch 3
    resumed.set_epoch(3)
    assert [resumed.window(i) for i in range(len(ds))] == epoch3
    other = _dataset(long_clips, window="random", seed=8, repeat=40)
    assert [other.window(i) for i in range(len(ds))] != windows
    for i in (0, 1, 17, 78):
        check_action_sample(ds[i], *epoch3[i])


def test_random_windows_are_the_same_in_dataloader_workers(long_clips):
    ds = _dataset(long_clips, window="random", seed=1, repeat=3)
    ds.set_epoch(5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
    starts = torch.cat([batch["frame_indices"][:, 0] for batch in loader]).tolist()
    assert starts == [ds.window(i)[1] for i in range(len(ds))]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": "middle"}, "window: expected one of"),
        (
            {"window": "all", "window_stride": 6},
            "window_stride: expected a positive integer and a multiple of 4",
        ),
        ({"window": "all", "window_stride": 0}, "window_stride"),
        ({"window": "random", "seed": -1}, "seed: expected an integer >= 0"),
        ({"window": "random", "window_stride": 8}, "window_stride: only window='all' uses it"),
    ],
)
def test_window_options_are_validated(long_clips, options, message):
    with pytest.raises(ValueError, match=message):
        _dataset(long_clips, **options)
    with pytest.raises(ValueError, match="epoch"):
        _dataset(long_clips).set_epoch(-1)


def test_rows_whose_actions_and_video_disagree_are_bad_items(tmp_path):
    (tmp_path / "clips").mkdir()
    write_coded_video(tmp_path / "clips" / "short.mp4", 21)
    write_coded_video(tmp_path / "clips" / "long.mp4", 41)
    rows = [
        ["video", "prompt", "action"],
        ["clips/long.mp4", "ok", _actions(0, 10)],
        ["clips/short.mp4", "actions past the video", _actions(1, 10)],  # 10 steps need 41 frames
        ["clips/long.mp4", "too few actions", _actions(2, 1)],
    ]
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always", RobotDataWarning)
        ds = ActionVideoDataset(base_path=tmp_path, num_frames=9, max_pixels=None, window="all")
    assert [c.prompt for c in ds.clips] == ["ok"]
    reasons = {item.field: item.reason for item in ds.skipped}
    assert (
        "10 action steps cover 41 frames, but video clips/short.mp4 has 21"
        in reasons["row 1 (line 3): action"]
    )
    assert (
        "expected 2 action steps ((num_frames - 1) / 4) or more, got 1" in reasons["row 2 (line 4): action"]
    )
    with pytest.raises(RobotDataError, match=r"row 1 \(line 3\): action"):
        ActionVideoDataset(base_path=tmp_path, num_frames=9, strict=True)


# ------------------------------------------------------------------------------------------------------- VACE-E


@pytest.fixture(scope="module")
def long_episodes(tmp_path_factory):
    """Three 33-frame episodes (frame i shows i; the control video 1000 + i; hand x = i; object x = i + 100 id)."""
    return write_vace_e_dataset(tmp_path_factory.mktemp("long_episodes") / "base", num_frames=33)


def _episodes(fixture, **options) -> VaceEEpisodeDataset:
    return VaceEEpisodeDataset(
        base_path=fixture.root, metadata_path=fixture.metadata, num_frames=9, max_pixels=None, **options
    )


def check_vace_sample(sample: dict, frames: list[int]) -> None:
    """Every per-frame field holds the same source frames."""
    assert sample["frame_indices"].tolist() == frames
    assert codes(sample["video"]) == frames
    assert codes(sample["control_video"]) == [1000 + f for f in frames]
    assert sample["mask"].shape == (1, 9, 32, 32)
    assert bool(sample["mask"][0, :, :, :16].all()) and not bool(sample["mask"][0, :, :, 16:].any())
    if sample["hand_motion"] is not None:
        assert sample["hand_motion"][:, 9].tolist() == frames  # right wrist x = source frame
    if sample["object_trajectory"] is not None:
        assert sample["object_trajectory"][:, 0, 0].tolist() == frames  # object id 0: x = frame
        assert sample["object_trajectory"][:, 1, 0].tolist() == [f + 100 for f in frames]


def test_vace_e_first_is_the_default(long_episodes):
    ds = _episodes(long_episodes)
    assert len(ds) == 3
    for i in range(3):
        assert ds.window(i) == (i, 0)
        check_vace_sample(ds[i], list(range(9)))


def test_vace_e_all_windows_slice_video_mask_and_trajectories_alike(long_episodes):
    ds = _episodes(long_episodes, window="all")
    starts = [0, 8, 16, 24]  # stride num_frames - 1 over 33 frames
    assert [ds.window(i) for i in range(len(ds))] == [(e, s) for e in range(3) for s in starts]
    for i in range(len(ds)):
        check_vace_sample(ds[i], list(range(ds.window(i)[1], ds.window(i)[1] + 9)))
    odd = _episodes(long_episodes, window="all", window_stride=5)  # any stride: no actions to align
    assert [odd.window(i)[1] for i in range(len(odd)) if odd.window(i)[0] == 0] == [0, 5, 10, 15, 20]


def test_vace_e_windows_of_a_resampled_episode(long_episodes):
    ds = _episodes(long_episodes, fps=8, window="all", window_stride=4)  # 33 frames at 16 fps -> 17 at 8 fps
    assert [ds.window(i) for i in range(len(ds)) if ds.window(i)[0] == 1] == [(1, 0), (1, 4), (1, 8)]
    check_vace_sample(ds[2], [2 * f for f in range(8, 17)])


def test_vace_e_random_windows_reproduce_and_cover_the_episode(long_episodes):
    ds = _episodes(long_episodes, window="random", seed=3, repeat=100)
    ds.set_epoch(2)
    windows = [ds.window(i) for i in range(len(ds))]
    assert {s for _, s in windows} == set(range(25))  # every start of 9 frames in 33
    resumed = _episodes(long_episodes, window="random", seed=3, repeat=100)
    resumed.set_epoch(2)
    assert [resumed.window(i) for i in range(len(ds))] == windows
    for i in (0, 4, 50):
        check_vace_sample(ds[i], list(range(windows[i][1], windows[i][1] + 9)))


def test_vace_e_a_short_episode_gives_its_largest_4n_plus_1_frames(tmp_path):
    fixture = write_vace_e_dataset(tmp_path / "base", num_frames=7)
    ds = _episodes(fixture, window="all")
    assert len(ds) == 3 and ds[0]["video"].shape[1] == 5  # the largest 4n + 1 <= 7: one window at stride 8
    ds = _episodes(fixture, window="random", repeat=20)
    assert {ds.window(i)[1] for i in range(len(ds))} == {0, 1, 2}  # 5 of 7 frames start at 0, 1 or 2
    first = ds.window(1)[1]
    assert codes(ds[1]["video"]) == list(range(first, first + 5))
