"""Does the world model follow the actions? A small Wan model trained from scratch on rendered drone flights.

Stages (each resumable; ``--stage all`` runs what is missing, in order, and stops cleanly before
``--budget_minutes`` so that each invocation fits a 10-minute limit; run the same command again to continue):

  data       render the training flights (seed 0) and the held-out flights (seed 1: other worlds, other actions)
             with `kinema-wm make-drone-data`'s code, and the pixel-latent cache of the training flights
  estimator  fit the action estimator (optical flow + readout) on the training flights
  train      per variant: a random WanTransformer3DModel + action controller, trained together on the cache by
             kinema's training loop (DroneWorldModelTrainer = WorldModelTrainer that also trains the
             transformer), constant learning rate, in chunks with full checkpoints (exact resume)
  generate   per variant: every held-out clip from its first frame with (a) its own actions, (b) zero actions,
             (c) the actions of another held-out clip (shuffled), 30 Euler steps, same noise for all three
  eval       per variant and condition: the action metric (eval-actions) against the clip's own actions, plus the
             sanity rows; writes the few files that travel back into --out
  report     (CPU, anywhere) the RESULTS.md table from the results_*.json files of earlier runs

Variants: cross_attn_frame, adaln_tmod, add_residual, cross_attn_window (cross_attn_frame with action_window 1:
K = 3 keys per frame).

    # GPU (one H100), one call per variant; ~9 minutes each (see the README of kinema-video-world-model):
    python experiments/drone_action_following.py --stage all --variants cross_attn_frame --out $OUT
    # CPU, the whole pipeline at tiny sizes in a few minutes:
    python experiments/drone_action_following.py --smoke --stage all --work .bench/drone-smoke --out /tmp/smoke
    # afterwards, anywhere:
    python experiments/drone_action_following.py --stage report --results runs/*/results_*.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from kinema.robot_data import write_video
from kinema.robot_data.drone import DroneDataConfig, make_drone_dataset
from kinema.video_world_model import load_controller
from kinema.video_world_model._action_estimator import ActionEstimator
from kinema.video_world_model._action_eval import evaluate_actions, fit_estimator, read_dataset_actions
from kinema.video_world_model._action_metric import derangement, plot_confusion, scores_table
from kinema.video_world_model._checkpoint import complete_checkpoints
from kinema.video_world_model._drone_model import (
    TRANSFORMER_DIR,
    DroneWorldModelTrainer,
    drone_transformer,
    generate_latents,
    write_pixel_cache,
)
from kinema.video_world_model._grid import write_grid
from kinema.video_world_model._pixel_latents import PixelLatentSpace
from kinema.video_world_model._train_config import TrainConfig
from kinema.video_world_model._transformer import WanActionTransformer

VARIANTS = {
    "cross_attn_frame": {"action_controller_config": "wan_ti2v_5b"},
    "adaln_tmod": {"action_controller_config": "wan_ti2v_5b_adaln"},
    "add_residual": {"action_controller_config": "wan_ti2v_5b_add"},
    "cross_attn_window": {"action_controller_config": "wan_ti2v_5b", "action_window": 1},
}
CONDITIONS = ("actions", "zero_actions", "shuffled_actions")


@dataclass(frozen=True)
class Settings:
    train_clips: int = 2000
    test_clips: int = 128
    size: int = 64
    frames: int = 81
    texture_size: int = 1024
    grid: int = 257
    model: str = "small"
    batch_size: int = 32
    learning_rate: float = 3e-4
    steps: int = 3000
    chunk: int = 500
    estimator_steps: int = 4000
    sample_steps: int = 30
    generate_batch: int = 64
    grid_clips: int = 4
    data_workers: int = 16
    loader_workers: int = 4


SMOKE = Settings(
    train_clips=12,
    test_clips=4,
    size=32,
    frames=21,
    texture_size=128,
    grid=33,
    model="tiny",
    batch_size=2,
    learning_rate=1e-3,
    steps=6,
    chunk=3,
    estimator_steps=200,
    sample_steps=3,
    generate_batch=4,
    grid_clips=2,
    data_workers=2,
    loader_workers=0,
)


class OutOfTime(Exception):
    """The invocation's budget is spent; the same command continues where this one stopped."""


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args, self.s = args, SMOKE if args.smoke else Settings()
        if args.steps is not None:
            self.s = replace(self.s, steps=args.steps)
        self.work, self.out = Path(args.work), Path(args.out) if args.out else None
        self.start = time.monotonic()
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    # --- bookkeeping ------------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget_minutes * 60 - (time.monotonic() - self.start)

    def need(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise OutOfTime(
                f"{what} needs ~{seconds:.0f} s, {max(0, self.left()):.0f} s of the budget are left"
            )

    def log(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:6.0f} s] {text}", flush=True)

    @property
    def train_dir(self) -> Path:
        return self.work / "data" / "train"

    @property
    def test_dir(self) -> Path:
        return self.work / "data" / "test"

    @property
    def cache_dir(self) -> Path:
        return self.work / "cache"

    @property
    def estimator_dir(self) -> Path:
        return self.work / "estimator"

    def run_dir(self, variant: str) -> Path:
        return self.work / "runs" / variant

    def gen_dir(self, variant: str, condition: str) -> Path:
        return self.work / "generated" / variant / condition

    # --- data -------------------------------------------------------------------------------------------------
    def data(self) -> None:
        s = self.s
        for directory, clips, seed in ((self.train_dir, s.train_clips, 0), (self.test_dir, s.test_clips, 1)):
            if (directory / "drone_data.json").is_file():
                continue
            self.need(60, f"rendering {directory}")
            config = DroneDataConfig(
                out=str(directory), clips=clips, height=s.size, width=s.size, frames=s.frames, seed=seed,
                workers=s.data_workers, texture_size=s.texture_size, grid=s.grid,
            )  # fmt: skip
            began = time.monotonic()
            summary = make_drone_dataset(config, overwrite=True)
            self.log(f"{summary.describe()} in {time.monotonic() - began:.0f} s")
        if not (self.cache_dir / "index.json").is_file():
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            began = time.monotonic()
            text_dim = drone_transformer(s.model).config.text_dim
            write_pixel_cache(self.train_dir, self.cache_dir, None, num_frames=s.frames, text_dim=text_dim)
            self.log(f"wrote the pixel-latent cache in {time.monotonic() - began:.0f} s")

    def estimator(self) -> None:
        if (self.estimator_dir / "action_estimator.json").is_file():
            return
        self.need(60, "fitting the action estimator")
        began = time.monotonic()
        fit_estimator([self.train_dir], self.estimator_dir, steps=self.s.estimator_steps,
                      workers=self.s.data_workers)  # fmt: skip
        self.log(f"fitted the action estimator in {time.monotonic() - began:.0f} s")

    # --- training ---------------------------------------------------------------------------------------------
    def train_config(self, variant: str, max_steps: int, resume: bool) -> TrainConfig:
        s = self.s
        return TrainConfig(
            model_dir=str(self.cache_dir),  # not loaded: the transformer is built here (random init)
            cache_dir=str(self.cache_dir),
            num_frames=s.frames,
            trainable_models="action_controller",
            **VARIANTS[variant],
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            lr_warmup_ratio=0.0,
            lr_min_lr=s.learning_rate,  # constant: chunks of any length give the same run
            weight_decay=0.01,
            max_steps=max_steps,
            use_gradient_checkpointing=False,
            dataset_num_workers=s.loader_workers,
            seed=0,
            output_path=str(self.run_dir(variant)),
            log_steps=50,
            save_steps=s.chunk,
            save_full_state=True,
            max_checkpoints=1,
            resume_from="latest" if resume else None,
        )

    def steps_done(self, variant: str) -> int:
        checkpoints = complete_checkpoints(self.run_dir(variant))
        return int(checkpoints[-1].name.split("-")[1]) if checkpoints else 0

    def train(self, variant: str, reserve: float = 0.0) -> bool:
        """Trains ``variant`` to ``steps`` in chunks; True when done. With ``reserve`` seconds kept for generation
        and evaluation, it stops early (False) instead of running out of time."""
        s = self.s
        done = self.steps_done(variant)
        if done == 0:
            shutil.rmtree(self.run_dir(variant), ignore_errors=True)  # an attempt that saved no checkpoint
        seconds_per_step = None
        while done < s.steps:
            chunk = min(s.chunk, s.steps - done)
            estimate = 60.0 if seconds_per_step is None else 20 + chunk * seconds_per_step
            if done > 0 and reserve and self.left() < estimate + reserve:
                self.log(
                    f"{variant}: stopping at step {done}/{s.steps} to keep {reserve:.0f} s for generation"
                )
                return False
            self.need(estimate, f"training {variant} steps {done}..{done + chunk}")
            began = time.monotonic()
            config = self.train_config(variant, done + chunk, resume=done > 0)
            result = DroneWorldModelTrainer(config, drone_transformer(s.model, seed=0)).run()
            seconds_per_step = (time.monotonic() - began) / chunk
            done = result.step
            loss = result.losses.get(done)
            self.log(
                f"{variant}: step {done}/{s.steps}, loss {loss:.4f}, {seconds_per_step:.3f} s/step (chunk)"
            )
        return True

    # --- generation -------------------------------------------------------------------------------------------
    def load_model(self, variant: str) -> WanActionTransformer:
        from diffusers import WanTransformer3DModel

        run = self.run_dir(variant)
        transformer = WanTransformer3DModel.from_pretrained(run / TRANSFORMER_DIR)
        controller, _ = load_controller(run)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        model = WanActionTransformer(transformer, controller).to(self.device, dtype).eval()
        return model

    def generate(self, variant: str) -> None:
        steps = self.steps_done(variant)
        markers = [self.gen_dir(variant, c) / "done.json" for c in CONDITIONS]
        if all(m.is_file() and json.loads(m.read_text())["steps_trained"] == steps for m in markers):
            return
        self.need(60, f"generating {variant}")
        s = self.s
        began = time.monotonic()
        space = PixelLatentSpace.load(self.cache_dir)
        rows = read_dataset_actions(self.test_dir)
        from kinema.robot_data import read_video_frames

        videos = torch.stack(
            [torch.from_numpy(read_video_frames(self.test_dir / v)).permute(3, 0, 1, 2) for v in rows.videos]
        )  # (N, 3, T, H, W) uint8
        first = space.encode(videos[:, :, :1])  # (N, C, 1, h, w)
        binary = torch.from_numpy(rows.binary)
        magnitude = torch.from_numpy(rows.magnitude)
        perm = torch.from_numpy(derangement(len(rows.videos), seed=0))
        actions = {
            "actions": (binary, magnitude),
            "zero_actions": (torch.zeros_like(binary), torch.zeros_like(magnitude)),
            "shuffled_actions": (binary[perm], magnitude[perm]),
        }
        model = self.load_model(variant)
        latent_frames = rows.num_steps + 1
        for condition in CONDITIONS:
            target = self.gen_dir(variant, condition)
            shutil.rmtree(target, ignore_errors=True)
            for lo in range(0, len(rows.videos), s.generate_batch):
                hi = min(lo + s.generate_batch, len(rows.videos))
                generator = torch.Generator(self.device).manual_seed(
                    1000 + lo
                )  # same noise for every condition
                b, m = actions[condition]
                latents = generate_latents(
                    model, first[lo:hi], b[lo:hi], m[lo:hi], latent_frames,
                    num_inference_steps=s.sample_steps, generator=generator,
                )  # fmt: skip
                clips = ((space.decode(latents.cpu()) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                for i, clip in zip(range(lo, hi), clips):
                    write_video(target / rows.videos[i], clip.permute(1, 2, 3, 0).numpy(), 16)
            (target / "done.json").write_text(
                json.dumps({"clips": len(rows.videos), "condition": condition, "steps_trained": steps})
            )
        self.log(
            f"generated {variant} ({len(CONDITIONS)} x {len(rows.videos)} clips) in {time.monotonic() - began:.0f} s"
        )

    # --- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, variant: str) -> dict:
        self.need(150, f"evaluating {variant}")
        estimator = ActionEstimator.load(self.estimator_dir)
        results, rows = {}, read_dataset_actions(self.test_dir)
        workers = 1 if self.args.smoke else self.s.data_workers  # spawning workers costs more than tiny clips
        for condition in CONDITIONS:
            report_dir = self.work / "eval" / variant / condition
            scores = evaluate_actions(self.gen_dir(variant, condition), self.test_dir, estimator, report_dir,
                                      workers=workers, sanity=condition == "actions")  # fmt: skip
            results[f"{variant}, {condition}"] = scores["generated"]
            if condition == "actions":
                results["ground truth"] = scores["ground truth"]
                results["ground truth, shuffled actions"] = scores["ground truth, shuffled actions"]
        if self.out is not None:
            self.publish(variant, results, rows)
        self.log(f"evaluated {variant}:\n{scores_table(results)}")
        return results

    def publish(self, variant: str, results: dict, rows) -> None:
        """The files that travel back (at most 8 per call): results JSON, a markdown table, the confusion plot of
        the action-conditioned clips and a ground-truth / generated video grid."""
        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        s = self.s
        meta = {
            "variant": variant,
            "settings": s.__dict__,
            "steps_trained": self.steps_done(variant),
            "steps_target": s.steps,
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "command": " ".join(sys.argv),
            "seeds": {"train_data": 0, "test_data": 1, "training": 0, "generation": "1000 + batch start"},
        }
        (out / f"results_{variant}.json").write_text(
            json.dumps({"meta": meta, "scores": {k: v.to_dict() for k, v in results.items()}}, indent=2)
        )
        (out / f"results_{variant}.md").write_text(scores_table(results) + "\n")
        plot_confusion(
            results[f"{variant}, actions"], out / f"confusion_{variant}.png", f"{variant}: actions"
        )
        from kinema.robot_data import read_video_frames

        videos, labels = [], []
        for i in range(min(s.grid_clips, len(rows.videos))):
            videos.append(read_video_frames(self.test_dir / rows.videos[i]))
            labels.append(f"GT {i}")
            for condition, tag in (("actions", "gen"), ("shuffled_actions", "shuf")):
                videos.append(read_video_frames(self.gen_dir(variant, condition) / rows.videos[i]))
                labels.append(f"{tag} {i}")
        write_grid(out / f"grid_{variant}.mp4", videos, labels, columns=3, fps=8)


def report(paths: list[str]) -> None:
    """The RESULTS.md section from results_*.json files."""
    from kinema.video_world_model._action_metric import ActionScores

    rows, meta = {}, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        meta.append(data["meta"])
        for name, scores in data["scores"].items():
            if name.startswith("ground truth") and name in rows:
                continue
            rows[name] = ActionScores(**scores)
    print(scores_table(rows))
    for m in meta:
        print(f"\n- {m['variant']}: {m['steps_trained']} steps, {m['device']}, torch {m['torch']}, {m['date']}: "
              f"`{m['command']}`")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--stage", choices=["data", "estimator", "train", "generate", "eval", "all", "report"],
                        default="all")  # fmt: skip
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated, of {list(VARIANTS)}"
    )
    parser.add_argument("--work", default=".bench/drone", help="resumable state (git-ignored)")
    parser.add_argument("--out", help="where the few result files go (e.g. $OUT on the GPU machine)")
    parser.add_argument("--budget_minutes", type=float, default=9.0, help="stop cleanly before this")
    parser.add_argument("--reserve_seconds", type=float, default=330.0,
                        help="with --stage all: training stops early to keep this for generation + evaluation")  # fmt: skip
    parser.add_argument("--steps", type=int, help="training steps per variant (default 3000; smoke 6)")
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes on the CPU: checks the whole pipeline"
    )
    parser.add_argument("--results", nargs="*", default=[], help="results_*.json files for --stage report")
    args = parser.parse_args(argv)
    if args.stage == "report":
        report(args.results)
        return 0
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown}; expected some of {list(VARIANTS)}")
    run = Run(args)
    run.log(f"device {run.device}, settings {'smoke' if args.smoke else 'full'}, work {run.work}")
    try:
        if args.stage in ("data", "all"):
            run.data()
        if args.stage in ("estimator", "all"):
            run.estimator()
        for variant in variants:
            if args.stage in ("train", "all"):
                run.train(variant, reserve=args.reserve_seconds if args.stage == "all" else 0.0)
            if args.stage in ("generate", "all"):
                run.generate(variant)
            if args.stage in ("eval", "all"):
                run.evaluate(variant)
    except OutOfTime as stop:
        run.log(f"stopping: {stop}. Run the same command again to continue.")
        return 3
    run.log("done")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
