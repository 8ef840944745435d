"""Clips longer than num_frames: random windows in training (the same after a resume), every window in the cache,
the first window in validation, and the action metric over rows of any length."""

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from kinema.robot_data import format_action_json
from kinema.robot_data.testing import write_action_video_dataset, write_vace_e_dataset
from kinema.video_world_model.cli import build_parser
from kinema.video_world_model.training._cache import write_cache
from kinema.video_world_model.training._loop import BatchStream
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.training._train_data import CachedLatentDataset, build_dataset

CLIP_FRAMES = 21  # 5 action steps: windows of 5 frames start at 0, 4, 8, 12, 16
FRAMES = 5


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("long") / "data"
    write_action_video_dataset(root, num_clips=2, num_frames=CLIP_FRAMES, height=32, width=32)
    return root


def config(clips, **overrides) -> TrainConfig:
    values = {
        "dataset_base_path": str(clips),
        "model_dir": "unused",
        "height": 32,
        "width": 32,
        "num_frames": FRAMES,
        "dataset_num_workers": 0,
        "dataset_repeat": 3,
        "seed": 3,
    }
    return TrainConfig(**(values | overrides))


def drawn(stream: BatchStream, count: int) -> list[tuple[str, int, int]]:
    """(row, first frame, epoch) of the next ``count`` batches of one sample."""
    out = []
    for _ in range(count):
        epoch = stream.epoch if stream.position < len(stream.dataset) else stream.epoch + 1
        batch = next(stream)
        out.append((batch["row"][0], int(batch["frame_indices"][0, 0]), epoch))
    return out


def test_training_draws_random_windows_that_a_resumed_run_draws_again(long_clips):
    train = config(long_clips)
    dataset, _ = build_dataset(train)
    assert dataset.config.window == "random" and dataset.config.seed == 3 and len(dataset) == 6
    uninterrupted = drawn(BatchStream(dataset, train, 0, 1), 15)  # two and a half epochs of 6 samples
    assert {start for _, start, _ in uninterrupted} <= {0, 4, 8, 12, 16}
    by_epoch = [[(row, start) for row, start, e in uninterrupted if e == epoch] for epoch in (0, 1)]
    assert sorted(by_epoch[0]) != sorted(by_epoch[1])  # each epoch draws new windows
    # resumed in epoch 1 after 2 of its samples, with a fresh dataset (whose own epoch is 0) read by a worker
    fresh, _ = build_dataset(config(long_clips, dataset_num_workers=1))
    resumed = BatchStream(fresh, config(long_clips, dataset_num_workers=1), 0, 1, epoch=1, position=2)
    assert drawn(resumed, 7) == uninterrupted[8:]


def test_clips_of_exactly_num_frames_give_the_same_samples_in_every_mode(tmp_path):
    root = tmp_path / "data"
    write_action_video_dataset(root, num_clips=2, num_frames=FRAMES, height=32, width=32)
    samples = {}
    for window in ("first", "random", "all"):
        dataset, _ = build_dataset(config(root, dataset_window=window, dataset_repeat=1))
        samples[window] = [dataset[i] for i in range(len(dataset))]
    for window in ("random", "all"):
        assert len(samples[window]) == 2
        for a, b in zip(samples["first"], samples[window]):
            assert torch.equal(a["video"], b["video"]) and torch.equal(a["action_binary"], b["action_binary"])


def test_the_window_option_is_a_flag_checked_and_kept_by_resume(long_clips, tmp_path):
    args = build_parser().parse_args(["train", "--dataset_window", "all", "--model_dir", "m"])
    assert args.dataset_window == "all"
    with pytest.raises(ValueError, match=r"--dataset_window: expected one of \('first', 'random', 'all'\)"):
        config(long_clips, dataset_window="middle")
    with pytest.raises(ValueError, match="--dataset_window: a cache holds the windows"):
        config(long_clips, cache_dir=str(tmp_path), dataset_window="first")
    # a run saved before the option existed took the first window of each clip: resuming it must say so
    saved = config(long_clips).to_dict()
    del saved["dataset_window"]
    assert config(long_clips).differences(saved) == {"dataset_window": ("first", None)}
    assert config(long_clips, dataset_window="first").differences(saved) == {}
    cached = config(long_clips, cache_dir=str(tmp_path)).to_dict()
    del cached["dataset_window"]
    assert config(long_clips, cache_dir=str(tmp_path)).differences(cached) == {}
    # a run saved before flow_shift and prediction_type existed trained with Wan's shift 5 and flow prediction
    older = config(long_clips, dataset_window="first").to_dict()
    del older["flow_shift"], older["prediction_type"]
    assert config(long_clips, dataset_window="first").differences(older) == {}
    assert config(long_clips, dataset_window="first", prediction_type="sample").differences(older) == {
        "prediction_type": ("flow", "sample")
    }


@pytest.mark.parametrize(("window", "starts"), [(None, [0, 4, 8, 12, 16]), ("first", [0])])
def test_the_cache_holds_every_window_or_the_first(tiny_wan_dir, long_clips, tmp_path, window, starts):
    options = {"model_dir": str(tiny_wan_dir)} | ({} if window is None else {"dataset_window": window})
    index = write_cache(config(long_clips, **options), tmp_path / "cache", torch.device("cpu"), torch.float32)
    written = json.loads(index.read_text())
    assert written["window"] == (window or "all")
    assert [(r["row"], r["frame_start"]) for r in written["rows"]] == [
        (row, start) for row in ("0 (line 2)", "1 (line 3)") for start in starts
    ]
    dataset, _ = build_dataset(config(long_clips, dataset_window="all"))
    cache = CachedLatentDataset(tmp_path / "cache")
    for i, row in enumerate(written["rows"]):
        clip = int(row["row"].split()[0])
        sample = dataset[clip * 5 + row["frame_start"] // 4]  # the same window of the same clip
        assert torch.equal(cache[i]["action_binary"], sample["action_binary"])
        assert cache[i]["latents"].shape[1] == 2  # 5 frames -> 2 latent frames
    with pytest.raises(ValueError, match="--dataset_window: a cache holds fixed windows"):
        write_cache(
            config(long_clips, model_dir=str(tiny_wan_dir), dataset_window="random"),
            tmp_path / "other",
            torch.device("cpu"),
            torch.float32,
        )


def test_the_action_metric_reads_rows_longer_than_the_first(long_clips, tmp_path):
    from kinema.video_world_model.drone._eval import read_dataset_actions

    with open(long_clips / "metadata.csv", newline="") as f:
        rows = list(csv.reader(f))
    binary, magnitude = np.zeros((2, 8)), np.ones((2, 8))
    binary[:, 3] = 1
    short = [rows[1][0], "two steps", format_action_json(binary, magnitude)]  # first row: 2 steps
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([rows[0], short, *rows[1:]])
    shutil.copytree(long_clips / "clips", tmp_path / "clips")
    actions = read_dataset_actions(tmp_path)
    assert actions.num_steps == 2 and actions.binary.shape == (3, 2, 8)
    full = read_dataset_actions(long_clips)  # every row has 5 steps
    assert full.num_steps == 5
    np.testing.assert_array_equal(actions.binary[1:], full.binary[:, :2])
    np.testing.assert_array_equal(actions.magnitude[1:], full.magnitude[:, :2])


def test_vace_e_trains_on_random_windows_and_validates_on_the_first(tmp_path):
    from kinema.video_world_model.vace_e import VaceEConfig
    from kinema.video_world_model.vace_e._train import episode_dataset

    fixture = write_vace_e_dataset(tmp_path / "episodes", num_frames=13, height=32, width=32)
    values = {"model_dir": "unused", "dataset_base_path": str(fixture.root),
              "task_metadata_path": str(fixture.metadata), "num_frames": FRAMES, "height": 32, "width": 32,
              "seed": 5, "dataset_repeat": 4}  # fmt: skip
    train = episode_dataset(VaceEConfig(**values))
    assert (train.config.window, train.config.seed, len(train)) == ("random", 5, 12)
    starts = {train.window(i)[1] for i in range(len(train))}
    assert len(starts) > 1 and starts <= set(range(9))  # 5 of 13 frames start at 0 .. 8
    validation = episode_dataset(VaceEConfig(**values), str(fixture.root))
    assert validation.config.window == "first" and len(validation) == 3
    every = episode_dataset(VaceEConfig(**values, dataset_window="all"))
    assert len(every) == 4 * 3 * 3  # windows at 0, 4, 8 of 3 episodes, repeated 4 times
    with pytest.raises(ValueError, match="--dataset_window: expected one of"):
        VaceEConfig(**values, dataset_window="last")
    saved = VaceEConfig(**values).to_dict()
    del saved["dataset_window"]
    assert VaceEConfig(**values).differences(saved) == {"dataset_window": ("first", "random")}
