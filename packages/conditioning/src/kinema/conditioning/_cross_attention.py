"""Per-frame cross-attention: the tokens of latent frame f attend only to the K condition tokens of frame f.

Frames are folded into the batch, (B*F, HW, ...) queries against (B*F, K, ...) keys, so the cost is that of
F small attentions; no dense (F*HW) x (F*K) mask is ever built.

Three facts make it cheap at video-model widths (D = 3072, 8,190 tokens):

* K = 1: a softmax over one key is 1, so every query of frame f receives exactly v_f and the layer reduces to
  a per-frame residual x + scale * o_proj(v_proj(cond_f)). Queries, keys and their norms drop out, and no
  projection of any token is computed. Use K > 1 (a window of neighbouring frames' actions, several actions
  per latent frame) when the attention itself should mean something.
* K > 1, values: the output projection is linear, so it is applied to the K values before the attention:
  u_{h,k} = scale * W_o[:, head h] v_{h,k} (D-wide, one per head and key), and x + out = x + sum_{h,k} p_{h,k}
  u_{h,k} is one ``baddbmm`` per frame, (HW, H*K) x (H*K, D) added onto x: no per-token output projection.
* K > 1, logits: RMSNorm(q)_h . k_{h,k} = r_h * (q_h . (w_q * k_{h,k})) with r_h = rsqrt(mean(q_h^2) + eps), so
  the normalized queries are never written: the per-head keys (times the q-norm weight and 1/sqrt(head_dim))
  form a block-diagonal (A, H*K) matrix per frame and all logits are one (HW, A) x (A, H*K) product, scaled by
  r per token and head. The query projection is the only per-token projection left; ``attn_dim`` narrows it.

The softmax is over K (a handful of keys), an (HW, H, K) tensor, written out rather than calling
``scaled_dot_product_attention``: SDPA would have to return head-dim values and pay the per-token output
projection, or D-wide values per head, (H, HW, D) per frame.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import (
    check_batch,
    check_frames,
    check_module_inputs,
    check_same_device,
    check_same_dtype,
    check_tensor,
)
from ._frame_attention_kernel import FoldedFrameAttention
from ._frames import add_per_frame


def per_frame_cross_attention(
    x: torch.Tensor,
    cond: torch.Tensor,
    num_frames: int,
    *,
    q_proj: nn.Linear,
    k_proj: nn.Linear,
    v_proj: nn.Linear,
    o_proj: nn.Linear,
    q_norm: nn.Module,
    k_norm: nn.Module,
    num_heads: int,
    scale: torch.Tensor | float | None,
    cond_mask: torch.Tensor | None = None,
    dropout: float = 0.0,
) -> torch.Tensor:
    """x + scale * CrossAttention(x of frame f -> cond[:, f]), for modules owned by the caller.

    x: (B, F*HW, D) frame-major tokens. cond: (B, F, K, Dc). cond_mask: optional bool (B, F, K) or (F, K),
    True where a condition token may be attended (each frame needs at least one).
    q_proj: D -> A, k_proj and v_proj: Dc -> A, o_proj: A -> D (A = num_heads * head_dim, no bias on o_proj
    required but allowed). Returns (B, F*HW, D) in x's dtype. The caller validates shapes.
    """
    batch, tokens, dim = x.shape
    frames, keys = cond.shape[1], cond.shape[2]
    hw = tokens // num_frames
    if keys == 1 and cond_mask is None:
        # Softmax over a single key is 1: the attention output is v for every query of the frame.
        delta = o_proj(v_proj(cond[:, :, 0]))  # (B, F, D)
        if dropout > 0:
            delta = F.dropout(delta, dropout)
        return add_per_frame(x, delta, scale)

    if q_proj.bias is not None:
        raise ValueError("q_proj: the per-frame attention expects a query projection without bias")
    attn_dim = q_proj.out_features
    head_dim = attn_dim // num_heads
    bf = batch * frames
    k = k_norm(k_proj(cond).view(bf, keys, num_heads, head_dim))  # (B*F, K, H, hd)
    v = v_proj(cond).view(bf, keys, num_heads, head_dim)  # (B*F, K, H, hd)
    q_weight, q_eps = _rms_norm_parameters(q_norm, k)
    # Keys, with the q-norm weight and 1/sqrt(hd) folded in, laid out block-diagonally: (B*F, A, H*K) with
    # key_blocks[b, (h, e), (h, k)] = k[b, k, h, e] and zeros off the diagonal blocks.
    k = k * (q_weight.to(k.dtype) * head_dim**-0.5)
    heads = torch.arange(num_heads, device=k.device)
    key_blocks = k.new_zeros(bf, num_heads, head_dim, num_heads, keys)
    key_blocks[:, heads, :, heads, :] = k.permute(2, 0, 3, 1)  # advanced indices first: (H, B*F, hd, K)
    key_blocks = key_blocks.view(bf, attn_dim, num_heads * keys)
    # Values through the output projection, per head: (H, B*F*K, hd) @ (H, hd, D), a strided view of W_o.
    w_o = o_proj.weight.view(dim, num_heads, head_dim).permute(1, 2, 0)  # (H, hd, D)
    v = v.permute(2, 0, 1, 3).reshape(num_heads, bf * keys, head_dim)  # (H, B*F*K, hd)
    values = torch.bmm(v, w_o.to(v.dtype)).view(num_heads, bf, keys, dim)  # (H, B*F, K, D)
    values = values.transpose(0, 1).reshape(bf, num_heads * keys, dim)  # (B*F, H*K, D)
    mask = None if cond_mask is None else cond_mask.expand(batch, frames, keys).reshape(bf, 1, 1, keys)
    keep = None
    if dropout > 0:
        keep = torch.empty(bf, hw, num_heads * keys, device=x.device, dtype=x.dtype).bernoulli_(1 - dropout)
        keep = keep / (1 - dropout)
    if scale is None:
        scale = 1.0
    if not isinstance(scale, torch.Tensor):
        scale = torch.tensor(float(scale), device=x.device)
    out = FoldedFrameAttention.apply(
        x.view(bf, hw, dim),
        q_proj.weight.to(x.dtype),
        key_blocks.to(x.dtype),
        values.to(x.dtype),
        scale,
        mask,
        keep,
        num_heads,
        q_eps,
    )  # (B*F, HW, D) = x + scale * attention
    if o_proj.bias is not None:
        out = out + (o_proj.bias * scale).to(x.dtype)
    return out.view(batch, tokens, dim)


def _rms_norm_parameters(norm: nn.Module, k: torch.Tensor) -> tuple[torch.Tensor, float | None]:
    """(weight, eps) of the query RMSNorm over the head dim (k's last dim); (ones, None) for Identity."""
    ones = torch.ones(k.shape[-1], device=k.device, dtype=k.dtype)
    if isinstance(norm, nn.Identity):
        return ones, None
    if isinstance(norm, nn.RMSNorm):
        weight = norm.weight if norm.weight is not None else ones
        eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps
        return weight, eps
    raise ValueError(f"q_norm: expected nn.RMSNorm or nn.Identity, got {type(norm).__name__}")


class PerFrameCrossAttention(nn.Module):
    """x + scale * attn, where a token of frame f attends only to cond[:, f].

    forward(x (B, F*HW, D), cond (B, F, K, Dc), num_frames, cond_mask=None, scale=None) -> (B, F*HW, D).

    ``initial_scale`` is the learnable output scale at init (0.01 by default). 0.0 makes the layer an exact
    identity, but then every other parameter of the layer receives a zero gradient (d out / d attn = scale):
    only the scale itself learns at first, and the projections start learning once it has moved away from 0.
    ``initial_scale=None`` creates no scale parameter: pass ``scale`` to forward (per-layer scales shared
    across one set of projections, as :func:`output_scales` makes).
    ``attn_dim`` (default ``hidden_dim``) is the width of queries and keys; a narrower one (e.g. 768) cuts the
    per-token query projection, the only per-token cost when K > 1. With K = 1 no token is projected at all
    (see the module docstring).
    """

    def __init__(
        self,
        hidden_dim: int,
        cond_dim: int,
        num_heads: int,
        qk_norm: bool = True,
        initial_scale: float | None = 0.01,
        attn_dim: int | None = None,
        dropout: float = 0.0,
        eps: float = 1e-5,
    ):
        super().__init__()
        attn_dim = hidden_dim if attn_dim is None else attn_dim
        if num_heads < 1 or attn_dim % num_heads != 0:
            raise ValueError(
                f"PerFrameCrossAttention: attn_dim={attn_dim} must be a positive multiple of num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"PerFrameCrossAttention: dropout must be in [0, 1), got {dropout}")
        self.hidden_dim = hidden_dim
        self.cond_dim = cond_dim
        self.num_heads = num_heads
        self.attn_dim = attn_dim
        self.head_dim = attn_dim // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(hidden_dim, attn_dim, bias=False)
        self.k_proj = nn.Linear(cond_dim, attn_dim, bias=False)
        self.v_proj = nn.Linear(cond_dim, attn_dim, bias=False)
        self.o_proj = nn.Linear(attn_dim, hidden_dim, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=eps) if qk_norm else nn.Identity()
        self.output_scale = (
            None if initial_scale is None else nn.Parameter(torch.tensor(float(initial_scale)))
        )

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        num_frames: int,
        cond_mask: torch.Tensor | None = None,
        scale: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        d, dc = self.hidden_dim, self.cond_dim
        check_tensor("x", x, f"(B, F*HW, {d})", 3, {-1: d})
        check_tensor("cond", cond, f"(B, F, K, {dc})", 4, {-1: dc})
        check_frames("x", x.shape[1], num_frames)
        if cond.shape[1] != num_frames:
            raise ValueError(f"cond: expected (B, F={num_frames}, K, {dc}), got {tuple(cond.shape)}")
        check_batch("cond", cond, x.shape[0], f"(B={x.shape[0]}, F, K, {dc})")
        check_same_device(("x", "cond"), x, cond)
        check_same_dtype(("x", "cond"), x, cond)
        check_module_inputs(self, ("x", x), ("cond", cond))
        if cond_mask is not None:
            shape = (x.shape[0], num_frames, cond.shape[2])
            if cond_mask.dtype != torch.bool or cond_mask.shape not in (shape, shape[1:]):
                raise ValueError(
                    f"cond_mask: expected a bool tensor of shape {shape} or {shape[1:]}, "
                    f"got {cond_mask.dtype} {tuple(cond_mask.shape)}"
                )
        if scale is None:
            if self.output_scale is None:
                raise ValueError(
                    "scale: this layer was built with initial_scale=None, so forward needs scale"
                )
            scale = self.output_scale
        return per_frame_cross_attention(
            x,
            cond,
            num_frames,
            q_proj=self.q_proj,
            k_proj=self.k_proj,
            v_proj=self.v_proj,
            o_proj=self.o_proj,
            q_norm=self.q_norm,
            k_norm=self.k_norm,
            num_heads=self.num_heads,
            scale=scale,
            cond_mask=cond_mask,
            dropout=self.dropout if self.training else 0.0,
        )


def frame_window(cond: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each frame's condition together with its neighbours', for K = 2*radius + 1 per-frame attention.

    cond (B, F, Dc) -> window (B, F, K, Dc) with window[:, f, j] = cond[:, f + j - radius], and a bool mask
    (F, K) that is False where f + j - radius falls outside [0, F) (those slots hold the edge frame's condition
    and must not be attended).
    """
    check_tensor("cond", cond, "(B, F, Dc)", 3)
    if radius < 0:
        raise ValueError(f"radius: expected >= 0, got {radius}")
    frames = cond.shape[1]
    offsets = torch.arange(-radius, radius + 1, device=cond.device)  # (K,)
    index = torch.arange(frames, device=cond.device)[:, None] + offsets  # (F, K)
    mask = (index >= 0) & (index < frames)
    window = cond[:, index.clamp(0, frames - 1)]  # (B, F, K, Dc)
    return window, mask
