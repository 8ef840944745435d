"""Benchmark: record N scripted ALOHA episodes, then evaluate a policy on N episodes (kinema.robot_data.sim).

Times the two things a user waits for: ``record_episodes`` (scripted end-effector rollout, joint-space
replay with rendering, HDF5 writing; parallel over --workers processes) and ``evaluate`` (N full-length
episodes in --workers environment processes, the policy queried once per step on the batch, in this
process). The evaluated policy replays episode 0's actions (a stand-in for a trained policy with no model
cost); episodes run to their full length (``stop_on_success=False``) so the time does not depend on how
well the policy does. Prints one JSON line with wall and CPU seconds per phase (CPU time includes the worker
processes; it is the steadier number on a shared machine) and the load average before and after.

    # 2-core CPU machine, software rendering:
    python benchmarks/sim_record_eval.py --episodes 10 --workers 2 --image-size 240 320
    # GPU machine, 16 cores, EGL (goal: each phase <= 300 s for 50 episodes at 480x640):
    MUJOCO_GL=egl python benchmarks/sim_record_eval.py --episodes 50 --workers 16 --image-size 480 640
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import tempfile
import time
from pathlib import Path

from kinema.robot_data.sim import TASK_NAMES, ReplayPolicy, evaluate, record_episodes

GOAL_SECONDS = 300.0  # issue 4: 50 episodes at 480x640 on 16 cores with a GPU, per phase


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished children (the worker processes)."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", choices=TASK_NAMES, default="transfer_cube")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--image-size", type=int, nargs=2, default=[240, 320], metavar=("H", "W"))
    parser.add_argument("--episode-length", type=int, default=400)
    parser.add_argument("--render-quality", choices=("full", "fast"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out", type=Path, help="keep the recording and evaluation here (default: a temporary folder)"
    )
    args = parser.parse_args()

    root = args.out or Path(tempfile.mkdtemp(prefix="kinema_sim_bench_"))
    common = {
        "image_size": tuple(args.image_size),
        "episode_length": args.episode_length,
        "render_quality": args.render_quality,
    }
    load_before = os.getloadavg()[0]
    try:
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        summary = record_episodes(
            args.task,
            args.episodes,
            root / "recording",
            workers=args.workers,
            seed=args.seed,
            overwrite=True,
            **common,
        )
        record_seconds = time.perf_counter() - started
        record_cpu_seconds = _cpu_seconds() - cpu_started

        policy = ReplayPolicy.from_episode(summary.episodes[0])
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        result = evaluate(
            policy,
            args.task,
            episodes=args.episodes,
            workers=args.workers,
            stop_on_success=False,
            out_dir=root / "eval",
            **common,
        )
        eval_seconds = time.perf_counter() - started
        eval_cpu_seconds = _cpu_seconds() - cpu_started
    finally:
        if args.out is None:
            shutil.rmtree(root, ignore_errors=True)

    steps = args.episodes * args.episode_length
    report = {
        "benchmark": "sim_record_eval",
        "task": args.task,
        "episodes": args.episodes,
        "workers": args.workers,
        "image_size": list(args.image_size),
        "episode_length": args.episode_length,
        "render_quality": args.render_quality,
        "record_seconds": round(record_seconds, 1),
        "record_cpu_seconds": round(record_cpu_seconds, 1),
        "record_attempts": summary.attempts,
        "record_scripted_successes": summary.replay_successes,
        "record_replay_steps_per_second": round(summary.attempts * args.episode_length / record_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "eval_cpu_seconds": round(eval_cpu_seconds, 1),
        "eval_steps_per_second": round(steps / eval_seconds, 1),
        "eval_success_rate_of_replayed_episode_0": result.success_rate,
        "goal_seconds_each": GOAL_SECONDS,
        "goal_met": record_seconds <= GOAL_SECONDS and eval_seconds <= GOAL_SECONDS,
        "render_backend": result.settings["render_backend"],
        "cpu_count": os.cpu_count(),
        "load_average_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "machine": f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
