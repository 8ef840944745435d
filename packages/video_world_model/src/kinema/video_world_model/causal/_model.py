"""CausalWanModel: a diffusers WanTransformer3DModel run block-causally, with a KV cache, without forking diffusers.

The forward is diffusers' ``WanTransformer3DModel.forward`` split into the model's own submodules (patch
embedding, condition embedder, rope tables, each block's norm1/attn1/norm2/attn2/norm3/ffn and modulation table,
output norm and projection), with three changes:

- self-attention goes through :func:`self_attention`: keys/values of earlier blocks come from a
  :class:`RollingKVCache` (incremental generation) or are masked by :func:`block_causal_mask` (a whole sequence);
- the time modulation is computed per latent frame (B, F, 6, D) and broadcast over each frame's tokens, the same
  values as diffusers' per-token (B, F*HW, 6, D) form for Wan2.2-TI2V, without materializing it; an action
  modulation (B, F, 6, D) from ``ActionModulationProjection`` is added to it, so it reaches every block;
- the text keys/values of every block's cross-attention are computed once per rollout (:meth:`text_cache`).

Rotary embeddings use absolute latent-frame positions, so a block at frame 30 is encoded as frame 30 whether it
is computed alone with the cache or inside a full sequence. Shapes: B batch, C latent channels, F latent frames,
h/w latent height/width, HW tokens per frame, D hidden, S text tokens.
"""

from __future__ import annotations

import torch
from diffusers import WanTransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._attention import RollingKVCache, cross_attention, self_attention, text_keys_values

TextKV = list[tuple[torch.Tensor, torch.Tensor]]
Rotary = tuple[torch.Tensor, torch.Tensor]


class CausalWanModel(nn.Module):
    """forward(hidden_states (B, C, f, h, w), timesteps (B, f), text_kv, rotary_emb, *, cache=None,
    action_modulation=None (B, f, 6, D), attention_mask=None) -> flow prediction (B, C_out, f, h, w).

    The wrapped transformer is used as is (its weights, processors and attention backend); nothing is copied.
    """

    def __init__(self, transformer: WanTransformer3DModel):
        super().__init__()
        config = transformer.config
        if next(iter(config.patch_size)) != 1:
            raise ValueError(
                f"generator: temporal patch size {config.patch_size[0]} (block-causal attention needs 1: one "
                "token row per latent frame)"
            )
        if config.added_kv_proj_dim is not None or config.image_dim is not None:
            raise ValueError(
                "generator: image-embedding Wan models (I2V with CLIP image tokens) are not supported by the causal "
                "rollout; use a text/TI2V model such as Wan2.2-TI2V-5B"
            )
        self.transformer = transformer
        self.gradient_checkpointing = False
        self._layer_fn = _layer

    # ---- sizes ----------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        config = self.transformer.config
        return config.num_attention_heads * config.attention_head_dim

    @property
    def num_layers(self) -> int:
        return len(self.transformer.blocks)

    @property
    def in_channels(self) -> int:
        return self.transformer.config.in_channels

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.patch_embedding.weight.device

    @property
    def max_frames(self) -> int:
        """Latent frames the rope tables cover (absolute positions beyond it have no rotary embedding)."""
        return self.transformer.rope.max_seq_len

    def token_grid(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) -> token grid (h / p_h, w / p_w)."""
        _, p_h, p_w = self.transformer.config.patch_size
        return height // p_h, width // p_w

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    def compile_blocks(self, **compile_kwargs) -> None:
        """``torch.compile`` of the per-block function (regional compilation: every block reuses one compiled graph;
        the cache bookkeeping stays outside it). ``compile_kwargs`` go to ``torch.compile``."""
        self._layer_fn = torch.compile(_layer, **compile_kwargs)

    # ---- embeddings -----------------------------------------------------------------------------------------
    def rotary_table(self, num_frames: int, height: int, width: int) -> Rotary:
        """(cos, sin), each (num_frames, HW, d): diffusers' rope for absolute latent frames 0..num_frames-1.

        The model's own ``rope`` module computes it (it reads only the shape of its input, so a meta tensor of
        shape (1, 1, F, h, w) stands in for the latents)."""
        if num_frames > self.max_frames:
            raise ValueError(
                f"num_frames: {num_frames} latent frames exceed the rotary table of the model "
                f"(rope_max_seq_len={self.max_frames})"
            )
        shape_only = torch.empty((1, 1, num_frames, height, width), device="meta")
        cos, sin = self.transformer.rope(shape_only)  # (1, F*HW, 1, d)
        return cos.view(num_frames, -1, cos.shape[-1]), sin.view(num_frames, -1, sin.shape[-1])

    @staticmethod
    def rotary(table: Rotary, positions: torch.Tensor | slice) -> Rotary:
        """(cos, sin) of the frames at ``positions`` (a slice or (f,) indices) -> each (1, f*HW, 1, d)."""
        cos, sin = table[0][positions], table[1][positions]
        return cos.reshape(1, -1, 1, cos.shape[-1]), sin.reshape(1, -1, 1, sin.shape[-1])

    def time_modulation(self, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """timesteps (B, f) -> temb (B, f, D) and the block modulation (B, f, 6, D): the condition embedder's
        time path (``timesteps_proj``, ``time_embedder``, ``act_fn``, ``time_proj``) applied per latent frame."""
        embedder = self.transformer.condition_embedder
        batch, frames = timesteps.shape
        sinusoid = embedder.timesteps_proj(timesteps.flatten()).unflatten(0, (batch, frames))
        time_dtype = next(iter(embedder.time_embedder.parameters())).dtype
        if sinusoid.dtype != time_dtype and time_dtype != torch.int8:
            sinusoid = sinusoid.to(time_dtype)
        temb = embedder.time_embedder(sinusoid).to(self.dtype)  # (B, f, D)
        modulation = embedder.time_proj(embedder.act_fn(temb)).unflatten(2, (6, -1))  # (B, f, 6, D)
        return temb, modulation

    def text_cache(self, encoder_hidden_states: torch.Tensor) -> TextKV:
        """Text-encoder states (B, S, Dt) -> every block's cross-attention keys/values, each (B, S, H, d)."""
        text = self.transformer.condition_embedder.text_embedder(encoder_hidden_states.to(self.dtype))
        return [text_keys_values(block.attn2, text) for block in self.transformer.blocks]

    # ---- forward --------------------------------------------------------------------------------------------
    def forward(
        self,
        hidden_states: torch.Tensor,
        timesteps: torch.Tensor,
        text_kv: TextKV,
        rotary_emb: Rotary,
        *,
        cache: RollingKVCache | None = None,
        action_modulation: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tr = self.transformer
        batch, _, frames, height, width = hidden_states.shape
        _, p_h, p_w = tr.config.patch_size
        h, w = height // p_h, width // p_w
        x = (
            tr.patch_embedding(hidden_states.to(self.dtype)).flatten(2).transpose(1, 2).contiguous()
        )  # (B, L, D)
        temb, modulation = self.time_modulation(timesteps)
        modulation = modulation.float()
        if action_modulation is not None:
            modulation = modulation + action_modulation.float()  # adaLN-Zero: added to every block's time mod

        context = 0
        if cache is not None:
            config = tr.config
            cache.allocate(batch, config.num_attention_heads, config.attention_head_dim, x.dtype, x.device)
            context = cache.begin(frames)
        for index, block in enumerate(tr.blocks):
            kv = cache.layer(index) if cache is not None else None
            args = (block, x, text_kv[index], modulation, rotary_emb, kv, context, attention_mask)
            if torch.is_grad_enabled() and self.gradient_checkpointing and cache is None:
                x = checkpoint(self._layer_fn, *args, use_reentrant=False)
            else:
                x = self._layer_fn(*args)

        # Output norm, projection & unpatchify (diffusers' arithmetic, per-frame modulation)
        shift, scale = (tr.scale_shift_table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)  # (B, f, 1, D)
        x = (_frames(tr.norm_out(x.float()), frames) * (1 + scale) + shift).flatten(1, 2).type_as(x)
        x = tr.proj_out(x)  # (B, L, p_h*p_w*C_out)
        x = x.reshape(batch, frames, h, w, 1, p_h, p_w, -1).permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)  # (B, C_out, f, h*p_h, w*p_w)


def _frames(x: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, F*HW, D) -> (B, F, HW, D)."""
    return x.view(x.shape[0], frames, -1, x.shape[-1])


def _layer(
    block: nn.Module,
    x: torch.Tensor,
    text_kv: tuple[torch.Tensor, torch.Tensor],
    modulation: torch.Tensor,
    rotary_emb: Rotary,
    kv_buffers: tuple[torch.Tensor, torch.Tensor] | None,
    context_tokens: int,
    attention_mask: torch.Tensor | None,
) -> torch.Tensor:
    """One WanTransformerBlock (diffusers' forward, same arithmetic) with block-causal self-attention.

    x (B, F*HW, D); modulation (B, F, 6, D) fp32, broadcast over each frame's tokens; kv_buffers: the layer's
    cache buffers with ``context_tokens`` cached tokens (or None, for a masked / plain sequence)."""
    frames = modulation.shape[1]
    shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = (
        block.scale_shift_table.unsqueeze(0) + modulation
    ).chunk(6, dim=2)  # each (B, F, 1, D)

    # 1. Self-attention (cached / masked)
    norm = (_frames(block.norm1(x.float()), frames) * (1 + scale_msa) + shift_msa).flatten(1, 2).type_as(x)
    attn = self_attention(
        block.attn1,
        norm,
        rotary_emb,
        kv_buffers=kv_buffers,
        context_tokens=context_tokens,
        attention_mask=attention_mask,
    )
    x = (_frames(x.float(), frames) + _frames(attn, frames) * gate_msa).flatten(1, 2).type_as(x)

    # 2. Cross-attention over the cached text keys/values
    norm = block.norm2(x.float()).type_as(x)
    x = x + cross_attention(block.attn2, norm, text_kv)

    # 3. Feed-forward
    norm = (_frames(block.norm3(x.float()), frames) * (1 + c_scale) + c_shift).flatten(1, 2).type_as(x)
    ff = block.ffn(norm)
    return (_frames(x.float(), frames) + _frames(ff.float(), frames) * c_gate).flatten(1, 2).type_as(x)
