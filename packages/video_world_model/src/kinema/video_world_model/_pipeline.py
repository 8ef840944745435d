"""WanActionPipeline: image + prompt + per-frame actions -> video, on diffusers' Wan components.

A ``diffusers.WanPipeline`` (UMT5 prompt encoding, AutoencoderKLWan, the flow scheduler, LoRA loading) whose
denoising loop adds Wan2.2 TI2V first-frame conditioning and the action controller:

    noise_pred = e(text, actions)                                          guidance_scale = 1
               + (guidance_scale - 1) * (e(text, actions) - e(negative, actions))     classifier-free guidance
               + (action_guidance_scale - 1) * (e(text, actions) - e(text, zero actions))   action guidance

Classifier-free guidance keeps the actions in both branches; action guidance (off at 1.0) compares with the
zero-action branch to strengthen action following. Latent frame 0 is the clean first-image latent at every step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch
from diffusers import WanPipeline

from ._actions import prepare_actions
from ._controller import WanActionController
from ._first_frame import fuse_first_frame, token_timesteps
from ._transformer import WanActionTransformer
from ._vae import decode_latents, encode_video


@dataclass
class WanActionPipelineOutput:
    """frames: (B, F, H, W, 3) float in [0, 1] for ``output_type="np"``, or latents (B, C, f, h, w) for "latent"."""

    frames: np.ndarray | torch.Tensor


class WanActionPipeline(WanPipeline):
    """A WanPipeline steered by a :class:`WanActionController`. Build it with :func:`load_pipeline` or directly:

    ``WanActionPipeline(tokenizer, text_encoder, vae, scheduler, transformer, action_controller=controller)``
    """

    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        scheduler,
        transformer=None,
        transformer_2=None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = True,
        action_controller: WanActionController | None = None,
    ):
        # WanPipeline's signature (diffusers checks components against it); transformer_2 / boundary_ratio (the
        # two-expert Wan2.2 A14B models) are not supported by the action loop and must stay None.
        if transformer is None or transformer_2 is not None or boundary_ratio is not None:
            raise ValueError(
                "WanActionPipeline: needs one transformer (two-expert Wan2.2 models are not supported)"
            )
        if not expand_timesteps:
            raise ValueError(
                "expand_timesteps: the action pipeline always uses TI2V first-frame conditioning"
            )
        super().__init__(
            tokenizer, text_encoder, vae, scheduler, transformer=transformer, expand_timesteps=True
        )
        self.action_model = WanActionTransformer(transformer, action_controller)

    @property
    def action_controller(self) -> WanActionController | None:
        return self.action_model.controller

    def to(self, *args, **kwargs):
        """Moves the diffusers components and the action controller."""
        super().to(*args, **kwargs)
        if self.action_controller is not None:
            self.action_controller.to(device=self.transformer.device, dtype=self.transformer.dtype)
        return self

    def check_action_inputs(self, height: int, width: int, num_frames: int, num_inference_steps: int) -> int:
        """Validates sizes before any model work; returns the number of latent frames."""
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        for name, value in (("height", height), ("width", width)):
            if value % multiple != 0 or value <= 0:
                raise ValueError(f"{name}: {value} is not a positive multiple of {multiple}")
        if num_frames < 1 or (num_frames - 1) % self.vae_scale_factor_temporal != 0:
            raise ValueError(f"num_frames: {num_frames} is not 4n+1")
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: expected >= 1, got {num_inference_steps}")
        return (num_frames - 1) // self.vae_scale_factor_temporal + 1

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        input_image: PIL.Image.Image | np.ndarray | torch.Tensor,
        action_binary=None,
        action_magnitude=None,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        action_guidance_scale: float = 1.0,
        negative_prompt: str | list[str] | None = None,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "np",
        max_sequence_length: int = 512,
        step_callback: Callable[[int, torch.Tensor], None] | None = None,
    ) -> WanActionPipelineOutput:
        """Generates B = len(prompt) videos that start from ``input_image`` and follow the actions.

        action_binary / action_magnitude: (B, F_lat - 1, 8) or (F_lat - 1, 8) (F_lat = (num_frames - 1) / 4 + 1;
        81 frames -> 20 actions), raw magnitudes. ``step_callback(step, model_input_latents)`` sees what the
        transformer receives at each step.
        """
        latent_frames = self.check_action_inputs(height, width, num_frames, num_inference_steps)
        if output_type not in ("np", "latent"):
            raise ValueError(f"output_type: expected 'np' or 'latent', got {output_type!r}")
        device, dtype = self._execution_device, self.transformer.dtype
        controller = self.action_controller
        if action_binary is not None and controller is None:
            raise ValueError(
                "action_binary: this pipeline has no action controller (load one with --controller)"
            )
        if controller is not None and action_binary is not None:
            action_binary, action_magnitude = prepare_actions(
                action_binary, action_magnitude, latent_frames, controller.action_dim, device, dtype
            )
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        if action_binary is not None and action_binary.shape[0] not in (1, batch):
            raise ValueError(f"action_binary: batch {action_binary.shape[0]} for {batch} prompts")
        if action_binary is not None and action_binary.shape[0] != batch:
            action_binary = action_binary.expand(batch, -1, -1)
            action_magnitude = action_magnitude.expand(batch, -1, -1)

        do_cfg = guidance_scale > 1.0
        prompt_embeds, negative_embeds = self.encode_prompt(
            prompts, negative_prompt, do_classifier_free_guidance=do_cfg,
            max_sequence_length=max_sequence_length, device=device, dtype=dtype,
        )  # fmt: skip

        image = self.video_processor.preprocess(input_image, height=height, width=width).to(
            device, torch.float32
        )
        condition = encode_video(self.vae, image.unsqueeze(2)).to(device)  # (1 or B, C, 1, h, w)
        condition = condition.expand(batch, -1, -1, -1, -1)
        channels = self.transformer.config.in_channels
        shape = (
            batch,
            channels,
            latent_frames,
            height // self.vae_scale_factor_spatial,
            width // self.vae_scale_factor_spatial,
        )
        if latents is None:
            latents = torch.randn(
                shape, generator=generator, device=generator.device if generator else device
            )
        latents = fuse_first_frame(latents.to(device, torch.float32), condition)
        patch = self.transformer.config.patch_size
        tokens_per_frame = (shape[3] // patch[1]) * (shape[4] // patch[2])

        zeros = None if action_binary is None else torch.zeros_like(action_binary)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        for step, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            model_input = fuse_first_frame(latents, condition).to(dtype)  # frame 0 exactly clean
            if step_callback is not None:
                step_callback(step, model_input)
            timestep = token_timesteps(t.expand(batch), latent_frames, tokens_per_frame).to(device)

            def predict(text, actions, magnitudes, model_input=model_input, timestep=timestep):
                return self.action_model(model_input, timestep, text, actions, magnitudes).float()

            conditional = predict(prompt_embeds, action_binary, action_magnitude)
            noise_pred = conditional
            if do_cfg:
                uncond = predict(negative_embeds, action_binary, action_magnitude)
                noise_pred = noise_pred + (guidance_scale - 1.0) * (conditional - uncond)
            if action_guidance_scale != 1.0 and action_binary is not None:
                no_action = predict(prompt_embeds, zeros, zeros)
                noise_pred = noise_pred + (action_guidance_scale - 1.0) * (conditional - no_action)
            latents = self.scheduler.step(noise_pred, t, latents, return_dict=False)[0]
            latents = fuse_first_frame(latents, condition)

        if output_type == "latent":
            return WanActionPipelineOutput(frames=latents)
        video = decode_latents(self.vae, latents)  # (B, 3, F, H, W) in [-1, 1]
        frames = ((video + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, 3) in [0, 1]
        self.maybe_free_model_hooks()
        return WanActionPipelineOutput(frames=frames)
