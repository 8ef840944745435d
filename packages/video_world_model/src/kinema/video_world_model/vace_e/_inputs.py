"""Model inputs of VACE-E from a batch of episodes, built with diffusers' own VACE helpers.

- control latents (B, 2z + s*s, R+F, h, w): diffusers' ``WanVACEPipeline.prepare_video_latents`` (VAE latents of the
  inactive (video * (1 - mask)) and reactive (video * mask) parts of the hands-masked control video, the reference
  frame's latent in front) and ``prepare_masks`` (the s x s space-to-depth mask, zeros for the reference frame);
- target latents (B, z, R+F, h, w): the reference frame's latent, then the target video's;
- prompt embeddings: UMT5, as the Wan pipelines make them;
- embodiment image features: CLIP vision ``pooler_output`` of the end-effector image (none without a CLIP model).

R = 1 when the episode has an embodiment image and ``use_reference`` is on (it becomes VACE's reference image),
else 0; a batch mixes neither (use batch size 1 or episodes that agree).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers import WanVACEPipeline

from ..modeling._prompt import WanPromptEncoder
from ..modeling._vae import encode_video
from ._task_encoder import TaskInputs


def to_unit_range(video: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] or float [-1, 1] -> float32 in [-1, 1]."""
    return video.float() / 127.5 - 1 if video.dtype == torch.uint8 else video.float()


class VaceEInputs:
    def __init__(self, pipe: WanVACEPipeline, clip=None, clip_processor=None, use_reference: bool = True):
        self.pipe = pipe
        self.prompt_encoder = WanPromptEncoder(pipe.tokenizer, pipe.text_encoder, max_sequence_length=512)
        self.clip, self.clip_processor = clip, clip_processor
        self.use_reference = use_reference

    @property
    def image_dim(self) -> int | None:
        return None if self.clip is None else self.clip.config.hidden_size

    @torch.no_grad()
    def prompt_embeds(self, prompts: list[str], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        return self.prompt_encoder(prompts, device, dtype)[0]

    @torch.no_grad()
    def image_features(self, images: torch.Tensor, device: torch.device) -> torch.Tensor | None:
        """images (B, 3, H, W) uint8 or [-1, 1] -> CLIP pooled features (B, Dclip), or None without CLIP."""
        if self.clip is None:
            return None
        pixels = ((to_unit_range(images) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
        arrays = [np.ascontiguousarray(p.permute(1, 2, 0).cpu().numpy()) for p in pixels]
        values = self.clip_processor(images=arrays, return_tensors="pt").pixel_values
        return self.clip(pixel_values=values.to(device, self.clip.dtype)).pooler_output.float()

    def references(self, batch: dict[str, Any]) -> list[torch.Tensor] | None:
        """The reference frame of each sample ((3, H, W) in [-1, 1]) or None when the batch has none."""
        if not self.use_reference or "has_embodiment_image" not in batch:
            return None
        has = batch["has_embodiment_image"]
        if bool(has.all()):
            return [to_unit_range(image) for image in batch["embodiment_image"]]
        if bool(has.any()):
            raise ValueError(
                "batch: some episodes have an embodiment image and some do not; use batch_size 1"
            )
        return None

    @torch.no_grad()
    def control_latents(
        self, batch: dict[str, Any], device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor:
        """(B, 2z + s*s, R+F, h, w) via diffusers' VACE helpers (one sample at a time: they take batch 1)."""
        references = self.references(batch)
        out = []
        for i in range(batch["control_video"].shape[0]):
            video = to_unit_range(batch["control_video"][i : i + 1]).to(device)  # (1, 3, T, H, W)
            mask = batch["mask"][i : i + 1].to(device).float()  # (1, 1, T, H, W)
            refs = (
                [[]] if references is None else [[references[i].to(device)]]
            )  # diffusers: a list per sample
            latents = self.pipe.prepare_video_latents(video, mask, refs, None, device)
            masks = self.pipe.prepare_masks(mask, refs, None)
            out.append(torch.cat([latents.float(), masks.float()], dim=1))
        return torch.cat(out).to(dtype)

    @torch.no_grad()
    def target_latents(self, batch: dict[str, Any], device: torch.device) -> tuple[torch.Tensor, int]:
        """(normalized target latents (B, z, R+F, h, w) float32, R)."""
        latents = encode_video(self.pipe.vae, to_unit_range(batch["video"]).to(device))
        references = self.references(batch)
        if references is None:
            return latents, 0
        reference = torch.stack(references).unsqueeze(2).to(device)  # (B, 3, 1, H, W)
        return torch.cat([encode_video(self.pipe.vae, reference), latents], dim=2), 1

    def task(self, batch: dict[str, Any], prompt_embeds: torch.Tensor, device: torch.device) -> TaskInputs:
        images = None
        if self.clip is not None and "embodiment_image" in batch:
            images = self.image_features(batch["embodiment_image"], device)

        def move(key):
            return batch[key].to(device) if key in batch and batch[key] is not None else None

        return TaskInputs(
            hand_motion=move("hand_motion"),
            hand_motion_mask=move("hand_motion_mask"),
            object_trajectory=move("object_trajectory"),
            object_trajectory_mask=move("object_trajectory_mask"),
            object_mask=move("object_mask"),
            image_features=images,
            has_image=move("has_embodiment_image"),
            prompt_embeds=prompt_embeds,
        )
