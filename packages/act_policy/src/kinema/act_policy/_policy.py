"""ACTPolicy: a trained ACT behind kinema.robot_data.sim's SimPolicy protocol (reset / act), batched over
N environments, each row resetting its chunk (or ensembling) state when its ``step`` is 0.

N environments, R rows queried this step, C chunk steps, A action dims.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from kinema.robot_data.lerobot import kinema_observation

from ._execution import ChunkedSimPolicy, ChunkExecutor
from ._model import ACT

_UNSET = object()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class ACTPolicy(ChunkedSimPolicy):
    """Runs ``model`` in the simulation harness (``kinema.robot_data.sim.evaluate``) or on a robot.

    - ``n_action_steps`` / ``temporal_ensemble_coeff``: execution (default: the model config's). Giving a
      coefficient switches to temporal ensembling (the model is queried every step); giving
      ``temporal_ensemble_coeff=None`` switches to chunked execution.
    - ``device``: default CUDA when available; ``autocast`` (default: on for CUDA) runs the model in bf16.
    - ``compile``: False, True / "default" or "reduce-overhead" (CUDA graphs: the lowest query latency). A
      compiled policy queries all N rows whenever any needs a chunk, so the input shape never changes.
    - ``seed``: seeds the latent of a model with ``inference_z="sample"`` (one generator for the policy's
      queries; None: torch's global RNG).
    """

    def __init__(
        self,
        model: ACT,
        *,
        device: str | torch.device | None = None,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff=_UNSET,
        autocast: bool | None = None,
        compile: bool | str = False,
        seed: int | None = 0,
    ):
        config = model.config
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        coeff = (
            config.temporal_ensemble_coeff if temporal_ensemble_coeff is _UNSET else temporal_ensemble_coeff
        )
        if n_action_steps is None:
            n_action_steps = 1 if coeff is not None else config.n_action_steps
        if coeff is not None and n_action_steps != 1:
            raise ValueError(
                f"n_action_steps: temporal ensembling queries every step, so it must be 1, got {n_action_steps}"
            )
        self.temporal_ensemble_coeff = coeff
        self.n_action_steps = n_action_steps
        self.executor = ChunkExecutor(config.chunk_size, n_action_steps, coeff)
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)
        if compile not in (False, True, "default", "reduce-overhead", "max-autotune"):
            raise ValueError(
                f"compile: expected False, True, 'default' or 'reduce-overhead', got {compile!r}"
            )
        self.compiled = bool(compile)
        self._predict = self._predict_eager
        if compile:
            mode = "default" if compile is True else compile
            self._predict = torch.compile(self._predict_eager, mode=mode, dynamic=False)
        self.generator = None
        if config.inference_z == "sample" and seed is not None:
            self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.num_envs = 0
        self.queries = 0  # model calls so far (a chunk per row each)

    # ----------------------------------------------------------------------------------------------- model

    def _predict_eager(self, batch: dict) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            return self.model.predict(batch, generator=self.generator)

    @torch.no_grad()
    def predict_chunk(self, observation: dict, rows: np.ndarray | None = None) -> torch.Tensor:
        """Raw action chunks (R, C, A) float32 for ``rows`` (default all) of an observation batch."""
        observation = kinema_observation(observation)  # LeRobot's names accepted
        num = len(np.asarray(observation["qpos"]))
        rows = np.arange(num) if rows is None else np.asarray(rows)
        chunks = self._predict(self._inputs(observation, rows))
        self.queries += 1
        return chunks.float().clone()  # a copy: CUDA-graph outputs are overwritten by the next call

    def query_rows(self, observation: dict, rows: torch.Tensor) -> torch.Tensor:
        if self.compiled:  # a fixed shape: all rows, then keep the ones that needed a chunk
            return self.predict_chunk(observation)[rows]
        return self.predict_chunk(observation, rows.cpu().numpy())


def load_policy(
    checkpoint_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    n_action_steps: int | None = None,
    temporal_ensemble_coeff=_UNSET,
    compile: bool | str = False,
    inference_z: str | None = None,
    seed: int | None = 0,
) -> ACTPolicy:
    """An :class:`ACTPolicy` from a checkpoint folder (see :func:`kinema.act_policy.load_act`);
    ``inference_z`` ("zero" / "sample") overrides the checkpoint's, ``seed`` seeds a sampled z."""
    from ._checkpoint import load_act

    device = torch.device(device) if device is not None else default_device()
    model = load_act(
        checkpoint_dir, device=device, **({} if inference_z is None else {"inference_z": inference_z})
    )
    return ACTPolicy(
        model,
        device=device,
        n_action_steps=n_action_steps,
        temporal_ensemble_coeff=temporal_ensemble_coeff,
        compile=compile,
        seed=seed,
    )


def load_sim_policy(checkpoint_dir: Path, device: str | None = None, **options) -> ACTPolicy:
    """The loader named in ACT checkpoints' ``policy.json`` (``kinema.act_policy:load_sim_policy``), called by
    ``kinema-data eval-sim --checkpoint DIR``; ``options``: n_action_steps, temporal_ensemble_coeff, compile,
    inference_z, seed."""
    known = {"n_action_steps", "temporal_ensemble_coeff", "compile", "inference_z", "seed"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"policy.json options: unknown {unknown}; expected some of {sorted(known)}")
    return load_policy(checkpoint_dir, device=device, **options)
