import os

import numpy as np
import pytest

from kinema.robot_data import (
    MissingFileError,
    RobotDataError,
    check_wan_num_frames,
    decode_counter,
    num_action_steps,
    probe_video,
    read_video_frames,
    resolve_size,
    wan_num_frames,
    write_video,
)
from kinema.robot_data.testing import (
    cut_after_header,
    decode_frame_code,
    frame_code_image,
    truncate_file,
    write_coded_video,
)


def codes(frames):
    return [decode_frame_code(f) for f in frames]


def test_frame_code_round_trip():
    for index in (0, 1, 255, 600, 65535):
        assert decode_frame_code(frame_code_image(index, 32, 48)) == index


def test_probe_reads_header(long_video):
    info = probe_video(long_video)
    assert (info.num_frames, info.fps, info.height, info.width) == (600, 30.0, 32, 32)
    assert info.duration == pytest.approx(20.0)
    assert probe_video(long_video, deep=True) == info


def test_read_by_indices_returns_exactly_those_frames(long_video):
    frames = read_video_frames(long_video, [5, 3, 3, 590, 100, 101])
    assert frames.dtype == np.uint8 and frames.shape == (6, 32, 32, 3)
    assert codes(frames) == [5, 3, 3, 590, 100, 101]


def test_81_of_600_frames_decode_far_fewer_than_600(long_video):
    decode_counter.reset()
    frames = read_video_frames(long_video, np.arange(400, 481))
    assert codes(frames) == list(range(400, 481))
    # from the keyframe at or before 400 (at most one keyframe interval, 30, back) up to 480
    assert 81 <= decode_counter.frames <= 81 + 30
    assert decode_counter.seeks == 1


def test_sparse_indices_seek_instead_of_decoding_the_gap(long_video):
    decode_counter.reset()
    assert codes(read_video_frames(long_video, [2, 300, 590])) == [2, 300, 590]
    assert decode_counter.frames <= 3 * 30
    assert decode_counter.seeks >= 2


def test_all_frames_and_fps_resampling(tmp_path):
    path = write_coded_video(tmp_path / "v.mp4", 16, fps=16)
    assert codes(read_video_frames(path)) == list(range(16))
    # 8 fps: frame j is shown at j / 8 s -> source frame 2j
    assert codes(read_video_frames(path, fps=8)) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert codes(read_video_frames(path, [1, 3], fps=8)) == [2, 6]
    # 32 fps: every source frame twice
    assert codes(read_video_frames(path, fps=32)) == [i // 2 for i in range(32)]
    # 10 fps from 16: floor(j * 1.6)
    assert codes(read_video_frames(path, fps=10)) == [int(np.floor(j * 1.6 + 1e-6)) for j in range(10)]


def test_timestamps_select_the_frame_shown_at_that_time(tmp_path):
    path = write_coded_video(tmp_path / "v.mp4", 16, fps=16)
    assert codes(read_video_frames(path, timestamps=[0.0, 1 / 16, 0.99 / 16, 0.5, 15.5 / 16])) == [
        0,
        1,
        0,
        8,
        15,
    ]
    with pytest.raises(RobotDataError, match="lasts 1 s"):
        read_video_frames(path, timestamps=[1.5])
    with pytest.raises(ValueError, match="not both"):
        read_video_frames(path, [0], timestamps=[0.0])


def test_out_of_range_index_names_the_file_and_field(tmp_path):
    path = write_coded_video(tmp_path / "v.mp4", 9)
    with pytest.raises(RobotDataError) as error:
        read_video_frames(path, [9])
    assert error.value.path == str(path) and error.value.field == "indices"
    assert "9 frames" in str(error.value)


def test_resize_crop_and_max_pixels(tmp_path):
    frames = np.stack([frame_code_image(i, 48, 96) for i in range(5)])
    path = write_video(tmp_path / "wide.mp4", frames, 16)
    out = read_video_frames(path, [0, 4], size=(32, 32))  # cover to 32x64, centre crop 32x32
    assert out.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(out[0].mean(), frames[0, :, 24:72].mean() * 1.0, atol=12)
    out = read_video_frames(path, [0], max_pixels=48 * 96 // 4)  # scale 0.5 -> 24x48 -> floored to 16x48
    assert out.shape == (1, 16, 48, 3)
    with pytest.raises(ValueError, match="divisible by 16"):
        read_video_frames(path, [0], size=(30, 32))


def test_as_float_is_uint8_scaled_to_minus_one_one(tmp_path):
    path = write_coded_video(tmp_path / "v.mp4", 5)
    as_uint8 = read_video_frames(path, [1, 2])
    as_float = read_video_frames(path, [1, 2], as_float=True)
    assert as_float.dtype == np.float32
    np.testing.assert_allclose(as_float, as_uint8 / 127.5 - 1.0, atol=1e-6)
    assert as_float.min() >= -1.0 and as_float.max() <= 1.0


def test_write_video_is_atomic_and_round_trips_float_input(tmp_path):
    frames = np.stack([frame_code_image(i) for i in range(9)]).astype(np.float32) / 127.5 - 1.0
    path = write_video(tmp_path / "out" / "f.mp4", frames, 12.5)
    assert sorted(os.listdir(path.parent)) == ["f.mp4"]
    assert probe_video(path).fps == 12.5
    assert codes(read_video_frames(path)) == list(range(9))


@pytest.mark.parametrize(
    ("frames", "fps", "message"),
    [
        (np.zeros((2, 32, 32), np.uint8), 10, r"\(T, H, W, 3\)"),
        (np.zeros((2, 31, 32, 3), np.uint8), 10, "even"),
        (np.zeros((2, 32, 32, 3), np.int32), 10, "uint8 or float"),
        (np.full((2, 32, 32, 3), np.nan, np.float32), 10, "NaN"),
        (np.zeros((2, 32, 32, 3), np.uint8), 0, "fps"),
    ],
)
def test_write_video_rejects_bad_input_and_leaves_nothing(tmp_path, frames, fps, message):
    with pytest.raises(ValueError, match=message):
        write_video(tmp_path / "bad.mp4", frames, fps)
    assert os.listdir(tmp_path) == []


def test_write_video_needs_a_video_suffix(tmp_path):
    with pytest.raises(ValueError, match="path"):
        write_video(tmp_path / "x.gif", np.zeros((1, 16, 16, 3), np.uint8), 8)


def test_bad_video_files_raise_errors_naming_the_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(RobotDataError, match="zero-byte") as error:
        read_video_frames(empty, [0])
    assert error.value.path == str(empty) and error.value.field == "video"
    truncated = truncate_file(write_coded_video(tmp_path / "t.mp4", 9))
    with pytest.raises(RobotDataError, match="cannot be opened"):
        probe_video(truncated)
    cut = cut_after_header(write_coded_video(tmp_path / "c.mp4", 9, faststart=True))
    assert probe_video(cut).num_frames == 9  # the header survives ...
    with pytest.raises(RobotDataError, match="truncated"):
        probe_video(cut, deep=True)  # ... the frames do not
    with pytest.raises(RobotDataError, match=r"truncated or unreadable|decoding failed"):
        read_video_frames(cut, [8])
    with pytest.raises(MissingFileError) as error:
        read_video_frames(tmp_path / "nope.mp4", [0])
    assert isinstance(error.value, FileNotFoundError) and "nope.mp4: video: does not exist" in str(
        error.value
    )
    not_video = tmp_path / "text.mp4"
    not_video.write_text("hello")
    with pytest.raises(RobotDataError, match="cannot be opened"):
        probe_video(not_video)


def test_frame_count_and_size_rules():
    assert [wan_num_frames(n) for n in (1, 4, 5, 80, 81, 600)] == [1, 1, 5, 77, 81, 597]
    assert check_wan_num_frames(81) == 81
    for bad in (0, 80, 82, 8.0):
        with pytest.raises(ValueError, match="4n\\+1"):
            check_wan_num_frames(bad)
    assert num_action_steps(81) == 20 and num_action_steps(9) == 2
    assert resolve_size((480, 832)) == (480, 832)
    assert resolve_size((480, 832), size=(256, 448)) == (256, 448)
    assert resolve_size((1080, 1920), max_pixels=480 * 832) == (
        464,
        832,
    )  # scale 0.4389 -> 473x842 -> floored to /16
    assert resolve_size((100, 100), max_pixels=10**6) == (96, 96)  # never scaled up, floored to 16
    with pytest.raises(ValueError, match="not both"):
        resolve_size((32, 32), size=(16, 16), max_pixels=256)
