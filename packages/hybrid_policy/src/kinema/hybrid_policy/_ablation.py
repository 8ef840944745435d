"""The ablation: ACT against the hybrid's variants A, B and C, over seeds and demonstration counts, on the
bundled docking task or an ALOHA task of kinema.robot_data.sim.

For every (policy, demos, seed) cell: train on the first ``demos`` recorded episodes (ACT with
kinema.act_policy's loop, the hybrid with this package's), then measure

- success (dock: reach the dock without touching the wall; ALOHA: the task's top reward), in closed loop;
- smoothness of the executed actions: mean ||a_{t+1} - a_t|| (``step``) and the third difference (``jerk``);
- chunk fidelity: L1 / L2 of one predicted chunk to the ground truth on held-out episodes;
- diversity: the spread of K chunks sampled for one observation, and on dock the mode coverage: for each
  held-out scene, the sides (left / right / middle = into the wall) of K chunks sampled at the start.

Output folder: ``data/`` (dock: ``train/`` and ``val/`` recordings), ``runs/<policy>_d<demos>_s<seed>/`` (a
checkpoint each, resumed when unfinished, skipped when evaluated), ``results.json``, ``results.md`` and plots
(``results.png``: success with seed spread, jerk, diversity; ``sample_efficiency.png`` when several demo counts).

B observations, K samples, C chunk steps, A action dims.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kinema.act_policy import episode_files, load_episodes, write_json_atomic

from ._config import VARIANTS, check_sampling_steps
from ._data import chunk_batch
from ._metrics import chunk_fidelity, chunk_spread, mean_smoothness, mode_coverage
from ._train import train_device

# "act": ACT with z = 0 at inference (deterministic); "act_z": the same trained ACT with z ~ N(0, I) per query
# (ACT's own way to sample modes: the control for "does the diffusion head or the latent do the work?").
POLICIES = ("act", "act_z", *VARIANTS)
ACT_POLICIES = ("act", "act_z")
ALOHA_TASKS = ("transfer_cube", "insertion")
TASKS = ("dock", *ALOHA_TASKS)
DOCK_VAL_SEED = 50_000  # held-out dock scenes: disjoint from training (0..) and evaluation (100000..)
EVAL_SEED = 100_000  # closed-loop evaluation scenes / episodes (kinema.robot_data's default range)
RESULTS = "results"

# Model sizes shared by ACT and the hybrid (transformer width, depth, backbone width). "paper" is ACT's and
# Diffusion Policy's full size (the configs' defaults); "small" trains in minutes on one GPU; "tiny" in a
# couple of CPU minutes (the demo).
SIZES = {
    "tiny": {
        "backbone_width": 16,
        "dim_model": 64,
        "n_heads": 4,
        "dim_feedforward": 128,
        "n_encoder_layers": 2,
    },
    "small": {
        "backbone_width": 32,
        "dim_model": 256,
        "n_heads": 8,
        "dim_feedforward": 1024,
        "n_encoder_layers": 4,
    },
    "paper": {},
}
_ACT_DEPTH = {
    "tiny": {"n_vae_encoder_layers": 1, "latent_dim": 8},
    "small": {"n_vae_encoder_layers": 2},
    "paper": {},
}
_HYBRID_DEPTH = {
    "tiny": {"n_denoiser_layers": 2, "n_posterior_layers": 1, "latent_dim": 8},
    "small": {"n_denoiser_layers": 4, "n_posterior_layers": 2},
    "paper": {},
}
# The dock task's chunking: 48 steps cover the first half of an episode (about 45-60 steps), so the first
# chunk carries the choice of side; half of it is executed before the next query.
_TASK_CHUNKS = {"dock": (48, 24), "transfer_cube": (100, 100), "insertion": (100, 100)}
# The hybrid on dock predicts the clean chunk (x0) rather than the noise: measured on 2 CPU cores, tiny size,
# 1000 steps, 60 demonstrations, seed 0, variant C, on the validation scenes 70000-70099 (never the reported
# 100000..), with the symmetric schedule: 100% success with "sample" vs 23% with "epsilon" (noisy chunks cut the
# wall's corners; RESULTS.md, results/hybrid_dock_validation.json). ALOHA keeps Diffusion Policy's epsilon.
_TASK_HYBRID = {"dock": {"prediction_type": "sample"}, "transfer_cube": {}, "insertion": {}}


def parse_list(text: str, kind=str, name: str = "list") -> tuple:
    """ "a,b,c" -> (a, b, c) converted by ``kind``; a ValueError naming ``name`` otherwise."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise ValueError(f"{name}: expected a comma-separated list, got {text!r}")
    try:
        return tuple(kind(t) for t in items)
    except ValueError:
        raise ValueError(
            f"{name}: cannot read {text!r} as a comma-separated list of {kind.__name__}"
        ) from None


def check_policies(policies) -> tuple[str, ...]:
    policies = tuple(policies)
    unknown = [p for p in policies if p not in POLICIES]
    if unknown or not policies:
        raise ValueError(
            f"variants: unknown {unknown or policies!r}; expected some of {POLICIES} (act: ACT, z = 0; act_z: ACT, "
            "z ~ N(0, I); A: no latent; "
            "B: z = f(obs); C: posterior and learned prior)"
        )
    return policies


@dataclass
class AblationConfig:
    """Settings of :func:`run_ablation`.

    - ``task``: "dock" (recorded here by the scripted expert) or an ALOHA task ("transfer_cube", "insertion";
      ``data`` names its recorded episodes, else they are recorded with kinema.robot_data.sim, ``workers``
      processes). The last ``val_episodes`` episodes of ``data`` are held out for fidelity and diversity.
    - ``variants``: among "act", "A", "B", "C"; ``seeds``: training seeds; ``demos``: demonstration counts
      (sample efficiency: each cell trains on the first ``demos`` episodes).
    - Budget per training: ``max_steps`` and/or ``max_minutes`` (whichever comes first), so the same command
      serves a two-minute CPU run and a GPU run; ``session_minutes`` stops each training after that long in
      this process (a checkpoint is kept; the cell is neither evaluated nor finished, and the next run resumes
      it), for machines lent in pieces. ``size``: "tiny", "small" or "paper" (see :data:`SIZES`).
    - ``image_size`` (H, W): the policies' camera resolution. On ALOHA the recording and the evaluation render
      at it directly (cheaper than rendering 480x640 and resizing; train and evaluation see the same pixels).
    - Evaluation: ``eval_episodes`` closed-loop episodes per cell on seeds ``eval_seed``, ``eval_seed + 1``, ...
      (the same for every cell; default 100000, the reported range: choose settings on another range, e.g.
      70000, never on the reported one),
      ``diversity_samples`` chunks for each of ``diversity_observations`` held-out observations.
    - Training schedule, the same for every cell (ACT and the hybrid alike; issue 23): ``lr_schedule``
      ("cosine" to 0 at the end of the run, or "constant"), ``warmup_steps`` of linear warm-up (None:
      min(500, max_steps // 10), 500 without max_steps) and ``ema`` (EMA weights, diffusers' warm-up with power
      0.75 and max decay 0.9999, evaluated and exported). The defaults are the hybrid's (Diffusion Policy's);
      before kinema-hybrid 0.2.5 the ACT cells trained at a constant lr without warm-up or EMA.
    - ``act`` / ``hybrid``: extra ACTConfig / HybridConfig fields (for example ``{"kl_schedule": "cyclical:0.01:500"}``);
      ``train``: extra TrainConfig fields shared by both loops.
    """

    task: str
    out_dir: str
    variants: tuple[str, ...] = POLICIES
    seeds: tuple[int, ...] = (0, 1, 2)
    demos: tuple[int, ...] = (50,)
    data: str | None = None
    val_episodes: int = 10
    size: str = "small"
    chunk_size: int | None = None
    n_action_steps: int | None = None
    image_size: tuple[int, int] | None = None
    max_steps: int | None = 5000
    max_minutes: float | None = None
    session_minutes: float | None = None
    batch_size: int = 32
    lr: float = 1e-4
    lr_schedule: str = "cosine"
    warmup_steps: int | None = None
    ema: bool = True
    num_inference_steps: int = 10
    eval_episodes: int = 50
    eval_seed: int = EVAL_SEED
    diversity_samples: int = 8
    diversity_observations: int = 16
    workers: int = 1
    device: str | None = None
    act: dict = field(default_factory=dict)
    hybrid: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: unknown {self.task!r}; expected one of {TASKS}")
        self.variants = check_policies(self.variants)
        self.seeds = tuple(int(s) for s in self.seeds)
        self.demos = tuple(int(d) for d in self.demos)
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds: expected integers >= 0, got {self.seeds!r}")
        if not self.demos or any(d < 1 for d in self.demos):
            raise ValueError(f"demos: expected demonstration counts >= 1, got {self.demos!r}")
        if self.size not in SIZES:
            raise ValueError(f"size: expected one of {tuple(SIZES)}, got {self.size!r}")
        if self.max_steps is None and self.max_minutes is None:
            raise ValueError(
                "AblationConfig: give max_steps and/or max_minutes per training, or it never ends"
            )
        for name in ("val_episodes", "eval_episodes", "diversity_observations", "batch_size", "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {value!r}")
        if isinstance(self.eval_seed, bool) or not isinstance(self.eval_seed, int) or self.eval_seed < 0:
            raise ValueError(f"eval_seed: expected an integer >= 0, got {self.eval_seed!r}")
        if self.diversity_samples < 2:
            raise ValueError(
                f"diversity_samples: expected >= 2 samples per observation, got {self.diversity_samples}"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule: expected 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.warmup_steps is None:
            self.warmup_steps = min(500, (self.max_steps or 10**9) // 10)
        if (
            isinstance(self.warmup_steps, bool)
            or not isinstance(self.warmup_steps, int)
            or self.warmup_steps < 0
        ):
            raise ValueError(f"warmup_steps: expected an integer >= 0 or None, got {self.warmup_steps!r}")
        check_sampling_steps(self.num_inference_steps, 10**9, "num_inference_steps")
        chunk, steps = _TASK_CHUNKS[self.task]
        self.chunk_size = self.chunk_size or chunk
        self.n_action_steps = self.n_action_steps or min(steps, self.chunk_size)
        if self.image_size is not None:
            self.image_size = tuple(self.image_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ------------------------------------------------------------------------------------------------------ data


def prepare_data(config: AblationConfig) -> tuple[list[Path], list[Path]]:
    """(train files, held-out files): recorded here when needed (dock always; ALOHA without ``data``)."""
    out = Path(config.out_dir) / "data"
    need = max(config.demos)
    if config.task == "dock":
        from kinema.robot_data.sim.dock import record_episodes

        train_dir, val_dir = out / "train", out / "val"
        for folder, count, seed in ((train_dir, need, 0), (val_dir, config.val_episodes, DOCK_VAL_SEED)):
            if not _has_recording(folder, count):
                record_episodes(folder, count, seed=seed, overwrite=True, progress=config.progress)
        return episode_files(train_dir)[:need], episode_files(val_dir)[: config.val_episodes]
    if config.data is None:
        from kinema.robot_data.sim import record_episodes

        if not _has_recording(out / config.task, need + config.val_episodes):
            record_episodes(
                config.task,
                need + config.val_episodes,
                out / config.task,
                workers=config.workers,
                overwrite=True,
                **_render_size(config),
            )
        files = episode_files(out / config.task)
    else:
        files = episode_files(config.data)
    if len(files) < need + config.val_episodes:
        raise ValueError(
            f"data: {len(files)} episodes, but demos {need} + val_episodes {config.val_episodes} are needed"
        )
    return files[:need], files[-config.val_episodes :]


def _render_size(config: AblationConfig) -> dict:
    """``image_size`` for ALOHA recording / evaluation when the config sets one (else their 480x640 default)."""
    return {} if config.image_size is None else {"image_size": tuple(config.image_size)}


def _has_recording(folder: Path, count: int) -> bool:
    manifest = folder / "recording.json"
    if not manifest.is_file():
        return False
    payload = json.loads(manifest.read_text())
    recorded = payload.get("episodes")
    return len(recorded) >= count if isinstance(recorded, list) else (recorded or 0) >= count


# ---------------------------------------------------------------------------------------------------- models


def model_config(policy: str, config: AblationConfig, first_episode: Path):
    """The ACTConfig ("act") or HybridConfig of a cell: dims from the data, the size preset, the task's
    chunking, then the user's overrides."""
    from kinema.robot_data import check_policy_episode

    info = check_policy_episode(first_episode)
    cameras = tuple(sorted(info.cameras)) if config.task == "dock" else ("top",)
    common = {
        **SIZES[config.size],
        "camera_names": cameras,
        "state_dim": info.qpos_dim,
        "action_dim": info.action_dim,
        # dock: the dock and wall positions are part of the observation; ALOHA: images and joints only, as ACT
        "environment_state_dim": (info.environment_state_dim or 0) if config.task == "dock" else 0,
        "chunk_size": config.chunk_size,
        "n_action_steps": config.n_action_steps,
        "image_size": config.image_size,
    }
    if config.size != "paper":
        common["dropout"] = 0.0  # short runs: dropout only slows them down
    if policy in ACT_POLICIES:
        from kinema.act_policy import ACTConfig

        inference_z = {"act": "zero", "act_z": "sample"}[policy]
        return ACTConfig(**{**common, **_ACT_DEPTH[config.size], **config.act, "inference_z": inference_z})
    from ._config import HybridConfig

    return HybridConfig(
        **{
            **common,
            **_HYBRID_DEPTH[config.size],
            **_TASK_HYBRID[config.task],
            "variant": policy,
            **config.hybrid,
        }
    )


def train_settings(config: AblationConfig) -> dict:
    """The TrainConfig fields every cell shares, ACT's and the hybrid's alike: batch, lr, schedule, warm-up,
    weight averaging (``config.train`` overrides them for every cell)."""
    return {
        "batch_size": config.batch_size,
        "lr": config.lr,
        "lr_backbone": config.lr,
        "lr_schedule": config.lr_schedule,
        "warmup_steps": config.warmup_steps,
        "ema": config.ema,
        "max_steps": config.max_steps,
        "max_minutes": config.max_minutes,
        **config.train,
    }


def train_policy(policy: str, model, files: list[Path], out_dir: Path, config: AblationConfig, seed: int):
    """Trains one cell (resuming an unfinished run) with :func:`train_settings`; returns its TrainResult as a
    dict."""
    shared = {
        "data": [str(f) for f in files],
        "out_dir": str(out_dir),
        "val_fraction": 0.0,  # held-out episodes are measured by the ablation itself
        "save_every": 1000,  # an interrupted ablation resumes the cell from its last checkpoint
        "log_every": 50,
        "seed": seed,
        "load_workers": config.workers,  # parallel episode decoding at start-up
        "session_minutes": config.session_minutes,
        "progress": config.progress,
        "device": train_device(config.device),
        "resume": (out_dir / "checkpoints").is_dir(),
        **train_settings(config),
    }
    if policy in ACT_POLICIES:
        from kinema.act_policy import TrainConfig, train
    else:
        from ._train import TrainConfig, train
    return train(model, TrainConfig(**shared)).to_dict()


def load_trained(policy: str, run_dir: Path, config: AblationConfig, seed: int = 0):
    """(SimPolicy, model) of a trained cell, on ``config.device``."""
    if policy in ACT_POLICIES:
        from kinema.act_policy import load_policy

        inference_z = {"act": "zero", "act_z": "sample"}[policy]
        runner = load_policy(run_dir, device=config.device, inference_z=inference_z, seed=seed)
    else:
        from ._policy import load_policy

        runner = load_policy(
            run_dir,
            device=config.device,
            variant=policy,
            num_inference_steps=config.num_inference_steps,
            seed=seed,
        )
    return runner, runner.model


# ------------------------------------------------------------------------------------------------- metrics


class ActionRecorder:
    """Wraps a SimPolicy and keeps every row's executed actions, one sequence (T, A) per episode, numbered in the
    order episodes start (rows in ascending order within a step: the order in which kinema.robot_data's dock and
    ALOHA harnesses hand out episode indices), with the environment_state each episode started from."""

    def __init__(self, policy):
        self.policy = policy
        self._done: dict[int, np.ndarray] = {}
        self.starts: dict[int, np.ndarray] = {}  # episode -> environment_state at its first step
        self._open: dict[int, tuple[int, list]] = {}  # row -> (episode, actions)
        self._count = 0

    def reset(self, num_envs: int) -> None:
        self.policy.reset(num_envs)

    def act(self, observation: dict) -> np.ndarray:
        actions = np.asarray(self.policy.act(observation))
        steps = np.asarray(observation["step"])
        active = np.asarray(observation.get("active", np.ones(len(steps), bool)), bool)
        state = observation.get("environment_state")
        for row in np.flatnonzero(active):
            if steps[row] == 0 or row not in self._open:
                self._close(row)
                self._open[row] = (self._count, [])
                if state is not None:
                    self.starts[self._count] = np.asarray(state[row], np.float64).copy()
                self._count += 1
            self._open[row][1].append(actions[row].copy())
        return actions

    def _close(self, row: int) -> None:
        if row in self._open:
            episode, actions = self._open.pop(row)
            self._done[episode] = np.asarray(actions)

    def finish(self) -> list[np.ndarray]:
        """The action sequences (T, A), in episode order."""
        for row in list(self._open):
            self._close(row)
        return [self._done[k] for k in sorted(self._done)]


def episode_smoothness(sequences: list[np.ndarray], records: list[dict]) -> dict:
    """Step and jerk (:func:`mean_smoothness`) over all episodes and over the successful ones
    (``step_success``, ``jerk_success``: None without a success), from the recorded action sequences and the
    harness's per-episode records (``success``), matched by episode order; ``successes`` counts them."""
    if len(sequences) != len(records):
        raise RuntimeError(
            f"recorded {len(sequences)} action sequences for {len(records)} evaluated episodes"
        )
    successful = [seq for seq, record in zip(sequences, records, strict=True) if record["success"]]
    out = dict(mean_smoothness(sequences))
    # None rather than NaN without a success: rows are compared and written as JSON
    out.update(
        {f"{k}_success": v if math.isfinite(v) else None for k, v in mean_smoothness(successful).items()}
    )
    out["successes"] = len(successful)
    return out


@torch.no_grad()
def sample_chunks(policy: str, model, batch: dict, samples: int, seed: int) -> torch.Tensor:
    """``samples`` raw chunks per observation (B, K, C, A): z ~ p(z | obs) and fresh noise each (hybrid), z ~
    N(0, I) each (ACT with ``inference_z="sample"``), or ACT's deterministic z = 0 prediction repeated."""
    generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    out = []
    for _ in range(samples):
        if policy in ACT_POLICIES:
            out.append(model.predict(batch, generator=generator))
        else:
            out.append(model.sample(batch, generator=generator))
    return torch.stack(out, dim=1).float()


def _side_labels(chunks: np.ndarray, wall_x: np.ndarray, margin: float = 0.1) -> list[list[str]]:
    """Dock: the side of each sampled chunk (B, K, C, 2): where it strays furthest from the wall centre's x
    (B,), "left" / "right" beyond ``margin``, else "middle" (the average of the modes, into the wall)."""
    offset = chunks[..., 0] - wall_x[:, None, None]  # (B, K, C)
    widest = np.take_along_axis(offset, np.abs(offset).argmax(-1)[..., None], axis=-1)[..., 0]  # (B, K)
    return [["left" if v < -margin else "right" if v > margin else "middle" for v in row] for row in widest]


def offline_metrics(policy: str, model, val_files: list[Path], config: AblationConfig, seed: int) -> dict:
    """Chunk fidelity (L1, L2) on held-out episodes, the spread of sampled chunks, and on dock the mode coverage
    of chunks sampled at the start of held-out scenes."""
    model.eval()
    device = next(model.parameters()).device
    memory = load_episodes(
        val_files, model.config, device=device, data_device="cpu", workers=1, progress=False
    )
    chunk = model.config.chunk_size
    count = min(len(memory), 4 * config.diversity_observations)
    indices = torch.linspace(0, len(memory) - 1, count).round().long()
    batch = chunk_batch(memory, indices, chunk, device)
    predicted = sample_chunks(policy, model, batch, 1, seed)[:, 0]
    fidelity = chunk_fidelity(
        predicted.cpu().numpy(), batch["action"].cpu().numpy(), batch["is_pad"].cpu().numpy()
    )
    few = indices[torch.linspace(0, count - 1, min(count, config.diversity_observations)).round().long()]
    samples = sample_chunks(
        policy, model, chunk_batch(memory, few, chunk, device), config.diversity_samples, seed
    )
    out = {"l1": fidelity["l1"], "l2": fidelity["l2"], "chunk_spread": chunk_spread(samples.cpu().numpy())}
    if config.task == "dock":
        starts = torch.cat([torch.zeros(1, dtype=torch.long), torch.unique(memory.episode_end)[:-1]])
        first = chunk_batch(memory, starts, chunk, device)
        sampled = sample_chunks(policy, model, first, config.diversity_samples, seed + 1).cpu().numpy()
        labels = _side_labels(sampled, first["environment_state"][:, 2].cpu().numpy())
        per_scene = [mode_coverage(row) for row in labels]
        out["both_sides_fraction"] = float(np.mean([m["coverage"] == 1.0 for m in per_scene]))
        out["sample_modes"] = mode_coverage([label for row in labels for label in row])["counts"]
    return out


def closed_loop(policy_runner, config: AblationConfig, out_dir: Path) -> dict:
    """Success and smoothness of the executed actions over ``eval_episodes`` (the same seeds for every cell)."""
    recorder = ActionRecorder(policy_runner)
    if config.task == "dock":
        from kinema.robot_data.sim.dock import evaluate

        result = evaluate(
            recorder, config.eval_episodes, seed=config.eval_seed, out_dir=out_dir, progress=config.progress
        )
        summary = {"success": result.success_rate, "collision": result.collision_rate, "modes": result.modes}
        sequences = recorder.finish()
        for record, actions in zip(result.episodes, sequences, strict=False):  # the order check
            if not np.array_equal(np.asarray(record["actions"]), actions):
                raise RuntimeError(f"recorded actions do not match episode {record['episode']}")
    else:
        from kinema.robot_data.sim import evaluate

        result = evaluate(
            recorder, config.task, episodes=config.eval_episodes, seed=config.eval_seed, workers=config.workers,
            out_dir=out_dir, progress=config.progress, **_render_size(config),
        )  # fmt: skip
        summary = {"success": result.success_rate, "stage_rates": result.stage_rates}
        sequences = recorder.finish()
        for record in result.episodes:  # the order check: each episode started from its own scene
            start = recorder.starts.get(record["episode"])
            if start is not None and not np.allclose(start, record["environment_state"], atol=1e-5):
                raise RuntimeError(f"recorded actions do not match episode {record['episode']}")
    summary.update(episode_smoothness(sequences, result.episodes))
    return summary


# ------------------------------------------------------------------------------------------------- the run


def _cell_name(policy: str, demos: int, seed: int) -> str:
    return f"{policy}_d{demos}_s{seed}"


def _training_dir(out: Path, policy: str, demos: int, seed: int) -> Path:
    """Where a cell's policy is trained: "act_z" shares the "act" cell's training (the same weights; only the
    latent at inference differs), every other cell trains in its own folder."""
    return out / "runs" / _cell_name("act" if policy == "act_z" else policy, demos, seed)


def _finished_training(run_dir: Path) -> dict | None:
    """The TrainResult of a run that completed (``train_result.json`` with ``complete``), else None."""
    path = run_dir / "train_result.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    return result if result.get("complete") else None


def run_ablation(config: AblationConfig, *, prepare_only: bool = False) -> dict:
    """Trains and evaluates every (policy, demos, seed) cell (finished cells are read back, unfinished ones
    resume); writes and returns the results (see the module docstring).

    ``complete`` in the result is False when a training stopped at ``session_minutes`` (then nothing is
    written but the checkpoints: run again) or when ``prepare_only`` (the data is recorded, nothing trained:
    several processes can then share one recording, e.g. one variant each on one GPU)."""
    from ._report import write_results

    start = time.perf_counter()
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_files, val_files = prepare_data(config)
    if prepare_only:
        return {"complete": False, "rows": [], "unfinished": []}
    rows, unfinished = [], []
    for demos in config.demos:
        for policy in config.variants:
            for seed in config.seeds:
                run_dir = out / "runs" / _cell_name(policy, demos, seed)
                done = run_dir / "cell.json"
                if done.is_file():
                    rows.append(json.loads(done.read_text()))
                    continue
                train_dir = _training_dir(out, policy, demos, seed)
                trained = _finished_training(train_dir) if train_dir != run_dir else None
                if trained is None:
                    torch.manual_seed(seed)
                    model = model_config(policy, config, train_files[0])
                    trained = train_policy(policy, model, train_files[:demos], train_dir, config, seed)
                if not trained["complete"]:
                    unfinished.append(train_dir.name)
                    continue
                runner, net = load_trained(policy, train_dir, config, seed)
                row = {
                    "policy": policy,
                    "demos": demos,
                    "seed": seed,
                    "steps": trained["step"],
                    "train_seconds": trained["train_seconds"],
                    # over the whole run (a resumed cell's last session may have trained no steps)
                    "samples_per_second": round(
                        trained["step"] * config.batch_size / max(trained["train_seconds"], 1e-9), 2
                    ),
                    **closed_loop(runner, config, run_dir / f"eval_{config.task}"),
                    **offline_metrics(policy, net, val_files, config, seed),
                }
                write_json_atomic(done, row)
                rows.append(row)
    if unfinished:
        return {"complete": False, "rows": rows, "unfinished": unfinished}
    results = {
        "format": "kinema-hybrid-ablation",
        "version": 1,
        "task": config.task,
        "config": config.to_dict(),
        "rows": rows,
        "summary": summarize(rows),
        "device": _device_name(config.device),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "minutes": round((time.perf_counter() - start) / 60, 2),
    }
    write_results(results, out)
    return {"complete": True, **results}


def _device_name(device: str | None) -> str:
    if (device is None or str(device).startswith("cuda")) and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return "cpu"


_SUMMARIZED = (
    "success",
    "collision",
    "step",
    "jerk",
    "step_success",
    "jerk_success",
    "l1",
    "l2",
    "chunk_spread",
    "both_sides_fraction",
)


def summarize(rows: list[dict]) -> list[dict]:
    """Per (policy, demos): mean and standard deviation over seeds of every metric, and the seeds' successes."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["policy"], row["demos"]), []).append(row)
    out = []
    for (policy, demos), group in groups.items():
        entry = {"policy": policy, "demos": demos, "seeds": [r["seed"] for r in group]}
        for key in _SUMMARIZED:
            values = [r[key] for r in group if key in r and r[key] is not None and math.isfinite(r[key])]
            if values:
                entry[key] = float(np.mean(values))
                entry[f"{key}_std"] = float(np.std(values))
        entry["success_per_seed"] = [r.get("success") for r in group]
        out.append(entry)
    return out
