"""Scripted demonstrations of the docking task, written as kinema.robot_data policy episodes.

Each episode: ``/observations/qpos`` (T, 2) the agent's (x, y) before each step, ``/observations/qvel`` (T, 2),
``/observations/images/top`` (T, S, S, 3), ``/observations/environment_state`` (T, 4) (dock, wall centre),
``/action`` (T, 2) the position each step moves to; attributes sim, fps, task "dock", seed, side, speed. So
ACT's and the hybrid's training loops read them like ALOHA recordings. Episodes come in pairs: episode 2k goes
around the left of scene k's wall, episode 2k + 1 around the right of the same scene.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import write_json_atomic
from ._env import CAMERA, DEFAULT_IMAGE_SIZE
from ._expert import expert_path, expert_style
from ._scene import SIDES, collides, docked, move, render, sample_scenes

TASK = "dock"
FPS = 10.0
MANIFEST = "recording.json"
_FORMAT = "kinema-dock-recording"


@dataclass
class DockRecording:
    """What :func:`record_episodes` wrote: ``files``, the ``seeds`` kept, each episode's ``sides``, and the seeds
    whose scripted rollout failed (expected: none)."""

    out: str
    files: list[str]
    seeds: list[int]
    sides: list[str]
    failed_seeds: list[int] = field(default_factory=list)

    def describe(self) -> str:
        left = self.sides.count("left")
        return (
            f"{len(self.files)} dock episodes in {self.out} ({left} left, {len(self.sides) - left} right; "
            f"{len(self.failed_seeds)} scripted failures skipped)"
        )


def prepare_recording_folder(out: str | os.PathLike, overwrite: bool) -> Path:
    """``out`` created; a recording already there (episodes or manifest) is refused unless ``overwrite``, which
    deletes its episodes and manifest (other files stay)."""
    out = Path(out)
    if (out / MANIFEST).exists() or any(out.glob("episode_*.hdf5")):
        if not overwrite:
            raise FileExistsError(
                f"{out} already holds a recording; pass overwrite=True (--overwrite) to replace it"
            )
        for old in out.glob("episode_*.hdf5"):
            old.unlink()
        (out / MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_episode(path: Path, episode: dict, **attrs) -> None:
    """One scripted episode (qpos, qvel, action, images, environment_state) as a policy episode file, with the
    attributes sim, fps and ``attrs`` (task, seed, ...)."""
    from kinema.robot_data import write_policy_episode

    write_policy_episode(
        path,
        qpos=episode["qpos"],
        qvel=episode["qvel"],
        action=episode["action"],
        images=episode["images"],
        environment_state=episode["environment_state"],
        attrs={"sim": True, "fps": FPS, **attrs},
    )


def expert_episode(seed: int, side: str, image_size: int = DEFAULT_IMAGE_SIZE) -> dict | None:
    """The scripted episode of scene ``seed`` around ``side`` as arrays (qpos (T, 2), qvel (T, 2), action
    (T, 2), images {"top": (T, S, S, 3)}, environment_state (T, 4), side, speed), or None when the replayed
    rollout touches the wall or misses the dock."""
    scenes = sample_scenes([seed])
    speed = expert_style(seed, side)
    path = expert_path(scenes, 0, side, speed)  # (T + 1, 2)
    actions = path[1:]
    positions = [scenes.start.copy()]
    for action in actions:  # replay through the dynamics, as a policy's actions would be
        positions.append(move(positions[-1], action[None]))
    positions = np.concatenate(positions)  # (T + 1, 2)
    repeated = sample_scenes(np.full(len(positions), seed))
    if collides(positions, repeated).any() or not docked(positions[-1:], scenes)[0]:
        return None
    observed = positions[:-1]
    return {
        "qpos": observed.astype(np.float32),
        "qvel": np.diff(positions, axis=0, prepend=positions[:1])[:-1].astype(np.float32),
        "action": actions.astype(np.float32),
        "images": {CAMERA: render(observed, repeated.take(np.arange(len(observed))), image_size)},
        "environment_state": np.repeat(scenes.environment_state(), len(observed), axis=0),
        "side": side,
        "speed": speed,
    }


def record_episodes(
    out: str | os.PathLike,
    episodes: int,
    *,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    overwrite: bool = False,
    progress: bool = True,
) -> DockRecording:
    """Writes ``episodes`` scripted demonstrations to ``out/episode_<i>.hdf5`` and ``out/recording.json`` last:
    scenes ``seed``, ``seed + 1``, ... (a scene is skipped when either side's rollout fails), each scene
    demonstrated on the left (episode 2k) then on the right (episode 2k + 1).

    A folder that already holds a recording is refused unless ``overwrite`` (its episodes and manifest are
    replaced; other files stay)."""
    from tqdm import tqdm

    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes: expected an integer >= 1, got {episodes!r}")
    out = prepare_recording_folder(out, overwrite)
    files, seeds, sides, failed = [], [], [], []
    candidate = seed
    bar = tqdm(total=episodes, desc="record dock demos", unit="episode", disable=not progress)
    while len(files) < episodes:
        pair = [expert_episode(candidate, side, image_size) for side in SIDES]
        if any(
            episode is None for episode in pair
        ):  # keep scenes whose both sides dock: the modes stay balanced
            failed.append(candidate)
            pair = []
        for episode in pair:
            if len(files) == episodes:
                break
            path = out / f"episode_{len(files)}.hdf5"
            write_episode(
                path, episode, task=TASK, seed=candidate, side=episode["side"], speed=episode["speed"]
            )
            files.append(str(path))
            seeds.append(candidate)
            sides.append(episode["side"])
            bar.update(1)
        candidate += 1
        if len(failed) > 10 * episodes:
            bar.close()
            raise RuntimeError(
                f"the scripted expert failed on {len(failed)} scenes from {seed}: {failed[:10]}"
            )
    bar.close()
    recording = DockRecording(str(out), files, seeds, sides, failed)
    write_json_atomic(
        out / MANIFEST,
        {
            "format": _FORMAT,
            "version": 1,
            "task": TASK,
            "episodes": episodes,
            "seed": seed,
            "image_size": image_size,
            "seeds": seeds,
            "sides": sides,
            "failed_seeds": failed,
        },
    )
    return recording


def read_recording(folder: str | os.PathLike) -> dict:
    """The validated ``recording.json`` of a dock recording folder."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: missing (not a dock recording; make one with `kinema-hybrid record-dock`)"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
        raise ValueError(f'{path}: expected a JSON object with "format": "{_FORMAT}"')
    return payload
