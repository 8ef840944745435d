"""Benchmark and learning result for kinema.act_policy: scripted demos -> ACT training -> simulated evaluation.

One command on the GPU machine, run again until it says done; each run stays under --budget-minutes (default 9,
for machines lent in 10-minute pieces) and continues where the last one stopped:

    MUJOCO_GL=egl python benchmarks/act_train_eval.py --task transfer_cube --out .bench/act/transfer_cube
    # exit 3: more to do, run the same command again; exit 0: done, numbers in OUT/act_benchmark.json

Phases (state in OUT/bench_state.json; everything under OUT, which is git-ignored under .bench/):

1. record: --record-episodes scripted demonstrations (kinema.robot_data.sim.record_episodes) in parts of
   --record-part episodes (OUT/data/part_<k>, seeds from 1000 * k), so a recording never has to fit one piece;
   --data DIR uses an existing recording instead.
2. train: kinema.act_policy.train, time-bounded (--train-minutes of training over all sessions) and resumed from
   its checkpoint in each later run (OUT/run).
3. eval: kinema.robot_data.sim.evaluate on --eval-episodes seeds from 100000 (disjoint from the recording's), once
   per execution mode (chunked, temporal ensembling), with videos; the first video is copied to OUT/act_<task>.mp4.
4. latency: one chunk query at batch 1 (the policy path from a numpy observation to actions, and the model
   alone), eager fp32, eager bf16 and torch.compile(mode="reduce-overhead") (CUDA graphs), median of 50.

Report OUT/act_benchmark.json: success rate and stage distribution per execution mode, training samples/s,
training minutes and wall minutes to the checkpoint (data loading included, over all sessions), latency, the
settings, seeds, device and date. Issue 6's goals: >= 90% transfer-cube success from <= 10 minutes of H100
training; <= 3 ms per chunk query at batch 1.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from kinema.act_policy import ACTConfig, TrainConfig, load_policy, train
from kinema.act_policy._train import episode_files, latest_checkpoint

EXIT_DONE, EXIT_MORE = 0, 3
STATE_FILE = "bench_state.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--task", default="transfer_cube", choices=("transfer_cube", "insertion", "transfer_cube_confuser")
    )
    p.add_argument(
        "--out", type=Path, required=True, help="state, data, run, eval and report (e.g. .bench/act/NAME)"
    )
    p.add_argument("--budget-minutes", type=float, default=9.0, help="this invocation stops before this long")
    p.add_argument(
        "--export", type=Path, help="copy the report, video, logs and eval summaries here (e.g. $OUT)"
    )
    data = p.add_argument_group("demonstrations")
    data.add_argument("--data", type=Path, help="an existing record-sim folder (skips recording)")
    data.add_argument("--record-episodes", type=int, default=52, help="52 = 50 for training + 2 for val loss")
    data.add_argument(
        "--record-part", type=int, default=52, help="episodes recorded per part (50: ~1 min on 16 cores)"
    )
    data.add_argument("--record-workers", type=int, default=os.cpu_count() or 1)
    data.add_argument("--image-size", type=int, nargs=2, default=[480, 640], metavar=("H", "W"))
    data.add_argument("--render-quality", choices=("full", "fast"), default="full")
    train_ = p.add_argument_group("training")
    train_.add_argument(
        "--train-minutes", type=float, default=10.0, help="training-time budget (all sessions)"
    )
    train_.add_argument("--max-steps", type=int, default=None)
    train_.add_argument("--batch-size", type=int, default=64)
    train_.add_argument("--lr", type=float, default=1e-4, help="ACT's 1e-5 at batch 8, scaled for batch 64")
    train_.add_argument(
        "--lr-backbone", type=float, default=1e-4, help="= lr: the backbone starts from scratch"
    )
    train_.add_argument("--warmup-steps", type=int, default=500)
    train_.add_argument("--lr-schedule", choices=("constant", "cosine"), default="cosine")
    train_.add_argument("--val-fraction", type=float, default=0.04)
    train_.add_argument(
        "--model-image-size", type=int, nargs=2, metavar=("H", "W"), help="resize for the model"
    )
    train_.add_argument("--chunk-size", type=int, default=100)
    train_.add_argument("--coordinates", action="store_true", help="give environment_state to the model")
    train_.add_argument(
        "--remedy", action="append", default=[], help="coordinate remedies (imply --coordinates)"
    )
    train_.add_argument(
        "--pretrained-backbone", type=Path, help="a local torchvision resnet18 file, if you have one"
    )
    train_.add_argument("--compile", action="store_true", help="torch.compile the training step")
    train_.add_argument("--seed", type=int, default=0)
    evaluation = p.add_argument_group("evaluation")
    evaluation.add_argument("--eval-episodes", type=int, default=50)
    evaluation.add_argument("--eval-workers", type=int, default=os.cpu_count() or 1)
    evaluation.add_argument(
        "--modes", nargs="+", default=["chunked", "ensemble"], choices=("chunked", "ensemble"),
        help="execution modes to evaluate (ensemble: temporal ensembling m = 0.01)",
    )  # fmt: skip
    evaluation.add_argument("--videos", type=int, default=2)
    evaluation.add_argument(
        "--eval-minutes-needed", type=float, default=4.0, help="start an eval only with this left"
    )
    evaluation.add_argument(
        "--record-minutes-needed", type=float, default=5.0, help="start a part only with this left"
    )
    evaluation.add_argument("--skip-latency", action="store_true")
    return p


class Clock:
    def __init__(self, budget_minutes: float):
        self.start = time.perf_counter()
        self.budget = budget_minutes * 60

    def left_minutes(self) -> float:
        return (self.budget - (time.perf_counter() - self.start)) / 60


def _load_state(out: Path) -> dict:
    path = out / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else {"phases": {}, "commands": []}


def _save_state(out: Path, state: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{STATE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, out / STATE_FILE)


# ---------------------------------------------------------------------------------------------------- phases


def record(args, out: Path, state: dict, clock: Clock) -> list[Path] | None:
    """The recording folders (None: not finished within this run)."""
    from kinema.robot_data.sim import record_episodes

    if args.data is not None:
        return [args.data]
    parts = -(-args.record_episodes // args.record_part)
    folders = []
    for k in range(parts):
        folder = out / "data" / f"part_{k}"
        folders.append(folder)
        if (folder / "recording.json").is_file():
            continue
        if clock.left_minutes() < args.record_minutes_needed:
            return None
        count = min(args.record_part, args.record_episodes - k * args.record_part)
        started = time.perf_counter()
        summary = record_episodes(
            args.task, count, folder, workers=args.record_workers, seed=1000 * k, image_size=tuple(args.image_size),
            render_quality=args.render_quality, overwrite=True,
        )  # fmt: skip
        state["phases"].setdefault("record", []).append(
            {"part": k, "episodes": count, "seconds": round(time.perf_counter() - started, 1),
             "attempts": summary.attempts, "seeds": summary.seeds}
        )  # fmt: skip
        _save_state(out, state)
    return folders


def train_phase(args, out: Path, state: dict, clock: Clock, folders: list[Path]) -> bool:
    run = out / "run"
    result_path = run / "train_result.json"
    if result_path.is_file() and json.loads(result_path.read_text()).get("complete"):
        return True
    left = clock.left_minutes() - 0.5
    if left < 1.0:
        return False
    files = [f for folder in folders for f in episode_files(folder)]
    from kinema.robot_data import check_policy_episode

    info = check_policy_episode(files[0])
    model = ACTConfig(
        state_dim=info.qpos_dim,
        action_dim=info.action_dim,
        environment_state_dim=info.environment_state_dim if (args.coordinates or args.remedy) else 0,
        chunk_size=args.chunk_size,
        n_action_steps=args.chunk_size,
        image_size=tuple(args.model_image_size) if args.model_image_size else None,
        pretrained_backbone=str(args.pretrained_backbone) if args.pretrained_backbone else None,
    ).with_remedies(*args.remedy)
    config = TrainConfig(
        data=[str(f) for f in files],
        out_dir=str(run),
        batch_size=args.batch_size,
        lr=args.lr,
        lr_backbone=args.lr_backbone,
        lr_schedule=args.lr_schedule,
        warmup_steps=args.warmup_steps,
        max_steps=args.max_steps,
        max_minutes=args.train_minutes,
        session_minutes=left,
        val_fraction=args.val_fraction,
        val_every=2000,
        save_every=2000,
        log_every=100,
        seed=args.seed,
        compile=args.compile,
        resume=latest_checkpoint(run) is not None,
        progress=sys.stderr.isatty(),
    )
    result = train(model, config)
    state["phases"].setdefault("train_sessions", []).append(result.to_dict())
    _save_state(out, state)
    return result.complete


def eval_phase(args, out: Path, state: dict, clock: Clock, folders: list[Path]) -> bool:
    from kinema.robot_data.sim import evaluate

    exclude = []
    for folder in folders:
        manifest = folder / "recording.json"
        if manifest.is_file():
            exclude += json.loads(manifest.read_text()).get("seeds", [])
    videos = args.videos
    if videos and importlib.util.find_spec("av") is None:
        print("PyAV is not installed here: evaluating without videos", flush=True)
        videos = 0
    for mode in args.modes:
        done = state["phases"].setdefault("eval", {})
        if mode in done:
            continue
        if clock.left_minutes() < args.eval_minutes_needed:
            return False
        options = (
            {"temporal_ensemble_coeff": 0.01} if mode == "ensemble" else {"temporal_ensemble_coeff": None}
        )
        policy = load_policy(out / "run", **options)
        started = time.perf_counter()
        result = evaluate(
            policy, args.task, episodes=args.eval_episodes, workers=args.eval_workers,
            image_size=tuple(args.image_size), cameras=tuple(policy.model.config.camera_names),
            render_quality=args.render_quality, videos=videos, out_dir=out / f"eval_{mode}",
            exclude_seeds=exclude or None,
        )  # fmt: skip
        done[mode] = {
            **result.summary(),
            "execution": mode,
            "eval_seconds": round(time.perf_counter() - started, 1),
            "policy_queries": policy.queries,
        }
        if result.videos and not (out / f"act_{args.task}.mp4").exists():
            success = [r["video"] for r in result.episodes if r["video"] and r["success"]]
            source = out / f"eval_{mode}" / (success[0] if success else result.episodes[0]["video"])
            shutil.copyfile(source, out / f"act_{args.task}.mp4")
        _save_state(out, state)
        print(f"eval {mode}: {result.describe()}", flush=True)
    return True


def _median_ms(fn, repeats: int = 50, warmup: int = 5) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def latency_phase(args, out: Path, state: dict) -> None:
    """One chunk query at batch 1: the policy path (numpy observation -> chunk) and the model alone."""
    if "latency" in state["phases"]:
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {}
    for name, options in (
        ("eager_fp32", {"compile": False}),
        ("eager_bf16", {"compile": False}),
        ("compiled_reduce_overhead_bf16", {"compile": "reduce-overhead"}),
    ):
        policy = load_policy(out / "run", device=device, temporal_ensemble_coeff=None, **options)
        policy.autocast = name != "eager_fp32" and device == "cuda"
        config = policy.model.config
        height, width = args.image_size
        rng = np.random.default_rng(0)
        observation = {
            "qpos": rng.standard_normal((1, config.state_dim)).astype(np.float32),
            "images": {
                c: rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8) for c in config.camera_names
            },
            "environment_state": np.full((1, max(config.environment_state_dim, 2)), 0.1, np.float32),
        }
        batch = policy._inputs(observation, np.arange(1))
        compile_started = time.perf_counter()
        policy.predict_chunk(observation)
        first_ms = (time.perf_counter() - compile_started) * 1000
        results[name] = {
            "policy_query_ms": _median_ms(lambda policy=policy, o=observation: policy.predict_chunk(o)),
            "model_only_ms": _median_ms(lambda policy=policy, b=batch: policy._predict(b)),
            "first_call_ms": round(first_ms, 1),
        }
        print(f"latency {name}: {results[name]}", flush=True)
    state["phases"]["latency"] = {
        "batch": 1,
        "image_size": list(args.image_size),
        "device": device,
        **results,
    }
    _save_state(out, state)


def report(args, out: Path, state: dict, complete: bool) -> dict:
    sessions = state["phases"].get("train_sessions", [])
    train_summary = None
    if sessions:
        last = sessions[-1]
        train_summary = {
            "steps": last["step"],
            "complete": last["complete"],
            "train_minutes": round(last["train_seconds"] / 60, 2),
            "wall_minutes_to_checkpoint": round(sum(s["session_seconds"] for s in sessions) / 60, 2),
            "data_loading_minutes": round(sum(s["data_seconds"] for s in sessions) / 60, 2),
            "sessions": len(sessions),
            "samples_per_second": [s["samples_per_second"] for s in sessions],
            "val": last["val"],
            "device": last["device"],
            "num_processes": last["num_processes"],
        }
    payload = {
        "benchmark": "act_train_eval",
        "complete": complete,
        "task": args.task,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "record": state["phases"].get("record"),
        "train": train_summary,
        "eval": {
            mode: {
                k: r[k]
                for k in (
                    "success_rate",
                    "stage_rates",
                    "max_reward_counts",
                    "episodes",
                    "eval_seconds",
                    "seeds",
                )
            }
            for mode, r in state["phases"].get("eval", {}).items()
        },
        "latency": state["phases"].get("latency"),
        "goals": {"success_rate": 0.9, "train_minutes": 10, "query_ms_batch_1": 3},
        "commands": state["commands"],
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "machine": f"{platform.node()} {platform.machine()}",
        "cpu_count": os.cpu_count(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    tmp = out / ".act_benchmark.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    os.replace(tmp, out / "act_benchmark.json")
    return payload


def export(out: Path, target: Path, task: str) -> None:
    """Copies the small results (no weights) to ``target``: report, state, video, training log, eval summaries."""
    target.mkdir(parents=True, exist_ok=True)
    names = [
        "act_benchmark.json",
        STATE_FILE,
        f"act_{task}.mp4",
        "run/training_log.jsonl",
        "run/train_result.json",
    ]
    names += [str(p.relative_to(out)) for p in out.glob("eval_*/eval_*.json*")]
    for name in names:
        source = out / name
        if source.is_file():
            destination = target / name.replace("/", "__")
            shutil.copyfile(source, destination)


def main() -> int:
    args = _parser().parse_args()
    clock = Clock(args.budget_minutes)
    out = args.out
    state = _load_state(out)
    state["commands"].append(" ".join(sys.argv))
    _save_state(out, state)
    complete = False
    folders = record(args, out, state, clock)
    trained = folders is not None and train_phase(args, out, state, clock, folders)
    if trained and eval_phase(args, out, state, clock, folders):
        if not args.skip_latency:
            latency_phase(args, out, state)
        complete = True
    payload = report(args, out, state, complete)
    if args.export is not None:
        export(out, args.export, args.task)
    print(json.dumps({k: payload[k] for k in ("complete", "train", "eval", "latency")}, indent=2))
    print("done" if complete else "not finished: run the same command again", flush=True)
    return EXIT_DONE if complete else EXIT_MORE


if __name__ == "__main__":
    sys.exit(main())
