"""The diffusion head: a transformer over the noisy action chunk's tokens (DiT blocks with cross-attention).

Each block: adaLN-Zero-modulated self-attention over the C chunk tokens, cross-attention to the observation's
encoder tokens (keys carry their position embeddings, as ACT's decoder), adaLN-Zero-modulated FFN. The
modulation comes from one condition vector per sample: the diffusion timestep's embedding (diffusers'
``Timesteps`` + ``TimestepEmbedding``) plus the style latent's embedding (variants B and C). Sections in the
order data flows: block, final layer, denoiser.

B batch, C chunk steps, A action dims, D width, S encoder tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from kinema.act_policy import sine_embedding_1d
from kinema.conditioning import AdaLNZero, apply_gate, modulate


class DenoiserBlock(nn.Module):
    """x (B, C, D), cond (B, D), memory (B, S, D), memory_pos (S, D) -> (B, C, D)."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ffn = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.modulation = AdaLNZero(dim, dim, num_chunks=6)  # zero-init: see Denoiser.__init__

    def forward(
        self, x: torch.Tensor, cond: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        shift_a, scale_a, gate_a, shift_f, scale_f, gate_f = self.modulation(cond)[:, 0].unbind(
            1
        )  # (B, D) each
        h = modulate(self.norm1(x), shift_a, scale_a)
        x = apply_gate(x, gate_a, self.self_attn(h, h, h, need_weights=False)[0])
        q = self.norm_cross(x)
        x = x + self.cross_attn(q, memory + memory_pos, memory, need_weights=False)[0]  # (B, C, D)
        h = modulate(self.norm2(x), shift_f, scale_f)
        return apply_gate(x, gate_f, self.ffn(h))


class FinalLayer(nn.Module):
    """DiT's final layer: adaLN (shift, scale) + linear to the action dims. (B, C, D), cond (B, D) -> (B, C, A)."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = AdaLNZero(dim, dim, num_chunks=2)
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(cond)[:, 0].unbind(1)  # (B, D) each
        return self.linear(modulate(self.norm(x), shift, scale))


class Denoiser(nn.Module):
    """(noisy chunk (B, C, A), timesteps (B,), memory (B, S, D), memory_pos (S, D), style (B, D) or None) ->
    the model output (B, C, A): noise, clean chunk or velocity, by the config's prediction type."""

    def __init__(
        self,
        action_dim: int,
        chunk_size: int,
        dim: int,
        num_heads: int,
        hidden: int,
        num_layers: int,
        dropout: float,
    ):
        super().__init__()
        from diffusers.models.embeddings import TimestepEmbedding, Timesteps

        self.action_in = nn.Linear(action_dim, dim)
        self.register_buffer("chunk_pos", sine_embedding_1d(chunk_size, dim), persistent=False)
        self.time_proj = Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(dim, dim)
        self.blocks = nn.ModuleList(DenoiserBlock(dim, num_heads, hidden, dropout) for _ in range(num_layers))
        self.final = FinalLayer(dim, action_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """DiT's initialization. Zero-out the adaLN modulation of every block (AdaLNZero already does: each block
        starts as the identity on its self-attention and FFN branches) and the final layer's modulation and
        output projection, so the denoiser's output is exactly 0 at init (a test proves it)."""
        for block in self.blocks:
            for module in block.ffn:
                if isinstance(module, nn.Linear):
                    nn.init.xavier_uniform_(module.weight)
                    nn.init.zeros_(module.bias)
        nn.init.zeros_(self.final.linear.weight)
        nn.init.zeros_(self.final.linear.bias)

    def condition(self, timesteps: torch.Tensor, style: torch.Tensor | None) -> torch.Tensor:
        """The modulation condition (B, D): timestep embedding (+ style embedding)."""
        cond = self.time_embed(self.time_proj(timesteps).to(self.action_in.weight.dtype))  # (B, D)
        return cond if style is None else cond + style

    def forward(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        memory: torch.Tensor,
        memory_pos: torch.Tensor,
        style: torch.Tensor | None = None,
    ) -> torch.Tensor:
        cond = self.condition(timesteps, style)  # (B, D)
        x = self.action_in(noisy) + self.chunk_pos.to(noisy.dtype)  # (B, C, D)
        for block in self.blocks:
            x = block(x, cond, memory, memory_pos)
        return self.final(x, cond)  # (B, C, A)
