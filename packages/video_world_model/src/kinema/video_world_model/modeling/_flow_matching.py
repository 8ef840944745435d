"""Rectified-flow training objective with Wan's shifted sigmas, taken from diffusers' flow-matching scheduler.

    x_t = (1 - sigma) * x0 + sigma * noise,     target = noise - x0,     timestep = 1000 * sigma

Sigmas (``sigma_schedule``, descending: index 0 is pure noise):

- ``"train"`` (default): the 1000 training sigmas of ``FlowMatchEulerDiscreteScheduler(shift)`` as constructed,
  shift(1, 0.999, ..., 0.001), smallest 0.005 at shift 5. These equal DiffSynth-Studio's Wan training sigmas
  (``set_timesteps(1000, training=True)``: shift(linspace(1, 0, 1001)[:-1])) and Self-Forcing's table.
- ``"inference"``: the sigmas of that scheduler after ``set_timesteps(1000)``, which applies the shift a second
  time at the low end (smallest 0.0244 at shift 5): what kinema <= 0.4 trained with; kept for older runs.

``min_timestep_boundary`` / ``max_timestep_boundary`` select the index range [min * 1000, max * 1000) of that
descending list, as in the reference training script (e.g. 0..0.417 trains only the high-noise part).

Loss weighting (``weighting``): ``"diffsynth"`` (default of kinema-wm train and VACE-E, DiffSynth-Studio's Wan
training weight: w(t) = exp(-2 ((t - 500) / 1000)^2) at timestep t = 1000 sigma, shifted so that its minimum over
the 1000 training timesteps is 0 and scaled to mean 1 over them: mid-noise steps count most, the cleanest and the
noisiest least); ``"none"`` (1 everywhere), or diffusers' SD3 weightings ``"sigma_sqrt"`` and ``"cosmap"``
(``compute_loss_weighting_for_sd3``).

``prediction="sample"`` trains the network to output the clean latents x0 instead of the flow (the loss is then
the MSE on x0); :func:`flow_from_prediction` turns such an output into the flow the Euler sampler steps with,
v = (x_t - x0) / sigma. Wan itself predicts the flow (the default). A small model trained from scratch whose
tokens carry more values than its width (the pixel-space drone model) cannot pass the noise of a flow target
through that bottleneck: its samples stay noisy; with x0 as the target the sampler removes the noise exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.training_utils import compute_loss_weighting_for_sd3

from ._first_frame import fuse_first_frame, token_timesteps

WEIGHTINGS = ("diffsynth", "none", "sigma_sqrt", "cosmap")
PREDICTIONS = ("flow", "sample")
SIGMA_SCHEDULES = ("train", "inference")


@dataclass(frozen=True)
class FlowMatchingBatch:
    """Everything one training step needs. Shapes: latents (B, C, F, h, w), timesteps (B, F*HW) or (B,)."""

    noisy: torch.Tensor
    target: torch.Tensor
    timesteps: torch.Tensor
    sigmas: torch.Tensor  # (B,)
    weights: torch.Tensor  # (B,)
    first_loss_frame: int = 1  # latent frames before it are given, not generated


class FlowMatchingObjective:
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        shift: float = 5.0,
        min_timestep_boundary: float = 0.0,
        max_timestep_boundary: float = 1.0,
        weighting: str = "none",
        prediction: str = "flow",
        sigma_schedule: str = "train",
    ):
        if not 0.0 <= min_timestep_boundary < max_timestep_boundary <= 1.0:
            raise ValueError(
                "min_timestep_boundary/max_timestep_boundary: expected 0 <= min < max <= 1, "
                f"got {min_timestep_boundary}, {max_timestep_boundary}"
            )
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {weighting!r}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
        if shift <= 0:
            raise ValueError(f"shift: expected > 0, got {shift}")
        if sigma_schedule not in SIGMA_SCHEDULES:
            raise ValueError(f"sigma_schedule: expected one of {SIGMA_SCHEDULES}, got {sigma_schedule!r}")
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=num_train_timesteps, shift=shift)
        if sigma_schedule == "inference":
            scheduler.set_timesteps(num_train_timesteps)
            self.sigmas = scheduler.sigmas[:-1].float()  # (N,) descending, the final 0 dropped
        else:
            self.sigmas = scheduler.sigmas.float().clone()  # (N,) descending, no final 0 before set_timesteps
        self.sigma_schedule = sigma_schedule
        self.num_train_timesteps = num_train_timesteps
        self.low = int(min_timestep_boundary * num_train_timesteps)
        self.high = max(self.low + 1, int(max_timestep_boundary * num_train_timesteps))
        self.weighting = weighting
        self.prediction = prediction

    def loss_weights(self, sigmas: torch.Tensor) -> torch.Tensor:
        """(B,) float32 loss weight of each sample's sigma (``weighting``, see the module docstring)."""
        sigmas = sigmas.float()
        if self.weighting != "diffsynth":
            return compute_loss_weighting_for_sd3(self.weighting, sigmas)
        table = _diffsynth_bell(self.sigmas * 1000)
        low, total = table.min(), (table - table.min()).sum()
        return (_diffsynth_bell(sigmas * 1000) - low) * (len(table) / total)

    def sample_sigmas(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        index = torch.randint(self.low, self.high, (batch,), generator=generator)
        return self.sigmas[index]

    def prepare(
        self,
        latents: torch.Tensor,
        noise: torch.Tensor,
        sigmas: torch.Tensor,
        tokens_per_frame: int | None = None,
    ) -> FlowMatchingBatch:
        """latents, noise (B, C, F, h, w), sigmas (B,) -> noisy input, target and timesteps. The target is the flow
        noise - x0, or x0 itself with ``prediction="sample"``.

        With ``tokens_per_frame`` (TI2V): frame 0 stays the clean first-image latent, timesteps are per token
        (B, F*HW) with 0 for frame 0, and the loss skips frame 0. Without (Wan2.1 / VACE): every frame is noised and
        the timesteps are (B,).
        """
        sigma = sigmas.to(latents.device, torch.float32).view(-1, 1, 1, 1, 1)
        noisy = ((1 - sigma) * latents.float() + sigma * noise.float()).to(latents.dtype)
        if self.prediction == "sample":
            target = latents
        else:
            target = (noise.float() - latents.float()).to(latents.dtype)
        weights = self.loss_weights(sigmas).to(latents.device)
        if tokens_per_frame is None:
            timesteps = (sigmas.float() * self.num_train_timesteps).to(latents.device)
            return FlowMatchingBatch(noisy, target, timesteps, sigmas, weights, first_loss_frame=0)
        noisy = fuse_first_frame(noisy, latents[:, :, :1])
        timesteps = token_timesteps(sigmas * self.num_train_timesteps, latents.shape[2], tokens_per_frame)
        return FlowMatchingBatch(
            noisy, target, timesteps.to(latents.device), sigmas, weights, first_loss_frame=1
        )

    @staticmethod
    def loss(
        prediction: torch.Tensor, batch: FlowMatchingBatch, first_frame: int | None = None
    ) -> torch.Tensor:
        """Weighted MSE over latent frames ``first_frame``.. (default: the batch's: 1 for TI2V, where frame 0 is the
        given image; 0 otherwise)."""
        start = batch.first_loss_frame if first_frame is None else first_frame
        error = (prediction.float()[:, :, start:] - batch.target.float()[:, :, start:]).pow(2)
        per_sample = error.mean(dim=(1, 2, 3, 4))  # (B,)
        return (per_sample * batch.weights.float()).mean()


def _diffsynth_bell(timesteps: torch.Tensor) -> torch.Tensor:
    return torch.exp(-2 * ((timesteps - 500) / 1000) ** 2)


def flow_from_prediction(
    prediction: torch.Tensor,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    patch_size: tuple[int, int, int],
    kind: str,
) -> torch.Tensor:
    """The flow (B, C, F, H, W) float32 a network output stands for: itself for ``kind="flow"``, for ``"sample"``
    (x_t - x0) / sigma with sigma = timestep / 1000 per token (timesteps (B,) or per token (B, F'*h'*w') over
    ``patch_size`` patches). Tokens at sigma 0 (the given first frame) get a flow of 0."""
    if kind == "flow":
        return prediction.float()
    if kind != "sample":
        raise ValueError(f"prediction type: expected one of {PREDICTIONS}, got {kind!r}")
    batch, _, frames, height, width = noisy.shape
    p_t, p_h, p_w = patch_size
    sigma = timesteps.float().to(noisy.device) / 1000
    if sigma.ndim == 1:
        sigma = sigma.view(batch, 1, 1, 1, 1)
    else:  # per token -> per latent position
        sigma = sigma.view(batch, frames // p_t, height // p_h, width // p_w)
        sigma = (
            sigma.repeat_interleave(p_t, 1).repeat_interleave(p_h, 2).repeat_interleave(p_w, 3).unsqueeze(1)
        )
    flow = (noisy.float() - prediction.float()) / sigma.clamp_min(1e-6)
    return torch.where(sigma > 0, flow, torch.zeros_like(flow))
