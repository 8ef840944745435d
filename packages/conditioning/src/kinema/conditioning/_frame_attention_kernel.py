"""The K > 1 per-frame attention as one autograd Function with a hand-written backward.

    q      = x Wq^T                                   (BF, HW, A)      the only per-token projection
    raw    = q @ key_blocks                           (BF, HW, H*K)    block-diagonal keys, one product
    r      = rsqrt(|q_h|^2 / hd + eps)                (BF, HW, H)      the query RMSNorm, applied to logits
    P      = scale * softmax_K(r * raw)               (BF, HW, H, K)   the output scale on the small tensor
    y      = x + P @ values                           (BF, HW, D)      one baddbmm, values = Wo_h v

Written out because autograd's version of the same graph keeps fp32 copies of (BF, HW, A) tensors for the
norm and sums the two gradients of x in a separate pass. Here the backward reads each large tensor the minimum
number of times: the x gradient is one ``addmm`` whose epilogue adds the pass-through gradient, and the norm's
contribution to dq is one in-place ``addcmul_``. Gradients match autograd (gradcheck in the tests).
"""

from __future__ import annotations

import torch


class FoldedFrameAttention(torch.autograd.Function):
    """apply(x, w_q, key_blocks, values, scale, mask, dropout_keep, num_heads, eps) -> y.

    x (BF, HW, D); w_q (A, D); key_blocks (BF, A, H*K) (q-norm weight and 1/sqrt(hd) folded in); values
    (BF, H*K, D) (output projection folded in); scale a 0-d tensor; mask None or bool (BF, 1, 1, K);
    dropout_keep None or (BF, HW, H*K) in x's dtype, already divided by the keep probability; eps None for no
    query norm. All tensors but scale share x's dtype and device.
    """

    @staticmethod
    def forward(
        ctx, x, w_q, key_blocks, values, scale, mask, dropout_keep, num_heads: int, eps: float | None
    ):
        bf, hw, _ = x.shape
        attn_dim, hk = w_q.shape[0], key_blocks.shape[-1]
        head_dim, keys = attn_dim // num_heads, hk // num_heads
        q = torch.matmul(x, w_q.t())  # (BF, HW, A)
        raw = torch.bmm(q, key_blocks).view(bf, hw, num_heads, keys)  # (BF, HW, H, K)
        acc = torch.promote_types(x.dtype, torch.float32)  # softmax and norms in fp32 (fp64 stays fp64)
        logits = raw.to(acc)
        r = None
        if eps is not None:
            sq = torch.linalg.vector_norm(q.view(bf, hw, num_heads, head_dim), dim=-1, dtype=acc)
            r = torch.rsqrt(sq.square() / head_dim + eps)  # (BF, HW, H)
            logits = logits * r.unsqueeze(-1)
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        probs = logits.softmax(dim=-1)  # (BF, HW, H, K), fp32 or wider
        kept = probs.to(x.dtype).view(bf, hw, hk)
        if dropout_keep is not None:
            kept = kept * dropout_keep
        used = kept * scale.to(x.dtype)
        y = torch.baddbmm(x, used, values)  # x + P @ values
        ctx.save_for_backward(x, w_q, key_blocks, values, scale, q, raw, r, probs, kept, used, dropout_keep)
        ctx.num_heads, ctx.eps = num_heads, eps
        return y

    @staticmethod
    def backward(ctx, grad_y):
        x, w_q, key_blocks, values, scale, q, raw, r, probs, kept, used, dropout_keep = ctx.saved_tensors
        bf, hw, dim = x.shape
        attn_dim, hk = w_q.shape[0], key_blocks.shape[-1]
        heads = ctx.num_heads
        head_dim, keys = attn_dim // heads, hk // heads
        grad_y = grad_y.contiguous()
        grad_values = torch.bmm(used.transpose(1, 2), grad_y)  # (BF, H*K, D)
        grad_used = torch.bmm(grad_y, values.transpose(1, 2))  # (BF, HW, H*K)
        grad_scale = (grad_used.to(probs.dtype) * kept).sum().to(scale.dtype)
        grad_kept = grad_used * scale.to(grad_used.dtype)
        if dropout_keep is not None:
            grad_kept = grad_kept * dropout_keep
        grad_probs = grad_kept.to(probs.dtype).view(bf, hw, heads, keys)
        grad_logits = probs * (grad_probs - (grad_probs * probs).sum(-1, keepdim=True))  # softmax backward
        grad_raw = grad_logits if r is None else grad_logits * r.unsqueeze(-1)
        grad_raw = grad_raw.to(x.dtype).view(bf, hw, hk)
        grad_key_blocks = torch.bmm(q.transpose(1, 2), grad_raw)  # (BF, A, H*K)
        grad_q = torch.bmm(grad_raw, key_blocks.transpose(1, 2))  # (BF, HW, A)
        if r is not None:
            # d r / d q_h = -r^3 q_h / hd, weighted by dL/dr = sum_k dL/dlogits * raw
            grad_r = (grad_logits * raw.to(probs.dtype)).sum(-1)  # (BF, HW, H)
            coef = (-grad_r * r.pow(3) / head_dim).to(x.dtype).unsqueeze(-1)
            grad_q.view(bf, hw, heads, head_dim).addcmul_(q.view(bf, hw, heads, head_dim), coef)
        flat_grad_q = grad_q.view(-1, attn_dim)
        grad_w_q = flat_grad_q.t() @ x.reshape(-1, dim)  # (A, D)
        grad_x = torch.addmm(grad_y.view(-1, dim), flat_grad_q, w_q).view(bf, hw, dim)  # pass-through + via q
        return grad_x, grad_w_q, grad_key_blocks, grad_values, grad_scale, None, None, None, None
