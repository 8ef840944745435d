"""Does the world model follow the actions? The drone experiment: a small Wan model trained from scratch on
rendered drone flights, judged by the action estimator on held-out flights.

Stages (each resumable; :meth:`DroneExperiment.run` does what is missing, in order, and stops cleanly with
:class:`OutOfTime` before its budget so that a caller with a time limit runs it again to continue):

  data       render the training flights (seed 0) and the held-out flights (seed 1: other worlds, other actions),
             and the pixel-latent cache of the training flights
  estimator  fit the action estimator (optical flow + readout) on the training flights
  train      per variant: a random WanTransformer3DModel + action controller trained together on the cache by
             kinema's training loop (:class:`DroneWorldModelTrainer`), with full checkpoints (exact resume)
  generate   per variant: every held-out clip from its first frame with (a) its own actions, (b) zero actions,
             (c) the actions of another held-out clip (shuffled), the same noise for all three
  evaluate   per variant and condition: the action metric against each clip's own actions, plus the ground-truth
             rows (the estimator on the real clips, with their own and with shuffled actions)

The headline is balanced accuracy (0.5: the actions are ignored), with the ground truth as its ceiling and the
zero / shuffled actions as its floor. Presets: ``cpu`` (``kinema-wm demo``: 32x32, 9 frames, minutes on two
cores), ``gpu`` (64x64, 81 frames, one H100/H200) and ``smoke`` (seconds; checks the plumbing).
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from kinema.robot_data import read_video_frames, write_video
from kinema.robot_data.drone import DroneDataConfig, make_drone_dataset

from ..loading._checkpoint import complete_checkpoints
from ..loading._wan import load_controller
from ..modeling._pixel_latents import PixelLatentSpace
from ..modeling._transformer import WanActionTransformer
from ..pipelines._grid import write_grid
from ..training._train_config import TrainConfig
from ._estimator import ActionEstimator
from ._eval import evaluate_actions, feature_pool, fit_estimator, read_dataset_actions
from ._metric import ActionScores, derangement
from ._model import (
    TRANSFORMER_DIR,
    DroneWorldModelTrainer,
    drone_transformer,
    generate_latents,
    write_pixel_cache,
)

VARIANTS: dict[str, dict[str, Any]] = {
    "cross_attn_frame": {"action_controller_config": "wan_ti2v_5b"},
    "adaln_tmod": {"action_controller_config": "wan_ti2v_5b_adaln"},
    "add_residual": {"action_controller_config": "wan_ti2v_5b_add"},
    "cross_attn_window": {"action_controller_config": "wan_ti2v_5b", "action_window": 1},  # K = 3 keys
}
CONDITIONS = ("actions", "zero_actions", "shuffled_actions")


@dataclass(frozen=True)
class ExperimentSettings:
    """Data, model, training and sampling sizes of one scale of the experiment (see :data:`PRESETS`)."""

    train_clips: int = 1000
    test_clips: int = 128
    size: int = 64
    frames: int = 81
    texture_size: int = 1024
    grid: int = 257
    contrast: float = 3.0
    model: str = "small"
    batch_size: int = 32
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.0
    min_lr_ratio: float = 1.0  # 1.0: constant after warm-up, so that chunks of any length make the same run
    steps: int = 400
    chunk: int = 200  # steps per checkpoint: what a call cut short by its budget keeps
    prediction_type: str = "sample"
    flow_shift: float = 3.0
    estimator_steps: int = 4000
    sample_steps: int = 10
    generate_batch: int = 64
    grid_clips: int = 4
    data_workers: int = 16
    loader_workers: int = 4

    def __post_init__(self) -> None:
        for name in ("train_clips", "test_clips", "steps", "chunk", "batch_size", "sample_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.chunk < self.steps and (self.warmup_ratio > 0 or self.min_lr_ratio != 1.0):
            # the loop's schedule is relative to each call's max_steps: chunks would each warm up and decay
            raise ValueError("chunk: a run with warm-up or decay trains in one chunk (chunk >= steps)")
        if self.test_clips < 2:
            raise ValueError(
                f"test_clips: expected >= 2 (the shuffled control needs two), got {self.test_clips}"
            )


# Chosen by measurement (RESULTS.md, "Drone action following"): 1x1 patches (a token no wider than the model),
# x0 prediction, flow shift 3, adaLN-sized learning rates, fields of 3x the default contrast (at 32x32 a sideways
# move otherwise changes the image far less than a pitch move, which moves the horizon, and is learned last),
# and 9 frames (2 actions per clip): more gradient steps in the CPU budget than 21 or 81 frames.
_CPU = ExperimentSettings(
    train_clips=1024, test_clips=128, size=32, frames=9, texture_size=256, grid=65, model="cpu", batch_size=16,
    learning_rate=2e-3, warmup_ratio=0.15, min_lr_ratio=0.1, steps=600, chunk=600, estimator_steps=3000,
    sample_steps=10, generate_batch=64, grid_clips=4, data_workers=2, loader_workers=0,
)  # fmt: skip
PRESETS: dict[str, ExperimentSettings] = {
    "gpu": ExperimentSettings(),
    "cpu": _CPU,
    # the learning test of `make test` (under 3 minutes on two cores): one action per clip, fewer clips and steps
    "ci": replace(
        _CPU,
        train_clips=640,
        test_clips=96,
        frames=5,
        steps=400,
        chunk=400,
        estimator_steps=2000,
        generate_batch=96,
        grid_clips=2,
    ),
    # seconds: checks the plumbing, learns nothing
    "smoke": replace(
        _CPU,
        train_clips=12,
        test_clips=4,
        texture_size=128,
        grid=33,
        model="tiny",
        batch_size=2,
        learning_rate=1e-3,
        steps=4,
        chunk=4,
        estimator_steps=50,
        sample_steps=2,
        generate_batch=4,
        grid_clips=2,
        data_workers=1,
    ),
}


class OutOfTime(Exception):
    """The budget is spent; running the same experiment again continues where this one stopped."""


class DroneExperiment:
    """``DroneExperiment(settings, work).run(variants)`` -> {row name: ActionScores}; state lives in ``work``.

    ``out`` receives the few files worth keeping per variant (results JSON and markdown, confusion plot,
    per-action bar plot, video grid); ``budget_seconds`` bounds one invocation. ``finish``: a variant whose
    training stopped early for ``reserve_seconds`` is generated and scored at its last checkpoint anyway (its
    results record the steps trained); otherwise only variants trained to ``steps`` are."""

    def __init__(
        self,
        settings: ExperimentSettings,
        work: str | Path,
        out: str | Path | None = None,
        *,
        budget_seconds: float = math.inf,
        reserve_seconds: float = 0.0,
        finish: bool = False,
        device: str | None = None,
        log=print,
    ):
        self.s, self.work = settings, Path(work)
        self.finish = finish
        self.out = Path(out) if out is not None else None
        self.budget, self.reserve = budget_seconds, reserve_seconds
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.start = time.monotonic()
        self._log = log
        self.seconds_per_step: float | None = None  # measured by the first chunk trained in this invocation
        self.seconds: dict[str, float] = {}  # per stage, summed over the variants of this invocation

    # --- bookkeeping ------------------------------------------------------------------------------------------
    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def need(self, seconds: float, what: str) -> None:
        if self.left() < seconds:
            raise OutOfTime(
                f"{what} needs ~{seconds:.0f} s, {max(0, self.left()):.0f} s of the budget are left"
            )

    def log(self, text: str) -> None:
        self._log(f"[{time.monotonic() - self.start:6.0f} s] {text}")

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

    def run(self, variants: list[str]) -> dict[str, ActionScores]:
        """Every stage that is missing, in order; :attr:`seconds` holds the time each stage took."""
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or not variants:
            raise ValueError(f"variants: expected some of {list(VARIANTS)}, got {variants}")
        with self.timed("data"):
            self.data()
        with self.timed("estimator"):
            self.estimator()
        results: dict[str, ActionScores] = {}
        for variant in variants:
            with self.timed("training"):
                trained = self.train(variant)
            if trained or (self.finish and self.steps_done(variant) > 0):
                with self.timed("generation and evaluation"):
                    self.generate(variant)
                    results.update(self.evaluate(variant))
        return results

    @contextmanager
    def timed(self, stage: str):
        began = time.monotonic()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.monotonic() - began

    # --- data -------------------------------------------------------------------------------------------------
    def data(self) -> None:
        s = self.s
        for directory, clips, seed in ((self.train_dir, s.train_clips, 0), (self.test_dir, s.test_clips, 1)):
            if (directory / "drone_data.json").is_file():
                continue
            self.need(30, f"rendering {directory}")
            config = DroneDataConfig(
                out=str(directory), clips=clips, height=s.size, width=s.size, frames=s.frames, seed=seed,
                workers=s.data_workers, texture_size=s.texture_size, grid=s.grid, contrast=s.contrast,
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
        self.need(30, "fitting the action estimator")
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
            action_initial_scale=1.0,  # no pretrained backbone to protect: the actions count from step 0
            prediction_type=s.prediction_type,
            flow_shift=s.flow_shift,
            # the schedule and weighting every drone result in RESULTS.md was measured with (kinema <= 0.4's)
            sigma_schedule="inference",
            loss_weighting="none",
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            lr_warmup_ratio=s.warmup_ratio,
            lr_min_lr=s.learning_rate * s.min_lr_ratio,
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

    def train(self, variant: str) -> bool:
        """Trains ``variant`` to ``steps`` in chunks; True when done, False when it stopped early to keep
        ``reserve_seconds`` for generation and evaluation."""
        s = self.s
        done = self.steps_done(variant)
        if done == 0:
            shutil.rmtree(self.run_dir(variant), ignore_errors=True)  # an attempt that saved no checkpoint
        while done < s.steps:
            chunk = min(s.chunk, s.steps - done)
            estimate = 30.0 if self.seconds_per_step is None else 10 + chunk * self.seconds_per_step
            if (done > 0 or self.seconds_per_step) and self.reserve and self.left() < estimate + self.reserve:
                self.log(
                    f"{variant}: stopping at step {done}/{s.steps} to keep {self.reserve:.0f} s for evaluation"
                )
                return False
            self.need(estimate, f"training {variant} steps {done}..{done + chunk}")
            began = time.monotonic()
            config = self.train_config(variant, done + chunk, resume=done > 0)
            result = DroneWorldModelTrainer(config, drone_transformer(s.model, seed=0)).run()
            self.seconds_per_step = (time.monotonic() - began) / chunk
            done = result.step
            loss = result.losses.get(done, float("nan"))
            self.log(f"{variant}: step {done}/{s.steps}, loss {loss:.4f}, {self.seconds_per_step:.3f} s/step")
        return True

    # --- generation -------------------------------------------------------------------------------------------
    def load_model(self, variant: str) -> WanActionTransformer:
        from diffusers import WanTransformer3DModel

        run = self.run_dir(variant)
        transformer = WanTransformer3DModel.from_pretrained(run / TRANSFORMER_DIR)
        controller, _ = load_controller(run)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        return WanActionTransformer(transformer, controller).to(self.device, dtype).eval()

    def test_first_frames(self) -> tuple[Any, torch.Tensor]:
        """(rows of the held-out dataset, their first frames (N, 3, 1, H, W) uint8): what generation starts from."""
        rows = read_dataset_actions(self.test_dir)
        frames = [
            torch.from_numpy(read_video_frames(self.test_dir / v, [0])) for v in rows.videos
        ]  # (1, H, W, 3)
        return rows, torch.stack(frames).permute(0, 4, 1, 2, 3)

    def generate(self, variant: str) -> None:
        steps = self.steps_done(variant)
        markers = [self.gen_dir(variant, c) / "done.json" for c in CONDITIONS]
        if all(m.is_file() and json.loads(m.read_text())["steps_trained"] == steps for m in markers):
            return
        self.need(20, f"generating {variant}")
        s = self.s
        began = time.monotonic()
        space = PixelLatentSpace.load(self.cache_dir)
        rows, first_frames = self.test_first_frames()
        first = space.encode(first_frames)  # (N, C, 1, h, w)
        binary, magnitude = torch.from_numpy(rows.binary), torch.from_numpy(rows.magnitude)
        perm = torch.from_numpy(derangement(len(rows.videos), seed=0))
        actions = {
            "actions": (binary, magnitude),
            "zero_actions": (torch.zeros_like(binary), torch.zeros_like(magnitude)),
            "shuffled_actions": (binary[perm], magnitude[perm]),
        }
        model = self.load_model(variant)
        from tqdm.auto import tqdm

        bar = tqdm(total=len(CONDITIONS) * len(rows.videos), desc=f"generate {variant}", unit="clip")
        for condition in CONDITIONS:
            target = self.gen_dir(variant, condition)
            shutil.rmtree(target, ignore_errors=True)
            for lo in range(0, len(rows.videos), s.generate_batch):
                hi = min(lo + s.generate_batch, len(rows.videos))
                generator = torch.Generator().manual_seed(1000 + lo)  # the same noise for every condition
                b, m = actions[condition]
                latents = generate_latents(
                    model, first[lo:hi], b[lo:hi], m[lo:hi], rows.num_steps + 1,
                    num_inference_steps=s.sample_steps, shift=s.flow_shift, prediction_type=s.prediction_type,
                    generator=generator,
                )  # fmt: skip
                clips = ((space.decode(latents.cpu()) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
                for i, clip in zip(range(lo, hi), clips):
                    write_video(target / rows.videos[i], clip.permute(1, 2, 3, 0).numpy(), 16)
                bar.update(hi - lo)
            (target / "done.json").write_text(
                json.dumps({"clips": len(rows.videos), "condition": condition, "steps_trained": steps})
            )
        bar.close()
        self.log(
            f"generated {variant} ({len(CONDITIONS)} x {len(rows.videos)} clips) in {time.monotonic() - began:.0f} s"
        )

    # --- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, variant: str) -> dict[str, ActionScores]:
        self.need(20, f"evaluating {variant}")
        estimator = ActionEstimator.load(self.estimator_dir)
        results: dict[str, ActionScores] = {}
        with feature_pool(self.s.data_workers) as pool:  # one pool for the four sets of clips
            for condition in CONDITIONS:
                report_dir = self.work / "eval" / variant / condition
                scores = evaluate_actions(self.gen_dir(variant, condition), self.test_dir, estimator, report_dir,
                                          sanity=condition == "actions", pool=pool)  # fmt: skip
                results[f"{variant}, {condition}"] = scores["generated"]
                if condition == "actions":
                    results["ground truth"] = scores["ground truth"]
                    results["ground truth, shuffled actions"] = scores["ground truth, shuffled actions"]
        if self.out is not None:
            self.publish(variant, results)
        return results

    def metadata(self, variant: str) -> dict[str, Any]:
        return {
            "variant": variant,
            "settings": asdict(self.s),
            "steps_trained": self.steps_done(variant),
            "steps_target": self.s.steps,
            "device": torch.cuda.get_device_name() if self.device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"),
            "seeds": {"train_data": 0, "test_data": 1, "training": 0, "generation": "1000 + batch start"},
        }

    def publish(self, variant: str, results: dict[str, ActionScores]) -> None:
        """results_<variant>.json / .md, confusion_<variant>.png, per_action_<variant>.png, grid_<variant>.mp4."""
        from ._metric import plot_confusion, scores_table
        from ._report import plot_per_action

        out = self.out
        out.mkdir(parents=True, exist_ok=True)
        scores = {k: v.to_dict() for k, v in results.items()}
        (out / f"results_{variant}.json").write_text(
            json.dumps({"meta": self.metadata(variant), "scores": scores}, indent=2)
        )
        (out / f"results_{variant}.md").write_text(scores_table(results) + "\n")
        plot_confusion(
            results[f"{variant}, actions"], out / f"confusion_{variant}.png", f"{variant}: own actions"
        )
        plot_per_action(results, variant, out / f"per_action_{variant}.png")
        self.write_grid(variant, out / f"grid_{variant}.mp4")

    def write_grid(self, variant: str, path: Path) -> Path:
        """A few held-out flights, one per row: ground truth | own actions | shuffled actions | zero actions."""
        rows = read_dataset_actions(self.test_dir)
        videos, labels = [], []
        scale = max(1, 96 // self.s.size)  # big enough to see and to hold the labels
        columns = (("GT", self.test_dir), ("own", self.gen_dir(variant, "actions")),
                   ("shuffled", self.gen_dir(variant, "shuffled_actions")),
                   ("zero", self.gen_dir(variant, "zero_actions")))  # fmt: skip
        for i in range(min(self.s.grid_clips, len(rows.videos))):
            for tag, folder in columns:
                video = read_video_frames(folder / rows.videos[i])
                videos.append(video.repeat(scale, axis=1).repeat(scale, axis=2))
                labels.append(f"{tag} {i}")
        return write_grid(path, videos, labels, columns=len(columns), fps=4 if self.s.frames <= 21 else 8)


def preset(name: str, **overrides: Any) -> ExperimentSettings:
    """A preset of :data:`PRESETS` with fields replaced (``steps=...``); a one-chunk preset stays one chunk."""
    if name not in PRESETS:
        raise ValueError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    base = PRESETS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if "steps" in overrides and "chunk" not in overrides and base.chunk >= base.steps:
        overrides["chunk"] = overrides["steps"]
    return replace(base, **overrides)


def summary_row(results: dict[str, ActionScores], variant: str) -> dict[str, float]:
    """Balanced accuracy of a variant's three conditions and of the ground truth, for tables and tests."""
    return {
        "actions": results[f"{variant}, actions"].balanced_accuracy,
        "shuffled_actions": results[f"{variant}, shuffled_actions"].balanced_accuracy,
        "zero_actions": results[f"{variant}, zero_actions"].balanced_accuracy,
        "ground_truth": results["ground truth"].balanced_accuracy,
    }
