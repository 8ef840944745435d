"""diffusers' schedulers for the action chunk: DDPM for training (forward noising and the regression target),
DDIM, DPM-Solver++ or DDPM ancestral sampling for inference, each with its own number of steps.

B batch, C chunk steps, A action dims.
"""

from __future__ import annotations

import torch

from ._config import SAMPLERS, check_sampling_steps


def training_scheduler(config):
    """The DDPMScheduler of ``config`` (num_train_timesteps, noise_schedule, prediction_type, clip_sample)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.noise_schedule,
        prediction_type=config.prediction_type,
        clip_sample=config.clip_sample,
        clip_sample_range=1.0,  # actions are normalized to [-1, 1]
    )


def sampling_scheduler(config, sampler: str | None = None):
    """A fresh inference scheduler with the training noise schedule: ``"ddim"`` (deterministic, eta 0),
    ``"dpmsolver++"`` (DPM-Solver++ 2nd-order multistep) or ``"ddpm"`` (ancestral)."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    sampler = config.sampler if sampler is None else sampler
    base = training_scheduler(config).config
    if sampler == "ddim":
        return DDIMScheduler.from_config(base, set_alpha_to_one=True)
    if sampler == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2)
    if sampler == "ddpm":
        return DDPMScheduler.from_config(base)
    raise ValueError(f"sampler: expected one of {SAMPLERS}, got {sampler!r}")


def training_target(
    scheduler, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the denoiser regresses for its prediction type: the noise, the clean chunk, or the velocity
    v = sqrt(alpha_bar) * noise - sqrt(1 - alpha_bar) * clean (diffusers' ``get_velocity``). (B, C, A) each."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return clean
    if kind == "v_prediction":
        return scheduler.get_velocity(clean, noise, timesteps)
    raise ValueError(f"prediction_type: expected epsilon, sample or v_prediction, got {kind!r}")


def reverse_diffusion(
    denoise,
    scheduler,
    shape: tuple[int, ...],
    num_steps: int,
    *,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Runs ``num_steps`` reverse steps of ``scheduler`` from Gaussian noise (or ``noise``) of ``shape``;
    ``denoise(x, timesteps (B,))`` is the model output. Returns the clean sample (B, C, A), normalized units."""
    check_sampling_steps(num_steps, scheduler.config.num_train_timesteps)
    scheduler.set_timesteps(num_steps, device=device)
    if noise is None:
        noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
    x = noise.to(device=device, dtype=torch.float32) * scheduler.init_noise_sigma
    batch = shape[0]
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        output = denoise(model_input.to(dtype), t.expand(batch))
        x = scheduler.step(output.float(), t, x, generator=generator).prev_sample
    return x


def ddim_plan(scheduler, num_steps: int) -> list[tuple[int, float, float]]:
    """(t, alpha_bar_t, alpha_bar_prev) for each reverse step of a diffusers ``DDIMScheduler`` run for
    ``num_steps`` steps: the constants of its deterministic (eta = 0) update, read from the scheduler itself
    (its timesteps, ``alphas_cumprod`` and ``final_alpha_cumprod``), so :func:`ddim_update` can run the loop
    without the scheduler object, as one captured graph."""
    scheduler.set_timesteps(num_steps)
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    alphas = scheduler.alphas_cumprod
    plan = []
    for t in scheduler.timesteps.tolist():
        prev = t - stride
        alpha_prev = alphas[prev] if prev >= 0 else scheduler.final_alpha_cumprod
        plan.append((int(t), float(alphas[t]), float(alpha_prev)))
    return plan


def ddim_update(
    sample: torch.Tensor,
    output: torch.Tensor,
    alpha: float,
    alpha_prev: float,
    prediction_type: str,
    clip_range: float | None,
) -> torch.Tensor:
    """One eta = 0 DDIM step, as ``DDIMScheduler.step`` computes it (tested equal): the clean estimate from the
    model ``output`` by ``prediction_type``, clipped to ``clip_range`` when given, then moved to ``alpha_prev``."""
    beta = 1 - alpha
    if prediction_type == "epsilon":
        clean = (sample - beta**0.5 * output) / alpha**0.5
        eps = output
    elif prediction_type == "sample":
        clean = output
        eps = (sample - alpha**0.5 * clean) / beta**0.5
    elif prediction_type == "v_prediction":
        clean = alpha**0.5 * sample - beta**0.5 * output
        eps = alpha**0.5 * output + beta**0.5 * sample
    else:
        raise ValueError(
            f"prediction_type: expected epsilon, sample or v_prediction, got {prediction_type!r}"
        )
    if clip_range is not None:
        clean = clean.clamp(-clip_range, clip_range)
    return alpha_prev**0.5 * clean + (1 - alpha_prev) ** 0.5 * eps
