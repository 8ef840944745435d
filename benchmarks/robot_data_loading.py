"""kinema.robot_data loading throughput against raw PyAV / h5py reads of the same frames, in one run (CPU).

For each dataset, samples/s of ``dataset[i]`` against a baseline that reads exactly the same frames with the
library alone (PyAV: open, seek, decode, convert to RGB; h5py: the same image chunk). Overhead goal:
at most 15%. Also counts the frames decoded when 81 frames are sampled from a 600-frame video, and, for random
81-frame windows of 600-frame clips (``ActionVideoDataset(window="random")``) at keyframe intervals 12 and 250,
the frames decoded per frame returned and the overhead against PyAV decoding the same windows alone.

    python benchmarks/robot_data_loading.py                 # 480x832 clips, 480x640 episodes
    python benchmarks/robot_data_loading.py --quick         # small sizes, a smoke run
    python benchmarks/robot_data_loading.py --only random_windows --windows 8 --repeats 3
    python benchmarks/robot_data_loading.py --json out.json

Timing: each measurement is repeated ``--repeats`` times, dataset and baseline interleaved, and the median taken.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import av
import h5py
import numpy as np
import torch

from kinema.robot_data import (
    ActionVideoDataset,
    PolicyEpisodeDataset,
    VaceEEpisodeDataset,
    decode_counter,
    format_action_json,
    read_video_frames,
    write_policy_episode,
    write_video,
)
from kinema.robot_data.testing import TASK_METADATA, write_hand_trajectories, write_object_trajectories


def smooth_frames(num_frames: int, height: int, width: int, seed: int = 0, shift: int = 4) -> np.ndarray:
    """A smooth random texture panned by ``shift`` pixels per frame: camera-like motion that H.264 compresses
    the way it compresses real footage (unlike white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, (width + shift * num_frames) // 16 + 2, 3)).astype(
        np.float32
    )
    texture = np.kron(coarse, np.ones((16, 16, 1), np.float32))
    texture = (
        texture + np.roll(texture, 8, 0) + np.roll(texture, 8, 1) + np.roll(texture, (8, 8), (0, 1))
    ) / 4
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        frames[t] = texture[:height, t * shift : t * shift + width]
    return frames


def raw_decode(path: Path, indices: list[int], counts: list[int] | None = None) -> np.ndarray:
    """The baseline: PyAV alone decodes the frames at ``indices`` (sorted, consecutive) of ``path`` into one
    preallocated (T, H, W, 3) uint8 array, with the same threading the reader uses (one seek to the keyframe at or
    before the first frame, then forward). Appends the number of frames it decoded to ``counts``."""
    wanted = {index: k for k, index in enumerate(indices)}
    decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate, base, start = stream.average_rate, stream.time_base, stream.start_time or 0
        out = np.empty((len(indices), stream.codec_context.height, stream.codec_context.width, 3), np.uint8)
        if indices[0] > 0:
            container.seek(start + round(indices[0] / rate / base), stream=stream, backward=True)
        for frame in container.decode(stream):
            decoded += 1
            index = round((frame.pts - start) * base * rate)
            if index in wanted:
                out[wanted[index]] = frame.to_ndarray(format="rgb24")
            if index >= indices[-1]:
                break
    if counts is not None:
        counts.append(decoded)
    return out


def write_long_clip(path: Path, num_frames: int, height: int, width: int, gop: int, seed: int) -> Path:
    """A ``num_frames`` H.264 clip (libx264 crf 18, yuv420p, 16 fps) of :func:`smooth_frames`-like panned texture,
    encoded frame by frame (a 600-frame 480x832 clip would take 0.7 GB as one array), keyframes every ``gop``
    frames (scene-cut keyframes off, so the interval is exact)."""
    shift = 4
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 16 + 2, (width + shift * num_frames) // 16 + 2, 3)).astype(
        np.float32
    )
    texture = np.kron(coarse, np.ones((16, 16, 1), np.float32))
    texture = (
        (texture + np.roll(texture, 8, 0) + np.roll(texture, 8, 1) + np.roll(texture, (8, 8), (0, 1))) / 4
    ).astype(np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"crf": "18", "x264-params": "scenecut=0"}
        for t in range(num_frames):
            image = np.ascontiguousarray(texture[:height, t * shift : t * shift + width])
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def random_window_rows(
    root: Path, height: int, width: int, clip_frames: int, window: int, clips: int, windows: int, repeats: int
) -> list[dict]:
    """Random ``window``-frame windows of ``clip_frames``-frame clips, per keyframe interval: the dataset
    (``window="random"``, native size, uint8) against PyAV decoding the same windows alone, and the frames each
    side decodes per frame returned (the reader's ``decode_counter`` and the baseline's own count)."""
    rows = []
    for gop in (12, 250):
        folder = root / f"gop_{gop}"
        (folder / "clips").mkdir(parents=True)
        steps = (clip_frames - 1) // 4
        lines = [["video", "prompt", "action"]]
        for c in range(clips):
            write_long_clip(folder / "clips" / f"{c}.mp4", clip_frames, height, width, gop, seed=10 + c)
            ones = np.ones((steps, 8))
            lines.append([f"clips/{c}.mp4", f"clip {c}", format_action_json(ones, ones)])
        with open(folder / "metadata.csv", "w", newline="") as f:
            csv.writer(f).writerows(lines)
        ds = ActionVideoDataset(
            base_path=folder,
            num_frames=window,
            height=height,
            width=width,
            window="random",
            seed=0,
            repeat=-(-windows // clips),
        )
        count = min(windows, len(ds))
        located = [ds.window(i) for i in range(count)]
        paths = [ds.clips[c].files["video"] for c in range(len(ds.clips))]
        ours_decoded: list[int] = []
        base_decoded: list[int] = []
        for sample, (clip, start) in enumerate(located):  # the same frames on both sides, and their cost
            decode_counter.reset()
            video = ds[sample]["video"].permute(1, 2, 3, 0).numpy()
            ours_decoded.append(decode_counter.frames)
            assert np.array_equal(
                video, raw_decode(paths[clip], list(range(start, start + window)), base_decoded)
            )

        def ours(i: int, ds=ds) -> None:
            ds[i]

        def baseline(i: int, located=located, paths=paths) -> None:
            clip, start = located[i]
            raw_decode(paths[clip], list(range(start, start + window)))

        row = compare(f"random {window}-frame windows, GOP {gop}", ours, baseline, count, repeats)
        row.update(
            keyframe_interval=gop,
            clip_frames=clip_frames,
            window=window,
            windows=count,
            window_starts=[start for _, start in located],
            decoded_per_returned=sum(ours_decoded) / (window * count),
            baseline_decoded_per_returned=sum(base_decoded) / (window * count),
        )
        print(
            f"  GOP {gop}: decoded per frame returned {row['decoded_per_returned']:.3f} "
            f"(PyAV alone {row['baseline_decoded_per_returned']:.3f}); starts {row['window_starts']}",
            flush=True,
        )
        rows.append(row)
    return rows


def compare(name: str, ours, baseline, count: int, repeats: int) -> dict:
    """Times ``ours(i)`` and ``baseline(i)`` for i < ``count``, ``repeats`` times, as adjacent pairs (their order
    alternating), so that a slow spell on a shared machine hits both sides of a pair. Reports the median wall
    time per sample of each, and the median of the per-pair ratios in wall time and in CPU time (all threads of
    this process)."""
    ours(0), baseline(0)  # warm-up: file cache, imports, decoder set-up
    wall: dict[str, list[float]] = {"ours": [], "base": []}
    cpu: dict[str, list[float]] = {"ours": [], "base": []}
    for r in range(repeats):
        for i in range(count):
            pair = [("ours", ours), ("base", baseline)]
            for side, function in pair if (r + i) % 2 == 0 else pair[::-1]:
                w, c = time.perf_counter(), time.process_time()
                function(i)
                wall[side].append(time.perf_counter() - w)
                cpu[side].append(time.process_time() - c)
    row = {
        "dataset": name,
        "samples_per_s": 1.0 / statistics.median(wall["ours"]),
        "baseline_samples_per_s": 1.0 / statistics.median(wall["base"]),
        "overhead_wall": statistics.median(o / b for o, b in zip(wall["ours"], wall["base"])) - 1.0,
        "overhead_cpu": statistics.median(o / max(b, 1e-9) for o, b in zip(cpu["ours"], cpu["base"])) - 1.0,
        "pairs": len(wall["ours"]),
    }
    print(
        f"{name:<44} {row['samples_per_s']:9.2f} {row['baseline_samples_per_s']:9.2f} "
        f"{100 * row['overhead_wall']:+8.1f}% {100 * row['overhead_cpu']:+8.1f}%",
        flush=True,
    )
    return row


def action_video_rows(
    root: Path, height: int, width: int, frames: int, clips: int, repeats: int
) -> list[dict]:
    (root / "clips").mkdir(parents=True)
    rows = [["video", "prompt", "action"]]
    steps = (frames - 1) // 4
    for i in range(clips):
        write_video(root / "clips" / f"{i}.mp4", smooth_frames(frames, height, width, seed=i), 16)
        rows.append(
            [f"clips/{i}.mp4", f"clip {i}", format_action_json(np.ones((steps, 8)), np.ones((steps, 8)))]
        )
    with open(root / "metadata.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    indices = list(range(frames))
    paths = [root / "clips" / f"{i}.mp4" for i in range(clips)]
    results = []
    for dtype in ("uint8", "float32"):
        # native size: no resize, so the dataset returns exactly the baseline's frames
        ds = ActionVideoDataset(
            base_path=root, num_frames=frames, height=height, width=width, video_dtype=dtype
        )
        results.append(
            compare(
                f"ActionVideoDataset {frames}x{height}x{width} {dtype}",
                lambda i, ds=ds: ds[i % len(ds)],
                lambda i: raw_decode(paths[i % len(paths)], indices),
                clips,
                repeats,
            )
        )
    return results


def vace_e_rows(root: Path, height: int, width: int, frames: int, repeats: int) -> list[dict]:
    task = next(iter(TASK_METADATA["per_task_attributes"]))
    episode = root / "base" / task / "episode_0"
    episode.mkdir(parents=True)
    paths = []
    for suffix, seed in (("", 0), ("_hands_masked", 1), ("_hands_mask", 2)):
        paths.append(
            write_video(episode / f"episode_0{suffix}.mp4", smooth_frames(frames, height, width, seed), 16)
        )
    write_hand_trajectories(episode / "episode_0_hand_trajectories.hdf5", frames)
    write_object_trajectories(episode / "episode_0_object_trajectories.hdf5", frames)
    (root / "meta.json").write_text(json.dumps(TASK_METADATA))
    indices = list(range(frames))
    results = []
    for dtype in ("uint8", "float32"):
        ds = VaceEEpisodeDataset(
            base_path=root / "base",
            metadata_path=root / "meta.json",
            num_frames=frames,
            height=height,
            width=width,
            video_dtype=dtype,
        )
        results.append(
            compare(
                f"VaceEEpisodeDataset {frames}x{height}x{width} x3 {dtype}",
                lambda i, ds=ds: ds[0],
                lambda i: [raw_decode(path, indices) for path in paths],
                2,
                repeats,
            )
        )
    return results


def policy_rows(root: Path, height: int, width: int, steps: int, samples: int, repeats: int) -> list[dict]:
    frames = smooth_frames(steps, height, width, seed=3, shift=2)
    rng = np.random.default_rng(0)
    for e in range(2):
        write_policy_episode(
            root / f"episode_{e}.hdf5",
            qpos=rng.normal(size=(steps, 14)),
            qvel=rng.normal(size=(steps, 14)),
            action=rng.normal(size=(steps, 14)),
            images={"top": frames},
            attrs={"sim": True, "fps": 50.0, "task": "benchmark"},
        )
    stats = {
        name: {"mean": np.zeros(14, np.float32), "std": np.ones(14, np.float32)}
        for name in ("qpos", "action")
    }
    ds = PolicyEpisodeDataset(root, ["top"], chunk_size=100, split="all", stats=stats)
    order = np.random.default_rng(1).permutation(len(ds))[:samples].tolist()
    handles = [h5py.File(root / f"episode_{e}.hdf5", "r") for e in range(2)]

    def baseline(i: int) -> None:  # h5py reads the same image chunk (the dataset keeps qpos/action in memory)
        e, t = divmod(order[i], steps)
        handles[e]["observations/images/top"][t]

    results = [
        compare(
            f"PolicyEpisodeDataset 1x{height}x{width} chunk 100",
            lambda i: ds[order[i]],
            baseline,
            samples,
            repeats,
        )
    ]
    for handle in handles:
        handle.close()
    ds.close()
    return results


def decoded_frames_rows(root: Path, height: int, width: int) -> list[dict]:
    rows = []
    frames = smooth_frames(600, height, width, seed=5)
    for gop in (None, 30):
        path = write_video(root / f"long_{gop}.mp4", frames, 30, keyframe_interval=gop)
        for start in (0, 260, 519):
            decode_counter.reset()
            read_video_frames(path, np.arange(start, start + 81))
            row = {"keyframe_interval": gop or "libx264 default (250)", "first_frame": start}
            row.update(decoded=decode_counter.frames, seeks=decode_counter.seeks)
            rows.append(row)
            print(
                f"  GOP {row['keyframe_interval']!s:<22} frames {start}..{start + 80}: decoded {row['decoded']}"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write the results as JSON")
    sections = ("action_video", "vace_e", "policy", "decoded_frames", "random_windows")
    parser.add_argument("--only", nargs="+", choices=sections, default=sections, help="run these sections")
    parser.add_argument("--windows", type=int, default=8, help="random windows timed per keyframe interval")
    parser.add_argument("--clips", type=int, default=2, help="600-frame clips per keyframe interval")
    args = parser.parse_args()
    video_hw, policy_hw, frames = ((64, 96), (48, 64), 17) if args.quick else ((480, 832), (480, 640), 81)
    clip_frames = 120 if args.quick else 600
    torch.set_num_threads(1)  # as in a DataLoader worker
    warnings.simplefilter("ignore")
    print(
        f"torch {torch.__version__}, PyAV {av.__version__}, h5py {h5py.__version__}, {platform.processor()}"
    )
    print(f"{'dataset':<44} {'samples/s':>9} {'baseline':>9} {'ovh wall':>9} {'ovh CPU':>9}")
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if "action_video" in args.only:
            results["action_video"] = action_video_rows(
                tmp / "av", *video_hw, frames, clips=2, repeats=args.repeats
            )
        if "vace_e" in args.only:
            results["vace_e"] = vace_e_rows(tmp / "vace", *video_hw, frames, repeats=args.repeats)
        if "policy" in args.only:
            results["policy"] = policy_rows(
                tmp / "policy", *policy_hw, steps=100, samples=200, repeats=args.repeats
            )
        if "decoded_frames" in args.only:
            print("decoded frames when sampling 81 consecutive frames of a 600-frame video:")
            results["decoded_frames"] = decoded_frames_rows(tmp / "long", *video_hw)
        if "random_windows" in args.only:
            results["random_windows"] = random_window_rows(
                tmp / "windows",
                *video_hw,
                clip_frames,
                frames,
                clips=args.clips,
                windows=args.windows,
                repeats=args.repeats,
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
