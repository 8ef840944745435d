"""VaceEPipeline: a demonstration video from a hands-masked control video, its mask and the task features.

A ``diffusers.WanVACEPipeline`` (prompt encoding, VACE control latents and masks, the flow scheduler) whose
denoising loop runs :class:`VaceETransformer`. Classifier-free guidance keeps the hand, object and image task
tokens in both branches; the prompt token of the unconditional branch comes from the negative prompt, as its
cross-attention does, so that branch is not text-conditioned through the injectors.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import WanVACEPipeline, WanVACETransformer3DModel

from ..loading._lora import add_lora
from ..loading._wan import load_diffusers_components
from ..modeling._vae import decode_latents
from ..pipelines._pipeline import run_offload_hook
from ..training._train_config import lora_module_names
from ._config import VaceEConfig
from ._inputs import VaceEInputs
from ._model import VaceETransformer
from ._train import TRAIN_CONFIG, build_model, final_stage_dir, load_clip, load_stage_weights


@dataclass
class VaceEOutput:
    """frames (B, T, H, W, 3) float in [0, 1], or latents (B, z, F, h, w) for ``output_type="latent"``."""

    frames: np.ndarray | torch.Tensor


class VaceEPipeline(WanVACEPipeline):
    def __init__(
        self,
        tokenizer,
        text_encoder,
        vae,
        scheduler,
        transformer=None,
        transformer_2=None,
        boundary_ratio: float | None = None,
        vace_e_model: VaceETransformer | None = None,
        clip=None,
        clip_processor=None,
        use_reference_image: bool = True,
    ):
        if transformer is None or transformer_2 is not None or boundary_ratio is not None:
            raise ValueError(
                "VaceEPipeline: needs one VACE transformer (two-expert models are not supported)"
            )
        super().__init__(tokenizer, text_encoder, vae, scheduler, transformer=transformer)
        self.vace_e_model = vace_e_model or VaceETransformer(transformer, None, enable_vace_e=False)
        self.vace_e_inputs = VaceEInputs(self, clip, clip_processor, use_reference_image)

    def to(self, *args, **kwargs):
        """Moves the diffusers components and VACE-E's modules (cast to the transformer's dtype)."""
        super().to(*args, **kwargs)
        for module in self.vace_e_model.added_modules():
            module.to(device=self.transformer.device, dtype=self.transformer.dtype)
        return self

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        video: torch.Tensor,
        mask: torch.Tensor,
        reference_image: torch.Tensor | None = None,
        vace_e_hand_motion_sequence: torch.Tensor | None = None,
        vace_e_object_trajectory_sequence: torch.Tensor | None = None,
        vace_e_embodiment_image_features: torch.Tensor | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 5.0,
        negative_prompt: str | None = None,
        generator: torch.Generator | None = None,
        output_type: str = "np",
    ) -> VaceEOutput:
        """video: the hands-masked control video (3, T, H, W) uint8 or [-1, 1]; mask (1, T, H, W) bool (True in the
        hand region); reference_image (3, H, W): the end-effector / embodiment image (VACE's reference frame, and the
        CLIP image features unless ``vace_e_embodiment_image_features`` (Dclip,) are given);
        vace_e_hand_motion_sequence (T_h, 20); vace_e_object_trajectory_sequence (T_o, N, 9)."""
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps: expected >= 1, got {num_inference_steps}")
        if video.ndim != 4 or video.shape[0] != 3:
            raise ValueError(f"video: expected (3, T, H, W), got {tuple(video.shape)}")
        if mask.shape != (1, *video.shape[1:]):
            raise ValueError(f"mask: expected {(1, *video.shape[1:])}, got {tuple(mask.shape)}")
        if (video.shape[1] - 1) % self.vae_scale_factor_temporal:
            raise ValueError(f"video: {video.shape[1]} frames is not 4n+1")
        multiple = self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]
        if video.shape[2] % multiple or video.shape[3] % multiple:
            raise ValueError(
                f"video: height and width must be multiples of {multiple}, got {tuple(video.shape[2:])}"
            )
        device, dtype = self._execution_device, self.transformer.dtype
        # no pipeline components, so CPU offload leaves them where they are: they follow the execution device
        for module in (*self.vace_e_model.added_modules(), self.vace_e_inputs.clip):
            if module is not None:
                module.to(device)
        batch = self._batch(
            prompt,
            video,
            mask,
            reference_image,
            vace_e_hand_motion_sequence,
            vace_e_object_trajectory_sequence,
        )
        inputs = self.vace_e_inputs
        do_cfg = guidance_scale > 1.0
        prompt_embeds = inputs.prompt_embeds([prompt], device, dtype)
        negative = inputs.prompt_embeds([negative_prompt or ""], device, dtype) if do_cfg else None
        control = inputs.control_latents(batch, device, dtype)  # (1, Cc, R+F, h, w)
        references = control.shape[2] - ((video.shape[1] - 1) // self.vae_scale_factor_temporal + 1)
        task = inputs.task(batch, prompt_embeds, device)
        if vace_e_embodiment_image_features is not None:
            task.image_features = vace_e_embodiment_image_features.reshape(1, -1).to(device).float()
            task.has_image = torch.ones(1, dtype=torch.bool, device=device)
        negative_task = dataclasses.replace(task, prompt_embeds=negative) if do_cfg else None
        shape = (1, self.transformer.config.in_channels, control.shape[2], control.shape[3], control.shape[4])
        latents = torch.randn(
            shape, generator=generator, device=generator.device if generator else device
        ).to(device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        run_offload_hook(self.transformer)  # the loop calls the transformer's parts, never its hooked forward
        for t in self.progress_bar(self.scheduler.timesteps):
            timestep = t.expand(1)
            prediction = self.vace_e_model(
                latents.to(dtype),
                timestep,
                prompt_embeds,
                control,
                task=task,
                num_reference_frames=references,
            ).float()
            if do_cfg:
                uncond = self.vace_e_model(
                    latents.to(dtype),
                    timestep,
                    negative,
                    control,
                    task=negative_task,
                    num_reference_frames=references,
                ).float()
                prediction = uncond + guidance_scale * (prediction - uncond)
            latents = self.scheduler.step(prediction, t, latents, return_dict=False)[0]
        latents = latents[:, :, references:]
        if output_type == "latent":
            self.maybe_free_model_hooks()
            return VaceEOutput(latents)
        frames = ((decode_latents(self.vae, latents) + 1) / 2).permute(0, 2, 3, 4, 1).cpu().numpy()
        self.maybe_free_model_hooks()
        return VaceEOutput(frames)

    @staticmethod
    def _batch(prompt, video, mask, reference, hand, objects) -> dict[str, Any]:
        batch: dict[str, Any] = {
            "prompt": [prompt],
            "control_video": video.unsqueeze(0),
            "mask": mask.unsqueeze(0).bool(),
        }
        if reference is not None:
            batch["embodiment_image"] = reference.unsqueeze(0)
            batch["has_embodiment_image"] = torch.ones(1, dtype=torch.bool)
        if hand is not None:
            hand = torch.as_tensor(hand, dtype=torch.float32)
            if hand.ndim != 2 or hand.shape[1] != 20:
                raise ValueError(f"vace_e_hand_motion_sequence: expected (T, 20), got {tuple(hand.shape)}")
            batch["hand_motion"] = hand.unsqueeze(0)
            batch["hand_motion_mask"] = torch.ones(1, hand.shape[0], dtype=torch.bool)
        if objects is not None:
            objects = torch.as_tensor(objects, dtype=torch.float32)
            if objects.ndim != 3 or objects.shape[2] != 9:
                raise ValueError(
                    f"vace_e_object_trajectory_sequence: expected (T, N, 9), got {tuple(objects.shape)}"
                )
            batch["object_trajectory"] = objects.unsqueeze(0)
            batch["object_trajectory_mask"] = torch.ones(1, objects.shape[0], dtype=torch.bool)
            batch["object_mask"] = torch.ones(1, objects.shape[1], dtype=torch.bool)
        return batch


def load_vace_e_pipeline(
    checkpoint: str | Path,
    torch_dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device | None = None,
    model_dir: str | None = None,
    clip_path: str | None = None,
) -> VaceEPipeline:
    """A pipeline from a VACE-E training output (the last finished stage, or a stage folder)."""
    stage = final_stage_dir(checkpoint)
    saved = json.loads((stage / TRAIN_CONFIG).read_text())
    args = dict(saved["train_args"])
    args["model_dir"] = model_dir or saved["base_model"]
    args["clip_path"] = clip_path or saved.get("clip_path")
    args["training_stages"] = None
    config = VaceEConfig(**args)
    components = load_diffusers_components(
        config.model_dir,
        WanVACETransformer3DModel,
        torch_dtype,
        config.text_encoder_path,
        config.tokenizer_path,
    )
    target = torch.device(device) if device is not None else torch.device("cpu")
    clip, processor = load_clip(config.clip_path, target)
    if saved.get("lora"):
        add_lora(
            components["transformer"],
            saved["lora"]["lora_rank"],
            lora_module_names(saved["lora"]["lora_target_modules"]),
        )
    model = build_model(
        config,
        components,
        None if clip is None else clip.config.hidden_size,
        saved["model"].get("guidance_objects", 0),  # heads saved before objects were predicted: hand only
    )
    load_stage_weights(model, stage)
    model.eval()
    for module in model.added_modules():
        module.to(dtype=torch_dtype)
    pipe = VaceEPipeline(
        components["tokenizer"], components["text_encoder"], components["vae"], components["scheduler"],
        transformer=components["transformer"], vace_e_model=model, clip=clip, clip_processor=processor,
        use_reference_image=config.use_reference_image,
    )  # fmt: skip
    if device is not None:
        pipe.to(device)
    return pipe
