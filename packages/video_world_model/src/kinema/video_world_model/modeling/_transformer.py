"""WanActionTransformer: a diffusers WanTransformer3DModel steered by per-frame actions, without forking diffusers.

The forward below is diffusers' ``WanTransformer3DModel.forward`` with the action controller threaded through:
it calls the model's own rope, patch embedding, condition embedder, blocks, output norm and projection, in the
same order and with the same arithmetic, so with the controller's output scales at 0 the result equals the plain
transformer's bitwise. Injections:

- ``cross_attn_frame`` / ``add_residual``: after each selected block, ``controller.apply_action``;
- ``adaln_tmod``: before each selected block, the per-frame action modulation (times that layer's output scale)
  is added to the block's timestep modulation, broadcast over each frame's h*w tokens: TI2V's per-token
  (B, L, 6, C) form, or Wan2.1's (B, 6, C) form expanded per token.

Latent frame 0 (the first image) receives no action. Gradient checkpointing wraps block + injection together.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import WanTransformer3DModel
from diffusers.utils import USE_PEFT_BACKEND, scale_lora_layers, unscale_lora_layers
from torch import nn
from torch.utils.checkpoint import checkpoint

from ._actions import prepare_actions
from ._controller import WanActionController


class WanActionTransformer(nn.Module):
    """forward(hidden_states (B, C, F, H, W), timestep (B,) or (B, L), encoder_hidden_states (B, S, Dt),
    action_binary=None, action_magnitude=None, encoder_hidden_states_image=None, attention_kwargs=None)
    -> (B, C_out, F, H, W).

    ``action_binary`` / ``action_magnitude``: (B, F - 1, A) (lists and 2-D inputs are accepted and converted),
    cast to the model's device and dtype. Without actions (or without a controller) this is the plain transformer.
    """

    def __init__(self, transformer: WanTransformer3DModel, controller: WanActionController | None = None):
        super().__init__()
        self.transformer = transformer
        self.controller = controller
        self.gradient_checkpointing = False
        if controller is not None:
            inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
            layers = len(transformer.blocks)
            if controller.hidden_size != inner or controller.num_layers != layers:
                raise ValueError(
                    f"action controller: built for hidden_size={controller.hidden_size}, "
                    f"num_layers={controller.num_layers}; the transformer has hidden {inner} and {layers} layers"
                )

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.dtype

    @property
    def device(self) -> torch.device:
        return self.transformer.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        self.gradient_checkpointing = enabled

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        action_binary=None,
        action_magnitude=None,
        encoder_hidden_states_image: torch.Tensor | None = None,
        attention_kwargs: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """``encoder_hidden_states_image`` (B, S_img, D_img) and ``attention_kwargs`` act as in diffusers' forward:
        image embeddings through the condition embedder, placed before the text (the blocks' added K/V read them),
        and ``attention_kwargs["scale"]``, the LoRA scale of this call (diffusers' blocks take no other key)."""
        scale = self._lora_scale(attention_kwargs)
        if scale != 1.0 and self.gradient_checkpointing and torch.is_grad_enabled():
            # checkpointed blocks are recomputed in backward, after the scale is undone: gradients would be wrong
            raise ValueError(
                "attention_kwargs: a LoRA 'scale' other than 1 cannot be used with gradient checkpointing"
            )
        if (
            encoder_hidden_states_image is not None
            and self.transformer.condition_embedder.image_embedder is None
        ):
            raise ValueError(
                "encoder_hidden_states_image: this transformer has no image embedder (config.image_dim is None; "
                "Wan2.2-TI2V conditions on the first frame's latent instead)"
            )
        if USE_PEFT_BACKEND:
            scale_lora_layers(self.transformer, scale)
        try:
            return self._forward(
                hidden_states,
                timestep,
                encoder_hidden_states,
                action_binary,
                action_magnitude,
                encoder_hidden_states_image,
            )
        finally:
            if USE_PEFT_BACKEND:
                unscale_lora_layers(self.transformer, scale)

    @staticmethod
    def _lora_scale(attention_kwargs: dict[str, Any] | None) -> float:
        unknown = sorted(set(attention_kwargs or {}) - {"scale"})
        if unknown:
            raise ValueError(
                f"attention_kwargs: {unknown} would be ignored; diffusers' Wan transformer reads only 'scale' "
                "(the LoRA scale)"
            )
        scale = float((attention_kwargs or {}).get("scale", 1.0))
        if scale != 1.0 and not USE_PEFT_BACKEND:
            raise ValueError(
                "attention_kwargs: 'scale' needs the PEFT backend (pip install peft) to scale LoRA layers"
            )
        return scale

    def _forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        action_binary,
        action_magnitude,
        encoder_hidden_states_image: torch.Tensor | None,
    ) -> torch.Tensor:
        tr = self.transformer
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = tr.config.patch_size
        t, h, w = frames // p_t, height // p_h, width // p_w

        action_emb = tmod = None
        if self.controller is not None and action_binary is not None:
            binary, magnitude = prepare_actions(
                action_binary,
                action_magnitude,
                t,
                self.controller.action_dim,
                hidden_states.device,
                self.dtype,
            )
            if binary.shape[0] != batch:
                raise ValueError(
                    f"action_binary: batch {binary.shape[0]} differs from hidden_states' batch {batch}"
                )
            action_emb = self.controller.build_action_emb(binary, magnitude)  # (B, t-1, C)
            if self.controller.injection_type == "adaln_tmod":
                tmod = self.controller.action_tmod(
                    self.controller.frame_conditions(action_emb, t)
                )  # (B, t, 6, C)

        # diffusers WanTransformer3DModel.forward, steps 1-3
        rotary_emb = tr.rope(hidden_states)
        hidden_states = tr.patch_embedding(hidden_states).flatten(2).transpose(1, 2).contiguous()  # (B, L, C)
        if timestep.ndim == 2:
            ts_seq_len = timestep.shape[1]
            timestep = timestep.flatten()
        else:
            ts_seq_len = None
        temb, timestep_proj, encoder_hidden_states, image_states = tr.condition_embedder(
            timestep, encoder_hidden_states, encoder_hidden_states_image, timestep_seq_len=ts_seq_len
        )
        if ts_seq_len is not None:
            timestep_proj = timestep_proj.unflatten(2, (6, -1))  # (B, L, 6, C)
        else:
            timestep_proj = timestep_proj.unflatten(1, (6, -1))  # (B, 6, C)
        if image_states is not None:  # image tokens first: diffusers' attention splits them off the front
            encoder_hidden_states = torch.concat([image_states, encoder_hidden_states], dim=1)

        # 4. Transformer blocks, each followed (or modulated) by the controller where it injects
        for index, block in enumerate(tr.blocks):
            args = (
                index,
                block,
                hidden_states,
                encoder_hidden_states,
                timestep_proj,
                rotary_emb,
                action_emb,
                tmod,
            )
            shape = (t, h, w)
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                hidden_states = checkpoint(self._block, *args, shape, use_reentrant=False)
            else:
                hidden_states = self._block(*args, shape)

        # 5. Output norm, projection & unpatchify (as diffusers)
        if temb.ndim == 3:
            shift, scale = (tr.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).chunk(
                2, dim=2
            )
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (tr.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (tr.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = tr.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, t, h, w, p_t, p_h, p_w, -1)
        hidden_states = hidden_states.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def _block(
        self,
        index: int,
        block: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep_proj: torch.Tensor,
        rotary_emb,
        action_emb: torch.Tensor | None,
        tmod: torch.Tensor | None,
        shape: tuple[int, int, int],
    ) -> torch.Tensor:
        controller = self.controller
        injects = controller is not None and action_emb is not None and controller.should_inject(index)
        if injects and tmod is not None:
            timestep_proj = self._modulated_temb(timestep_proj, tmod, controller.output_scale[index], shape)
        hidden_states = block(hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)
        if injects and tmod is None:
            hidden_states = controller.apply_action(hidden_states, action_emb, *shape, index)
        return hidden_states

    @staticmethod
    def _modulated_temb(
        timestep_proj: torch.Tensor, tmod: torch.Tensor, scale: torch.Tensor, shape: tuple[int, int, int]
    ) -> torch.Tensor:
        """timestep_proj (B, L, 6, C) or (B, 6, C) + scale * tmod (B, t, 6, C) per frame -> (B, L, 6, C), fp32.

        fp32 because the block adds its scale_shift_table to ``temb.float()``: the sum stays in the precision the
        backbone uses for modulation.
        """
        t, h, w = shape
        batch, _, chunks, dim = tmod.shape
        delta = (tmod.float() * scale.float()).unsqueeze(2)  # (B, t, 1, 6, C)
        if timestep_proj.ndim == 3:  # Wan2.1 form: one modulation for every token
            base = timestep_proj.float().view(batch, 1, 1, chunks, dim)
        else:
            base = timestep_proj.float().view(batch, t, h * w, chunks, dim)
        return (base + delta).expand(batch, t, h * w, chunks, dim).reshape(batch, t * h * w, chunks, dim)
