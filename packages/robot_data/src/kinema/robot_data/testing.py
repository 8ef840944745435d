"""Small datasets of every kinema.robot_data format, valid and broken, for this package's tests and others'.

Every writer builds real files in the real layout (H.264 mp4 through PyAV, HDF5 through h5py) in a folder you
give (e.g. pytest's ``tmp_path``) and returns a :class:`Fixture` naming the valid items and one broken item per
requested kind. Values are deterministic so tests can check them:

- video frames carry their own index as a 4x4 grid of bright/dark cells (16 bits): :func:`decode_frame_code`
  reads it back, so a test knows exactly which source frame a loader returned;
- VACE-E hand trajectories hold the source frame index in the right wrist's x position (column 9) and the left
  wrist's x position (column 0, dual-hand episodes);
- policy episodes hold ``qpos[t, j] = 1000 * episode + t + j / 100``, ``action = qpos + 0.5`` and images whose
  every pixel of camera c at step t is ``(t + 10 * episode + 50 * c) % 256``;
- episodes in the original ACT / ALOHA recorders' layouts (:func:`write_act_sim_episodes`,
  :func:`write_aloha_episodes`): values in ``_testing_act_aloha``'s docstring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ._actions import format_action_json
from ._policy_io import write_policy_episode
from ._rotation import matrix_to_rot6d
from ._testing_act_aloha import (  # noqa: F401  (part of this module's interface)
    ACT_SIM_CAMERAS,
    ALOHA_CAMERAS,
    RED,
    recorder_episode,
    recorder_image,
    write_act_sim_episodes,
    write_aloha_episodes,
)
from ._video import write_video

ACTION_VIDEO_BROKEN = (
    "zero_byte_video",
    "truncated_video",
    "truncated_video_data",
    "missing_video",
    "action_not_json",
    "action_wrong_shape",
    "action_wrong_length",
    "action_nan",
    "too_few_frames",
)
"""Broken rows :func:`write_action_video_dataset` can add. ``truncated_video_data`` is a fast-start mp4 cut in
half: its header is intact, so it passes the index-time check and fails only when its frames are decoded."""

VACE_E_BROKEN = (
    "zero_byte_video",
    "truncated_video",
    "missing_control_video",
    "truncated_hdf5",
    "missing_group",
    "missing_dataset",
    "wrong_shape",
    "nan_values",
    "length_mismatch",
    "unknown_task",
)
POLICY_BROKEN = (
    "zero_byte",
    "truncated_hdf5",
    "missing_group",
    "missing_dataset",
    "missing_attrs",
    "wrong_shape",
    "nan_values",
    "inf_values",
    "length_mismatch",
)

GRASP_TASK = "104-lars-grasping_2024-11-08_15-23-40"
POUR_TASK = "902-pouring-val-2024_11_18-18_49_25"
UNKNOWN_TASK = "999-unknown-task_2025-01-01_00-00-00"
TASK_METADATA = {
    "metadata": {"task_types": ["grasping", "pouring"]},
    "per_task_attributes": {
        GRASP_TASK: {
            "task_type": "grasping",
            "embodiment_type": "human_avp",
            "left_hand": False,
            "right_hand": True,
            "objects": "white bottle with black lid.",
        },
        POUR_TASK: {
            "task_type": "pouring",
            "embodiment_type": "h1_inspire",
            "left_hand": True,
            "right_hand": True,
            "objects": "cup, bottle.",
        },
    },
}


@dataclass
class Fixture:
    """What a writer made: the dataset ``root``, its ``metadata`` file (if any), the valid items and the broken
    item of each requested kind (paths as strings: a video or episode file, or an episode folder for VACE-E)."""

    root: Path
    metadata: Path | None
    valid: list[str] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------- video


def frame_code_image(index: int, height: int = 32, width: int = 32) -> np.ndarray:
    """(H, W, 3) uint8 whose 4x4 grid of cells spells ``index`` in binary (cell b bright when bit b is set)."""
    if not 0 <= index < 1 << 16:
        raise ValueError(f"index: expected 0 <= index < 65536, got {index}")
    if height % 4 or width % 4 or height < 16 or width < 16:
        raise ValueError(f"height, width: expected multiples of 4 and at least 16, got {height}x{width}")
    bits = np.array([(index >> b) & 1 for b in range(16)], dtype=np.uint8).reshape(4, 4)
    cells = np.where(bits == 1, 235, 20).astype(np.uint8)
    image = np.kron(cells, np.ones((height // 4, width // 4), dtype=np.uint8))
    return np.repeat(image[:, :, None], 3, axis=2)


def decode_frame_code(frame: np.ndarray) -> int:
    """The index spelled by a (H, W, 3) frame from :func:`frame_code_image` (uint8, or float in [-1, 1])."""
    frame = np.asarray(frame, dtype=np.float32)
    if frame.min() < 0:
        frame = (frame + 1.0) * 127.5
    height, width = frame.shape[:2]
    cells = frame.mean(axis=2).reshape(4, height // 4, 4, width // 4).mean(axis=(1, 3))
    bits = (cells > 127.5).reshape(-1)
    return int(sum(1 << b for b in range(16) if bits[b]))


def write_coded_video(
    path: str | os.PathLike,
    num_frames: int,
    height: int = 32,
    width: int = 32,
    fps: float = 16,
    *,
    first_index: int = 0,
    keyframe_interval: int | None = 8,
    faststart: bool = False,
) -> Path:
    """An H.264 mp4 whose frame i shows the code of ``first_index + i``."""
    frames = np.stack([frame_code_image(first_index + i, height, width) for i in range(num_frames)])
    return write_video(path, frames, fps, keyframe_interval=keyframe_interval, faststart=faststart)


def truncate_file(path: str | os.PathLike, fraction: float = 0.5) -> Path:
    """Cuts a file to ``fraction`` of its size (a download or copy that stopped midway)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def cut_after_header(path: str | os.PathLike) -> Path:
    """Cuts a fast-start mp4 a few bytes into its media data: the header (frame count, index) is intact, the
    frames are gone, so opening succeeds and decoding fails."""
    path = Path(path)
    data = path.read_bytes()
    start = data.find(b"mdat")
    if start < 0 or data.find(b"moov") > start:
        raise ValueError(f"path: expected a fast-start mp4 (moov before mdat), got {path}")
    path.write_bytes(data[: start + 4 + 16])
    return path


# ---------------------------------------------------------------------------------------------------- video corpus


@dataclass(frozen=True)
class VideoCase:
    """One file of the video fuzz corpus (:func:`write_video_case`): what real datasets contain.

    ``gop``: keyframe interval (scene-cut keyframes off, so long GOPs stay long); ``b_frames``: libx264's B-frame
    count (None: libx264's default, 3); ``vfr``: timestamps on a 1 ms clock with uneven steps (variable frame rate);
    ``rotation``: display rotation in degrees (metadata only: frames stay as coded); ``audio``: an audio stream,
    muxed *before* the video stream; ``damage``: ``"truncated"`` (cut in half), ``"lying_header"`` (a fast-start
    mp4, or a Matroska file, cut at 60%: the header still declares every frame), ``"zero_byte"``, ``"text"``
    (text in a file named like a video).
    """

    name: str
    suffix: str = ".mp4"
    codec: str = "libx264"
    num_frames: int = 60
    height: int = 32
    width: int = 48
    fps: int = 16
    gop: int = 12
    b_frames: int | None = None
    pix_fmt: str = "yuv420p"
    vfr: bool = False
    rotation: int = 0
    audio: str | None = None
    damage: str | None = None


VIDEO_CORPUS = (
    VideoCase("x264_gop1", gop=1, b_frames=0),
    VideoCase("x264_gop12_bframes", gop=12),
    VideoCase("x264_gop12_mkv", ".mkv", gop=12, b_frames=0),
    VideoCase("x264_gop250_bframes", num_frames=300, gop=250),
    VideoCase("x264_gop250_mov", ".mov", num_frames=300, gop=250, b_frames=0),
    VideoCase("x264_gop250_bframes_mkv", ".mkv", num_frames=300, gop=250),
    VideoCase("x264_gop250_single_keyframe", num_frames=81, gop=250, height=64, width=96),
    VideoCase("x264_vfr", num_frames=120, gop=250, vfr=True),
    VideoCase("x264_vfr_mkv", ".mkv", num_frames=120, gop=40, vfr=True),
    VideoCase("x264_odd_size_yuv444p", num_frames=90, height=35, width=51, gop=40, pix_fmt="yuv444p"),
    VideoCase("x264_odd_size_even_dims", ".mkv", num_frames=50, height=38, width=54, gop=250),
    VideoCase("x264_10bit", ".mkv", num_frames=90, gop=30, pix_fmt="yuv420p10le"),
    VideoCase("x264_rotated", num_frames=60, gop=250, rotation=90),
    VideoCase("x264_audio", num_frames=120, gop=250, b_frames=0, audio="aac"),
    VideoCase("vp8", ".webm", codec="libvpx", num_frames=90, gop=30),
    VideoCase("vp9_audio", ".webm", codec="libvpx-vp9", num_frames=120, gop=250, audio="libopus"),
    VideoCase("truncated", num_frames=120, gop=250, damage="truncated"),
    VideoCase("truncated_mkv", ".mkv", num_frames=120, gop=30, damage="truncated"),
    VideoCase("lying_header", num_frames=120, gop=250, damage="lying_header"),
    VideoCase("lying_header_mkv", ".mkv", num_frames=120, gop=250, damage="lying_header"),
    VideoCase("zero_byte", damage="zero_byte"),
    VideoCase("text", damage="text"),
)
"""The fuzz corpus of the video reader's tests. Frames are tiny (at most 64x96) and short (at most 300)."""

_MUXERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm"}


def video_case_frames(case: VideoCase) -> np.ndarray:
    """(T, H, W, 3) uint8: frame i shows the code of i (:func:`frame_code_image`), cropped to odd sizes."""
    height, width = -(-case.height // 4) * 4, -(-case.width // 4) * 4
    codes = np.stack([frame_code_image(i, max(height, 16), max(width, 16)) for i in range(case.num_frames)])
    return np.ascontiguousarray(codes[:, : case.height, : case.width])


class EncoderUnavailable(RuntimeError):
    """This PyAV build cannot write a corpus file (a missing encoder or pixel format): the tests skip it."""


def write_video_case(folder: str | os.PathLike, case: VideoCase) -> Path:
    """Writes ``case`` into ``folder`` as ``<name><suffix>`` with PyAV and returns the path.

    Raises :class:`EncoderUnavailable` when this PyAV build cannot write it (a missing encoder or pixel format);
    tests skip such a case with that reason."""
    from fractions import Fraction

    import av

    path = Path(folder) / f"{case.name}{case.suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if case.damage == "zero_byte":
        path.write_bytes(b"")
        return path
    if case.damage == "text":
        path.write_text("this is a text file named like a video\n" * 20)
        return path
    for codec in (case.codec, case.audio):
        if codec is not None and codec not in av.codecs_available:
            raise EncoderUnavailable(f"this PyAV build has no {codec} encoder")
    options = {"movflags": "+faststart"} if case.damage == "lying_header" and case.suffix == ".mp4" else {}
    try:
        with av.open(str(path), "w", format=_MUXERS[case.suffix], options=options) as container:
            audio = container.add_stream(case.audio, rate=48000) if case.audio else None
            stream = container.add_stream(case.codec, rate=case.fps)
            stream.width, stream.height, stream.pix_fmt = case.width, case.height, case.pix_fmt
            stream.codec_context.gop_size = case.gop
            if case.codec == "libx264":
                params = "scenecut=0" + ("" if case.b_frames is None else f":bframes={case.b_frames}")
                stream.options = {"crf": "20", "x264-params": params}
            if case.rotation:
                stream.set_display_rotation(case.rotation)
            clock = Fraction(1, 1000)
            if case.vfr:
                stream.codec_context.time_base = clock
            steps = np.random.default_rng(len(case.name)).choice([31, 62, 62, 125], case.num_frames)
            pts = np.concatenate([[0], np.cumsum(steps)[:-1]])
            tone = _Tone(audio) if audio is not None else None
            for i, image in enumerate(video_case_frames(case)):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                if case.vfr:
                    frame.pts, frame.time_base = int(pts[i]), clock
                for packet in stream.encode(frame):
                    container.mux(packet)
                if tone is not None:  # interleaved: the audio up to the end of this frame
                    tone.write_until((i + 1) / case.fps)
            for packet in stream.encode():
                container.mux(packet)
            if tone is not None:
                tone.close()
    except (av.FFmpegError, ValueError) as error:
        path.unlink(missing_ok=True)
        raise EncoderUnavailable(f"this PyAV build cannot write {case.name}: {error}") from error
    if case.damage == "truncated":
        truncate_file(path, 0.5)
    elif case.damage == "lying_header":
        truncate_file(path, 0.6)
    return path


class _Tone:
    """A 440 Hz tone written into an audio stream in encoder-sized frames."""

    def __init__(self, stream) -> None:
        self.stream, self.written = stream, 0
        context = stream.codec_context
        self.rate, self.size = context.sample_rate, context.frame_size or 1024

    def write_until(self, seconds: float) -> None:
        import av

        context = self.stream.codec_context
        while self.written + self.size <= seconds * self.rate:
            t = (self.written + np.arange(self.size)) / self.rate
            tone = 0.2 * np.sin(2 * np.pi * 440 * t)
            if context.format.name.startswith("s16"):
                tone = np.round(tone * 32767).astype(np.int16)
            else:
                tone = tone.astype(np.float32)
            planes = np.tile(tone, (context.layout.nb_channels, 1))
            if not context.format.is_planar:
                planes = planes.T.reshape(1, -1).copy()
            frame = av.AudioFrame.from_ndarray(planes, format=context.format.name, layout=context.layout.name)
            frame.sample_rate, frame.pts = self.rate, self.written
            self.written += self.size
            for packet in self.stream.encode(frame):
                self.stream.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.stream.container.mux(packet)


@dataclass
class SequentialDecode:
    """Every frame a plain front-to-back PyAV decode of a file yields: ``images`` (N, H, W, 3) uint8 (rgb24),
    ``indices`` (N,) each frame's index (its timestamp times the frame rate, as the reader numbers frames),
    ``end`` the index just past the last frame's display time, ``error`` what stopped the decode early (or
    None), ``num_frames`` the count the header declares."""

    images: np.ndarray
    indices: np.ndarray
    end: int
    error: str | None
    num_frames: int

    def expected(self, wanted: Sequence[int]) -> np.ndarray | None:
        """The frames a reader must return for source indices ``wanted`` (None: it must raise instead).

        Frame j is the first frame whose index is j; without one, the last frame before j (the frame shown then);
        before the first frame, the first frame; after the last frame, the last frame while it is still shown
        (j < ``end``); past that, or past a decode error, nothing."""
        out = []
        for j in wanted:
            if j >= self.end or (self.error is not None and j > self.indices[-1]) or not len(self.indices):
                return None
            exact = np.flatnonzero(self.indices == j)
            if exact.size:
                out.append(self.images[exact[0]])
            else:
                before = np.flatnonzero(self.indices < j)
                out.append(self.images[before[-1] if before.size else 0])
        return np.stack(out) if out else np.empty((0, *self.images.shape[1:]), np.uint8)


def sequential_decode(path: str | os.PathLike) -> SequentialDecode:
    """Decodes ``path`` front to back with PyAV alone (no seek): the reference the reader's frames must equal."""
    import av

    images, indices, error, end = [], [], None, 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate
        start, base = stream.start_time or 0, stream.time_base
        num = stream.frames
        if not num:
            seconds = (
                float(stream.duration * base)
                if stream.duration is not None
                else container.duration / av.time_base
            )
            num = round(seconds * float(rate))
        try:
            for frame in container.decode(stream):
                index = round((frame.pts - start) * base * rate)
                images.append(frame.to_ndarray(format="rgb24"))
                indices.append(index)
                end = max(index + 1, round((frame.pts + (frame.duration or 0) - start) * base * rate))
        except av.FFmpegError as caught:
            error = str(caught)
    if not images:
        return SequentialDecode(np.empty((0, 1, 1, 3), np.uint8), np.empty(0, np.int64), 0, error, num)
    return SequentialDecode(np.stack(images), np.asarray(indices), end, error, int(num))


def call_with_timeout(function, *args, timeout: float = 30.0, **kwargs):
    """``function(*args, **kwargs)`` run in a forked child process: its result, or its exception re-raised here.

    A call still running after ``timeout`` seconds is killed and ``TimeoutError`` raised, so a reader that hangs
    fails its test instead of stalling the suite (a thread could not be stopped). Where ``fork`` is unavailable
    the call runs in a daemon thread, which detects a hang but cannot end it."""
    import multiprocessing
    import pickle
    import threading

    if "fork" not in multiprocessing.get_all_start_methods():
        box: dict = {}

        def run() -> None:
            try:
                box["value"] = function(*args, **kwargs)
            except BaseException as error:
                box["error"] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            raise TimeoutError(f"{getattr(function, '__name__', function)} did not return within {timeout} s")
        if "error" in box:
            raise box["error"]
        return box["value"]

    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)

    def child() -> None:
        try:
            outcome = ("value", function(*args, **kwargs))
        except BaseException as error:
            outcome = ("error", error)
        try:  # plain pickle: tensors travel as bytes, not as handles to this process's memory
            data = pickle.dumps(outcome)
        except (pickle.PicklingError, TypeError, AttributeError):
            data = pickle.dumps(("error", RuntimeError(repr(outcome[1]))))
        send.send_bytes(data)

    process = context.Process(target=child, daemon=True)
    process.start()
    send.close()
    try:
        if not receive.poll(timeout):
            raise TimeoutError(f"{getattr(function, '__name__', function)} did not return within {timeout} s")
        kind, value = pickle.loads(receive.recv_bytes())
    except EOFError:
        raise RuntimeError(f"{getattr(function, '__name__', function)}: the child process died") from None
    finally:
        if process.is_alive():
            process.kill()
        process.join()
        receive.close()
    if kind == "error":
        raise value
    return value


# ---------------------------------------------------------------------------------------------------- action-video


def _actions(rng: np.random.Generator, steps: int) -> tuple[np.ndarray, np.ndarray]:
    binary = (rng.random((steps, 8)) < 0.3).astype(np.float64)
    magnitude = np.round(rng.random((steps, 8)) * binary, 4)
    return binary, magnitude


def write_action_video_dataset(
    root: str | os.PathLike,
    num_clips: int = 2,
    num_frames: int = 9,
    height: int = 32,
    width: int = 32,
    fps: float = 16,
    *,
    broken: Sequence[str] = (),
    seed: int = 0,
) -> Fixture:
    """``root/metadata.csv`` + ``root/clips/*.mp4``: ``num_clips`` valid clips of ``num_frames`` (4n+1) frames
    with random actions, plus one broken row per kind in ``broken`` (see :data:`ACTION_VIDEO_BROKEN`).

    Valid items are ``"clips/clip_<i>.mp4"``; the broken items' names are their video column."""
    unknown = [k for k in broken if k not in ACTION_VIDEO_BROKEN]
    if unknown:
        raise ValueError(f"broken: unknown kind(s) {unknown}; expected some of {ACTION_VIDEO_BROKEN}")
    root = Path(root)
    (root / "clips").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    steps = (num_frames - 1) // 4
    rows = []
    fixture = Fixture(root, root / "metadata.csv")
    for i in range(num_clips):
        name = f"clips/clip_{i:03d}.mp4"
        write_coded_video(root / name, num_frames, height, width, fps, first_index=100 * i)
        rows.append((name, f"clip {i}", format_action_json(*_actions(rng, steps))))
        fixture.valid.append(name)
    for kind in broken:
        name = f"clips/broken_{kind}.mp4"
        path = root / name
        action = format_action_json(*_actions(rng, steps))
        if kind == "zero_byte_video":
            path.write_bytes(b"")
        elif kind == "missing_video":
            pass
        elif kind == "truncated_video":
            truncate_file(write_coded_video(path, num_frames, height, width, fps))
        elif kind == "truncated_video_data":
            # the index sits at the front, so the header survives the cut but the frames do not
            write_coded_video(path, num_frames, height, width, fps, faststart=True)
            cut_after_header(path)
        elif kind == "too_few_frames":
            write_coded_video(path, num_frames - 4, height, width, fps)
        else:
            write_coded_video(path, num_frames, height, width, fps)
            if kind == "action_not_json":
                action = "[[not json"
            elif kind == "action_wrong_shape":
                action = json.dumps(np.zeros((steps, 3, 8)).tolist())
            elif kind == "action_wrong_length":
                action = json.dumps(np.zeros((steps + 1, 2, 8)).tolist())
            elif kind == "action_nan":
                action = (
                    action.replace("0.0", "NaN", 1) if "0.0" in action else action[:3] + "NaN" + action[4:]
                )
        rows.append((name, f"broken {kind}", action))
        fixture.broken[kind] = name
    _write_csv(fixture.metadata, rows)
    return fixture


def _write_csv(path: Path, rows: list[tuple[str, str, str]]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "prompt", "action"])
        writer.writerows(rows)


# --------------------------------------------------------------------------------------------------------- VACE-E


def _rotations_6d(steps: int, phase: float) -> np.ndarray:
    angle = phase + 0.1 * np.arange(steps)
    c, s = np.cos(angle), np.sin(angle)
    matrix = np.zeros((steps, 3, 3))
    matrix[:, 0, 0], matrix[:, 0, 1], matrix[:, 1, 0], matrix[:, 1, 1], matrix[:, 2, 2] = c, -s, s, c, 1.0
    return matrix_to_rot6d(matrix).astype(np.float32)


def write_hand_trajectories(
    path: str | os.PathLike, steps: int, *, hands: Sequence[str] = ("left", "right")
) -> Path:
    """A hand-trajectory HDF5 file: for each hand, x position = step index, y = 0.5 (left) / -0.5 (right),
    z = 1, a rotation about z, and gripper states alternating open (1.0) / closed (0.0) every 4 steps."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        for side in hands:
            group = f.create_group(f"{side}_wrist")
            position = np.zeros((steps, 3), dtype=np.float32)
            position[:, 0] = np.arange(steps)
            position[:, 1] = 0.5 if side == "left" else -0.5
            position[:, 2] = 1.0
            group.create_dataset("positions", data=position)
            group.create_dataset("rotations_6d", data=_rotations_6d(steps, 0.0 if side == "left" else 1.0))
            f.create_dataset(
                f"{side}_hand_states", data=((np.arange(steps) // 4) % 2 == 0).astype(np.float32)
            )
    return path


def write_object_trajectories(
    path: str | os.PathLike, steps: int, object_ids: Sequence[int] = (1, 0)
) -> Path:
    """Object groups written in the order given (``object_<i>`` with attribute ``object_id``); object k's x
    position is ``step + 100 * object_id``."""
    path = Path(path)
    with h5py.File(path, "w") as f:
        for i, object_id in enumerate(object_ids):
            group = f.create_group(f"object_{i}")
            group.attrs["object_id"] = object_id
            position = np.zeros((steps, 3), dtype=np.float32)
            position[:, 0] = np.arange(steps) + 100 * object_id
            group.create_dataset("positions", data=position)
            group.create_dataset("rotations_6d", data=_rotations_6d(steps, float(object_id)))
    return path


def _write_episode(
    episode_dir: Path,
    num_frames: int,
    height: int,
    width: int,
    fps: float,
    *,
    hands: Sequence[str] | None,
    objects: bool,
    image: bool,
) -> None:
    episode_dir.mkdir(parents=True, exist_ok=True)
    name = episode_dir.name
    write_coded_video(episode_dir / f"{name}.mp4", num_frames, height, width, fps)
    write_coded_video(
        episode_dir / f"{name}_hands_masked.mp4", num_frames, height, width, fps, first_index=1000
    )
    mask = np.zeros((num_frames, height, width, 3), dtype=np.uint8)
    mask[:, :, : width // 2] = 255  # the left half is the hand region
    write_video(episode_dir / f"{name}_hands_mask.mp4", mask, fps, keyframe_interval=8)
    if hands:
        write_hand_trajectories(episode_dir / f"{name}_hand_trajectories.hdf5", num_frames, hands=hands)
    if objects:
        write_object_trajectories(episode_dir / f"{name}_object_trajectories.hdf5", num_frames)
    if image:
        from PIL import Image

        Image.fromarray(frame_code_image(7, height, width)).save(episode_dir / "end_effector_camera.jpg")


def write_vace_e_dataset(
    root: str | os.PathLike,
    num_frames: int = 13,
    height: int = 32,
    width: int = 32,
    fps: float = 16,
    *,
    broken: Sequence[str] = (),
    metadata_path: str | os.PathLike | None = None,
) -> Fixture:
    """A VACE-E base folder with three valid episodes and one broken episode per kind in ``broken``
    (see :data:`VACE_E_BROKEN`), and its task metadata JSON (default ``<root>/../<root name>_ph2d_metadata.json``).

    Valid: the grasping task's ``episode_0`` (legacy right-hand-only file, no objects, an end-effector image), the
    pouring task's ``episode_0`` (both hands, two objects written with ids 1, 0) and ``episode_1`` (no
    trajectory files: video only)."""
    unknown = [k for k in broken if k not in VACE_E_BROKEN]
    if unknown:
        raise ValueError(f"broken: unknown kind(s) {unknown}; expected some of {VACE_E_BROKEN}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    metadata = (
        Path(metadata_path) if metadata_path is not None else root.parent / f"{root.name}_ph2d_metadata.json"
    )
    metadata.write_text(json.dumps(TASK_METADATA, indent=2))
    fixture = Fixture(root, metadata)
    size = (num_frames, height, width, fps)
    grasp = root / GRASP_TASK / "episode_0"
    _write_episode(grasp, *size, hands=("right",), objects=False, image=True)
    pour = root / POUR_TASK / "episode_0"
    _write_episode(pour, *size, hands=("left", "right"), objects=True, image=False)
    video_only = root / POUR_TASK / "episode_1"
    _write_episode(video_only, *size, hands=None, objects=False, image=False)
    fixture.valid += [str(grasp), str(pour), str(video_only)]
    for n, kind in enumerate(broken, start=10):
        task = UNKNOWN_TASK if kind == "unknown_task" else POUR_TASK
        episode = root / task / f"episode_{n}"
        _write_episode(episode, *size, hands=("left", "right"), objects=True, image=False)
        name = episode.name
        hand_file = episode / f"{name}_hand_trajectories.hdf5"
        if kind == "zero_byte_video":
            (episode / f"{name}.mp4").write_bytes(b"")
        elif kind == "truncated_video":
            truncate_file(episode / f"{name}_hands_masked.mp4")
        elif kind == "missing_control_video":
            (episode / f"{name}_hands_masked.mp4").unlink()
        elif kind == "truncated_hdf5":
            truncate_file(hand_file)
        elif kind == "missing_group":
            with h5py.File(hand_file, "a") as f:
                del f["right_wrist"]
        elif kind == "missing_dataset":
            with h5py.File(hand_file, "a") as f:
                del f["left_wrist/rotations_6d"]
        elif kind == "wrong_shape":
            with h5py.File(hand_file, "a") as f:
                del f["right_wrist/positions"]
                f["right_wrist"].create_dataset("positions", data=np.zeros((num_frames, 4), dtype=np.float32))
        elif kind == "nan_values":
            with h5py.File(episode / f"{name}_object_trajectories.hdf5", "a") as f:
                f["object_0/positions"][2, 1] = np.nan
        elif kind == "length_mismatch":
            hand_file.unlink()
            write_hand_trajectories(hand_file, num_frames + 10)
        fixture.broken[kind] = str(episode)
    return fixture


def write_malformed_json(path: str | os.PathLike) -> Path:
    """A metadata file that is not JSON."""
    path = Path(path)
    path.write_text('{"per_task_attributes": {"a": ')
    return path


# ------------------------------------------------------------------------------------------------- policy episodes


def synthetic_policy_episode(
    episode: int = 0,
    num_steps: int = 20,
    cameras: Sequence[str] = ("top",),
    image_size: tuple[int, int] = (24, 32),
    qpos_dim: int = 14,
    action_dim: int = 14,
    environment_state_dim: int | None = None,
) -> dict:
    """The arrays of one episode (values in the module docstring), as :func:`write_policy_episode` takes them."""
    t = np.arange(num_steps, dtype=np.float32)[:, None]
    qpos = 1000.0 * episode + t + np.arange(qpos_dim, dtype=np.float32)[None] / 100
    action = (1000.0 * episode + t + np.arange(action_dim, dtype=np.float32)[None] / 100 + 0.5).astype(
        np.float32
    )
    images = {}
    for c, camera in enumerate(cameras):
        values = (np.arange(num_steps) + 10 * episode + 50 * c) % 256
        images[camera] = np.broadcast_to(values[:, None, None, None], (num_steps, *image_size, 3)).astype(
            np.uint8
        )
    arrays = {"qpos": qpos, "qvel": np.full_like(qpos, 0.25), "action": action, "images": images}
    if environment_state_dim is not None:
        arrays["environment_state"] = np.tile(
            np.arange(environment_state_dim, dtype=np.float32)[None] + episode, (num_steps, 1)
        )
    return arrays


def write_policy_dataset(
    root: str | os.PathLike,
    num_episodes: int = 3,
    num_steps: int = 20,
    cameras: Sequence[str] = ("top",),
    image_size: tuple[int, int] = (24, 32),
    qpos_dim: int = 14,
    action_dim: int = 14,
    environment_state_dim: int | None = None,
    *,
    broken: Sequence[str] = (),
    task: str = "synthetic",
) -> Fixture:
    """``root/episode_<i>.hdf5`` for i < ``num_episodes`` (valid), plus ``root/broken_<kind>.hdf5`` per kind in
    ``broken`` (see :data:`POLICY_BROKEN`)."""
    unknown = [k for k in broken if k not in POLICY_BROKEN]
    if unknown:
        raise ValueError(f"broken: unknown kind(s) {unknown}; expected some of {POLICY_BROKEN}")
    root = Path(root)
    fixture = Fixture(root, None)
    shape = dict(
        num_steps=num_steps,
        cameras=cameras,
        image_size=image_size,
        qpos_dim=qpos_dim,
        action_dim=action_dim,
        environment_state_dim=environment_state_dim,
    )
    attrs = {"sim": True, "fps": 50.0, "task": task}
    for i in range(num_episodes):
        path = write_policy_episode(
            root / f"episode_{i}.hdf5", **synthetic_policy_episode(i, **shape), attrs=attrs
        )
        fixture.valid.append(str(path))
    for kind in broken:
        path = root / f"broken_{kind}.hdf5"
        if kind == "zero_byte":
            root.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"")
            fixture.broken[kind] = str(path)
            continue
        write_policy_episode(path, **synthetic_policy_episode(90, **shape), attrs=attrs)
        if kind == "truncated_hdf5":
            truncate_file(path)
        else:
            with h5py.File(path, "a") as f:
                if kind == "missing_group":
                    del f["observations/images"]
                elif kind == "missing_dataset":
                    del f["action"]
                elif kind == "missing_attrs":  # sim: the one attribute readers require (fps and task default)
                    del f.attrs["sim"]
                elif kind == "wrong_shape":
                    del f["observations/qvel"]
                    f["observations"].create_dataset(
                        "qvel", data=np.zeros((num_steps, qpos_dim + 1), np.float32)
                    )
                elif kind == "nan_values":
                    f["observations/qpos"][3, 2] = np.nan
                elif kind == "inf_values":
                    f["action"][5, 0] = np.inf
                elif kind == "length_mismatch":
                    del f["action"]
                    f.create_dataset("action", data=np.zeros((num_steps - 2, action_dim), np.float32))
        fixture.broken[kind] = str(path)
    return fixture
