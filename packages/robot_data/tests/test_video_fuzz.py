"""The video reader on a corpus of real-world encodings: every call returns within a timeout, and returns exactly
the frames of a sequential decode of the same file, or raises RobotDataError.

The corpus (kinema.robot_data.testing.VIDEO_CORPUS) is written by PyAV at test time: libx264 with keyframe
intervals 1, 12 and 250, with and without B-frames, variable frame rate, odd sizes, yuv444p and 10-bit, mp4 / mkv /
mov / webm (VP8, VP9), a rotated stream, audio beside video, truncated files, headers that declare frames the file
does not hold, a zero-byte file and text named .mp4.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from kinema.robot_data import (
    RobotDataError,
    decode_counter,
    format_action_json,
    probe_video,
    read_video_frames,
)
from kinema.robot_data._video import source_frame_indices
from kinema.robot_data.testing import (
    VIDEO_CORPUS,
    EncoderUnavailable,
    call_with_timeout,
    sequential_decode,
    write_video_case,
)

TIMEOUT = 30.0  # seconds per reader call; a tiny clip decodes in milliseconds, a hang never returns
WINDOW = 17


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """name -> (path, SequentialDecode or None when PyAV cannot open the file), or the reason it was skipped."""
    folder = tmp_path_factory.mktemp("video_corpus")
    built = {}
    for case in VIDEO_CORPUS:
        try:
            path = write_video_case(folder, case)
        except EncoderUnavailable as reason:
            built[case.name] = str(reason)
            continue
        try:
            reference = sequential_decode(path)
        except av.FFmpegError:  # PyAV cannot open it at all: the reader must raise
            reference = None
        built[case.name] = (path, reference)
    return built


def _case(corpus: dict, name: str):
    entry = corpus[name]
    if isinstance(entry, str):
        pytest.skip(entry)
    return entry


def counted_read(path, indices, **options):
    """read_video_frames plus this call's decoded frames and seeks (counted in the child process)."""
    decode_counter.reset()
    frames = read_video_frames(path, indices, **options)
    return frames, decode_counter.frames, decode_counter.seeks


def queries(num_frames: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """First, middle, last frame, random sets (sorted, and shuffled with repeats) and 17-frame windows starting
    at several points, among them inside long GOPs (more than 64 frames after a keyframe)."""
    rng = np.random.default_rng(seed)
    last = num_frames - 1
    found = [("first", [0]), ("middle", [num_frames // 2]), ("last", [last])]
    found.append(("random sorted", sorted(rng.choice(num_frames, 6, replace=False).tolist())))
    found.append(("random shuffled with repeats", rng.choice(num_frames, 8).tolist()))
    found.append(("first and last", [last, 0]))
    for start in (0, 70, 130, 200, 245, num_frames - WINDOW):
        if 0 <= start <= num_frames - WINDOW:
            found.append((f"window at {start}", list(range(start, start + WINDOW))))
    return found


def check(path, reference, indices: list[int], **options) -> None:
    """One reader call under a timeout: the sequential decode's frames, or RobotDataError when the reference
    cannot deliver them; and bounded work."""
    wanted = np.asarray(indices, dtype=np.int64)
    expected = None if reference is None else reference.expected(np.unique(wanted).tolist())
    try:
        frames, decoded, seeks = call_with_timeout(counted_read, path, indices, timeout=TIMEOUT, **options)
    except RobotDataError as error:
        assert expected is None, (
            f"{path.name} {indices}: raised {error} but a sequential decode has the frames"
        )
        assert error.path == str(path)
        return
    assert expected is not None, f"{path.name} {indices}: returned frames a sequential decode does not hold"
    by_index = dict(zip(np.unique(wanted).tolist(), expected))
    assert frames.shape == (len(indices), *expected.shape[1:])
    for position, index in enumerate(wanted.tolist()):
        assert np.array_equal(frames[position], by_index[index]), f"{path.name}: frame {index} differs"
    # bounded work: seeks by the frames requested; decoded frames by the frames up to the last one requested
    # (twice with a wasted seek, once more when the file needs the sequential fallback)
    assert seeks <= len(set(indices)) + 2, (indices, seeks)
    up_to_last = int(np.sum(reference.indices <= max(indices))) + 1
    assert decoded <= 3 * up_to_last + 2, (indices, decoded)


@pytest.mark.parametrize("name", [case.name for case in VIDEO_CORPUS])
def test_every_call_returns_the_sequential_decode_or_raises(corpus, name):
    path, reference = _case(corpus, name)
    if reference is None:  # PyAV cannot open it: every call raises, naming the file
        for indices in ([0], [5, 1]):
            with pytest.raises(RobotDataError) as error:
                call_with_timeout(read_video_frames, path, indices, timeout=TIMEOUT)
            assert error.value.path == str(path)
        with pytest.raises(RobotDataError):
            call_with_timeout(probe_video, path, timeout=TIMEOUT)
        return
    info = call_with_timeout(probe_video, path, timeout=TIMEOUT)
    assert info.num_frames == reference.num_frames
    for _, indices in queries(info.num_frames, seed=len(name)):
        check(path, reference, indices)


@pytest.mark.parametrize("name", [case.name for case in VIDEO_CORPUS if case.damage is None])
def test_intact_files_deliver_every_frame(corpus, name):
    """An undamaged file delivers its last frame, and the deep probe passes."""
    path, reference = _case(corpus, name)
    assert reference.error is None and reference.expected([reference.num_frames - 1]) is not None
    assert call_with_timeout(probe_video, path, deep=True, timeout=TIMEOUT).num_frames == reference.num_frames


@pytest.mark.parametrize("name", [case.name for case in VIDEO_CORPUS if case.damage])
def test_damaged_files_fail_the_deep_probe(corpus, name):
    path, _ = _case(corpus, name)
    with pytest.raises(RobotDataError) as error:
        call_with_timeout(probe_video, path, deep=True, timeout=TIMEOUT)
    assert error.value.path == str(path)


@pytest.mark.parametrize("name", ["x264_gop250_bframes", "x264_vfr_mkv", "vp8", "x264_10bit"])
def test_resampled_reads_equal_the_sequential_decode(corpus, name):
    path, reference = _case(corpus, name)
    info = probe_video(path)
    for fps in (10.0, 7.0):
        count = int(info.duration * fps - 1e-6) + 1
        indices = list(range(count // 3, count // 3 + 9))
        wanted = source_frame_indices(info.num_frames, info.fps, indices, fps=fps).tolist()
        frames = call_with_timeout(read_video_frames, path, indices, fps=fps, timeout=TIMEOUT)
        expected = reference.expected(wanted)
        assert np.array_equal(frames, expected)


@pytest.mark.parametrize(
    ("name", "keyframes"),
    [
        ("x264_gop250_bframes", (0, 250)),
        ("x264_gop250_mov", (0, 250)),
        ("x264_gop250_bframes_mkv", (0, 250)),
        ("x264_gop250_single_keyframe", (0,)),
        ("x264_gop12_bframes", tuple(range(0, 60, 12))),
    ],
)
def test_a_window_decodes_itself_and_the_frames_back_to_its_keyframe(corpus, name, keyframes):
    """One seek per window, and the frames decoded are the window plus those back to its preceding keyframe."""
    path, reference = _case(corpus, name)
    assert [int(i) for i in reference.indices[np.isin(reference.indices, keyframes)]] == list(keyframes)
    for start in range(0, reference.num_frames - WINDOW + 1, 7):
        indices = list(range(start, start + WINDOW))
        frames, decoded, seeks = call_with_timeout(counted_read, path, indices, timeout=TIMEOUT)
        assert np.array_equal(frames, reference.expected(indices))
        keyframe = max(k for k in keyframes if k <= start)
        assert decoded == start + WINDOW - keyframe, (start, decoded)
        assert seeks == (1 if start > 0 else 0), (start, seeks)


def test_the_issue_clip_returns_its_last_frame_with_one_seek(corpus):
    """The clip of the bug report: 81 frames, 64x96, 16 fps, one keyframe; reading frame 80 used to loop."""
    path, reference = _case(corpus, "x264_gop250_single_keyframe")
    frames, decoded, seeks = call_with_timeout(counted_read, path, [80], timeout=TIMEOUT)
    assert np.array_equal(frames, reference.expected([80]))
    assert (decoded, seeks) == (81, 1)


def test_validate_on_a_csv_of_the_corpus_returns_and_names_every_broken_row(corpus, tmp_path):
    """`kinema-data validate` (the console script, in a subprocess under a timeout) on a CSV whose rows are the
    corpus clips, four copies of the bug report's clip among them: it returns, and every damaged clip's row is an
    error while every intact clip is ok."""
    root = tmp_path / "dataset"
    (root / "clips").mkdir(parents=True)
    action = format_action_json(np.zeros((2, 8)), np.zeros((2, 8)))  # num_frames 9
    rows, damaged, intact = [["video", "prompt", "action"]], set(), set()
    names = [case.name for case in VIDEO_CORPUS] + ["x264_gop250_single_keyframe"] * 3
    for n, name in enumerate(names):
        entry = corpus[name]
        if isinstance(entry, str):
            continue  # not writable by this PyAV build
        path = shutil.copy(entry[0], root / "clips" / f"{n:02d}_{entry[0].name}")
        rows.append([f"clips/{Path(path).name}", name, action])
        (damaged if next(c for c in VIDEO_CORPUS if c.name == name).damage else intact).add(str(path))
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    script = Path(sys.executable).with_name("kinema-data")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "kinema.robot_data.cli"]
    report = tmp_path / "report.json"
    result = subprocess.run(
        [*command, "validate", str(root / "metadata.csv"), "--json", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    items = json.loads(report.read_text())["items"]
    errors = {item["path"] for item in items if item["status"] == "error"}
    ok = {item["path"] for item in items if item["status"] == "ok"}
    assert errors == damaged and ok == intact
    for path in damaged:  # named by file and CSV row
        row = int(Path(path).name[:2])
        assert any(
            Path(path).name in line and f"row {row} (line {row + 2})" in line
            for line in result.stdout.splitlines()
        )
