"""Prompts -> UMT5 states, exactly as diffusers' Wan pipelines make them: the one prompt encoder of this package
(training, the latent cache, the causal rollout and VACE-E all use it)."""

from __future__ import annotations

import torch
from diffusers import WanPipeline
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from torch import nn


class WanPromptEncoder:
    """A tokenizer + UMT5 encoder run through diffusers' public ``WanPipeline.encode_prompt``: cleaned text, padded
    to ``max_sequence_length`` tokens, states past each prompt's tokens set to zero.

    __call__(prompts: list[str], device, dtype=None) -> (states (B, S, Dt), lengths (B,))
    ``dtype`` None keeps the text encoder's; lengths count each prompt's tokens (</s> included)."""

    def __init__(self, tokenizer, text_encoder: nn.Module, max_sequence_length: int = 512):
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_sequence_length = max_sequence_length
        # a pipeline of the two text components only, for its encode_prompt
        self._pipe = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=None, scheduler=None)

    @property
    def device(self) -> torch.device:
        return next(self.text_encoder.parameters()).device

    def to(self, device) -> WanPromptEncoder:
        self.text_encoder.to(device)
        return self

    @torch.no_grad()
    def __call__(
        self, prompts: list[str], device: torch.device | str, dtype: torch.dtype | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        states, _ = self._pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
            device=torch.device(device),
            dtype=dtype,
        )  # (B, S, Dt)
        return states, self.lengths(prompts).to(states.device)

    def lengths(self, prompts: list[str]) -> torch.Tensor:
        """(B,) tokens of each prompt as encode_prompt tokenizes it (the mask it pads with)."""
        tokens = self.tokenizer(
            [prompt_clean(p) for p in prompts],
            padding="max_length",
            max_length=self.max_sequence_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return tokens.attention_mask.gt(0).sum(dim=1).long()
