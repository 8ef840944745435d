"""WanActionPipeline: image + prompt + per-frame actions -> video, on diffusers' Wan components.

A ``diffusers.WanPipeline`` (UMT5 prompt encoding, AutoencoderKLWan, the flow scheduler, LoRA loading) whose
denoising loop adds Wan2.2 TI2V first-frame conditioning and the action controller:

    noise_pred = e(text, actions)                                          guidance_scale = 1
               + (guidance_scale - 1) * (e(text, actions) - e(negative, actions))     classifier-free guidance
               + (action_guidance_scale - 1) * (e(text, actions) - e(text, zero actions))   action guidance

Classifier-free guidance keeps the actions in both branches; action guidance (off at 1.0) compares with the
zero-action branch to strengthen action following. Latent frame 0 is the clean first-image latent at every step.

The controller is a pipeline component (``action_controller``): ``save_pretrained`` writes it beside the others and
``from_pretrained`` reads it back; diffusers' ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload``
offload it like the other models.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import PIL.Image
import torch
from diffusers import WanPipeline

from ..modeling._actions import prepare_actions
from ..modeling._controller import WanActionController
from ..modeling._first_frame import fuse_first_frame, token_timesteps
from ..modeling._transformer import WanActionTransformer
from ..modeling._vae import decode_latents, encode_video


@dataclass
class WanActionPipelineOutput:
    """frames: (B, F, H, W, 3) float in [0, 1] for ``output_type="np"``, or latents (B, C, f, h, w) for "latent"."""

    frames: np.ndarray | torch.Tensor


def run_offload_hook(module: torch.nn.Module | None) -> bool:
    """Runs the accelerate hook that diffusers' CPU offload put on ``module``'s ``forward`` (model offload: moves the
    model to the execution device and offloads the one before it; sequential offload: materializes the module's own
    weights), as diffusers' ``apply_forward_hook`` does for ``vae.encode``. Returns whether there was a hook.

    Needed wherever a loop calls a model's parts rather than its forward (the action and VACE-E loops call the
    transformer's blocks, the controller's heads): otherwise the hook never fires, and model offload leaves the
    model on the CPU, sequential offload its own weights (``scale_shift_table``, ``output_scale``) on the meta device.
    """
    if module is None or getattr(module, "_hf_hook", None) is None:
        return False
    module._hf_hook.pre_forward(module)
    return True


@contextmanager
def _offload_hooks(*modules: torch.nn.Module | None) -> Iterator[None]:
    """:func:`run_offload_hook` for each module around a block of code, and the hooks' ``post_forward`` after it
    (sequential offload: the modules' own weights back to the meta device). Without offload this does nothing."""
    hooked = [m for m in modules if run_offload_hook(m)]
    try:
        yield
    finally:
        for module in hooked:
            module._hf_hook.post_forward(module, None)  # sequential: its own weights back to the meta device


class WanActionPipeline(WanPipeline):
    """A WanPipeline steered by a :class:`WanActionController`. Build it with :func:`load_pipeline`,
    ``WanActionPipeline.from_pretrained(saved_dir)`` or directly:

    ``WanActionPipeline(tokenizer, text_encoder, vae, scheduler, transformer, action_controller=controller)``

    ``action_controller`` is a registered component: ``pipe.save_pretrained(dir)`` writes it to
    ``dir/action_controller/`` and assigning ``pipe.action_controller = other`` steers the pipeline with ``other``.
    """

    _optional_components: ClassVar[list[str]] = ["transformer", "transformer_2", "action_controller"]

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
        self.register_modules(action_controller=action_controller)
        self.action_model = WanActionTransformer(transformer, action_controller)

    def __setattr__(self, name, value):
        super().__setattr__(name, value)  # diffusers records a replaced component in the config
        if name in ("transformer", "action_controller") and "action_model" in self.__dict__:
            self.action_model = WanActionTransformer(self.transformer, self.action_controller)

    def save_pretrained(self, save_directory, *args, **kwargs):
        """diffusers' save_pretrained (the controller in ``action_controller/``), refused while the transformer
        carries a LoRA adapter: diffusers would write peft's wrapped keys and from_pretrained would initialize the
        base weights at random, silently."""
        if any(".lora_" in name for name, _ in self.transformer.named_parameters()):
            raise ValueError(
                "save_pretrained: the transformer carries a LoRA adapter; fold it in first "
                "(pipe.fuse_lora(); pipe.unload_lora_weights()), or merge it into the base model with "
                "kinema-wm merge-lora"
            )
        return super().save_pretrained(save_directory, *args, **kwargs)

    def to(self, *args, **kwargs):
        """Moves the components (the controller among them); the controller also takes the transformer's dtype."""
        super().to(*args, **kwargs)
        controller, target = self.action_controller, (self.transformer.device, self.transformer.dtype)
        if controller is not None and (controller.device, controller.dtype) != target:
            controller.to(device=target[0], dtype=target[1])
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
        81 frames -> 20 actions). Magnitudes are raw: the controller multiplies them by its magnitude_scale
        ([100, 100, 100, 100, 1, 1, 1, 1] for the drone) itself, so do not pre-scale them as the design's inference
        code does (translations would reach the model 10^4 x too large); a warning says so, once per call, when
        magnitudes look pre-scaled. ``step_callback(step, model_input_latents)`` sees what the transformer receives
        at each step.
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
            controller.warn_if_prescaled(action_magnitude, stacklevel=3)  # the line that called the pipeline
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
                with _offload_hooks(self.transformer, self.action_model.controller):
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
            self.maybe_free_model_hooks()
            return WanActionPipelineOutput(frames=latents)
        video = decode_latents(self.vae, latents)  # (B, 3, F, H, W) in [-1, 1]
        frames = ((video + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()  # (B, F, H, W, 3) in [0, 1]
        self.maybe_free_model_hooks()
        return WanActionPipelineOutput(frames=frames)
