"""``kinema-wm make-drone-data``: rendered drone flights in the action-video CSV format ``kinema-wm train`` reads.

    <out>/metadata.csv          video, prompt, action (JSON (A, 2, 8), raw magnitudes; A = (frames - 1) / 4)
    <out>/videos/clip_00000.mp4 H.264, 16 fps
    <out>/drone_data.json       settings, units, camera, and per clip: world, palette, start pose

Clips are rendered in groups that share a world (``clips_per_world``, each clip from its own start pose, heading
and actions), one group per task, in ``workers`` processes. Everything is drawn from (seed, world, clip), so the
same arguments give the same metadata and the same rendered frames whatever the number of workers; the mp4s hold
those frames through lossy H.264, whose bytes libx264 does not always reproduce for tiny frames (measured at
32x32: decoded pixels then differ by a few levels on average). The dataset is written to a temporary folder
beside ``out`` and renamed when complete.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .. import (
    DEFAULT_MAGNITUDE_SCALE,
    DRONE_ACTIONS,
    check_wan_num_frames,
    format_action_json,
    write_video,
)
from ._flight import FRAMES_PER_STEP, FlightConfig, integrate_flight, sample_actions
from ._render import FOVY_DEGREES
from ._world import make_world

DATA_FORMAT = "kinema-drone-flights"
DATA_INDEX = "drone_data.json"
METADATA = "metadata.csv"
FPS = 16
SIZE_MULTIPLE = 32  # the TI2V VAE's 16x spatial compression x 2x2 patches
MIN_CLEARANCE = 4.0  # metres between the camera and the highest ground under its path


@dataclass(frozen=True)
class DroneDataConfig:
    """Options of :func:`make_drone_dataset` (the flags of ``kinema-wm make-drone-data``)."""

    out: str
    clips: int
    height: int = 64
    width: int = 64
    frames: int = 81
    seed: int = 0
    workers: int = 1
    clips_per_world: int = 8
    texture_size: int = 1024
    grid: int = 257
    contrast: float = 1.0  # field tint contrast of the worlds (see make_world); small renders need more

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0 or value % SIZE_MULTIPLE:
                raise ValueError(
                    f"--size: {name} {value!r} is not a positive multiple of {SIZE_MULTIPLE} "
                    "(16x VAE compression x 2x2 patches)"
                )
        try:
            check_wan_num_frames(self.frames, "--frames")
        except ValueError:
            raise ValueError(
                f"--frames: expected a frame count of the form 4n+1 (e.g. 81), got {self.frames!r}"
            ) from None
        if self.frames < 1 + FRAMES_PER_STEP:
            raise ValueError(f"--frames: expected at least 5 (one action step), got {self.frames}")
        for name in ("clips", "workers", "clips_per_world"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name}: expected >= 1, got {getattr(self, name)}")
        if not self.contrast >= 0:
            raise ValueError(f"--contrast: expected >= 0, got {self.contrast}")
        if self.texture_size < 16 or self.grid < 5:
            raise ValueError(
                f"texture_size, grid: expected >= 16 and >= 5, got {self.texture_size}, {self.grid}"
            )

    @property
    def num_steps(self) -> int:
        return (self.frames - 1) // FRAMES_PER_STEP

    @property
    def num_worlds(self) -> int:
        return -(-self.clips // self.clips_per_world)


@dataclass(frozen=True)
class DroneDataSummary:
    out: Path
    clips: int
    worlds: int
    renderer: str

    def describe(self) -> str:
        return f"wrote {self.clips} clips over {self.worlds} worlds to {self.out} ({self.renderer})"


def clip_name(index: int) -> str:
    return f"videos/clip_{index:05d}.mp4"


def plan_clip(config: DroneDataConfig, world, world_index: int, clip_index: int) -> dict[str, Any]:
    """Start pose, actions and poses of one clip: everything drawn from (seed, world, clip)."""
    rng = np.random.default_rng([config.seed, world_index, clip_index, 1])
    flight = FlightConfig()
    reach = world.half_size * 0.45
    x, y = rng.uniform(-reach, reach, size=2)
    yaw = float(rng.uniform(0, 2 * np.pi))
    pitch = float(rng.uniform(*flight.start_pitch))
    altitude = float(rng.uniform(*flight.altitude))
    binary, magnitude = sample_actions(rng, config.num_steps, pitch, flight)
    poses = integrate_flight(np.array([x, y, 0.0, yaw, pitch]), binary, magnitude)
    ground = world.ground_height(poses[:, 0], poses[:, 1])
    z = max(
        float(world.ground_height(np.array(x), np.array(y))) + altitude, float(ground.max()) + MIN_CLEARANCE
    )
    poses[:, 2] = z
    return {"binary": binary, "magnitude": magnitude, "poses": poses, "start_pose": poses[0].tolist()}


def render_world(config: DroneDataConfig, staging: str, world_index: int) -> list[dict[str, Any]]:
    """Renders and writes the clips of one world into ``staging``; returns their rows (worker entry point)."""
    from ._render import FlightRenderer

    world = make_world(
        np.random.default_rng([config.seed, world_index, 0]),
        grid=config.grid,
        texture_size=config.texture_size,
        contrast=config.contrast,
    )
    first = world_index * config.clips_per_world
    indices = range(first, min(first + config.clips_per_world, config.clips))
    rows = []
    with FlightRenderer(world, config.height, config.width) as renderer:
        for clip_index in indices:
            plan = plan_clip(config, world, world_index, clip_index)
            frames = renderer.render(plan["poses"])
            name = clip_name(clip_index)
            write_video(Path(staging) / name, frames, FPS)
            rows.append(
                {
                    "index": clip_index,
                    "video": name,
                    "prompt": world.prompt,
                    "action": format_action_json(plan["binary"], plan["magnitude"]),
                    "world": world_index,
                    "palette": world.palette,
                    "start_pose": plan["start_pose"],
                }
            )
    return rows


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(
            f"--out: {out} already exists and is not empty (pass --overwrite to replace it)"
        )


def make_drone_dataset(
    config: DroneDataConfig, overwrite: bool = False, progress: bool = True
) -> DroneDataSummary:
    """Renders ``config.clips`` flights into ``config.out`` (see the module docstring); returns a summary."""
    from ._render import prepare_rendering

    out = Path(config.out)
    _check_out(out, overwrite)
    renderer = prepare_rendering()  # before any worker starts, so they inherit the backend
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    (staging / "videos").mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=config.clips, desc="render", unit="clip", disable=not progress)
    try:
        if config.workers == 1:
            for world_index in range(config.num_worlds):
                done = render_world(config, str(staging), world_index)
                rows += done
                bar.update(len(done))
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=config.workers, mp_context=context) as pool:
                futures = [
                    pool.submit(render_world, config, str(staging), w) for w in range(config.num_worlds)
                ]
                for future in as_completed(futures):
                    done = future.result()
                    rows += done
                    bar.update(len(done))
        bar.close()
        rows.sort(key=lambda row: row["index"])
        _write_metadata(staging, rows)
        _write_index(staging, config, rows, renderer)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return DroneDataSummary(out=out, clips=len(rows), worlds=config.num_worlds, renderer=renderer)


def _write_metadata(root: Path, rows: list[dict[str, Any]]) -> None:
    with open(root / METADATA, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "prompt", "action"])
        for row in rows:
            writer.writerow([row["video"], row["prompt"], row["action"]])


def _write_index(root: Path, config: DroneDataConfig, rows: list[dict[str, Any]], renderer: str) -> None:
    settings = asdict(config)
    settings.pop("out")
    settings.pop("workers")  # does not change the data
    index = {
        "format": DATA_FORMAT,
        "version": 1,
        "settings": settings,
        "fps": FPS,
        "num_action_steps": config.num_steps,
        "actions": list(DRONE_ACTIONS),
        "action_magnitude_scale": list(DEFAULT_MAGNITUDE_SCALE),
        "units": {
            "forward, back, left, right": "kilometres per latent step (4 video frames)",
            "yaw_left, yaw_right, pitch_up, pitch_down": "radians per latent step (4 video frames)",
        },
        "camera": {"fovy_degrees": FOVY_DEGREES, "pose": "x, y, z (m), yaw, pitch (rad)"},
        "flight": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(FlightConfig()).items()},
        "renderer": renderer,
        "clips": [
            {"video": r["video"], "world": r["world"], "palette": r["palette"], "start_pose": r["start_pose"]}
            for r in rows
        ],
    }
    (root / DATA_INDEX).write_text(json.dumps(index, indent=1))


def read_drone_index(root: str | os.PathLike) -> dict[str, Any]:
    """The ``drone_data.json`` of a dataset written by :func:`make_drone_dataset`."""
    path = Path(root) / DATA_INDEX
    if not path.is_file():
        raise FileNotFoundError(
            f"--dataset: {path} does not exist (write the dataset with `kinema-wm make-drone-data`)"
        )
    index = json.loads(path.read_text())
    if index.get("format") != DATA_FORMAT:
        raise ValueError(f"--dataset: {path} is not a kinema drone-flight index")
    return index
