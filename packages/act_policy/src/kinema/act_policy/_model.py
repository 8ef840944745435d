"""ACT: ResNet18 image tokens + state (+ coordinates) -> transformer encoder -> decoder queries -> action chunk.

B batch, N cameras, V image views (cameras, plus crops with ``coord_crop="extra"``), D model width, S encoder
tokens, C chunk steps, A action dims, E coordinate dims, L latent dims. Sections in the order data flows:
normalization, coordinate embedding, image views and tokens, CVAE encoder, encoder/decoder, losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kinema.conditioning import ResidualInjector, select_layers

from ._config import ACTConfig
from ._crop import camera_geometries, crop_around, project, target_heatmap
from ._losses import (
    contrastive_coordinate_loss,
    coordinate_aux_loss,
    kl_divergence,
    masked_l1,
    relative_contrastive_loss,
)
from ._resnet import BLOCK_NAMES, ResNet18, load_torchvision_resnet18
from ._transformer import Decoder, Encoder, sine_embedding_1d, sine_embedding_2d

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_NORMALIZED_FIELDS = {
    "qpos": "state_dim",
    "action": "action_dim",
    "environment_state": "environment_state_dim",
}


class CoordinateEmbedding(nn.Module):
    """Normalized coordinates (B, E) -> [c, sin(2 pi f c), cos(2 pi f c)] -> MLP -> (B, Dc).

    Frequencies f are fixed, log-spaced from 1/4 to 16 cycles per unit of the normalized coordinate (a few
    millimetres to the whole table for ALOHA's cube positions)."""

    def __init__(self, in_dim: int, out_dim: int, num_frequencies: int):
        super().__init__()
        frequencies = 2.0 ** torch.linspace(-2, 4, num_frequencies) if num_frequencies else torch.zeros(0)
        self.register_buffer("frequencies", frequencies, persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim * (1 + 2 * num_frequencies), out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim)
        )

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * coordinates.unsqueeze(-1) * self.frequencies  # (B, E, F)
        features = torch.cat([coordinates, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)
        return self.mlp(features)  # (B, Dc)


class ACT(nn.Module):
    """Action Chunking with Transformers and the coordinate remedies of :class:`ACTConfig`.

    ``forward(batch)`` takes RAW values and normalizes them with the statistics it holds (buffers, saved with
    the weights; set them with :meth:`set_normalization`):

    - ``image``: uint8 (B, N, H, W, 3) or float (B, N, 3, H, W) in [0, 1], cameras in ``config.camera_names``
      order;
    - ``qpos`` (B, D); ``environment_state`` (B, E) when the config uses coordinates;
    - for training: ``action`` (B, C, A) and ``is_pad`` (B, C) bool.

    It returns normalized ``actions`` (B, C, A), the latent ``mu`` / ``log_sigma_x2`` (B, L) (None without
    targets), and ``coord_pred`` (B, E) normalized (aux head only). With targets the latent z is sampled from
    the CVAE posterior in training mode and is its mean in eval mode; without targets z = 0 (inference).
    """

    def __init__(self, config: ACTConfig):
        super().__init__()
        self.config = c = config
        d = c.dim_model
        # normalization statistics (identity until set_normalization)
        for name, dim_field in _NORMALIZED_FIELDS.items():
            dim = getattr(c, dim_field)
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        # coordinate embedding, shared by FiLM and the strong-signal remedy
        self.coord_embed = None
        if c.coord_film or c.coord_strong:
            self.coord_embed = CoordinateEmbedding(
                c.environment_state_dim, c.coord_embed_dim, c.coord_fourier_features
            )

        # vision backbone and image tokens
        film_blocks = [BLOCK_NAMES[i] for i in select_layers(c.coord_film_blocks, 8)] if c.coord_film else []
        self.backbone = ResNet18(
            frozen_batchnorm=c.frozen_batchnorm,
            film_cond_dim=c.coord_embed_dim if c.coord_film else None,
            film_blocks=film_blocks,
            width=c.backbone_width,
            in_channels=4 if c.coord_heatmap else 3,
        )
        if c.pretrained_backbone is not None:
            load_torchvision_resnet18(self.backbone, c.pretrained_backbone)
        self.image_proj = nn.Conv2d(self.backbone.num_channels, d, kernel_size=1)
        self.crop_geometries = camera_geometries(c) if c.coord_crop != "off" or c.coord_heatmap else {}
        num_views = len(c.camera_names) + (len(self.crop_geometries) if c.coord_crop == "extra" else 0)
        # Zero-init: views start indistinguishable, as in the original (one 2-D embedding shared by cameras).
        self.view_embed = nn.Parameter(torch.zeros(num_views, d))

        # CVAE encoder over [CLS, state, action chunk]
        if c.use_vae:
            self.vae_cls = nn.Embedding(1, d)
            self.vae_state_proj = nn.Linear(c.state_dim, d)
            self.vae_action_proj = nn.Linear(c.action_dim, d)
            self.vae_encoder = Encoder(
                c.n_vae_encoder_layers, d, c.n_heads, c.dim_feedforward, c.dropout, c.pre_norm
            )
            self.vae_latent_proj = nn.Linear(d, 2 * c.latent_dim)
            self.register_buffer("vae_pos", sine_embedding_1d(2 + c.chunk_size, d), persistent=False)

        # encoder tokens [z, state, (coordinates), image tokens]
        self.latent_proj = nn.Linear(c.latent_dim, d)
        self.state_proj = nn.Linear(c.state_dim, d)
        self.env_proj = None
        if c.use_environment_state:
            self.env_proj = nn.Linear(c.coord_embed_dim if c.coord_strong else c.environment_state_dim, d)
        self.num_1d_tokens = 2 + int(c.use_environment_state)
        self.token_pos = nn.Embedding(self.num_1d_tokens, d)
        self.encoder = Encoder(c.n_encoder_layers, d, c.n_heads, c.dim_feedforward, c.dropout, c.pre_norm)
        self.coord_injectors = None
        if c.coord_strong:  # the coordinates added to every token after every encoder layer
            self.coord_injectors = nn.ModuleList(
                ResidualInjector(d, c.coord_embed_dim, initial_scale=0.01) for _ in range(c.n_encoder_layers)
            )

        # decoder: chunk_size learned queries -> actions
        self.decoder = Decoder(c.n_decoder_layers, d, c.n_heads, c.dim_feedforward, c.dropout, c.pre_norm)
        self.query_pos = nn.Embedding(c.chunk_size, d)
        self.action_head = nn.Linear(d, c.action_dim)
        self.coord_head = None
        if c.coord_aux_head:
            self.coord_head = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, c.environment_state_dim))
        self._reset_parameters()
        self._pos_cache: dict[tuple, torch.Tensor] = {}

    def _reset_parameters(self) -> None:
        """Xavier-uniform for the transformers' matrices, as ACT/DETR (injectors and FiLM keep their own init)."""
        stacks = [self.encoder, self.decoder] + ([self.vae_encoder] if self.config.use_vae else [])
        for stack in stacks:
            for parameter in stack.parameters():
                if parameter.dim() > 1:
                    nn.init.xavier_uniform_(parameter)

    # ----------------------------------------------------------------------------------------- normalization

    def set_normalization(self, stats: dict) -> None:
        """Copies mean/std of ``qpos``, ``action`` (and ``environment_state``) from robot_data statistics."""
        for name, dim_field in _NORMALIZED_FIELDS.items():
            dim = getattr(self.config, dim_field)
            if dim == 0:
                continue
            if name not in stats:
                raise ValueError(f"stats: missing the field {name!r} the model needs (has {sorted(stats)})")
            for key in ("mean", "std"):
                value = torch.as_tensor(stats[name][key], dtype=torch.float32).reshape(-1)
                if value.shape != (dim,):
                    raise ValueError(
                        f"stats[{name!r}][{key!r}]: expected {dim} values (ACTConfig.{dim_field}), got {value.numel()}"
                    )
                getattr(self, f"{name}_{key}").copy_(value)

    def normalize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        return (values - getattr(self, f"{name}_mean")) / getattr(self, f"{name}_std")

    def unnormalize(self, name: str, values: torch.Tensor) -> torch.Tensor:
        return values * getattr(self, f"{name}_std") + getattr(self, f"{name}_mean")

    # -------------------------------------------------------------------------------------- images -> tokens

    def prepare_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, N, H, W, 3) or float (B, N, 3, H, W) in [0, 1] -> float (B, N, 3, H', W'), resized to
        ``config.image_size`` when set, ImageNet-normalized. uint8 input stays channels-last in memory."""
        n = len(self.config.camera_names)
        if images.dtype == torch.uint8:
            if images.ndim != 5 or images.shape[1] != n or images.shape[-1] != 3:
                raise ValueError(f"image: expected uint8 (B, {n}, H, W, 3), got {tuple(images.shape)}")
            images = images.permute(0, 1, 4, 2, 3).float().div_(255)  # (B, N, 3, H, W), channels-last strides
        elif images.ndim != 5 or images.shape[1] != n or images.shape[2] != 3:
            raise ValueError(f"image: expected (B, {n}, 3, H, W) in [0, 1], got {tuple(images.shape)}")
        batch, _, _, height, width = images.shape
        flat = images.reshape(batch * n, 3, height, width)
        size = self.config.image_size
        if size is not None and (height, width) != size:
            flat = F.interpolate(
                flat.float(), size=size, mode="bilinear", antialias=True, align_corners=False
            )
        flat = (flat - self.image_mean) / self.image_std
        return flat.reshape(batch, n, 3, *flat.shape[-2:])

    def _target_points(self, coordinates: torch.Tensor) -> torch.Tensor:
        """The target's world point (B, 3): environment_state pair ``crop_target`` at height ``crop_height``."""
        target = coordinates[:, 2 * self.config.crop_target : 2 * self.config.crop_target + 2]  # (B, 2) raw
        height = torch.full_like(target[:, :1], self.config.crop_height)
        return torch.cat([target, height], dim=-1).float()

    def _with_heatmap(self, images: torch.Tensor, coordinates: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, H, W) -> (B, N, 4, H, W): each camera with a geometry gains the target's heat map (see
        :func:`target_heatmap`), the others a plane of zeros."""
        points = self._target_points(coordinates)
        hw = tuple(images.shape[-2:])
        planes = []
        for camera in self.config.camera_names:
            if camera in self.crop_geometries:
                centers = project(points, self.crop_geometries[camera], hw)  # (B, 2)
                planes.append(target_heatmap(centers, hw, self.config.heatmap_sigma))
            else:
                planes.append(images.new_zeros(images.shape[0], 1, *hw))
        heat = torch.stack(planes, dim=1).to(images.dtype)  # (B, N, 1, H, W)
        return torch.cat([images, heat], dim=2)

    def _views(self, images: torch.Tensor, coordinates: torch.Tensor | None) -> list[torch.Tensor]:
        """The backbone's inputs, one (B, K, h, w) per view (K = 3, or 4 with the heat map): cameras, with crops
        replacing or added."""
        views = list(images.unbind(1))
        if self.config.coord_crop == "off":
            return views
        points = self._target_points(coordinates)  # (B, 3) world
        crops = []
        for index, camera in enumerate(self.config.camera_names):
            if camera not in self.crop_geometries:
                continue
            image = views[index]
            size = max(1, round(self.config.crop_size * image.shape[-2]))
            centers = project(points, self.crop_geometries[camera], tuple(image.shape[-2:]))  # (B, 2)
            crop = crop_around(image.float(), centers, size).contiguous(memory_format=torch.channels_last)
            if self.config.coord_crop == "replace":
                views[index] = crop
            else:
                crops.append(crop)
        return views + crops

    def _image_tokens(
        self, images: torch.Tensor, coordinates: torch.Tensor | None, cond: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 3, H, W) normalized -> tokens (B, S_img, D) and their position embeddings (S_img, D)."""
        batch = images.shape[0]
        if self.config.coord_crop == "off":  # every view the same size: one backbone call, no copy
            groups = {tuple(images.shape[-2:]): list(range(images.shape[1]))}
            stacked = {tuple(images.shape[-2:]): images.flatten(0, 1)}
        else:
            views = self._views(images, coordinates)
            groups: dict[tuple, list[int]] = {}
            for index, view in enumerate(views):
                groups.setdefault(tuple(view.shape[-2:]), []).append(index)
            stacked = {
                shape: torch.stack([views[i] for i in idx], 1).flatten(0, 1) for shape, idx in groups.items()
            }
        per_view: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for shape, indices in groups.items():
            k = len(indices)
            x = stacked[shape]  # (B*k, 3, h, w)
            view_cond = None if cond is None else cond.repeat_interleave(k, dim=0)
            features = self.image_proj(self.backbone(x, view_cond))  # (B*k, D, h', w')
            _, dim, fh, fw = features.shape
            tokens = features.view(batch, k, dim, fh * fw).transpose(2, 3)  # (B, k, h'w', D)
            pos = self._pos_2d(fh, fw, features.device)  # (h'w', D)
            for j, view in enumerate(indices):
                per_view[view] = (tokens[:, j], pos + self.view_embed[view])
        order = sorted(per_view)
        tokens = torch.cat([per_view[v][0] for v in order], dim=1)  # (B, S_img, D)
        pos = torch.cat([per_view[v][1] for v in order], dim=0)  # (S_img, D)
        return tokens, pos

    def _pos_2d(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        key = (height, width, str(device))
        if torch.compiler.is_compiling():
            # Inside a compiled (possibly CUDA-graphed) call: a tensor made here lives in the graph's memory pool
            # and is overwritten by the next replay, so it must not be cached; the compiler folds it to a constant.
            return sine_embedding_2d(height, width, self.config.dim_model).to(device)
        if key not in self._pos_cache:
            self._pos_cache[key] = sine_embedding_2d(height, width, self.config.dim_model).to(device)
        return self._pos_cache[key]

    # ------------------------------------------------------------------------------------------------ CVAE

    def _encode_latent(
        self, qpos: torch.Tensor, action: torch.Tensor, is_pad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized qpos (B, D), action (B, C, A), is_pad (B, C) -> mu, log_sigma_x2 (B, L)."""
        batch = qpos.shape[0]
        tokens = torch.cat(
            [
                self.vae_cls.weight.expand(batch, 1, -1),  # (B, 1, D)
                self.vae_state_proj(qpos).unsqueeze(1),  # (B, 1, D)
                self.vae_action_proj(action),  # (B, C, D)
            ],
            dim=1,
        )  # (B, 2 + C, D)
        keep = torch.cat([torch.ones(batch, 2, dtype=torch.bool, device=qpos.device), ~is_pad], dim=1)
        out = self.vae_encoder(tokens, self.vae_pos.to(tokens.dtype), mask=keep[:, None, None, :])
        params = self.vae_latent_proj(out[:, 0])  # (B, 2L) from the CLS token
        return params[:, : self.config.latent_dim], params[:, self.config.latent_dim :]

    # --------------------------------------------------------------------------------------------- forward

    def forward(self, batch: dict, z: torch.Tensor | None = None) -> dict:
        """``z`` (B, L): the latent to decode with when the batch has no ``action`` (default 0)."""
        c = self.config
        qpos = self.normalize("qpos", batch["qpos"].float())  # (B, D)
        b = qpos.shape[0]
        coordinates = env = None
        if c.use_environment_state:
            coordinates = batch["environment_state"].float()  # (B, E) raw
            env = self.normalize("environment_state", coordinates)
        images = self.prepare_images(batch["image"])  # (B, N, 3, H, W)
        if c.coord_heatmap:
            images = self._with_heatmap(images, coordinates)  # (B, N, 4, H, W)

        mu = log_sigma_x2 = None
        if c.use_vae and batch.get("action") is not None:
            action = self.normalize("action", batch["action"].float())
            mu, log_sigma_x2 = self._encode_latent(qpos, action, batch["is_pad"])
            z = mu + (log_sigma_x2 / 2).exp() * torch.randn_like(mu) if self.training else mu
        elif z is None:
            z = qpos.new_zeros(b, c.latent_dim)  # inference: the prior's mean
        elif tuple(z.shape) != (b, c.latent_dim):
            raise ValueError(f"z: expected ({b}, {c.latent_dim}), got {tuple(z.shape)}")

        cond = None if self.coord_embed is None else self.coord_embed(env)  # (B, Dc)
        image_tokens, image_pos = self._image_tokens(images, coordinates, cond if c.coord_film else None)
        first = [self.latent_proj(z), self.state_proj(qpos)]
        if c.use_environment_state:
            first.append(self.env_proj(cond if c.coord_strong else env))
        tokens = torch.cat([torch.stack(first, dim=1), image_tokens.to(first[0].dtype)], dim=1)  # (B, S, D)
        pos = torch.cat([self.token_pos.weight, image_pos], dim=0)  # (S, D)

        inject = None
        if self.coord_injectors is not None:
            coord = cond.unsqueeze(1)  # (B, 1, Dc): one "frame" covering every token

            def inject(index: int, x: torch.Tensor) -> torch.Tensor:
                return self.coord_injectors[index](x, coord, num_frames=1)

        memory = self.encoder(tokens, pos, inject=inject)  # (B, S, D)
        queries = memory.new_zeros(b, c.chunk_size, c.dim_model)
        decoded = self.decoder(queries, self.query_pos.weight, memory, pos)  # (B, C, D)
        out = {
            "actions": self.action_head(decoded),
            "mu": mu,
            "log_sigma_x2": log_sigma_x2,
            "coord_pred": None,
        }
        if self.coord_head is not None:
            out["coord_pred"] = self.coord_head(memory[:, self.num_1d_tokens :].mean(1))  # (B, E)
        return out

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(total loss, {name: detached scalar}) for a batch with ``action`` and ``is_pad``."""
        c = self.config
        out = self(batch)
        target = self.normalize("action", batch["action"].float())
        terms = {"l1": masked_l1(out["actions"], target, batch["is_pad"])}
        loss = terms["l1"]
        if c.use_vae:
            terms["kl"] = kl_divergence(out["mu"], out["log_sigma_x2"])
            loss = loss + c.kl_weight * terms["kl"]
        if c.coord_aux_head:
            env = self.normalize("environment_state", batch["environment_state"].float())
            terms["coord_aux"] = coordinate_aux_loss(out["coord_pred"], env)
            loss = loss + c.coord_aux_weight * terms["coord_aux"]
        if c.coord_contrastive and c.contrastive_kind == "relative":
            # on the chunks predicted with z = 0, as at inference: with the posterior's z the CVAE latent can
            # carry the target and the coordinates are not needed to tell the pair apart
            prior = self({k: v for k, v in batch.items() if k not in ("action", "is_pad")})["actions"]
            terms["contrastive"] = relative_contrastive_loss(
                prior, target, batch["is_pad"], batch["environment_state"], c.contrastive_threshold
            )
            loss = loss + c.contrastive_weight * terms["contrastive"]
        elif c.coord_contrastive:
            terms["contrastive"] = contrastive_coordinate_loss(
                out["actions"], batch["environment_state"], c.contrastive_margin, c.contrastive_threshold
            )
            loss = loss + c.contrastive_weight * terms["contrastive"]
        terms["loss"] = loss
        return loss, {k: v.detach() for k, v in terms.items()}

    @torch.no_grad()
    def predict(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """Raw action chunks (B, C, A) (call in eval mode); ``action`` in the batch is ignored. z = 0, or with
        ``inference_z="sample"`` z ~ N(0, I) per row, drawn from ``generator`` (default torch's global RNG)."""
        inputs = {k: v for k, v in batch.items() if k not in ("action", "is_pad")}
        z = None
        if self.config.inference_z == "sample":
            rows = len(inputs["qpos"])
            device = self.latent_proj.weight.device
            z = torch.randn(rows, self.config.latent_dim, generator=generator, device=device)
        return self.unnormalize("action", self(inputs, z=z)["actions"].float())

    # ------------------------------------------------------------------------------------------ optimizer

    def parameter_groups(self, lr: float, lr_backbone: float, weight_decay: float) -> list[dict]:
        """AdamW groups: the ResNet's own weights at ``lr_backbone``, everything else (FiLM included) at ``lr``."""
        backbone, rest = [], []
        for name, parameter in self.named_parameters():
            if not parameter.requires_grad:
                continue
            is_backbone = name.startswith("backbone.") and not name.startswith("backbone.film.")
            (backbone if is_backbone else rest).append(parameter)
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "main"}]
        if backbone:
            groups.append(
                {"params": backbone, "lr": lr_backbone, "weight_decay": weight_decay, "name": "backbone"}
            )
        return groups
