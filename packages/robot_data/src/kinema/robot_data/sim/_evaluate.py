"""The evaluation harness shared by act_policy and hybrid_policy: a policy against simulated episodes.

N = min(workers, episodes) joint-space environments run in worker processes (one simulator each, ``spawn``
start; in this process when workers == 1). Every step the policy is queried once, in this process, on the
batch of the N current observations (the protocol is in ``_policy``); each environment then steps its own
action. A row that finishes its episode (success with ``stop_on_success``, or ``episode_length`` steps) starts
the next seed at once with ``step`` 0, until every seed is done.

Seeds: evaluation seed i defaults to ``EVAL_SEED_START + i`` (100000 + i), recording to ``0 + i``; the scene
of a seed is ``sample_object_poses(task, seed)``, so the two never share a scene unless asked to, and
``exclude_seeds`` (e.g. a recording's ``seeds``) turns any overlap into an error.
"""

from __future__ import annotations

import collections
import json
import multiprocessing
import signal
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ._io import write_json_atomic
from ._policy import check_policy, validate_actions
from ._rendering import configure_rendering, require_sim_extra
from ._tasks import (
    DEFAULT_CAMERAS,
    DEFAULT_EPISODE_LENGTH,
    DEFAULT_IMAGE_SIZE,
    EVAL_SEED_START,
    FPS,
    MAX_REWARD,
    check_image_size,
    check_render_quality,
    get_task,
)

SUMMARY_FILE = "eval_summary.json"
EPISODES_FILE = "eval_episodes.jsonl"


class EvaluationError(RuntimeError):
    """An environment worker failed during evaluation (the message carries its traceback)."""


def _env_worker(connection, env_kwargs: dict) -> None:
    """Worker process: one AlohaSimEnv answering ("reset", seed) / ("step", action) / ("close", None)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the workers
    try:
        from ._env import AlohaSimEnv

        env = AlohaSimEnv(**env_kwargs)
        connection.send(("ok", None))
    except Exception:
        connection.send(("error", traceback.format_exc()))
        return
    while True:
        command, payload = connection.recv()
        if command == "close":
            env.close()
            connection.send(("ok", None))
            return
        try:
            result = env.reset(seed=payload) if command == "reset" else env.step(payload)
            connection.send(("ok", result))
        except Exception:
            connection.send(("error", traceback.format_exc()))


class _ProcessEnvs:
    """N environments in spawned processes, driven through pipes."""

    def __init__(self, num_envs: int, env_kwargs: dict):
        context = multiprocessing.get_context("spawn")
        self._connections = []
        self._processes = []
        for _ in range(num_envs):
            parent, child = context.Pipe()
            process = context.Process(target=_env_worker, args=(child, env_kwargs), daemon=True)
            process.start()
            child.close()
            self._connections.append(parent)
            self._processes.append(process)
        try:
            for index in range(num_envs):
                self.receive(index)  # "ok" once the environment is built
        except BaseException:
            self.close()
            raise

    def send(self, index: int, command: str, payload) -> None:
        self._connections[index].send((command, payload))

    def receive(self, index: int):
        try:
            status, result = self._connections[index].recv()
        except EOFError:
            exit_code = self._processes[index].exitcode
            raise EvaluationError(f"environment worker {index} died (exit code {exit_code})") from None
        if status == "error":
            raise EvaluationError(f"environment worker {index} failed:\n{result}")
        return result

    def close(self) -> None:
        for index, connection in enumerate(self._connections):
            try:
                if self._processes[index].is_alive():
                    connection.send(("close", None))
                    if connection.poll(5):
                        connection.recv()
            except (BrokenPipeError, EOFError, OSError):
                pass
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()


class _LocalEnvs:
    """One environment in this process, with the same send / receive interface."""

    def __init__(self, env_kwargs: dict):
        from ._env import AlohaSimEnv

        self._env = AlohaSimEnv(**env_kwargs)
        self._result = None

    def send(self, index: int, command: str, payload) -> None:
        self._result = self._env.reset(seed=payload) if command == "reset" else self._env.step(payload)

    def receive(self, index: int):
        return self._result

    def close(self) -> None:
        self._env.close()


@dataclass
class EvalResult:
    """Outcome of :func:`evaluate`.

    ``success_rate``: fraction of episodes that reached reward 4. ``stage_rates``: per reward stage name
    (transfer-cube: touched, lifted, attempted_transfer, transferred), the fraction of episodes whose best
    stage reached it. ``max_reward_counts``: episodes per best stage 0..4. ``episodes``: one JSON-ready
    record per episode (episode, seed, success, max_reward, stage, steps, first_success_step, return,
    environment_state, video). ``videos``: mp4 paths of the first episodes.
    """

    task: str
    success_rate: float
    stage_rates: dict[str, float]
    max_reward_counts: dict[str, int]
    episodes: list[dict]
    videos: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Everything but the per-episode records, JSON-ready."""
        return {
            "format": "kinema-sim-eval",
            "version": 1,
            "task": self.task,
            "episodes": len(self.episodes),
            "success_rate": self.success_rate,
            "stage_rates": self.stage_rates,
            "max_reward_counts": self.max_reward_counts,
            "videos": self.videos,
            **self.settings,
        }

    def describe(self) -> str:
        stages = ", ".join(f"{name} {rate:.0%}" for name, rate in self.stage_rates.items())
        return f"{self.task}: success {self.success_rate:.1%} over {len(self.episodes)} episodes ({stages})"


def _batch(observations: list[dict], steps: np.ndarray, active: np.ndarray) -> dict:
    """Stacks per-environment observations into the policy's batch (see the protocol in ``_policy``)."""
    cameras = observations[0]["images"].keys()
    return {
        "qpos": np.stack([o["qpos"] for o in observations]).astype(np.float32),  # (N, 14)
        "qvel": np.stack([o["qvel"] for o in observations]).astype(np.float32),  # (N, 14)
        "environment_state": np.stack([o["environment_state"] for o in observations]).astype(
            np.float32
        ),  # (N, E)
        "images": {c: np.stack([o["images"][c] for o in observations]) for c in cameras},  # (N, H, W, 3)
        "step": steps.copy(),  # (N,)
        "active": active.copy(),  # (N,)
    }


def _check_seeds(seeds, exclude_seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must hold at least one seed")
    for value in seeds:
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 0:
            raise ValueError(f"seeds must be non-negative integers, got {value!r}")
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise ValueError("seeds must be distinct (each is one scene)")
    if exclude_seeds is not None:
        overlap = sorted(set(seeds) & {int(s) for s in exclude_seeds})
        if overlap:
            shown = ", ".join(map(str, overlap[:10])) + (" ..." if len(overlap) > 10 else "")
            raise ValueError(
                f"{len(overlap)} evaluation seeds are also training seeds ({shown}): evaluate on disjoint seeds, "
                f"e.g. the default range from {EVAL_SEED_START}"
            )
    return seeds


def evaluate(
    policy,
    task: str,
    *,
    episodes: int = 50,
    seed: int = EVAL_SEED_START,
    seeds=None,
    workers: int = 1,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    cameras: tuple[str, ...] = DEFAULT_CAMERAS,
    episode_length: int = DEFAULT_EPISODE_LENGTH,
    render_quality: str = "full",
    stop_on_success: bool = True,
    videos: int = 0,
    video_camera: str | None = None,
    out_dir: str | Path | None = None,
    exclude_seeds=None,
    progress: bool = True,
) -> EvalResult:
    """Runs ``policy`` on ``task`` for ``episodes`` seeds (``seed + i``, or the explicit ``seeds``).

    With ``out_dir``, writes ``eval_summary.json``, ``eval_episodes.jsonl`` (one record per line) and
    ``videos/episode_<k>_seed_<s>.mp4`` for the first ``videos`` episodes (``video_camera``, default the
    first camera, at the evaluation resolution, 50 fps). Use the ``render_quality`` the training data was
    recorded with.

    Raises:
        PolicyError: the policy lacks reset/act, or returns actions of the wrong shape or NaN (raised at the
            first step, before any episode completes).
        ValueError: bad arguments, or seeds that overlap ``exclude_seeds``.
        RenderBackendError: no rendering backend (before any work starts).
        EvaluationError: an environment worker failed.
    """
    from tqdm import tqdm

    check_policy(policy)
    spec = get_task(task)
    image_size = check_image_size(image_size)
    cameras = tuple(cameras)
    if not cameras:
        raise ValueError("cameras must name at least one camera, e.g. ('top',)")
    for name, value, low in (
        ("episodes", episodes, 1),
        ("workers", workers, 1),
        ("episode_length", episode_length, 1),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if seeds is None:
        if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        seeds = range(int(seed), int(seed) + int(episodes))
    seeds = _check_seeds(seeds, exclude_seeds)
    video_camera = video_camera or cameras[0]
    if video_camera not in cameras:
        raise ValueError(
            f"video_camera {video_camera!r} must be one of the evaluated cameras {list(cameras)}"
        )
    if videos < 0:
        raise ValueError(f"videos must be >= 0, got {videos}")
    if videos and out_dir is None:
        raise ValueError("videos need an out_dir to be written to")
    require_sim_extra()
    backend = configure_rendering()

    env_kwargs = {
        "task": task,
        "image_size": image_size,
        "cameras": cameras,
        "episode_length": int(episode_length),
        "terminate_on_success": bool(stop_on_success),
        "render_quality": check_render_quality(render_quality),
    }
    num_envs = min(int(workers), len(seeds))
    out_dir = None if out_dir is None else Path(out_dir)
    started = time.perf_counter()
    pending = collections.deque(enumerate(seeds))
    records: dict[int, dict] = {}
    video_paths: list[str] = []
    slots: list[dict | None] = [None] * num_envs
    observations: list[dict | None] = [None] * num_envs
    steps = np.zeros(num_envs, dtype=np.int64)
    active = np.zeros(num_envs, dtype=bool)
    bar = tqdm(total=len(seeds), desc=f"eval-sim {task}", unit="episode", disable=not progress)
    envs = _LocalEnvs(env_kwargs) if num_envs == 1 else _ProcessEnvs(num_envs, env_kwargs)

    def start(indices: list[int]) -> None:
        """Starts the next pending seed in each of ``indices`` (or deactivates the slot)."""
        started_now = []
        for index in indices:
            if not pending:
                active[index] = False
                continue
            episode, episode_seed = pending.popleft()
            envs.send(index, "reset", episode_seed)
            slots[index] = {
                "episode": episode,
                "seed": episode_seed,
                "max_reward": 0,
                "return": 0.0,
                "first_success_step": None,
                "frames": [] if episode < videos else None,
            }
            steps[index] = 0
            active[index] = True
            started_now.append(index)
        for index in started_now:
            observation, _ = envs.receive(index)
            observations[index] = observation
            slot = slots[index]
            slot["environment_state"] = [float(v) for v in observation["environment_state"]]
            if slot["frames"] is not None:
                slot["frames"].append(observation["images"][video_camera])

    def finish(index: int) -> None:
        slot = slots[index]
        record = {
            "episode": slot["episode"],
            "seed": slot["seed"],
            "success": slot["max_reward"] >= MAX_REWARD,
            "max_reward": int(slot["max_reward"]),
            "stage": spec.stage_name(slot["max_reward"]),
            "steps": int(steps[index]),
            "first_success_step": slot["first_success_step"],
            "return": float(slot["return"]),
            "environment_state": slot["environment_state"],
            "video": None,
        }
        if slot["frames"] is not None:
            from kinema.robot_data import write_video

            frames = np.stack(slot["frames"])  # (T + 1, H, W, 3)
            frames = np.pad(
                frames, ((0, 0), (0, frames.shape[1] % 2), (0, frames.shape[2] % 2), (0, 0))
            )  # even H, W
            name = f"episode_{slot['episode']:03d}_seed_{slot['seed']}.mp4"
            path = write_video(out_dir / "videos" / name, frames, FPS)
            record["video"] = str(Path("videos") / name)
            video_paths.append(str(path))
        records[slot["episode"]] = record
        bar.update(1)

    try:
        policy.reset(num_envs)
        start(list(range(num_envs)))
        while active.any():
            batch = _batch(observations, steps, active)
            actions = validate_actions(policy.act(batch), num_envs, active)  # (N, 14)
            running = np.flatnonzero(active).tolist()
            for index in running:
                envs.send(index, "step", actions[index])
            done = []
            for index in running:
                observation, reward, terminated, truncated, _ = envs.receive(index)
                observations[index] = observation
                steps[index] += 1
                slot = slots[index]
                slot["return"] += float(reward)
                slot["max_reward"] = max(slot["max_reward"], int(reward))
                if reward >= MAX_REWARD and slot["first_success_step"] is None:
                    slot["first_success_step"] = int(steps[index])
                if slot["frames"] is not None:
                    slot["frames"].append(observation["images"][video_camera])
                if terminated or truncated:
                    finish(index)
                    done.append(index)
            if done:
                start(done)
    finally:
        bar.close()
        envs.close()

    ordered = [records[k] for k in sorted(records)]
    best = np.array([r["max_reward"] for r in ordered])
    result = EvalResult(
        task=task,
        success_rate=float(np.mean(best >= MAX_REWARD)),
        stage_rates={name: float(np.mean(best >= k)) for k, name in enumerate(spec.stage_names, start=1)},
        max_reward_counts={str(k): int(np.sum(best == k)) for k in range(MAX_REWARD + 1)},
        episodes=ordered,
        videos=video_paths,
        settings={
            "seeds": seeds,
            "image_size": list(image_size),
            "cameras": list(cameras),
            "episode_length": int(episode_length),
            "stop_on_success": bool(stop_on_success),
            "render_quality": render_quality,
            "workers": num_envs,
            "render_backend": backend.describe(),
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    if out_dir is not None:
        write_json_atomic(out_dir / SUMMARY_FILE, result.summary())
        lines = "".join(json.dumps(record) + "\n" for record in ordered)
        temporary = out_dir / f".{EPISODES_FILE}.tmp"
        temporary.write_text(lines)
        temporary.replace(out_dir / EPISODES_FILE)
    return result
