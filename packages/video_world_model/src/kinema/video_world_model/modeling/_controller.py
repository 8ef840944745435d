"""WanActionController: per-frame drone actions injected into the blocks of a Wan transformer.

Actions per latent frame 1..T (frame 0 is the first image and receives no action) are embedded by
kinema.conditioning's ActionEncoder and injected in one of three ways, each built from kinema.conditioning:

- ``cross_attn_frame``: each latent frame's tokens attend only to their own actions
  (:func:`~kinema.conditioning.per_frame_cross_attention`; with ``action_window = r > 0`` a frame attends to the
  actions of frames f-r..f+r, K = 2r+1 keys, so the softmax means something);
- ``adaln_tmod``: the action embedding is projected to a 6 x hidden modulation added to the block's timestep
  modulation (shift/scale/gate of attention and FFN), broadcast over each frame's tokens;
- ``add_residual``: a per-frame residual (:func:`~kinema.conditioning.add_per_frame`).

Magnitudes are RAW: the controller multiplies them by its ``magnitude_scale`` (the drone scale [100, 100, 100, 100,
1, 1, 1, 1]) itself. Do not pre-scale them as the design's inference code does: pre-scaled translations reach the
embedding 10^4 x larger than raw ones; :meth:`WanActionController.forward` and the pipeline warn when they see such
magnitudes.

A diffusers model (``ModelMixin`` + ``ConfigMixin``): ``save_pretrained`` writes ``config.json`` +
``diffusion_pytorch_model.safetensors``, ``from_pretrained`` reads them (and kinema's controller folders), and
:class:`~kinema.video_world_model.WanActionPipeline` saves and loads it as its ``action_controller`` component.

Every injection is multiplied by a learnable per-layer ``output_scale`` (``initial_scale`` at init; 0.0 makes the
controller an exact identity). Parameter names follow the reference design, so its checkpoints load with
``load_state_dict(strict=True)``: ``action_embed.{0,2}.*``, ``temporal_pos_embed`` (1, T, C), ``q_proj``,
``k_proj``, ``v_proj``, ``o_proj``, ``action_to_tmod`` (C -> 6C), ``action_to_residual`` (all without bias),
``q_norm.weight``, ``k_norm.weight``, ``output_scale`` (num_layers,). The heads an injection type does not use
are kept (reference checkpoints carry them) but frozen.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from diffusers import ConfigMixin, ModelMixin  # module-level: diffusers' pipeline loader looks them up here
from diffusers.configuration_utils import register_to_config
from torch import nn

from kinema.conditioning import (
    ActionEncoder,
    add_per_frame,
    frame_window,
    output_scales,
    per_frame_cross_attention,
    select_layers,
)
from kinema.robot_data import DEFAULT_MAGNITUDE_SCALE

from .._state_dict import check_state_dict
from ._actions import warn_if_prescaled

INJECTION_TYPES = ("cross_attn_frame", "adaln_tmod", "add_residual")

_WAN_TI2V_5B: dict[str, Any] = {
    "action_dim": 8,
    "hidden_size": 3072,
    "num_heads": 24,
    "num_latent_frames": 20,
    "num_layers": 30,
    "inject_layers": None,
    "qk_norm": True,
    "initial_scale": 0.01,
    "injection_type": "cross_attn_frame",
}
ACTION_CONTROLLER_CONFIGS: dict[str, dict[str, Any]] = {
    "wan_ti2v_5b": dict(_WAN_TI2V_5B),
    "wan_ti2v_5b_sparse": _WAN_TI2V_5B | {"inject_layers": list(range(0, 30, 3))},
    "wan_ti2v_5b_adaln": _WAN_TI2V_5B | {"injection_type": "adaln_tmod"},
    "wan_ti2v_5b_add": _WAN_TI2V_5B | {"injection_type": "add_residual"},
}
"""The reference presets (Wan2.2-TI2V-5B: hidden 3072, 24 heads, 30 layers, 20 action steps)."""


# A saved WanActionPipeline names this module in its model_index.json, and diffusers loads the controller from it
# (looking up ModelMixin in it too) when it is already imported: moving the class needs the old path kept as an
# alias, as the package's __init__ keeps kinema.video_world_model._controller for pipelines saved by 0.5.
class WanActionController(ActionEncoder, ModelMixin, ConfigMixin):
    """Action embedding + injection heads for a Wan transformer of ``num_layers`` blocks of width ``hidden_size``.

    build_action_emb(action_binary (B, T, A), action_magnitude (B, T, A)) -> (B, T, C)
    action_tmod(action_emb (B, T, C)) -> (B, T, 6, C)
    apply_action(hidden_states (B, t*h*w, C), action_emb (B, t-1, C), t, h, w, block_idx) -> (B, t*h*w, C)

    ``action_magnitude`` is raw: ``magnitude_scale`` (A,) multiplies it once, inside the embedding (default: the
    drone scale [100, 100, 100, 100, 1, 1, 1, 1]). Never pre-scale it (the design's inference code does; ported
    code then feeds translations 10^4 x their trained size); :meth:`forward` warns when magnitudes look pre-scaled.
    ``action_window`` r > 0 makes cross-attention windowed (K = 2r + 1).

    ``config`` holds the constructor arguments (diffusers' ConfigMixin); ``save_pretrained`` / ``from_pretrained``
    round-trip the controller.
    """

    @register_to_config
    def __init__(
        self,
        action_dim: int = 8,
        hidden_size: int = 3072,
        num_heads: int = 24,
        num_latent_frames: int = 20,
        inject_layers: Sequence[int] | str | None = None,
        num_layers: int = 30,
        qk_norm: bool = True,
        dropout: float = 0.0,
        initial_scale: float = 0.01,
        injection_type: str = "cross_attn_frame",
        action_window: int = 0,
        magnitude_scale: Sequence[float] | None = None,
    ):
        if injection_type not in INJECTION_TYPES:
            raise ValueError(f"injection_type: expected one of {INJECTION_TYPES}, got {injection_type!r}")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size={hidden_size} must be a multiple of num_heads={num_heads}")
        if action_window < 0:
            raise ValueError(f"action_window: expected >= 0, got {action_window}")
        if magnitude_scale is None:
            magnitude_scale = DEFAULT_MAGNITUDE_SCALE if action_dim == len(DEFAULT_MAGNITUDE_SCALE) else None
        super().__init__(action_dim, hidden_size, num_latent_frames, magnitude_scale)
        scale = [1.0] * action_dim if magnitude_scale is None else [float(s) for s in magnitude_scale]
        self.action_dim = action_dim
        self.hidden_size = hidden_size
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.num_latent_frames = num_latent_frames
        self.num_layers = num_layers
        self.inject_layers = select_layers(inject_layers, num_layers)
        self.injection_type = injection_type
        self.action_window = action_window
        self.dropout = dropout
        self.initial_scale = initial_scale

        c = hidden_size
        self.q_proj = nn.Linear(c, c, bias=False)
        self.k_proj = nn.Linear(c, c, bias=False)
        self.v_proj = nn.Linear(c, c, bias=False)
        self.o_proj = nn.Linear(c, c, bias=False)
        self.action_to_tmod = nn.Linear(c, 6 * c, bias=False)
        self.action_to_residual = nn.Linear(c, c, bias=False)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.k_norm = nn.RMSNorm(self.head_dim, eps=1e-5) if qk_norm else nn.Identity()
        self.output_scale = output_scales(num_layers, initial_scale)
        for name in self._unused_heads():
            getattr(self, name).requires_grad_(False)
        # the config holds the resolved values, JSON-ready: a layer spec as its list, the scale as floats
        self.register_to_config(
            inject_layers=None if len(self.inject_layers) == num_layers else list(self.inject_layers),
            qk_norm=bool(qk_norm),
            magnitude_scale=scale,
        )

    def __getattr__(self, name: str) -> Any:
        # nn.Module's lookup (parameters, buffers, submodules) only: ModelMixin's answers config keys first (a
        # deprecated shortcut), and ``magnitude_scale`` is both a config key and ActionEncoder's buffer
        return nn.Module.__getattr__(self, name)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> WanActionController:
        """diffusers' loader for ``save_pretrained``'s layout (config.json + diffusion_pytorch_model.safetensors), and
        the folders :func:`~kinema.video_world_model.load_controller` reads: kinema-wm train's and the reference
        design's (action_train_config.json + action_controller.safetensors) and training checkpoints
        (trainable.safetensors). For those, only ``subfolder`` and ``torch_dtype`` apply."""
        root = Path(pretrained_model_name_or_path, kwargs.get("subfolder") or "")
        if (root / "config.json").is_file() or not root.exists():
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        other = sorted(set(kwargs) - {"subfolder", "torch_dtype", "local_files_only"})
        if other:
            raise ValueError(
                f"from_pretrained: {other} apply to diffusers' layout (config.json) only; {root} is a kinema "
                "controller folder"
            )
        from ..loading._wan import load_controller  # _loading imports this module

        controller, _ = load_controller(root)
        dtype = kwargs.get("torch_dtype")
        return controller if dtype is None else controller.to(dtype=dtype)

    def _unused_heads(self) -> tuple[str, ...]:
        query_key = ("q_proj", "k_proj", "q_norm", "k_norm")
        attention = (*query_key, "v_proj", "o_proj")
        if self.injection_type == "cross_attn_frame":
            # With one key per frame the softmax is 1: queries, keys and their norms never affect the output.
            return (*(query_key if self.action_window == 0 else ()), "action_to_tmod", "action_to_residual")
        if self.injection_type == "adaln_tmod":
            return (*attention, "action_to_residual")
        return (*attention, "action_to_tmod")

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready: ``config`` without diffusers' private keys (written to
        ``action_train_config.json``; ``initial_scale`` is the init value, the learned scales are in output_scale)."""
        return {k: v for k, v in self.config.items() if not k.startswith("_")}

    def warn_if_prescaled(self, action_magnitude: torch.Tensor, stacklevel: int = 2) -> bool:
        """Warns (once) when raw magnitudes look already multiplied by ``magnitude_scale``; see
        :func:`~kinema.video_world_model.modeling._actions.warn_if_prescaled` for the bound. ``stacklevel`` as in
        ``warnings.warn``, counted from the caller of this method."""
        return warn_if_prescaled(action_magnitude, self.magnitude_scale, stacklevel=stacklevel + 1)

    def should_inject(self, block_idx: int) -> bool:
        return block_idx in self.inject_layers

    def build_action_emb(self, action_binary: torch.Tensor, action_magnitude: torch.Tensor) -> torch.Tensor:
        """(B, T, A) x 2 -> (B, T, C): MLP over [binary, magnitude * scale] + temporal position embedding."""
        return self.encode(action_binary, action_magnitude)

    def action_tmod(self, action_emb: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, T, 6, C): [shift, scale, gate] for attention and FFN, per frame."""
        return self.action_to_tmod(action_emb).unflatten(-1, (6, self.hidden_size))

    def frame_conditions(self, action_emb: torch.Tensor, num_frames: int) -> torch.Tensor:
        """(B, t-1, C) -> (B, t, C) with zeros for latent frame 0, which receives no action.

        Every head is bias-free, so a zero condition injects exactly nothing into frame 0.
        """
        if action_emb.shape[1] != num_frames - 1:
            raise ValueError(
                f"action_emb: {action_emb.shape[1]} action steps for {num_frames} latent frames "
                f"(expected latent_frames - 1 = {num_frames - 1})"
            )
        return torch.cat(
            [action_emb.new_zeros(action_emb.shape[0], 1, action_emb.shape[2]), action_emb], dim=1
        )

    def apply_action(
        self,
        hidden_states: torch.Tensor,
        action_emb: torch.Tensor,
        t: int,
        h: int,
        w: int,
        block_idx: int,
    ) -> torch.Tensor:
        """Injects the actions after block ``block_idx`` (cross_attn_frame and add_residual; adaln_tmod acts on the
        block's modulation instead and leaves hidden states alone). hidden_states: (B, t*h*w, C)."""
        if self.injection_type == "adaln_tmod" or not self.should_inject(block_idx):
            return hidden_states
        if hidden_states.shape[1] != t * h * w:
            raise ValueError(
                f"hidden_states: expected {t}*{h}*{w} = {t * h * w} tokens, got {hidden_states.shape[1]}"
            )
        cond = self.frame_conditions(action_emb, t)  # (B, t, C)
        scale = self.output_scale[block_idx]
        if self.injection_type == "add_residual":
            return add_per_frame(hidden_states, self.action_to_residual(cond), scale)
        if self.action_window == 0:
            window, mask = cond.unsqueeze(2), None  # (B, t, 1, C)
        else:
            window, _ = frame_window(cond, self.action_window)  # (B, t, K, C)
            mask = self._window_mask(t, window.device)  # (t, K)
        return per_frame_cross_attention(
            hidden_states,
            window.to(hidden_states.dtype),
            t,
            q_proj=self.q_proj,
            k_proj=self.k_proj,
            v_proj=self.v_proj,
            o_proj=self.o_proj,
            q_norm=self.q_norm,
            k_norm=self.k_norm,
            num_heads=self.num_heads,
            scale=scale,
            cond_mask=mask,
            dropout=self.dropout if self.training else 0.0,
        )

    def _window_mask(self, t: int, device: torch.device) -> torch.Tensor:
        """(t, K) bool: True where frame f may attend to the action of frame f + j - r.

        Slots outside [0, t) and slots pointing at latent frame 0 (which has no action) are masked. Frame 0 itself
        attends only to its own centre slot, a zero condition, so it receives exactly nothing."""
        r = self.action_window
        index = torch.arange(t, device=device)[:, None] + torch.arange(-r, r + 1, device=device)  # (t, K)
        valid = (index > 0) & (index < t)
        valid[0] = False
        valid[0, r] = True
        return valid

    def forward(
        self,
        hidden_states: torch.Tensor,
        action_binary: torch.Tensor,
        action_magnitude: torch.Tensor,
        t: int,
        h: int,
        w: int,
        block_idx: int,
    ) -> torch.Tensor:
        """One block's injection from raw actions (B, t-1, A) x 2: hidden_states (B, t*h*w, C) -> (B, t*h*w, C)."""
        self.warn_if_prescaled(action_magnitude, stacklevel=4)  # the line that called the controller
        action_emb = self.build_action_emb(action_binary, action_magnitude)
        return self.apply_action(hidden_states, action_emb, t, h, w, block_idx)

    def load_reference_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """load_state_dict(strict=True) with errors that name the key and both shapes.

        Also takes a training checkpoint's ``trainable.safetensors``: its LoRA tensors (keys with ``.lora_``) belong
        to the transformer and are left out, with a warning that names them; the heads this injection type never
        uses (frozen, so kinema-wm train leaves them out of checkpoints) may be absent and keep their initial
        weights, which never reach the output.
        """
        lora = sorted(key for key in state_dict if ".lora_" in key)
        if lora:
            warnings.warn(
                f"action controller state dict: {len(lora)} LoRA tensors ({lora[0]}, ...) belong to the transformer "
                "and were not loaded into the controller; load them with lora_checkpoint (kinema-wm train "
                "--lora_checkpoint) or load the checkpoint folder with load_pipeline",
                stacklevel=2,
            )
            state_dict = {k: v for k, v in state_dict.items() if ".lora_" not in k}
        own = self.state_dict()
        check_state_dict(
            own,
            state_dict,
            "action controller state dict",
            owner="this controller",
            may_lack=[key for key in own if key.split(".")[0] in self._unused_heads()],
            note=f" (injection_type={self.injection_type!r}, qk_norm={isinstance(self.q_norm, nn.RMSNorm)})",
        )
        self.load_state_dict(state_dict, strict=False)  # the keys were checked above
