"""The module ``kinema-wm train`` optimizes: the Wan transformer (frozen, optionally with LoRA) + the controller.

forward(batch, generator) -> flow-matching loss of one batch. A batch holds either decoded video (uint8
(B, 3, T, H, W)) and prompts, which are encoded here without gradients (VAE latents, UMT5 embeddings), or cached
``latents`` and ``prompt_embeds``; both paths meet at the same loss code, so they give the same loss on the same
batch. The VAE and text encoder are not submodules: they never train and DDP never sees them.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..modeling._controller import WanActionController
from ..modeling._flow_matching import FlowMatchingObjective
from ..modeling._prompt import WanPromptEncoder
from ..modeling._transformer import WanActionTransformer
from ..modeling._vae import encode_video


class ActionTrainingModule(nn.Module):
    def __init__(
        self,
        model: WanActionTransformer,
        objective: FlowMatchingObjective,
        vae=None,
        prompt_encoder: WanPromptEncoder | None = None,
        offload_activations: bool = False,
    ):
        super().__init__()
        self.model = model
        self.objective = objective
        self.offload_activations = offload_activations
        self._frozen = {"vae": vae, "prompt_encoder": prompt_encoder}  # not submodules on purpose

    @property
    def controller(self) -> WanActionController:
        return self.model.controller

    @torch.no_grad()
    def encode(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalized latents (B, C, F, h, w), prompt embeddings (B, S, D)) on the model's device."""
        device, dtype = self.model.device, self.model.dtype
        if "latents" in batch:
            return batch["latents"].to(device, torch.float32), batch["prompt_embeds"].to(device, dtype)
        vae, prompt_encoder = self._frozen["vae"], self._frozen["prompt_encoder"]
        if vae is None or prompt_encoder is None:
            raise ValueError(
                "batch: decoded video needs the VAE and text encoder (this module was built for a cache)"
            )
        video = batch["video"].to(device)
        video = video.float() / 127.5 - 1 if video.dtype == torch.uint8 else video.float()  # (B, 3, T, H, W)
        latents = encode_video(vae, video).to(device)
        return latents, prompt_encoder(list(batch["prompt"]), device, dtype)[0]

    def forward(self, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
        latents, prompt_embeds = self.encode(batch)
        batch_size = latents.shape[0]
        noise = torch.randn(latents.shape, generator=generator, device=generator.device).to(latents.device)
        sigmas = self.objective.sample_sigmas(
            batch_size, generator=torch.Generator().manual_seed(generator.initial_seed())
        )
        patch = self.model.transformer.config.patch_size
        tokens_per_frame = (latents.shape[3] // patch[1]) * (latents.shape[4] // patch[2])
        inputs = self.objective.prepare(latents, noise, sigmas, tokens_per_frame)
        offload = (
            torch.autograd.graph.save_on_cpu(pin_memory=True) if self.offload_activations else nullcontext()
        )
        with offload:
            prediction = self.model(
                inputs.noisy.to(self.model.dtype),
                inputs.timesteps,
                prompt_embeds,
                batch["action_binary"],
                batch["action_magnitude"],
            )
        return self.objective.loss(prediction, inputs)
