"""Video I/O through PyAV: read chosen frames of a file (seeking, resampling, resizing) and write H.264 mp4.

Frame convention: frame i of a constant-frame-rate video is shown during [i / fps, (i + 1) / fps). A timestamp t
(seconds from the first frame) therefore selects source frame floor(t * fps), and resampling to a target rate r
selects, for output frame j, the source frame shown at time j / r. Arrays are (T, H, W, 3) RGB.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from ._errors import RobotDataError, require_exists
from ._sizes import cover_size, resolve_size

_EPS = 1e-6  # absorbs float error in t * fps so that frame boundaries land on the intended frame
_DEFAULT_RESEEK_GAP = 64  # frames; used until a keyframe interval has been observed


def _load_av():
    """PyAV, imported on first use: importing kinema.robot_data stays cheap, and the simulation and episode code
    run where PyAV is not installed (every video function then names the missing package)."""
    try:
        import av as module
    except ImportError as error:
        raise ImportError("PyAV is required for video I/O: pip install av") from error
    return module


class _LazyAv:
    """Stands in for the ``av`` module until an attribute is first needed."""

    _module = None

    def __getattr__(self, name):
        if _LazyAv._module is None:
            _LazyAv._module = _load_av()
        return getattr(_LazyAv._module, name)


av = _LazyAv()


class DecodeCounter:
    """Counts decoded frames and seeks in this process (the benchmark and tests read it).

    ``frames`` is every frame the decoder produced, needed or not; ``seeks`` every container seek. DataLoader
    workers count in their own process.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames = 0
        self.seeks = 0

    def reset(self) -> None:
        with self._lock:
            self.frames = 0
            self.seeks = 0

    def _add(self, frames: int = 0, seeks: int = 0) -> None:
        with self._lock:
            self.frames += frames
            self.seeks += seeks


decode_counter = DecodeCounter()


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video: frame count, rate, size, duration (seconds)."""

    path: str
    num_frames: int
    fps: float
    height: int
    width: int
    duration: float


def _open(path: Path) -> av.container.InputContainer:
    if path.is_dir():
        raise RobotDataError(path, "video", "is a directory, expected a video file")
    if path.stat().st_size == 0:
        raise RobotDataError(path, "video", "zero-byte file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError) as error:
        raise RobotDataError(path, "video", f"cannot be opened as a video ({error})") from error


def _stream_facts(path: Path, container) -> tuple:
    if not container.streams.video:
        raise RobotDataError(path, "video", "holds no video stream")
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    if not rate or rate <= 0:
        raise RobotDataError(path, "video", "has no frame rate")
    num = stream.frames
    if not num:
        if stream.duration is not None:
            seconds = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            seconds = container.duration / av.time_base
        else:
            raise RobotDataError(path, "video", "declares neither a frame count nor a duration")
        num = round(seconds * float(rate))
    if num <= 0:
        raise RobotDataError(path, "video", "holds no frames")
    return stream, Fraction(rate), int(num)


def probe_video(path: str | os.PathLike, *, deep: bool = False) -> VideoInfo:
    """Reads a video's header (cheap). ``deep=True`` also demuxes every packet (no decoding) and decodes the
    last one, which finds files truncated after their header (a fast-start mp4 cut short).

    Raises :class:`RobotDataError` (``field="video"``) for a zero-byte, truncated or non-video file and
    :class:`MissingFileError` for a missing one.
    """
    path = require_exists(path, "video")
    with _open(path) as container:
        stream, rate, num = _stream_facts(path, container)
        info = VideoInfo(
            str(path),
            num,
            float(rate),
            stream.codec_context.height,
            stream.codec_context.width,
            num / float(rate),
        )
        if deep:
            packets = 0
            try:
                for packet in container.demux(stream):
                    if packet.size:
                        packets += 1
            except av.FFmpegError as error:
                raise RobotDataError(
                    path, "video", f"unreadable after {packets} packets ({error})"
                ) from error
            if stream.frames and packets < stream.frames:
                raise RobotDataError(
                    path,
                    "video",
                    f"truncated: the header declares {stream.frames} frames, {packets} are present",
                )
            frames = read_video_frames(path, [num - 1])
            if frames.shape[0] != 1:
                raise RobotDataError(path, "video", "the last frame cannot be decoded")
    return info


def source_frame_indices(
    num_source_frames: int,
    source_fps: float,
    indices: Sequence[int] | np.ndarray | None = None,
    timestamps: Sequence[float] | np.ndarray | None = None,
    fps: float | None = None,
) -> np.ndarray:
    """Source frame index (int64, (T,)) for each requested frame.

    ``timestamps`` (seconds) select the frame shown at each time. ``indices`` count frames of the video resampled
    to ``fps`` (of the source itself when ``fps`` is None). With neither, every frame of the (resampled) video.
    Out-of-range requests raise ``ValueError``.
    """
    if indices is not None and timestamps is not None:
        raise ValueError("indices and timestamps: give one of them, not both")
    if fps is not None and fps <= 0:
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    duration = num_source_frames / source_fps
    if timestamps is not None:
        times = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(times)) or np.any(times < 0):
            raise ValueError(f"timestamps: expected finite times >= 0 seconds, got {times.tolist()}")
        if np.any(times >= duration + _EPS):
            raise ValueError(f"timestamps: the video lasts {duration:.4g} s, got up to {times.max():.4g} s")
    else:
        rate = source_fps if fps is None else fps
        if indices is None:
            count = num_source_frames if fps is None else math.ceil(duration * fps - _EPS)
            index = np.arange(count, dtype=np.int64)
        else:
            index = np.asarray(indices).reshape(-1)
            if index.size and (not np.issubdtype(index.dtype, np.integer) or index.min() < 0):
                raise ValueError(f"indices: expected integers >= 0, got {index.tolist()}")
            index = index.astype(np.int64)
        if fps is None:
            if index.size and index.max() >= num_source_frames:
                raise ValueError(
                    f"indices: the video has {num_source_frames} frames, got index {index.max()}"
                )
            return index
        times = index / rate
        if index.size and times.max() >= duration - _EPS:
            available = math.ceil(duration * fps - _EPS)
            raise ValueError(
                f"indices: the video has {available} frames at {fps} fps, got index {index.max()}"
            )
    return np.minimum(np.floor(times * source_fps + _EPS).astype(np.int64), num_source_frames - 1)


def read_video_frames(
    path: str | os.PathLike,
    indices: Sequence[int] | np.ndarray | None = None,
    *,
    timestamps: Sequence[float] | np.ndarray | None = None,
    fps: float | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int | None = None,
    as_float: bool = False,
) -> np.ndarray:
    """Decodes the requested frames of ``path`` -> (T, H, W, 3): uint8, or float32 in [-1, 1] with ``as_float``.

    Frames are chosen by ``indices`` (of the video resampled to ``fps`` when given) or ``timestamps`` (seconds),
    all frames when neither is given; repeats and any order are allowed. The reader seeks to the keyframe at or
    before the first needed frame and decodes forward, seeking again only across gaps longer than the keyframe
    interval, so frames that are not needed are mostly never decoded (see :data:`decode_counter`).

    ``size`` (H, W), each divisible by 16, resizes to cover and centre-crops; ``max_pixels`` instead scales down
    to at most that many pixels with both sides floored to multiples of 16. Errors name the file.
    """
    path = require_exists(path, "video")
    with _open(path) as container:
        stream, rate, num = _stream_facts(path, container)
        try:
            wanted = source_frame_indices(num, float(rate), indices, timestamps, fps)
        except ValueError as error:
            raise RobotDataError(path, "indices", str(error)) from error
        src_hw = (stream.codec_context.height, stream.codec_context.width)
        out_hw = resolve_size(src_hw, size, max_pixels)
        resize_hw = None if out_hw == src_hw else cover_size(src_hw, out_hw)
        dtype = np.float32 if as_float else np.uint8
        out = np.empty((len(wanted), *out_hw, 3), dtype=dtype)
        if len(wanted) == 0:
            return out
        stream.thread_type = "AUTO"
        positions: dict[int, list[int]] = {}
        for position, index in enumerate(wanted.tolist()):
            positions.setdefault(index, []).append(position)

        def store(index: int, frame: av.VideoFrame) -> None:
            if resize_hw is None:
                rgb = frame.to_ndarray(format="rgb24")
            else:
                rgb = frame.to_ndarray(
                    format="rgb24", height=resize_hw[0], width=resize_hw[1], interpolation="BILINEAR"
                )
                top, left = (resize_hw[0] - out_hw[0]) // 2, (resize_hw[1] - out_hw[1]) // 2
                rgb = rgb[top : top + out_hw[0], left : left + out_hw[1]]
            for position in positions[index]:
                if as_float:
                    np.multiply(rgb, 1 / 127.5, out=out[position], dtype=np.float32)
                    out[position] -= 1.0
                else:
                    out[position] = rgb

        try:
            _decode(path, container, stream, rate, sorted(positions), store)
        except av.FFmpegError as error:
            raise RobotDataError(path, "video", f"decoding failed ({error})") from error
    return out


def _decode(path: Path, container, stream, rate: Fraction, needed: list[int], store) -> None:
    """Decodes forward from keyframes, calling ``store(index, frame)`` once for each needed index."""
    start = stream.start_time or 0
    time_base = stream.time_base
    k = 0  # next needed index
    keyframes: list[int] = []
    last_index = -1
    previous = None  # (index, frame): holds a frame when the stream skips an index (variable frame rate)
    seek_to: int | None = needed[0] if needed[0] > 0 else None
    decoded = seeks = 0
    try:
        while k < len(needed):
            if seek_to is not None:
                pts = start + round(seek_to / rate / time_base)
                container.seek(pts, stream=stream, backward=True, any_frame=False)
                seeks += 1
                previous = None
            seek_to = None
            counter = last_index
            for frame in container.decode(stream):
                decoded += 1
                counter += 1
                index = counter if frame.pts is None else round((frame.pts - start) * time_base * rate)
                counter = index
                if frame.key_frame and (not keyframes or index > keyframes[-1]):
                    keyframes.append(index)
                while k < len(needed) and needed[k] < index:
                    # the stream jumped past a needed index: the frame shown then is the previous one
                    held = previous if previous is not None else (index, frame)
                    store(needed[k], held[1])
                    k += 1
                if k < len(needed) and needed[k] == index:
                    store(index, frame)
                    k += 1
                previous = (index, frame)
                last_index = index
                if k == len(needed):
                    break
                gap = needed[k] - index
                interval = _keyframe_interval(keyframes)
                if gap > (interval if interval is not None else _DEFAULT_RESEEK_GAP):
                    seek_to = needed[k]
                    break
            else:
                break  # end of stream
    finally:
        decode_counter._add(decoded, seeks)
    if k < len(needed):
        raise RobotDataError(
            path,
            "video",
            f"truncated or unreadable: frame {needed[k]} requested, decoding stopped "
            + (f"after frame {last_index}" if last_index >= 0 else "before any frame"),
        )


def _keyframe_interval(keyframes: list[int]) -> int | None:
    if len(keyframes) < 2:
        return None
    return min(b - a for a, b in itertools.pairwise(keyframes))


_CONTAINER_FORMATS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray,
    fps: float,
    *,
    crf: int = 18,
    keyframe_interval: int | None = None,
    faststart: bool = False,
) -> Path:
    """Writes (T, H, W, 3) frames (uint8, or float in [-1, 1]) as H.264 (yuv420p) at ``fps``; returns the path.

    The file appears atomically (written under a temporary name in the same folder, then renamed). H and W must be
    even (yuv420p). ``keyframe_interval`` sets the GOP (libx264's default, 250, when None); ``faststart`` puts the
    index at the front of the file, as streaming players want.
    """
    path = Path(path)
    container_format = _CONTAINER_FORMATS.get(path.suffix.lower())
    if container_format is None:
        raise ValueError(f"path: expected a {', '.join(_CONTAINER_FORMATS)} file name, got {path.name!r}")
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"frames: expected shape (T, H, W, 3) with T >= 1, got {array.shape}")
    if array.shape[1] % 2 or array.shape[2] % 2:
        raise ValueError(
            f"frames: H and W must be even for H.264 yuv420p, got H={array.shape[1]} W={array.shape[2]}"
        )
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise ValueError(f"frames: expected uint8 or float in [-1, 1], got dtype {array.dtype}")
        if not np.all(np.isfinite(array)):
            raise ValueError("frames: holds NaN or Inf")
        array = np.round((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    if not fps or fps <= 0 or not math.isfinite(fps):
        raise ValueError(f"fps: expected a positive frame rate, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        options = {"movflags": "+faststart"} if faststart else {}
        with av.open(str(tmp), "w", format=container_format, options=options) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = array.shape[2], array.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(crf)}
            if keyframe_interval is not None:
                stream.codec_context.gop_size = int(keyframe_interval)
            for image in array:
                for packet in stream.encode(
                    av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                ):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
