"""Video I/O through PyAV: read chosen frames of a file (seeking, resampling, resizing) and write H.264 mp4.

Frame convention: frame i of a constant-frame-rate video is shown during [i / fps, (i + 1) / fps). A timestamp t
(seconds from the first frame) therefore selects source frame floor(t * fps), and resampling to a target rate r
selects, for output frame j, the source frame shown at time j / r. Arrays are (T, H, W, 3) RGB.
"""

from __future__ import annotations

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
# seeks that may land after the needed frame before the reader falls back to a sequential decode
_MAX_OVERSHOOTS = 2


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
    all frames when neither is given; repeats and any order are allowed. Frame i is the first frame whose
    timestamp times the frame rate rounds to i; where no frame does (variable frame rate), the frame shown then
    (the one before). The reader seeks to the keyframe at or before the first needed frame and decodes forward,
    seeking again only across gaps longer than the keyframe interval seen, so frames that are not needed are
    mostly never decoded (see :data:`decode_counter`). Every call terminates: seeks and decoded frames are bounded
    by the frames requested and the distance back to their keyframes, a seek that lands where the previous one
    did decodes forward instead of seeking again, and a file whose seeks misbehave is decoded sequentially. The
    frames equal those of a sequential decode. Display rotation metadata is not applied (frames as coded).

    ``size`` (H, W), each divisible by 16, resizes to cover and centre-crops; ``max_pixels`` instead scales down
    to at most that many pixels with both sides floored to multiples of 16. Errors are :class:`RobotDataError`
    naming the file, and for a frame the file cannot deliver (truncated, or a header that declares more frames
    than there are), the frame.
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

        needed = sorted(positions)
        try:
            done = _decode(path, container, stream, rate, needed, store, seek=True)
        except av.FFmpegError as error:
            raise RobotDataError(path, "video", f"decoding failed ({error})") from error
    if not done:  # seeking is unreliable in this file: decode it from the start, without seeking
        with _open(path) as container:
            stream, rate, _ = _stream_facts(path, container)
            stream.thread_type = "AUTO"
            try:
                _decode(path, container, stream, rate, needed, store, seek=False)
            except av.FFmpegError as error:
                raise RobotDataError(path, "video", f"decoding failed ({error})") from error
    return out


def _decode(path: Path, container, stream, rate: Fraction, needed: list[int], store, *, seek: bool) -> bool:
    """Decodes forward from keyframes, calling ``store(index, frame)`` for each needed index (sorted, unique).

    Returns False when seeking proved unreliable on this file (a seek landed on no frame, on a frame that is not
    a keyframe, or after the needed frame more than :data:`_MAX_OVERSHOOTS` times); the caller then decodes the
    file again from its start with ``seek=False``, which is a plain sequential decode.

    Termination: every seek but a bounded retreat targets a needed index beyond the last decoded frame and beyond
    the previous seek's target (whose keyframe is the one being decoded from), and a seek that makes no progress
    (lands at or before the last decoded frame, e.g. on the keyframe of the previous seek) turns seeking off for
    the rest of the call, so that the decoder only moves forward from then on. Seeks are therefore at most
    len(needed) + _MAX_OVERSHOOTS, and the frames decoded at most twice the frames up to the last needed one
    (a no-progress seek re-decodes once), three times with the sequential fallback. Reading a window decodes the
    window plus the frames back to its preceding keyframe, with one seek.
    """
    start = stream.start_time or 0
    time_base = stream.time_base
    k = 0  # next needed position in ``needed``
    position = -1  # index of the last frame decoded (-1: none yet)
    previous = None  # (index, frame): the last frame decoded since the last seek
    gop = _KeyframeIntervals()
    target: int | None = needed[0] if seek and needed[0] > 0 else None  # the frame to seek to
    overshoots = retreat = 0
    sought_for = -1  # the target of the last seek: never sought again (its keyframe is the one already used)
    decoded = seeks = 0
    try:
        while k < len(needed):
            sought = target is not None
            if sought:
                seek_index = max(0, target - retreat)
                container.seek(
                    start + round(seek_index / rate / time_base),
                    stream=stream,
                    backward=True,
                    any_frame=False,
                )
                seeks += 1
                previous, before_seek, sought_for, target = None, position, target, None
                gop.break_run()
            for frame in container.decode(stream):
                decoded += 1
                if frame.pts is None:
                    if seeks:
                        return False  # no timestamp after a seek: the index of this frame is unknown
                    index = position + 1
                else:
                    index = round((frame.pts - start) * time_base * rate)
                if sought:  # the first frame after a seek
                    sought = False
                    if not frame.key_frame:
                        return False  # the decoder starts mid-GOP: its frames may be corrupt
                    if index > needed[k]:
                        # landed after the needed frame (a keyframe whose decode time precedes its display
                        # time, or a coarse index): seek further back, a bounded number of times
                        overshoots += 1
                        if overshoots > _MAX_OVERSHOOTS:
                            return False
                        retreat = max(2 * retreat, gop.estimate(index), 1)
                        target = needed[k]
                        break
                    if index <= before_seek:
                        seek = False  # no progress (e.g. the keyframe of the previous seek): decode forward
                    retreat = 0
                gop.add(index, frame.key_frame)
                while k < len(needed) and needed[k] < index:
                    # no frame has the needed index: the one shown then is the previous frame (variable frame
                    # rate), or the first frame of the file for indices before it
                    store(needed[k], frame if previous is None else previous[1])
                    k += 1
                if k < len(needed) and needed[k] == index:
                    store(index, frame)
                    k += 1
                previous = (index, frame)
                position = max(position, index)
                if k == len(needed):
                    break
                if seek and needed[k] > sought_for and needed[k] - index > gop.estimate(index):
                    target = needed[k]  # a keyframe is expected between here and the needed frame
                    break
            else:  # end of stream
                if previous is None:
                    if seeks:
                        return False  # a seek landed past the last packet
                    break
                last_index, last = previous
                end = last_index + 1
                if last.pts is not None and last.duration:
                    end = max(end, round((last.pts + last.duration - start) * time_base * rate))
                while k < len(needed) and needed[k] < end:  # still shown: the last frame lasts longer
                    store(needed[k], last)
                    k += 1
                break
    finally:
        decode_counter._add(decoded, seeks)
    if k < len(needed):
        raise RobotDataError(
            path,
            "video",
            f"truncated or unreadable: frame {needed[k]} requested, decoding stopped "
            + (f"after frame {position}" if position >= 0 else "before any frame"),
        )
    return True


class _KeyframeIntervals:
    """What the decoder has seen of the keyframe spacing, from frames decoded without a seek in between.

    ``estimate(index)`` is the gap beyond which a seek is expected to land on a later keyframe: the longest
    interval seen (:data:`_DEFAULT_RESEEK_GAP` before two keyframes were seen in one run), and at least the
    distance already decoded since the last keyframe (the current GOP is at least that long).
    """

    def __init__(self) -> None:
        self.longest: int | None = None
        self.last_key: int | None = None

    def break_run(self) -> None:
        self.last_key = None

    def add(self, index: int, key: bool) -> None:
        if not key:
            return
        if self.last_key is not None and index > self.last_key:
            self.longest = max(self.longest or 0, index - self.last_key)
        self.last_key = index

    def estimate(self, index: int) -> int:
        gap = _DEFAULT_RESEEK_GAP if self.longest is None else self.longest
        if self.last_key is not None:
            gap = max(gap, index - self.last_key + 1)
        return gap


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
