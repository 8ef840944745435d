"""VaceETransformer: diffusers' WanVACETransformer3DModel with task tokens injected at ``vace_e_layers``.

The forward is diffusers' ``WanVACETransformer3DModel.forward`` (its own rope, patch embeddings, condition
embedder, VACE blocks, blocks, output head, in the same order and arithmetic); after each selected block, the video
tokens of latent frame f attend to the task tokens of frame f through kinema.conditioning's
:class:`~kinema.conditioning.PerFrameCrossAttention`. Its output projection is zero-initialized, so at step 0 the
model equals plain VACE bitwise, while the projection itself receives gradients from the first step.

When the latents carry a reference image prepended in time (VACE's reference frames), those leading latent frames
get only the global tokens (embodiment image, prompt): hand and object tokens are masked there.
"""

from __future__ import annotations

import torch
from diffusers import WanVACETransformer3DModel
from torch import nn
from torch.utils.checkpoint import checkpoint

from kinema.conditioning import PerFrameCrossAttention, select_layers

from ._task_encoder import TaskEmbodimentEncoder, TaskInputs


class TaskAlignmentHead(nn.Module):
    """Predicts per latent frame the hand motion (20) and, with ``max_objects``, each object's position (3):
    (B, F*HW, D) -> (B, F, 20 + 3 * max_objects).

    Trained with a masked L2 to the given hand motion and object positions (the guidance loss): it pushes the
    features, and through them the generation, to agree with the commanded motion. The object output is a layer of
    its own, so a head saved before it existed (hand only, ``max_objects=0``) still loads."""

    def __init__(self, model_dim: int, width: int = 256, max_objects: int = 0):
        super().__init__()
        self.max_objects = max_objects
        self.net = nn.Sequential(
            nn.LayerNorm(model_dim), nn.Linear(model_dim, width), nn.SiLU(), nn.Linear(width, 20)
        )
        self.objects = nn.Linear(width, 3 * max_objects) if max_objects else None

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        batch, tokens, dim = hidden_states.shape
        per_frame = (
            hidden_states.view(batch, num_frames, tokens // num_frames, dim).float().mean(2)
        )  # (B, F, D)
        hidden = self.net[:3](per_frame.to(self.net[1].weight.dtype))  # (B, F, width)
        hand = self.net[3](hidden)  # (B, F, 20)
        return (
            hand if self.objects is None else torch.cat([hand, self.objects(hidden)], -1)
        )  # (B, F, 20 + 3N)


class VaceETransformer(nn.Module):
    """forward(hidden_states (B, C, F, H, W), timestep (B,), encoder_hidden_states (B, S, Dt), control_hidden_states
    (B, Cc, F, H, W), control_hidden_states_scale=None, task=None, num_reference_frames=0,
    return_features=False) -> (B, C, F, H, W) [and the final hidden states (B, L, D) with return_features].

    ``task`` is a :class:`TaskInputs`; without it (or with ``enable_vace_e=False``) this is plain VACE."""

    def __init__(
        self,
        vace: WanVACETransformer3DModel,
        encoder: TaskEmbodimentEncoder | None,
        vace_e_layers: str | list[int] = "0,5,10,15,20,25",
        enable_vace_e: bool = True,
        guidance_head: bool = False,
        guidance_objects: int = 0,
    ):
        super().__init__()
        config = vace.config
        dim = config.num_attention_heads * config.attention_head_dim
        self.vace = vace
        self.encoder = encoder
        self.enable_vace_e = enable_vace_e and encoder is not None
        self.layers = select_layers(vace_e_layers, config.num_layers)
        self.injectors = nn.ModuleDict(
            {
                str(i): PerFrameCrossAttention(dim, dim, config.num_attention_heads, initial_scale=1.0)
                for i in self.layers
            }
        )
        for injector in self.injectors.values():
            # Zero-init the output projection: every injection adds exactly 0 at step 0 (plain VACE, bitwise), and
            # the projection's own gradient is non-zero, so it starts learning at once.
            nn.init.zeros_(injector.o_proj.weight)
        self.guidance_head = TaskAlignmentHead(dim, max_objects=guidance_objects) if guidance_head else None
        self.gradient_checkpointing = False

    @property
    def dtype(self) -> torch.dtype:
        return self.vace.dtype

    def added_modules(self) -> list[nn.Module]:
        """The modules VACE-E adds to VACE (task encoder, injectors, guidance head)."""
        return [m for m in (self.encoder, self.injectors, self.guidance_head) if m is not None]

    @property
    def device(self) -> torch.device:
        return self.vace.device

    def task_tokens(
        self, task: TaskInputs, num_frames: int, num_reference_frames: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(tokens (B, F, K, D), mask (B, F, K)) over all F latent frames, reference frames first."""
        video_frames = num_frames - num_reference_frames
        tokens, mask = self.encoder(task, video_frames)
        if num_reference_frames:
            global_only = mask[:, :1].clone()
            global_only[..., :2] = False  # hand and objects do not describe the reference image
            mask = torch.cat([global_only.expand(-1, num_reference_frames, -1), mask], dim=1)
            tokens = torch.cat([tokens[:, :1].expand(-1, num_reference_frames, -1, -1), tokens], dim=1)
        return tokens, mask

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor,
        control_hidden_states_scale: torch.Tensor | None = None,
        task: TaskInputs | None = None,
        num_reference_frames: int = 0,
        return_features: bool = False,
    ):
        vace = self.vace
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = vace.config.patch_size
        t, h, w = frames // p_t, height // p_h, width // p_w
        tokens = mask = None
        if self.enable_vace_e and task is not None:
            tokens, mask = self.task_tokens(task, t, num_reference_frames)
            tokens = tokens.to(self.dtype)

        # diffusers WanVACETransformer3DModel.forward
        if control_hidden_states_scale is None:
            control_hidden_states_scale = control_hidden_states.new_ones(len(vace.config.vace_layers))
        scales = torch.unbind(control_hidden_states_scale)
        if len(scales) != len(vace.config.vace_layers):
            raise ValueError(
                f"control_hidden_states_scale: {len(scales)} values for {len(vace.config.vace_layers)} VACE layers"
            )
        rotary_emb = vace.rope(hidden_states)
        hidden_states = vace.patch_embedding(hidden_states).flatten(2).transpose(1, 2)
        control = vace.vace_patch_embedding(control_hidden_states).flatten(2).transpose(1, 2)
        padding = control.new_zeros(batch, hidden_states.size(1) - control.size(1), control.size(2))
        control = torch.cat([control, padding], dim=1)
        temb, timestep_proj, encoder_hidden_states, _ = vace.condition_embedder(
            timestep, encoder_hidden_states, None
        )
        timestep_proj = timestep_proj.unflatten(1, (6, -1))
        run = self._checkpointed if torch.is_grad_enabled() and self.gradient_checkpointing else self._direct

        hints = []
        for i, block in enumerate(vace.vace_blocks):
            conditioning, control = run(
                block, hidden_states, encoder_hidden_states, control, timestep_proj, rotary_emb
            )
            hints.append((conditioning, scales[i]))
        hints = hints[::-1]
        for i, block in enumerate(vace.blocks):
            hidden_states = run(block, hidden_states, encoder_hidden_states, timestep_proj, rotary_emb)
            if i in vace.config.vace_layers:
                hint, scale = hints.pop()
                hidden_states = hidden_states + hint.to(hidden_states.device) * scale
            if tokens is not None and i in self.layers:
                hidden_states = run(self._inject, hidden_states, tokens, mask, i, t)

        features = hidden_states
        shift, scale = (vace.scale_shift_table.to(temb.device) + temb.unsqueeze(1)).chunk(2, dim=1)
        shift, scale = shift.to(hidden_states.device), scale.to(hidden_states.device)
        hidden_states = (vace.norm_out(hidden_states.float()) * (1 + scale) + shift).type_as(hidden_states)
        hidden_states = vace.proj_out(hidden_states)
        hidden_states = hidden_states.reshape(batch, t, h, w, p_t, p_h, p_w, -1).permute(
            0, 7, 1, 4, 2, 5, 3, 6
        )
        output = hidden_states.flatten(6, 7).flatten(4, 5).flatten(2, 3)
        return (output, features) if return_features else output

    def _inject(self, hidden_states, tokens, mask, index: int, frames: int) -> torch.Tensor:
        # the stream's dtype, not the weights': under bf16 autocast the stream is bf16 while trained weights are
        # fp32 master copies
        return self.injectors[str(index)](
            hidden_states, tokens.to(hidden_states.dtype), frames, cond_mask=mask
        )

    @staticmethod
    def _direct(fn, *args):
        return fn(*args)

    @staticmethod
    def _checkpointed(fn, *args):
        return checkpoint(fn, *args, use_reentrant=False)
