"""Helpers for tests of kinema.conditioning and of the packages that inject through it."""

from __future__ import annotations

import torch


def changed_frames(
    before: torch.Tensor, after: torch.Tensor, num_frames: int, atol: float = 0.0
) -> list[int]:
    """Indices of the frames whose tokens differ between two (B, F*HW, D) tensors (frame-major tokens).

    Use it to prove locality: changing the condition of frame f must give ``[f]``.
    """
    if before.shape != after.shape:
        raise ValueError(f"after: expected shape {tuple(before.shape)}, got {tuple(after.shape)}")
    batch, tokens, dim = before.shape
    diff = (after.float() - before.float()).abs().view(batch, num_frames, tokens // num_frames, dim)
    per_frame = diff.amax(dim=(0, 2, 3))  # (F,)
    return [f for f in range(num_frames) if per_frame[f] > atol]


def reference_per_frame_attention(
    x: torch.Tensor,
    cond: torch.Tensor,
    num_frames: int,
    layer: torch.nn.Module,
    scale: float | torch.Tensor,
    cond_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """A plain, slow per-frame multi-head cross-attention over ``layer``'s projections (for checking the fast one).

    For each frame: q = q_norm(q_proj(x_f)), k = k_norm(k_proj(cond_f)), v = v_proj(cond_f) per head, softmax
    over the frame's K keys, concatenated heads, o_proj over every token, then x + scale * out.
    """
    hw = x.shape[1] // num_frames
    heads, head_dim = layer.num_heads, layer.head_dim
    outputs = []
    for f in range(num_frames):
        xf = x[:, f * hw : (f + 1) * hw]  # (B, HW, D)
        cf = cond[:, f]  # (B, K, Dc)
        q = layer.q_norm(layer.q_proj(xf).unflatten(-1, (heads, head_dim))).transpose(1, 2)  # (B, H, HW, hd)
        k = layer.k_norm(layer.k_proj(cf).unflatten(-1, (heads, head_dim))).transpose(1, 2)  # (B, H, K, hd)
        v = layer.v_proj(cf).unflatten(-1, (heads, head_dim)).transpose(1, 2)  # (B, H, K, hd)
        acc = torch.promote_types(q.dtype, torch.float32)
        logits = (q @ k.transpose(-1, -2)).to(acc) * head_dim**-0.5  # (B, H, HW, K)
        if cond_mask is not None:
            m = cond_mask[..., f, :] if cond_mask.ndim == 2 else cond_mask[:, f]
            logits = logits.masked_fill(~m.view(-1, 1, 1, m.shape[-1]), float("-inf"))
        attn = logits.softmax(-1).to(v.dtype) @ v  # (B, H, HW, hd)
        outputs.append(layer.o_proj(attn.transpose(1, 2).flatten(2)))  # (B, HW, D)
    out = torch.cat(outputs, dim=1)
    return x + (out * scale).to(x.dtype)
