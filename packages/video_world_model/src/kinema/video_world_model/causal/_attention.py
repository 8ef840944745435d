"""Block-causal attention over diffusers' Wan attention modules: masks, the rolling KV cache, the text K/V cache.

Latent frames are grouped in blocks of ``block_size``; a frame of block b attends to the frames of blocks <= b
that lie in the window: key frame j is visible from block b when ``block(j) <= b`` and
``j >= end(b) - window_frames`` (end(b) is one past the block's last frame). Two ways compute the same thing:

- a whole sequence at once with :func:`block_causal_mask` (training, and the reference the cache is tested against);
- block by block with :class:`RollingKVCache`, which holds the keys/values of the last ``window - block`` context
  frames (rotary embedding already applied, so the order of keys does not matter) plus a slot for the block being
  denoised; once a block is done its clean keys/values are committed and the oldest frames dropped.

The attention functions call the blocks' own ``to_q/to_k/to_v`` (or the fused ``to_qkv/to_kv``), ``norm_q/norm_k``,
``to_out`` and diffusers' attention dispatch (so ``set_attention_backend`` applies); the rotary arithmetic is
diffusers' ``WanAttnProcessor`` line for line, which keeps a full-sequence pass equal to diffusers' own forward.
Layout of queries, keys and values: (B, L, H, d), as diffusers' dispatch takes them.
"""

from __future__ import annotations

import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from torch import nn


def _frame_blocks(num_frames: int, block_size: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    frame = torch.arange(num_frames, device=device)
    block = frame // block_size
    end = ((block + 1) * block_size).clamp(max=num_frames)  # one past the last frame of each frame's block
    return block, end


def _visible(
    query_block: torch.Tensor,
    query_end: torch.Tensor,
    key_frame: torch.Tensor,
    key_block: torch.Tensor,
    window,
) -> torch.Tensor:
    allowed = key_block[None, :] <= query_block[:, None]
    if window is not None:
        allowed &= key_frame[None, :] >= (query_end[:, None] - window)
    return allowed


def _to_tokens(frame_mask: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def block_causal_frame_mask(
    num_frames: int, block_size: int, window_frames: int | None = None, device=None
) -> torch.Tensor:
    """(F, F) bool: True where query frame i may attend to key frame j."""
    block, end = _frame_blocks(num_frames, block_size, device)
    return _visible(block, end, torch.arange(num_frames, device=device), block, window_frames)


def block_causal_mask(
    num_frames: int,
    block_size: int,
    tokens_per_frame: int,
    window_frames: int | None = None,
    device=None,
) -> torch.Tensor:
    """(F*HW, F*HW) bool attention mask (True = attend) of block-causal attention with a window, frame-major tokens."""
    return _to_tokens(
        block_causal_frame_mask(num_frames, block_size, window_frames, device), tokens_per_frame
    )


def teacher_forcing_mask(
    num_frames: int,
    block_size: int,
    tokens_per_frame: int,
    window_frames: int | None = None,
    device=None,
) -> torch.Tensor:
    """(2F*HW, 2F*HW) bool mask over [clean frames 0..F-1, noisy frames 0..F-1].

    Clean frames attend block-causally among themselves (what the cache holds at inference); noisy block b attends to
    the clean frames of blocks < b in the window and to itself, exactly what block b sees when it is denoised with
    the cache filled by clean blocks.
    """
    block, end = _frame_blocks(num_frames, block_size, device)
    frame = torch.arange(num_frames, device=device)
    clean_clean = _visible(block, end, frame, block, window_frames)
    noisy_clean = _visible(block - 1, end, frame, block, window_frames)  # earlier blocks only, same window
    noisy_noisy = block[:, None] == block[None, :]
    top = torch.cat([clean_clean, torch.zeros_like(clean_clean)], dim=1)
    bottom = torch.cat([noisy_clean, noisy_noisy], dim=1)
    return _to_tokens(torch.cat([top, bottom], dim=0), tokens_per_frame)


class RollingKVCache:
    """Self-attention keys/values of the context frames for every layer, bounded by a window.

    Per layer one buffer ``k[layer]``, ``v[layer]`` of shape (B, capacity_frames * HW, H, d): tokens
    [0, context_frames * HW) are committed context frames (oldest first), the next slot holds the block being
    denoised. ``capacity_frames`` is ``window_frames`` (or the rollout's length when unbounded), so the memory never
    grows past the window. ``start_frame`` is the absolute index of the oldest committed frame.

    Protocol per model call: :meth:`allocate`, :meth:`begin` (the block's frames; returns the context length in
    tokens), then each layer writes its keys/values after the context (:func:`self_attention`); after the clean
    re-encoding of a block, :meth:`commit` keeps it as context.
    """

    def __init__(
        self,
        num_layers: int,
        tokens_per_frame: int,
        block_size: int,
        capacity_frames: int,
        window_frames: int | None,
    ):
        if capacity_frames < block_size:
            raise ValueError(
                f"capacity_frames: {capacity_frames} latent frames cannot hold one block of {block_size}"
            )
        self.num_layers = num_layers
        self.tokens_per_frame = tokens_per_frame
        self.block_size = block_size
        self.capacity_frames = capacity_frames
        self.window_frames = window_frames
        self.k: list[torch.Tensor | None] = [None] * num_layers
        self.v: list[torch.Tensor | None] = [None] * num_layers
        self.context_frames = 0
        self.start_frame = 0
        self.current_frames = 0

    @property
    def max_context_frames(self) -> int:
        """Context frames kept after a commit: ``window - block_size`` (all of the capacity when unbounded)."""
        if self.window_frames is None:
            return self.capacity_frames - self.block_size
        return min(self.window_frames, self.capacity_frames) - self.block_size

    def allocate(self, batch: int, heads: int, head_dim: int, dtype: torch.dtype, device) -> None:
        """Creates the buffers on first use: (B, capacity_frames * HW, H, d) per layer, keys and values."""
        if self.k[0] is not None:
            return
        shape = (batch, self.capacity_frames * self.tokens_per_frame, heads, head_dim)
        self.k = [torch.empty(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]
        self.v = [torch.empty(shape, dtype=dtype, device=device) for _ in range(self.num_layers)]

    def begin(self, frames: int) -> int:
        """A model call on ``frames`` new frames starts; returns the context length in tokens."""
        if self.context_frames + frames > self.capacity_frames:
            raise ValueError(
                f"RollingKVCache: {self.context_frames} context + {frames} new frames exceed the capacity of "
                f"{self.capacity_frames} frames"
            )
        self.current_frames = frames
        return self.context_frames * self.tokens_per_frame

    def layer(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[index], self.v[index]

    def commit(self) -> None:
        """Keeps the block last written (its clean re-encoding) as context; drops frames beyond the window."""
        self.context_frames += self.current_frames
        self.current_frames = 0
        excess = self.context_frames - self.max_context_frames
        if excess > 0:
            hw, keep = self.tokens_per_frame, self.max_context_frames
            for buffers in (self.k, self.v):
                for buffer in buffers:
                    if buffer is not None and keep > 0:
                        buffer[:, : keep * hw] = buffer[:, excess * hw : (excess + keep) * hw].clone()
            self.context_frames = keep
            self.start_frame += excess

    def cached_tokens(self) -> int:
        """Tokens of committed context (per layer)."""
        return self.context_frames * self.tokens_per_frame


def apply_rotary(
    hidden_states: torch.Tensor, freqs_cos: torch.Tensor, freqs_sin: torch.Tensor
) -> torch.Tensor:
    """Wan's rotary embedding on (B, L, H, d) with (1, L, 1, d) tables: diffusers' ``WanAttnProcessor`` arithmetic."""
    x1, x2 = hidden_states.unflatten(-1, (-1, 2)).unbind(-1)
    cos = freqs_cos[..., 0::2]
    sin = freqs_sin[..., 1::2]
    out = torch.empty_like(hidden_states)
    out[..., 0::2] = x1 * cos - x2 * sin
    out[..., 1::2] = x1 * sin + x2 * cos
    return out.type_as(hidden_states)


def _backend(attn: nn.Module):
    return getattr(attn.processor, "_attention_backend", None)


def _attend(attn: nn.Module, query, key, value, mask) -> torch.Tensor:
    """(B, Lq, H, d) x (B, Lk, H, d) -> (B, Lq, D) through diffusers' dispatch and the module's output layers."""
    out = dispatch_attention_fn(
        query, key, value, attn_mask=mask, dropout_p=0.0, is_causal=False, backend=_backend(attn)
    )
    out = out.flatten(2, 3).type_as(query)
    return attn.to_out[1](attn.to_out[0](out))


def self_attention(
    attn: nn.Module,
    hidden_states: torch.Tensor,
    rotary_emb: tuple[torch.Tensor, torch.Tensor],
    *,
    kv_buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
    context_tokens: int = 0,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """A Wan block's ``attn1`` over (B, L, D) tokens, with cached context keys/values or a mask.

    rotary_emb: (cos, sin), each (1, L, 1, d), for the tokens' absolute frame positions. kv_buffers: this layer's
    :class:`RollingKVCache` buffers; the tokens' keys/values are written after the ``context_tokens`` cached ones
    and attention runs over both.
    """
    if getattr(attn, "fused_projections", False):
        query, key, value = attn.to_qkv(hidden_states).chunk(3, dim=-1)
    else:
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
    query = attn.norm_q(query).unflatten(2, (attn.heads, -1))  # (B, L, H, d)
    key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
    value = value.unflatten(2, (attn.heads, -1))
    query = apply_rotary(query, *rotary_emb)
    key = apply_rotary(key, *rotary_emb)
    if kv_buffers is not None:
        keys, values = kv_buffers
        stop = context_tokens + key.shape[1]
        keys[:, context_tokens:stop] = key
        values[:, context_tokens:stop] = value
        key, value = keys[:, :stop], values[:, :stop]  # (B, context + L, H, d)
    return _attend(attn, query, key, value, attention_mask)


def text_keys_values(attn: nn.Module, text: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A block's ``attn2`` keys and values of the embedded text (B, S, D) -> two (B, S, H, d), computed once."""
    if getattr(attn, "fused_projections", False):
        key, value = attn.to_kv(text).chunk(2, dim=-1)
    else:
        key, value = attn.to_k(text), attn.to_v(text)
    key = attn.norm_k(key).unflatten(2, (attn.heads, -1))
    return key, value.unflatten(2, (attn.heads, -1))


def cross_attention(
    attn: nn.Module, hidden_states: torch.Tensor, text_kv: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """A block's ``attn2`` over (B, L, D) tokens with cached text keys/values (B, S, H, d)."""
    query = attn.norm_q(attn.to_q(hidden_states)).unflatten(2, (attn.heads, -1))
    return _attend(attn, query, *text_kv, None)
