"""ACT's observation encoder, reused: ResNet18 image tokens + a state token (+ an environment-state token) with
ACT's position embeddings, through ACT's DETR-style transformer encoder (kinema.act_policy's ``ResNet18`` and
``Encoder``). ACT's z token is left out: in the hybrid, z enters the denoiser through adaLN-Zero.

B batch, N cameras, H/W image size, D model width, S encoder tokens, D_s state dims, E environment-state dims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kinema.act_policy import Encoder, ResNet18, load_torchvision_resnet18, sine_embedding_2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ObservationEncoder(nn.Module):
    """Normalized observation -> encoder tokens ``memory`` (B, S, D) and their position embeddings (S, D).

    Tokens: [state, (environment state), image tokens of every camera (layer4 map -> 1x1 conv, one per position,
    2-D sine embedding + a per-camera embedding)], as ACT builds them."""

    def __init__(self, config):
        super().__init__()
        c = config
        d = c.dim_model
        self.camera_names = tuple(c.camera_names)
        self.image_size = c.image_size
        self.backbone = ResNet18(frozen_batchnorm=c.frozen_batchnorm, width=c.backbone_width)
        if c.pretrained_backbone is not None:
            load_torchvision_resnet18(self.backbone, c.pretrained_backbone)
        self.image_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        # Zero-init: cameras start indistinguishable, as ACT (one 2-D embedding shared by the cameras).
        self.view_embed = nn.Parameter(torch.zeros(len(self.camera_names), d))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.state_proj = nn.Linear(c.state_dim, d)
        self.env_proj = nn.Linear(c.environment_state_dim, d) if c.use_environment_state else None
        self.num_1d_tokens = 1 + int(c.use_environment_state)
        self.token_pos = nn.Embedding(self.num_1d_tokens, d)
        self.encoder = Encoder(c.n_encoder_layers, d, c.n_heads, c.dim_feedforward, c.dropout, c.pre_norm)
        for parameter in self.encoder.parameters():  # Xavier-uniform matrices, as ACT / DETR
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, N, H, W, 3) or float (B, N, 3, H, W) in [0, 1] -> float (B, N, 3, H', W'), resized to
        ``image_size`` when set, ImageNet-normalized."""
        n = len(self.camera_names)
        if images.dtype == torch.uint8:
            if images.ndim != 5 or images.shape[1] != n or images.shape[-1] != 3:
                raise ValueError(f"image: expected uint8 (B, {n}, H, W, 3), got {tuple(images.shape)}")
            images = images.permute(0, 1, 4, 2, 3).float().div_(255)  # (B, N, 3, H, W)
        elif images.ndim != 5 or images.shape[1] != n or images.shape[2] != 3:
            raise ValueError(f"image: expected (B, {n}, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        batch, _, _, height, width = images.shape
        flat = images.reshape(batch * n, 3, height, width)
        if self.image_size is not None and (height, width) != self.image_size:
            flat = F.interpolate(
                flat.float(), size=self.image_size, mode="bilinear", antialias=True, align_corners=False
            )
        flat = (flat - self.image_mean) / self.image_std
        return flat.reshape(batch, n, 3, *flat.shape[-2:])

    def _pos_2d(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        if torch.compiler.is_compiling():  # never cache a tensor made inside a compiled (CUDA-graphed) call
            return sine_embedding_2d(height, width, self.state_proj.out_features).to(device)
        key = (height, width, str(device))
        if key not in self._pos_cache:
            self._pos_cache[key] = sine_embedding_2d(height, width, self.state_proj.out_features).to(device)
        return self._pos_cache[key]

    def forward(
        self, images: torch.Tensor | None, qpos: torch.Tensor, environment_state: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """images uint8 (B, N, H, W, 3), normalized qpos (B, D_s) and environment_state
        (B, E) -> memory (B, S, D), pos (S, D)."""
        first = [self.state_proj(qpos)]
        if self.env_proj is not None:
            first.append(self.env_proj(environment_state))
        tokens = [torch.stack(first, dim=1)]  # (B, 1 or 2, D)
        pos = [self.token_pos.weight]
        x = self.prepare_images(images)  # (B, N, 3, H, W)
        batch, n = x.shape[:2]
        features = self.image_proj(self.backbone(x.flatten(0, 1)))  # (B*N, D, h, w)
        _, dim, fh, fw = features.shape
        image_tokens = features.view(batch, n, dim, fh * fw).transpose(2, 3)  # (B, N, hw, D)
        tokens.append(image_tokens.flatten(1, 2).to(first[0].dtype))  # (B, N*hw, D)
        grid = self._pos_2d(fh, fw, features.device)  # (hw, D)
        pos.append((grid.unsqueeze(0) + self.view_embed.unsqueeze(1)).flatten(0, 1))  # (N*hw, D)
        tokens = torch.cat(tokens, dim=1)  # (B, S, D)
        pos = torch.cat(pos, dim=0)  # (S, D)
        return self.encoder(tokens, pos), pos
