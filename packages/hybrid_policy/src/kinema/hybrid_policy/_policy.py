"""HybridPolicy: a trained hybrid behind kinema.robot_data.sim's SimPolicy protocol (reset / act), batched over
N environments; rows reset their chunk (or ensembling) state when their ``step`` is 0. Runs in the ALOHA
harness (``kinema.robot_data.sim.evaluate``, ``kinema-data eval-sim``) and on the docking task.

N environments, R rows queried this step, C chunk steps, A action dims.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from kinema.act_policy import ChunkedSimPolicy, ChunkExecutor
from kinema.robot_data.lerobot import kinema_observation

from ._config import SAMPLERS, check_sampling_steps
from ._model import HybridPolicyModel

_UNSET = object()


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class HybridPolicy(ChunkedSimPolicy):
    """Runs ``model`` as a SimPolicy.

    - ``n_action_steps`` / ``temporal_ensemble_coeff``: execution (default: the model config's); a coefficient
      switches to temporal ensembling, ``None`` to chunked execution.
    - ``num_inference_steps``, ``sampler`` ("ddim", "dpmsolver++", "ddpm"), ``z_temperature``: sampling
      (default: the config's).
    - ``seed``: seeds z and the diffusion noise (the same seed, observations and weights give the same actions).
    - ``device``: default CUDA when available; ``autocast`` (default: on for CUDA) runs the model in bf16.
    """

    def __init__(
        self,
        model: HybridPolicyModel,
        *,
        device: str | torch.device | None = None,
        n_action_steps: int | None = None,
        temporal_ensemble_coeff=_UNSET,
        num_inference_steps: int | None = None,
        sampler: str | None = None,
        z_temperature: float | None = None,
        seed: int = 0,
        autocast: bool | None = None,
    ):
        config = model.config
        self.device = torch.device(device) if device is not None else default_device()
        self.model = model.to(self.device).eval()
        coeff = (
            config.temporal_ensemble_coeff if temporal_ensemble_coeff is _UNSET else temporal_ensemble_coeff
        )
        if n_action_steps is None:
            n_action_steps = 1 if coeff is not None else config.n_action_steps
        self.executor = ChunkExecutor(config.chunk_size, n_action_steps, coeff)
        self.temporal_ensemble_coeff = coeff
        self.n_action_steps = n_action_steps
        self.num_inference_steps = check_sampling_steps(
            config.num_inference_steps if num_inference_steps is None else num_inference_steps,
            config.num_train_timesteps,
        )
        if sampler is not None and sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")
        self.sampler = sampler or config.sampler
        self.z_temperature = config.z_temperature if z_temperature is None else float(z_temperature)
        if self.z_temperature < 0:
            raise ValueError(f"z_temperature: expected >= 0, got {self.z_temperature}")
        self.autocast = (self.device.type == "cuda") if autocast is None else bool(autocast)
        self.generator = torch.Generator(device=self.device).manual_seed(int(seed))
        self.num_envs = 0
        self.queries = 0

    # ----------------------------------------------------------------------------------------------- model

    @torch.no_grad()
    def predict_chunk(
        self, observation: dict, rows: np.ndarray | None = None, *, z: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw action chunks (R, C, A) float32 for ``rows`` (default all) of an observation batch; ``z`` (R, L)
        overrides the latent (variants B, C)."""
        observation = kinema_observation(observation)  # LeRobot's names accepted
        num = len(np.asarray(observation["qpos"]))
        rows = np.arange(num) if rows is None else np.asarray(rows)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            chunks = self.model.sample(
                self._inputs(observation, rows),
                z=z,
                num_inference_steps=self.num_inference_steps,
                sampler=self.sampler,
                z_temperature=self.z_temperature,
                generator=self.generator,
            )
        self.queries += 1
        return chunks.float()


def load_policy(
    checkpoint_dir: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    variant: str | None = None,
    n_action_steps: int | None = None,
    temporal_ensemble_coeff=_UNSET,
    num_inference_steps: int | None = None,
    sampler: str | None = None,
    z_temperature: float | None = None,
    seed: int = 0,
) -> HybridPolicy:
    """A :class:`HybridPolicy` from a checkpoint folder (``variant``: the one it must hold)."""
    from ._checkpoint import load_hybrid

    device = torch.device(device) if device is not None else default_device()
    model = load_hybrid(checkpoint_dir, variant=variant, device=device)
    return HybridPolicy(
        model,
        device=device,
        n_action_steps=n_action_steps,
        temporal_ensemble_coeff=temporal_ensemble_coeff,
        num_inference_steps=num_inference_steps,
        sampler=sampler,
        z_temperature=z_temperature,
        seed=seed,
    )


def load_sim_policy(checkpoint_dir: Path, device: str | None = None, **options) -> HybridPolicy:
    """The loader named in hybrid checkpoints' ``policy.json`` (``kinema.hybrid_policy:load_sim_policy``), called
    by ``kinema-data eval-sim --checkpoint DIR``; ``options``: those of :func:`load_policy`."""
    known = {
        "variant",
        "n_action_steps",
        "temporal_ensemble_coeff",
        "num_inference_steps",
        "sampler",
        "z_temperature",
        "seed",
    }
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"policy.json options: unknown {unknown}; expected some of {sorted(known)}")
    return load_policy(checkpoint_dir, device=device, **options)
