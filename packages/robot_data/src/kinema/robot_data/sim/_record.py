"""Scripted demonstrations: end-effector rollout -> joint trajectory -> joint-space replay -> episode file.

One attempt per seed: the scripted policy drives the grippers through mocap in the end-effector scene; the
joint positions it produces (with the commanded, not the measured, gripper openings) become the 14-D actions;
they are replayed in the joint-space scene from the same object poses, which renders the cameras; the
attempt is kept only if the replay reaches reward 4. Episode i of a recording is the i-th successful seed
in the order S, S+1, S+2, ..., so the result depends on the seed, never on the number of workers or on
which worker finished first.

Attempts run in worker processes (one simulator each, ``spawn`` start), write complete files into
``<out>/.recording-partial/`` and are renamed to ``<out>/episode_<i>.hdf5`` once their index is known;
the manifest ``recording.json`` is written last. An interrupted recording leaves only complete episode
files (the partial folder is removed), and a folder that already holds a recording is refused unless
``overwrite`` is set, so two recordings never mix.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ._io import PARTIAL_DIR, RECORDING_MANIFEST, recording_files, write_json_atomic
from ._rendering import configure_rendering, require_sim_extra
from ._tasks import (
    DEFAULT_CAMERAS,
    DEFAULT_EPISODE_LENGTH,
    DEFAULT_IMAGE_SIZE,
    FPS,
    MAX_REWARD,
    check_image_size,
    check_render_quality,
    get_task,
    sample_object_poses,
)


class RecordingError(RuntimeError):
    """A recording could not produce the episodes asked for (the message says why and what was kept)."""


@dataclass(frozen=True)
class RecordConfig:
    """What every attempt of one recording shares."""

    task: str
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    episode_length: int = DEFAULT_EPISODE_LENGTH
    noise_scale: float = 0.0
    render_quality: str = "full"


@dataclass(frozen=True)
class Attempt:
    """One seed's outcome: max reward in the end-effector rollout and in the joint-space replay."""

    seed: int
    scripted_reward: int
    replay_reward: int
    path: str | None = None  # the complete episode file in the partial folder, when the replay succeeded
    error: str | None = None  # a worker's traceback

    @property
    def success(self) -> bool:
        return self.error is None and self.replay_reward >= MAX_REWARD


def scripted_rollout(ee_env, config: RecordConfig, seed: int, *, pick_object: int = 0):
    """Runs the scripted policy in the end-effector scene of episode ``seed``.

    Returns:
        actions: (T, 14) joint-space actions, T = episode_length: action t is the joint state before
            end-effector step t, with the gripper entries set to the commanded openings.
        max_reward: the best reward stage the end-effector rollout reached.
        object_poses: (num_objects, 7) the scene's initial object poses.
    """
    from ._env import joint_targets
    from ._scripted import make_scripted_policy

    poses = sample_object_poses(config.task, seed)
    observation = ee_env.reset(poses)
    policy = make_scripted_policy(
        config.task,
        observation["mocap_pose_left"],
        observation["mocap_pose_right"],
        poses,
        episode_length=config.episode_length,
        noise_scale=config.noise_scale,
        seed=seed,
        pick_object=pick_object,
    )
    actions = np.empty((config.episode_length, 14))
    max_reward = 0
    for t in range(config.episode_length):
        actions[t] = joint_targets(observation)
        observation, reward = ee_env.step(policy(t))
        max_reward = max(max_reward, reward)
    return actions, max_reward, poses


def replay(joint_env, seed: int, actions: np.ndarray, object_poses: np.ndarray) -> dict:
    """Replays ``actions`` (T, 14) in the joint-space scene from ``object_poses``.

    Returns the episode arrays: ``qpos`` / ``qvel`` (T, 14) and ``images`` {camera: (T, H, W, 3) uint8}
    observed before each action, ``environment_state`` (T, E), ``action`` (T, 14) and ``reward`` (T,) the
    stage reached after each action.
    """
    steps = len(actions)
    observation, _ = joint_env.reset(seed=seed, options={"object_poses": object_poses})
    qpos = np.empty((steps, 14))
    qvel = np.empty((steps, 14))
    environment_state = np.empty((steps, len(observation["environment_state"])))
    images = {
        camera: np.empty((steps, *image.shape), dtype=np.uint8)
        for camera, image in observation["images"].items()
    }
    rewards = np.empty(steps, dtype=np.int64)
    for t in range(steps):
        qpos[t] = observation["qpos"]
        qvel[t] = observation["qvel"]
        environment_state[t] = observation["environment_state"]
        for camera, image in observation["images"].items():
            images[camera][t] = image
        observation, reward, _, _, _ = joint_env.step(actions[t])
        rewards[t] = int(reward)
    return {
        "qpos": qpos,
        "qvel": qvel,
        "images": images,
        "environment_state": environment_state,
        "action": np.asarray(actions, dtype=np.float64),
        "reward": rewards,
    }


_ENVS: dict[RecordConfig, tuple] = {}  # one pair of scenes per process and configuration


def _environments(config: RecordConfig):
    if config not in _ENVS:
        from ._env import AlohaSimEnv, EndEffectorEnv

        ee_env = EndEffectorEnv(config.task)  # renders nothing: only the replay's images are kept
        joint_env = AlohaSimEnv(
            config.task,
            image_size=config.image_size,
            cameras=config.cameras,
            episode_length=config.episode_length,
            terminate_on_success=False,
            render_quality=config.render_quality,
        )
        _ENVS[config] = (ee_env, joint_env)
    return _ENVS[config]


def _episode_attrs(config: RecordConfig, seed: int, scripted_reward: int, replay_reward: int) -> dict:
    return {
        "sim": True,
        "fps": FPS,
        "task": config.task,
        "seed": int(seed),
        "cameras": ",".join(config.cameras),
        "episode_length": int(config.episode_length),
        "noise_scale": float(config.noise_scale),
        "render_quality": config.render_quality,
        "scripted_max_reward": int(scripted_reward),
        "replay_max_reward": int(replay_reward),
        "source": "kinema.robot_data.sim scripted demonstration",
    }


def record_attempt(config: RecordConfig, seed: int, partial_dir: str | None) -> Attempt:
    """One seed: rollout, replay, and (if the replay succeeds and ``partial_dir`` is given) its file."""
    try:
        ee_env, joint_env = _environments(config)
        actions, scripted_reward, poses = scripted_rollout(ee_env, config, seed)
        episode = replay(joint_env, seed, actions, poses)
        replay_reward = int(episode["reward"].max())
        path = None
        if replay_reward >= MAX_REWARD and partial_dir is not None:
            import kinema.robot_data as robot_data

            target = Path(partial_dir) / f"seed_{seed}.hdf5"
            robot_data.write_policy_episode(
                target,
                qpos=episode["qpos"],
                qvel=episode["qvel"],
                action=episode["action"],
                images=episode["images"],
                environment_state=episode["environment_state"],
                attrs=_episode_attrs(config, seed, scripted_reward, replay_reward),
            )
            path = str(target)
        return Attempt(seed, int(scripted_reward), replay_reward, path)
    except Exception:
        return Attempt(seed, 0, 0, None, traceback.format_exc())


@dataclass
class RecordingSummary:
    """What a recording produced; ``to_dict()`` is the manifest written beside the episodes."""

    task: str
    out_dir: str
    episodes: list[str]
    seeds: list[int]
    attempts: int
    scripted_successes: int
    replay_successes: int
    failed_seeds: dict[int, dict] = field(default_factory=dict)
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE
    cameras: tuple[str, ...] = DEFAULT_CAMERAS
    episode_length: int = DEFAULT_EPISODE_LENGTH
    noise_scale: float = 0.0
    render_quality: str = "full"
    seed: int = 0
    workers: int = 1
    render_backend: str = ""
    seconds: float = 0.0

    def describe(self) -> str:
        lines = [
            f"{self.task}: wrote {len(self.episodes)} episodes to {self.out_dir} in {self.seconds:.1f} s",
            f"  scripted rollouts: {self.scripted_successes}/{self.attempts} succeeded in the end-effector scene, "
            f"{self.replay_successes}/{self.attempts} in joint-space replay (kept: first {len(self.episodes)} "
            f"successful seeds from {self.seed})",
        ]
        if self.failed_seeds:
            failed = ", ".join(
                f"{s} (replay reached {v['replay_stage']})" for s, v in self.failed_seeds.items()
            )
            lines.append(f"  failed seeds: {failed}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """The manifest: episodes by file name (the folder can move), without the absolute out_dir."""
        payload = asdict(self)
        payload.pop("out_dir")
        payload["episodes"] = [Path(path).name for path in self.episodes]
        payload["failed_seeds"] = {str(k): v for k, v in self.failed_seeds.items()}
        return {"format": "kinema-sim-recording", "version": 1, "fps": FPS, **payload}


def _attempt_worker(connection) -> None:
    """Worker process: answers (config, seed, partial_dir) with an Attempt until it receives None."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    while True:
        message = connection.recv()
        if message is None:
            return
        connection.send(record_attempt(*message))


class _InlineRunner:
    """Runs attempts in this process (workers=1): same results, no process start-up."""

    def __init__(self):
        self._done: collections.deque[Attempt] = collections.deque()

    def submit(self, *args) -> None:
        self._done.append(record_attempt(*args))

    def next_result(self) -> Attempt:
        return self._done.popleft()

    def stop(self) -> None:
        self._done.clear()


class _ProcessRunner:
    """Runs attempts in ``workers`` spawned processes, one simulator each, one attempt at a time each."""

    def __init__(self, workers: int):
        context = multiprocessing.get_context("spawn")
        self._processes = []
        self._idle = []
        for _ in range(workers):
            parent, child = context.Pipe()
            process = context.Process(target=_attempt_worker, args=(child,), daemon=True)
            process.start()
            child.close()
            self._processes.append(process)
            self._idle.append(parent)
        self._busy: dict = {}  # connection -> seed

    def submit(self, *args) -> None:
        connection = self._idle.pop()
        connection.send(args)
        self._busy[connection] = args[1]

    def next_result(self) -> Attempt:
        while True:  # short waits keep Ctrl-C responsive
            ready = multiprocessing.connection.wait(list(self._busy), timeout=0.5)
            if ready:
                break
        connection = ready[0]
        seed = self._busy.pop(connection)
        try:
            attempt = connection.recv()
        except EOFError:
            return Attempt(seed, 0, 0, None, "the worker process died (see its output above)")
        self._idle.append(connection)
        return attempt

    def stop(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join()


def check_record_arguments(task, episodes, workers, seed, image_size, episode_length, noise_scale):
    """Validates the arguments of :func:`record_episodes`; a ValueError naming the bad one."""
    get_task(task)
    for name, value, low in (
        ("episodes", episodes, 1),
        ("workers", workers, 1),
        ("episode_length", episode_length, 2),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not noise_scale >= 0:
        raise ValueError(f"noise_scale must be >= 0 metres, got {noise_scale!r}")
    return check_image_size(image_size)


def record_episodes(
    task: str,
    episodes: int,
    out_dir: str | os.PathLike,
    *,
    workers: int = 1,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    cameras: tuple[str, ...] = DEFAULT_CAMERAS,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    noise_scale: float = 0.0,
    render_quality: str = "full",
    overwrite: bool = False,
    max_attempts: int | None = None,
    progress: bool = True,
) -> RecordingSummary:
    """Records ``episodes`` successful scripted demonstrations of ``task`` into ``out_dir``.

    Files: ``episode_0.hdf5`` ... (the policy episode format of ``write_policy_episode``: qpos / qvel
    (T, 14), images/<camera> (T, H, W, 3) uint8, action (T, 14), environment_state (T, E), attributes sim,
    fps, task, seed, ...) and ``recording.json`` (this summary). Seeds ``seed, seed + 1, ...`` are tried in
    order until ``episodes`` replays succeed or ``max_attempts`` (default ``2 * episodes + 10``) seeds fail.
    ``render_quality`` "fast" drops shadows and multisampling (much faster without a GPU; see RENDER_QUALITIES).

    Raises:
        ValueError: a bad argument (unknown task, non-positive count, bad image size).
        FileExistsError: ``out_dir`` already holds a recording and ``overwrite`` is False.
        RenderBackendError: no rendering backend (before any work starts).
        RecordingError: a worker failed, or too few seeds succeeded (the episodes written so far are kept).
    """
    from tqdm import tqdm

    image_size = check_record_arguments(
        task, episodes, workers, seed, image_size, episode_length, noise_scale
    )
    config = RecordConfig(
        task,
        image_size,
        tuple(cameras),
        int(episode_length),
        float(noise_scale),
        check_render_quality(render_quality),
    )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"out_dir {out_dir} exists and is not a directory")
    existing = recording_files(out_dir)
    if existing and not overwrite:
        raise FileExistsError(
            f"out_dir {out_dir} already holds a recording ({len(existing)} files such as {existing[0].name}); "
            "pass overwrite=True (--overwrite) to replace it: kinema never mixes two recordings in one folder"
        )
    max_attempts = int(max_attempts) if max_attempts is not None else 2 * episodes + 10
    require_sim_extra()
    backend = configure_rendering()  # a missing backend fails here, before anything is written
    for path in existing:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    partial = out_dir / PARTIAL_DIR
    partial.mkdir(parents=True)

    started = time.perf_counter()
    runner = _InlineRunner() if workers == 1 else _ProcessRunner(workers)
    outcomes: dict[int, Attempt] = {}
    written: list[str] = []
    next_seed, finalize_seed, in_flight = seed, seed, 0
    bar = tqdm(total=episodes, desc=f"record-sim {task}", unit="episode", disable=not progress)
    try:
        while len(written) < episodes:
            known_successes = sum(attempt.success for attempt in outcomes.values())
            while (
                in_flight < workers
                and known_successes + in_flight < episodes
                and next_seed - seed < max_attempts
            ):
                runner.submit(config, next_seed, str(partial))
                next_seed += 1
                in_flight += 1
            if in_flight == 0:
                raise RecordingError(
                    f"only {len(written)} of {episodes} {task} demonstrations succeeded in {max_attempts} seeds "
                    f"({seed}..{seed + max_attempts - 1}); the {len(written)} episodes written are in {out_dir}"
                )
            attempt = runner.next_result()
            in_flight -= 1
            if attempt.error is not None:
                raise RecordingError(
                    f"recording seed {attempt.seed} of {task} failed in a worker:\n{attempt.error}"
                )
            outcomes[attempt.seed] = attempt
            while finalize_seed in outcomes and len(written) < episodes:
                done = outcomes[finalize_seed]
                if done.success:
                    target = out_dir / f"episode_{len(written)}.hdf5"
                    os.replace(done.path, target)
                    written.append(str(target))
                    bar.update(1)
                finalize_seed += 1
            failures = sum(not attempt.success for attempt in outcomes.values())
            bar.set_postfix(attempts=len(outcomes), failed=failures)
    finally:
        bar.close()
        runner.stop()
        shutil.rmtree(partial, ignore_errors=True)

    spec = get_task(task)
    considered = [outcomes[s] for s in range(seed, finalize_seed)]
    summary = RecordingSummary(
        task=task,
        out_dir=str(out_dir),
        episodes=written,
        seeds=[a.seed for a in considered if a.success],
        attempts=len(considered),
        scripted_successes=sum(a.scripted_reward >= MAX_REWARD for a in considered),
        replay_successes=sum(a.success for a in considered),
        failed_seeds={
            a.seed: {
                "scripted_stage": spec.stage_name(a.scripted_reward),
                "replay_stage": spec.stage_name(a.replay_reward),
            }
            for a in considered
            if not a.success
        },
        image_size=image_size,
        cameras=config.cameras,
        episode_length=config.episode_length,
        noise_scale=config.noise_scale,
        render_quality=config.render_quality,
        seed=seed,
        workers=workers,
        render_backend=backend.describe(),
        seconds=round(time.perf_counter() - started, 2),
    )
    write_json_atomic(out_dir / RECORDING_MANIFEST, summary.to_dict())
    return summary
