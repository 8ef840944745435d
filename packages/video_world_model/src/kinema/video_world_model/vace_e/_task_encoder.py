"""The task-embodiment encoder of VACE-E: hand motion, object trajectories, embodiment image and prompt -> task tokens.

Per latent frame f of the video, K = 4 tokens, one per modality, in the model's width D:

    hand      transformer over the (T, 20) dual-hand sequence (padding masked), pooled over the frames of f
    objects   per-object MLP over (T, N, 9) poses + object embedding, masked mean over objects, transformer over
              time (padding masked), pooled over the frames of f
    image     CLIP vision features of the end-effector (embodiment) image (precomputed or from CLIPVisionModel)
    prompt    the UMT5 prompt embeddings, mean over real tokens

Latent frame 0 covers video frame 0 and latent frame f >= 1 covers frames 4f-3 .. 4f (Wan's causal 4x temporal
compression). Fusion is weighted attention across the modalities of each frame: a learned weight per modality
(softmax over the modalities present) scales each token, then one attention layer over the K tokens mixes them.
Missing modalities (no trajectory files, no image) and padded steps are masked: they change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MODALITIES = ("hand", "objects", "image", "prompt")
HAND_DIM, OBJECT_DIM = 20, 9


@dataclass
class TaskInputs:
    """Batched task features (shapes: B batch, T video frames, N objects).

    hand_motion (B, T_h, 20) + hand_motion_mask (B, T_h); object_trajectory (B, T_o, N, 9) +
    object_trajectory_mask (B, T_o) + object_mask (B, N); image_features (B, Dclip) + has_image (B,);
    prompt_embeds (B, S, Dtext) (zero rows are padding, as Wan's prompt encoding pads)."""

    hand_motion: torch.Tensor | None = None
    hand_motion_mask: torch.Tensor | None = None
    object_trajectory: torch.Tensor | None = None
    object_trajectory_mask: torch.Tensor | None = None
    object_mask: torch.Tensor | None = None
    image_features: torch.Tensor | None = None
    has_image: torch.Tensor | None = None
    prompt_embeds: torch.Tensor | None = None


def latent_frame_groups(num_video_frames: int, device=None) -> torch.Tensor:
    """(T,) latent frame of each video frame: 0 for frame 0, (t + 3) // 4 for t >= 1."""
    t = torch.arange(num_video_frames, device=device)
    return (t + 3) // 4


def pool_per_latent_frame(
    features: torch.Tensor, mask: torch.Tensor, num_latent_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """features (B, T, E), mask (B, T) -> (B, F, E) masked means per latent frame, and (B, F) validity."""
    steps = features.shape[1]
    groups = latent_frame_groups(steps, features.device).clamp(max=num_latent_frames - 1)
    onehot = torch.nn.functional.one_hot(groups, num_latent_frames).to(features.dtype)  # (T, F)
    weights = onehot.unsqueeze(0) * mask.unsqueeze(-1).to(features.dtype)  # (B, T, F)
    counts = weights.sum(dim=1)  # (B, F)
    pooled = torch.einsum("btf,bte->bfe", weights, features) / counts.clamp(min=1).unsqueeze(-1)
    return pooled, counts > 0


class _SequenceEncoder(nn.Module):
    """Linear in + learned time embedding + pre-norm transformer over time, padding masked. (B, T, in) -> (B, T, E)."""

    def __init__(self, in_dim: int, width: int, layers: int, heads: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.input = nn.Linear(in_dim, width)
        self.time = nn.Embedding(max_length, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        steps = x.shape[1]
        if steps > self.max_length:
            raise ValueError(f"sequence: {steps} steps, longer than max length {self.max_length}")
        h = self.input(x) + self.time(torch.arange(steps, device=x.device))
        # Padded steps are zeroed before and after so their (ignored) values cannot leak anywhere.
        h = h * mask.unsqueeze(-1)
        safe = mask.clone()
        safe[:, 0] |= ~mask.any(
            dim=1
        )  # an all-padding row attends to its first step instead of producing NaN
        return self.encoder(h, src_key_padding_mask=~safe) * mask.unsqueeze(-1)


class TaskEmbodimentEncoder(nn.Module):
    """forward(inputs: TaskInputs, num_latent_frames) -> (tokens (B, F, 4, D), mask (B, F, 4)).

    ``task_processing=False`` turns the hand and object encoders off (their tokens are masked), leaving the
    embodiment image and the prompt."""

    def __init__(
        self,
        model_dim: int,
        text_dim: int,
        image_dim: int | None,
        width: int = 512,
        layers: int = 2,
        heads: int = 8,
        max_hand_motion_length: int = 512,
        max_object_trajectory_length: int = 512,
        max_objects: int = 10,
        task_processing: bool = True,
    ):
        super().__init__()
        self.width, self.model_dim, self.task_processing = width, model_dim, task_processing
        self.max_objects = max_objects
        self.hand = _SequenceEncoder(HAND_DIM, width, layers, heads, max_hand_motion_length)
        self.object_pose = nn.Sequential(nn.Linear(OBJECT_DIM, width), nn.SiLU(), nn.Linear(width, width))
        self.object_id = nn.Embedding(max_objects, width)
        self.objects = _SequenceEncoder(width, width, layers, heads, max_object_trajectory_length)
        self.image = nn.Linear(image_dim, width) if image_dim else None
        self.prompt = nn.Linear(text_dim, width)
        self.modality = nn.Parameter(torch.zeros(len(MODALITIES), width))
        self.modality_logits = nn.Parameter(torch.zeros(len(MODALITIES)))  # equal weights at init
        self.fusion = nn.MultiheadAttention(width, heads, batch_first=True)
        self.fusion_norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, model_dim)

    def forward(self, inputs: TaskInputs, num_latent_frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        prompt = inputs.prompt_embeds
        if prompt is None:
            raise ValueError("prompt_embeds: the task encoder needs the prompt embeddings (B, S, Dtext)")
        batch, device, dtype = prompt.shape[0], prompt.device, self.out.weight.dtype
        f = num_latent_frames
        tokens = torch.zeros(batch, f, len(MODALITIES), self.width, device=device, dtype=dtype)
        present = torch.zeros(batch, f, len(MODALITIES), dtype=torch.bool, device=device)

        if self.task_processing and inputs.hand_motion is not None and inputs.hand_motion.shape[1] > 0:
            hand = self.hand(inputs.hand_motion.to(dtype), inputs.hand_motion_mask)  # (B, T, E)
            tokens[:, :, 0], present[:, :, 0] = pool_per_latent_frame(hand, inputs.hand_motion_mask, f)
        if (
            self.task_processing
            and inputs.object_trajectory is not None
            and inputs.object_trajectory.shape[1] > 0
        ):
            poses = inputs.object_trajectory.to(dtype)  # (B, T, N, 9)
            count = poses.shape[2]
            if count > self.max_objects:
                raise ValueError(
                    f"object_trajectory: {count} objects, more than max_objects={self.max_objects}"
                )
            ids = self.object_id(torch.arange(count, device=device))  # (N, E)
            per_object = self.object_pose(poses) + ids  # (B, T, N, E)
            object_mask = inputs.object_mask.to(dtype)[:, None, :, None]  # (B, 1, N, 1)
            mean = (per_object * object_mask).sum(2) / object_mask.sum(2).clamp(min=1)  # (B, T, E)
            has_objects = inputs.object_mask.any(dim=1, keepdim=True)  # (B, 1)
            time_mask = inputs.object_trajectory_mask & has_objects
            encoded = self.objects(mean, time_mask)
            tokens[:, :, 1], present[:, :, 1] = pool_per_latent_frame(encoded, time_mask, f)
        if self.image is not None and inputs.image_features is not None:
            image = self.image(inputs.image_features.to(dtype))  # (B, E)
            tokens[:, :, 2] = image.unsqueeze(1)
            present[:, :, 2] = inputs.has_image.to(device).unsqueeze(1)
        real = prompt.abs().sum(-1) > 0  # (B, S): Wan pads prompt embeddings with zeros
        pooled = (prompt * real.unsqueeze(-1)).sum(1) / real.sum(1, keepdim=True).clamp(min=1)
        tokens[:, :, 3] = self.prompt(pooled.to(dtype)).unsqueeze(1)
        present[:, :, 3] = True

        weights = self.modality_logits.masked_fill(~present, float("-inf")).softmax(dim=-1)  # (B, F, K)
        tokens = (tokens + self.modality) * weights.unsqueeze(-1) * len(MODALITIES)
        flat = tokens.view(batch * f, len(MODALITIES), self.width)
        mixed, _ = self.fusion(self.fusion_norm(flat), self.fusion_norm(flat), self.fusion_norm(flat),
                               key_padding_mask=~present.view(batch * f, -1), need_weights=False)  # fmt: skip
        fused = (flat + mixed).view(batch, f, len(MODALITIES), self.width)
        return self.out(fused) * present.unsqueeze(
            -1
        ), present  # absent modalities: zero tokens, masked below
