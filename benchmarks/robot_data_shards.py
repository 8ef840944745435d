"""Samples/s of action-video clips read from WebDataset shards (``ShardedActionVideoDataset``) against the same
clips read from their folder of mp4s (``ActionVideoDataset``), through a DataLoader with 0 and several workers,
in one run (issue 24). The clips are written here (smooth panning texture, H.264 as ``write_video`` writes it),
then sharded with ``write_action_video_shards``.

    python benchmarks/robot_data_shards.py                      # 64 clips of 81 frames at 256x448
    python benchmarks/robot_data_shards.py --clips 16 --quick   # a smoke run
    python benchmarks/robot_data_shards.py --workers 0,4,16 --json shards.json

Each configuration runs ``--repeats`` full epochs, folder and shards interleaved; the median is reported.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from robot_data_loading import smooth_frames

from kinema.robot_data import ActionVideoDataset, format_action_json, write_video
from kinema.robot_data.shards import ShardedActionVideoDataset, write_action_video_shards


def write_clips(root: Path, clips: int, frames: int, height: int, width: int) -> None:
    (root / "clips").mkdir(parents=True)
    rng = np.random.default_rng(0)
    steps = (frames - 1) // 4
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "prompt", "action"])
        for i in range(clips):
            name = f"clips/clip_{i:04d}.mp4"
            write_video(root / name, smooth_frames(frames, height, width, seed=i), fps=16)
            binary = rng.integers(0, 2, (steps, 8)).astype(np.float32)
            writer.writerow([name, f"clip {i}", format_action_json(binary, binary * 0.01)])


def epoch_seconds(dataset, workers: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=workers)
    start = time.perf_counter()
    count = sum(1 for _ in loader)
    assert count == len(dataset), (count, len(dataset))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--size", default="256x448", help="HxW of the clips")
    parser.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="17 frames at 64x64")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    height, width = (64, 64) if args.quick else map(int, args.size.split("x"))
    frames = 17 if args.quick else args.frames
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_clips(root / "data", args.clips, frames, height, width)
        index = write_action_video_shards(root / "data", root / "shards", max_shard_samples=8, progress=False)
        options = {"num_frames": frames, "height": height, "width": width}
        folder = ActionVideoDataset(base_path=root / "data", **options)
        for workers in (int(w) for w in args.workers.split(",")):
            # the sharded reader plans its epoch for the loader's workers
            shards = ShardedActionVideoDataset(
                root / "shards", shuffle_shards=False, loader_workers=workers, **options
            )
            times = {"folder": [], "shards": []}
            for _ in range(args.repeats):
                times["folder"].append(epoch_seconds(folder, workers))
                times["shards"].append(epoch_seconds(shards, workers))
            row = {"workers": workers}
            for name, values in times.items():
                row[f"{name}_samples_per_s"] = round(args.clips / statistics.median(values), 2)
            row["shards_vs_folder"] = round(row["shards_samples_per_s"] / row["folder_samples_per_s"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    result = {
        "clips": args.clips,
        "clip": f"{frames}x{height}x{width}",
        "shards": len(index.shards),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch thread(s)",
        "rows": rows,
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
