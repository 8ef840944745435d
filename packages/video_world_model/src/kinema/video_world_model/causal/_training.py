"""Training the action path of the causal rollout: a frozen generator, a trainable projection + action module, and a
block-causal flow-matching objective with per-block noise levels.

Two ways to show the model its context, both block-causal with the rollout's window:

- ``"diffusion_forcing"``: every block is noised to its own level, and each block is predicted from the noisy
  earlier blocks (Diffusion Forcing): one pass over the sequence with :func:`block_causal_mask`;
- ``"teacher_forcing"``: each noisy block is predicted from the *clean* earlier blocks, exactly what it sees at
  inference once the cache holds the re-encoded blocks: one pass over [clean frames, noisy frames] with
  :func:`teacher_forcing_mask` (both copies at the same rotary positions).

Per block b: sigma_b from the training sigmas of ``FlowMatchingObjective(shift)``, x_b = (1 - sigma_b) x0 +
sigma_b noise, target noise - x0, loss = mean squared error over the noised frames (frame 0 excluded with
``first_frame``, where it is the clean given image at timestep 0 and receives no action, as at inference). The
action features of block b come from ``pipeline._process_action`` on the ground-truth latents of blocks < b.

    params = freeze_generator(pipeline)
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    loss = causal_training_loss(pipeline, latents, prompt_states, {"target_actions": ids})
    loss.backward(); optimizer.step(); optimizer.zero_grad()
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..modeling._first_frame import fuse_first_frame
from ..modeling._flow_matching import FlowMatchingObjective
from ._attention import block_causal_mask, teacher_forcing_mask
from ._pipeline import ActionCausalInferencePipeline

MODES = ("diffusion_forcing", "teacher_forcing")


def freeze_generator(pipeline: ActionCausalInferencePipeline) -> list[nn.Parameter]:
    """Freezes the Wan transformer (no gradients, eval mode) and returns the parameters that train: the action
    projection's and the action module's."""
    pipeline.generator.requires_grad_(False).eval()
    parameters: list[nn.Parameter] = []
    for module in (pipeline.action_projection, pipeline.action_module):
        if module is not None:
            module.requires_grad_(True).train()
            parameters += list(module.parameters())
    if not parameters:
        raise ValueError(
            "pipeline: nothing to train (enable_adaln_zero=False and no action module); build it with the "
            "action projection"
        )
    return parameters


def causal_training_loss(
    pipeline: ActionCausalInferencePipeline,
    latents: torch.Tensor,
    text: torch.Tensor | list[str],
    action_inputs: dict[str, Any] | None = None,
    *,
    mode: str = "diffusion_forcing",
    sigmas: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    first_frame: bool = False,
) -> torch.Tensor:
    """Block-causal flow-matching loss of a batch; differentiable in the action projection and action module.

    latents: (B, F, C, h, w) clean normalized latents (F a multiple of the block size); text: B prompts (encoded
    with the pipeline's text encoder) or text-encoder states (B, S, Dt); action_inputs: as for inference.
    sigmas: (B, num_blocks) noise levels in [0, 1] (default: sampled per block from the shifted training sigmas
    with ``generator``); noise: (B, F, C, h, w) (default: drawn with ``generator``). Returns a scalar.
    """
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
    config, model = pipeline.config, pipeline.model
    batch = pipeline._check_inputs(latents, text, action_inputs, None, decode=False)
    _, frames, _, height, width = latents.shape
    block_size = config.block_size
    num_blocks = frames // block_size
    device = pipeline.device
    if sigmas is None:
        objective = FlowMatchingObjective(config.num_train_timesteps, config.shift)
        sigmas = objective.sample_sigmas(batch * num_blocks, generator).view(batch, num_blocks)
    if tuple(sigmas.shape) != (batch, num_blocks):
        raise ValueError(f"sigmas: expected shape ({batch}, {num_blocks}), got {tuple(sigmas.shape)}")
    if noise is None:
        noise = torch.randn(latents.shape, generator=generator)
    if noise.shape != latents.shape:
        raise ValueError(f"noise: expected shape {tuple(latents.shape)}, got {tuple(noise.shape)}")

    x0 = latents.to(device, torch.float32).permute(0, 2, 1, 3, 4)  # (B, C, F, h, w)
    eps = noise.to(device, torch.float32).permute(0, 2, 1, 3, 4)
    sigma = sigmas.to(device, torch.float32).repeat_interleave(block_size, dim=1)  # (B, F) per frame
    noisy = (1 - sigma[:, None, :, None, None]) * x0 + sigma[:, None, :, None, None] * eps
    timesteps = sigma * config.num_train_timesteps
    if first_frame:
        noisy = fuse_first_frame(noisy, x0[:, :, :1])
        timesteps = torch.cat([torch.zeros_like(timesteps[:, :1]), timesteps[:, 1:]], dim=1)

    with torch.no_grad():
        states = pipeline._encode_text(text, batch, low_memory=False)
    text_kv = model.text_cache(states)
    modulation = _training_modulation(pipeline, latents.to(device), action_inputs, num_blocks, first_frame)
    h, w = model.token_grid(height, width)
    table = model.rotary_table(frames, height, width)
    window = config.window_frames

    if mode == "diffusion_forcing":
        mask = block_causal_mask(frames, block_size, h * w, window, device=device)
        prediction = model(
            noisy, timesteps, text_kv, model.rotary(table, slice(0, frames)),
            action_modulation=modulation, attention_mask=mask,
        )  # fmt: skip
    else:
        context, context_t = _teacher_context(pipeline, x0, first_frame, generator)
        positions = torch.arange(frames, device=device).repeat(2)  # both copies at the same positions
        mask = teacher_forcing_mask(frames, block_size, h * w, window, device=device)
        both = None if modulation is None else torch.cat([modulation, modulation], dim=1)
        prediction = model(
            torch.cat([context, noisy], dim=2), torch.cat([context_t, timesteps], dim=1), text_kv,
            model.rotary(table, positions), action_modulation=both, attention_mask=mask,
        )[:, :, frames:]  # fmt: skip
    target = eps - x0
    start = 1 if first_frame else 0
    return (prediction.float()[:, :, start:] - target[:, :, start:]).pow(2).mean()


def _training_modulation(
    pipeline: ActionCausalInferencePipeline,
    latents: torch.Tensor,
    action_inputs: dict[str, Any] | None,
    num_blocks: int,
    first_frame: bool,
) -> torch.Tensor | None:
    """(B, F, 6, D): each block's modulation from the actions the pipeline would use for it, the history being the
    ground-truth latents of the earlier blocks; zeros for blocks without actions."""
    block_size = pipeline.config.block_size
    per_block = []
    for index in range(num_blocks):
        start = index * block_size
        history = latents[:, :start] if start else None
        features = pipeline._process_action(history, start, action_inputs)
        per_block.append(
            pipeline._action_modulation(features, block_size, zero_first=first_frame and index == 0)
        )
    if all(m is None for m in per_block):
        return None
    like = next(m for m in per_block if m is not None)
    return torch.cat([torch.zeros_like(like) if m is None else m for m in per_block], dim=1)


def _teacher_context(
    pipeline: ActionCausalInferencePipeline,
    x0: torch.Tensor,
    first_frame: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean copy as the cache holds it at inference: clean, or noised to ``context_timestep``."""
    config = pipeline.config
    t = float(config.context_timestep)
    timesteps = torch.full(x0.shape[:1] + x0.shape[2:3], t, device=x0.device)
    if first_frame:
        timesteps[:, 0] = 0.0
    if t == 0:
        return x0, timesteps
    sigma = t / config.num_train_timesteps
    noisy = (1 - sigma) * x0 + sigma * torch.randn(x0.shape, generator=generator).to(x0.device)
    return (fuse_first_frame(noisy, x0[:, :, :1]) if first_frame else noisy), timesteps
