import csv
import json
import os
import warnings

import numpy as np
import pytest
import torch

from kinema.robot_data import (
    DEFAULT_MAGNITUDE_SCALE,
    DRONE_ACTIONS,
    ActionVideoConfig,
    ActionVideoDataset,
    MissingFileError,
    RobotDataError,
    RobotDataWarning,
    format_action_json,
    parse_action_json,
)
from kinema.robot_data.testing import (
    ACTION_VIDEO_BROKEN,
    decode_frame_code,
    write_action_video_dataset,
    write_coded_video,
)


def rows_of(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_action_names_and_scale_are_the_reference_ones():
    assert DRONE_ACTIONS == (
        "forward",
        "back",
        "left",
        "right",
        "yaw_left",
        "yaw_right",
        "pitch_up",
        "pitch_down",
    )
    assert DEFAULT_MAGNITUDE_SCALE == (100, 100, 100, 100, 1, 1, 1, 1)


def test_parse_action_json_splits_binary_and_raw_magnitude():
    action = np.zeros((20, 2, 8))
    action[:, 0, 0] = 1
    action[:, 1, 0] = 0.5
    action[3, 0, 5], action[3, 1, 5] = 1, 0.25
    binary, magnitude = parse_action_json(json.dumps(action.tolist()), 20)
    assert binary.shape == magnitude.shape == (20, 8) and binary.dtype == np.float32
    np.testing.assert_array_equal(binary, action[:, 0])
    np.testing.assert_array_equal(magnitude, action[:, 1])  # raw: no x100
    again = parse_action_json(format_action_json(binary, magnitude), 20)
    np.testing.assert_array_equal(again[0], binary)
    np.testing.assert_array_equal(again[1], magnitude)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[1, 2", "not valid JSON"),
        (json.dumps(np.zeros((20, 8)).tolist()), r"expected shape \(A, 2, 8\), got \(20, 8\)"),
        (json.dumps(np.zeros((19, 2, 8)).tolist()), "expected 20 action steps"),
        (json.dumps([[["a"] * 8] * 2] * 20), "nested list of numbers"),
        (json.dumps(np.full((20, 2, 8), 0.5).tolist()), "must be 0 or 1"),
        (json.dumps(np.zeros((20, 2, 8)).tolist()).replace("0.0", "NaN", 1), "NaN"),
    ],
)
def test_parse_action_json_errors_name_the_row(text, message):
    with pytest.raises(RobotDataError, match=message) as error:
        parse_action_json(text, 20, source="meta.csv", row=7)
    assert error.value.path == "meta.csv" and error.value.field == "row 7: action"


def test_sample_holds_the_first_frames_the_prompt_and_raw_actions(action_video_clean):
    ds = ActionVideoDataset(base_path=action_video_clean.root, num_frames=9, video_dtype="float32")
    rows = rows_of(action_video_clean.metadata)
    assert len(ds) == 3
    for i in range(3):
        sample = ds[i]
        video = sample["video"]
        assert video.shape == (3, 9, 32, 32) and video.dtype == torch.float32
        assert video.min() >= -1.0 and video.max() <= 1.0
        frames = video.permute(1, 2, 3, 0).numpy()
        assert [decode_frame_code(f) for f in frames] == [100 * i + t for t in range(9)]
        torch.testing.assert_close(sample["input_image"], video[:, 0])
        assert sample["prompt"] == f"clip {i}"
        action = np.asarray(json.loads(rows[i]["action"]), dtype=np.float32)
        np.testing.assert_array_equal(sample["action_binary"].numpy(), action[:, 0])
        np.testing.assert_array_equal(sample["action_magnitude"].numpy(), action[:, 1])  # unscaled
        assert sample["action_binary"].shape == (2, 8)


def test_magnitude_scale_lives_in_the_config_and_is_not_applied(action_video_clean):
    config = ActionVideoConfig(base_path=action_video_clean.root, num_frames=9)
    assert config.action_magnitude_scale == [100.0] * 4 + [1.0] * 4
    scaled = ActionVideoDataset(
        ActionVideoConfig(base_path=action_video_clean.root, num_frames=9, action_magnitude_scale=[5] * 8)
    )
    plain = ActionVideoDataset(config)
    torch.testing.assert_close(scaled[0]["action_magnitude"], plain[0]["action_magnitude"])
    with pytest.raises(ValueError, match="action_magnitude_scale: expected 8"):
        ActionVideoConfig(base_path=action_video_clean.root, action_magnitude_scale=[100] * 7)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_frames": 80}, "4n\\+1"),
        ({"height": 32}, "both or neither"),
        ({"height": 30, "width": 32}, "divisible by 16"),
        ({"repeat": 0}, "repeat"),
        ({"data_file_keys": ("image",)}, "include 'video'"),
        ({"video_dtype": "float16"}, "video_dtype"),
    ],
)
def test_config_validation(action_video_clean, options, message):
    with pytest.raises(ValueError, match=message):
        ActionVideoConfig(base_path=action_video_clean.root, **options)


def test_repeat_size_and_uint8_default(action_video_clean):
    ds = ActionVideoDataset(base_path=action_video_clean.root, num_frames=9, repeat=2, height=16, width=16)
    assert len(ds) == 6
    first, again = ds[1], ds[4]
    assert first["video"].shape == (3, 9, 16, 16) and first["video"].dtype == torch.uint8
    torch.testing.assert_close(first["video"], again["video"])
    assert first["action_binary"].shape == (2, 8)
    with pytest.raises(IndexError):
        ds[6]


def test_max_pixels_floors_to_multiples_of_16(tmp_path):
    write_coded_video(tmp_path / "a.mp4", 5, 64, 96)
    action = format_action_json(np.zeros((1, 8)), np.zeros((1, 8)))
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", "prompt", "action"], ["a.mp4", "p", action]])
    sample = ActionVideoDataset(base_path=tmp_path, num_frames=5, max_pixels=64 * 96 // 2)[0]
    assert sample["video"].shape == (3, 5, 32, 64)  # scale 0.707 -> 45x67 -> 32x64


def test_extra_data_file_keys_load_videos_and_images(tmp_path):
    from PIL import Image

    from kinema.robot_data.testing import frame_code_image

    write_coded_video(tmp_path / "a.mp4", 5)
    write_coded_video(tmp_path / "c.mp4", 5, first_index=50)
    Image.fromarray(frame_code_image(9)).save(tmp_path / "ref.png")
    action = format_action_json(np.zeros((1, 8)), np.zeros((1, 8)))
    with open(tmp_path / "meta.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [["video", "prompt", "action", "control", "ref"], ["a.mp4", "p", action, "c.mp4", "ref.png"]]
        )
    ds = ActionVideoDataset(
        base_path=tmp_path,
        metadata_path=tmp_path / "meta.csv",
        num_frames=5,
        data_file_keys="video,control,ref",
    )
    sample = ds[0]
    assert [decode_frame_code(f) for f in sample["control"].permute(1, 2, 3, 0).numpy()] == [
        50,
        51,
        52,
        53,
        54,
    ]
    assert sample["ref"].shape == (3, 32, 32)
    assert decode_frame_code(sample["ref"].permute(1, 2, 0).numpy()) == 9


def test_lenient_mode_skips_every_broken_row_with_one_warning(action_video):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ActionVideoDataset(base_path=action_video.root, num_frames=9)
    messages = [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]
    assert len(messages) == 1
    index_time = [k for k in ACTION_VIDEO_BROKEN if k != "truncated_video_data"]  # its header is intact
    assert f"skipped {len(index_time)} of {len(ACTION_VIDEO_BROKEN) + 2}" in messages[0]
    for kind in index_time:
        assert any(
            action_video.broken[kind] in str(item) or "row" in (item.field or "") for item in ds.skipped
        )
    assert len(ds.skipped) == len(index_time)
    assert len(ds) == 3
    skipped_text = "\n".join(str(item) for item in ds.skipped)
    for kind in ("zero_byte_video", "truncated_video", "missing_video", "too_few_frames"):
        assert action_video.broken[kind] in skipped_text


@pytest.mark.parametrize("kind", [k for k in ACTION_VIDEO_BROKEN if k != "truncated_video_data"])
def test_strict_mode_raises_naming_file_and_field(tmp_path, kind):
    fixture = write_action_video_dataset(tmp_path, num_clips=1, broken=[kind])
    with pytest.raises(RobotDataError) as error:
        ActionVideoDataset(base_path=tmp_path, num_frames=9, strict=True)
    expected_path = fixture.metadata if kind.startswith("action") else tmp_path / fixture.broken[kind]
    assert error.value.path == str(expected_path)
    assert error.value.field is not None
    assert error.value.field.startswith("row 1 (line 3)")


def test_file_broken_after_its_header_is_replaced_at_load_time(action_video):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        ds = ActionVideoDataset(base_path=action_video.root, num_frames=9)
    broken_index = next(i for i, c in enumerate(ds.clips) if c.files["video"].name.endswith("video_data.mp4"))
    with pytest.warns(RobotDataWarning, match="replaced by the next readable item"):
        sample = ds[broken_index]
    assert sample["row"] == ds.clips[(broken_index + 1) % len(ds.clips)].row
    with pytest.warns(RobotDataWarning, match="skipped"):
        strict = ActionVideoDataset(base_path=action_video.root, num_frames=9)
    strict._fetch.strict = True  # as with strict=True, minus the index-time errors
    with pytest.raises(RobotDataError, match="broken_truncated_video_data"):
        strict[broken_index]


def test_a_dataloader_finishes_the_epoch_over_a_broken_file(action_video):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        ds = ActionVideoDataset(base_path=action_video.root, num_frames=9, repeat=2)
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2)
        batches = list(loader)
    assert sum(b["video"].shape[0] for b in batches) == len(ds) == 6
    assert batches[0]["action_binary"].shape == (2, 2, 8)


def test_dataset_level_problems_raise_in_lenient_mode_too(tmp_path, action_video_clean):
    with pytest.raises(MissingFileError, match="base_path"):
        ActionVideoDataset(base_path=tmp_path / "missing")
    with pytest.raises(MissingFileError, match="metadata"):
        ActionVideoDataset(base_path=tmp_path)
    with open(tmp_path / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows([["video", "text", "action"], ["a.mp4", "p", "[]"]])
    with pytest.raises(RobotDataError, match=r"columns: missing \['prompt'\]"):
        ActionVideoDataset(base_path=tmp_path)


def test_loading_never_writes_into_the_dataset(action_video):
    before = sorted((p, p.stat().st_mtime_ns) for p in action_video.root.rglob("*"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        ds = ActionVideoDataset(base_path=action_video.root, num_frames=9)
        [ds[i] for i in range(len(ds))]
    assert sorted((p, p.stat().st_mtime_ns) for p in action_video.root.rglob("*")) == before
    assert not any(name.startswith(".") for name in os.listdir(action_video.root))
