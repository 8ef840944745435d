"""The DETR-style transformer of ACT: position embeddings added to queries and keys at every layer.

B batch, S encoder tokens, C decoder queries (chunk steps), D model width.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def sine_embedding_1d(num_positions: int, dim: int) -> torch.Tensor:
    """The fixed 1-D sinusoid table of "Attention is all you need": (num_positions, dim)."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    rates = 10000.0 ** (-(2 * (torch.arange(dim) // 2)).double() / dim)  # (dim,)
    angles = position * rates  # (num_positions, dim)
    table = torch.empty_like(angles)
    table[:, 0::2] = angles[:, 0::2].sin()
    table[:, 1::2] = angles[:, 1::2].cos()
    return table.float()


def sine_embedding_2d(height: int, width: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """DETR's 2-D sine position embedding of a (height, width) feature map -> (height * width, dim), row-major.

    The first dim/2 channels encode the row, the last dim/2 the column; positions are normalized to (0, 2*pi].
    """
    half = dim // 2
    y = torch.arange(1, height + 1, dtype=torch.float64)[:, None].expand(height, width) / height * 2 * math.pi
    x = torch.arange(1, width + 1, dtype=torch.float64)[None, :].expand(height, width) / width * 2 * math.pi
    rates = temperature ** (2 * (torch.arange(half) // 2).double() / half)  # (half,)

    def encode(values: torch.Tensor) -> torch.Tensor:
        angles = values[..., None] / rates  # (H, W, half)
        return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)

    return torch.cat([encode(y), encode(x)], dim=-1).reshape(height * width, dim).float()


class SelfAttention(nn.Module):
    """Multi-head self-attention with q = k = x + pos and v = x (one projection for q and k)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.qk_proj = nn.Linear(dim, 2 * dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, pos: torch.Tensor | None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x (B, S, D), pos (S, D) or (B, S, D) or None, mask (B, 1, 1, S) bool (True = attend) -> (B, S, D)."""
        batch, tokens, dim = x.shape
        q, k = self.qk_proj(x if pos is None else x + pos).chunk(2, dim=-1)  # (B, S, D) each
        v = self.v_proj(x)
        heads = (batch, tokens, self.num_heads, dim // self.num_heads)
        q, k, v = (t.view(heads).transpose(1, 2) for t in (q, k, v))  # (B, heads, S, D/heads)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class CrossAttention(nn.Module):
    """Multi-head attention of queries x + x_pos over memory (keys memory + memory_pos, values memory)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, x_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        """x (B, C, D), x_pos (C, D), memory (B, S, D), memory_pos (S, D) -> (B, C, D)."""
        batch, queries, dim = x.shape
        head_dim = dim // self.num_heads
        q = self.q_proj(x + x_pos).view(batch, queries, self.num_heads, head_dim).transpose(1, 2)
        k = self.k_proj(memory + memory_pos).view(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        v = self.v_proj(memory).view(batch, -1, self.num_heads, head_dim).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)  # (B, heads, C, D/heads)
        return self.out_proj(out.transpose(1, 2).reshape(batch, queries, dim))


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class EncoderLayer(nn.Module):
    """Self-attention + feed-forward, post-norm (ACT's default) or pre-norm."""

    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout1(self.self_attn(self.norm1(x), pos, mask))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, pos, mask)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


class Encoder(nn.Module):
    """A stack of encoder layers; ``inject(i, x) -> x`` (optional) runs after layer i."""

    def __init__(
        self, num_layers: int, dim: int, num_heads: int, hidden: int, dropout: float, pre_norm: bool
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            EncoderLayer(dim, num_heads, hidden, dropout, pre_norm) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim) if pre_norm else nn.Identity()

    def forward(
        self,
        x: torch.Tensor,
        pos: torch.Tensor,
        mask: torch.Tensor | None = None,
        inject: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        for index, layer in enumerate(self.layers):
            x = layer(x, pos, mask)
            if inject is not None:
                x = inject(index, x)
        return self.norm(x)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float, pre_norm: bool):
        super().__init__()
        self.self_attn = SelfAttention(dim, num_heads, dropout)
        self.cross_attn = CrossAttention(dim, num_heads, dropout)
        self.ffn = FeedForward(dim, hidden, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(
        self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.dropout1(self.self_attn(self.norm1(x), query_pos))
            x = x + self.dropout2(self.cross_attn(self.norm2(x), query_pos, memory, memory_pos))
            return x + self.dropout3(self.ffn(self.norm3(x)))
        x = self.norm1(x + self.dropout1(self.self_attn(x, query_pos)))
        x = self.norm2(x + self.dropout2(self.cross_attn(x, query_pos, memory, memory_pos)))
        return self.norm3(x + self.dropout3(self.ffn(x)))


class Decoder(nn.Module):
    """A stack of decoder layers, every one of them used, and a final LayerNorm (DETR)."""

    def __init__(
        self, num_layers: int, dim: int, num_heads: int, hidden: int, dropout: float, pre_norm: bool
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DecoderLayer(dim, num_heads, hidden, dropout, pre_norm) for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(
        self, x: torch.Tensor, query_pos: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor
    ) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, query_pos, memory, memory_pos)
        return self.norm(x)
