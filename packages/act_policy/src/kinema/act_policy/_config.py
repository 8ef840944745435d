"""ACTConfig: every setting of the model, validated at construction and saved beside the weights.

Defaults follow the ACT paper and LeRobot's ``configuration_act.py`` unless a comment says why not.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from ._config_base import ChunkPolicyConfig

CONFIG_FILE = "act_config.json"
_FORMAT = "kinema.act_config"

CROP_MODES = ("off", "replace", "extra")
INFERENCE_Z = ("zero", "sample")
CONTRASTIVE_KINDS = ("relative", "hinge")

# The coordinate-conditioning remedies (design note 003, issues 6, 12 and 21), each a set of config switches;
# ``with_remedies`` also takes combinations such as "heatmap+crop_replace".
REMEDIES: dict[str, dict] = {
    "plain": {},
    "aux_head": {"coord_aux_head": True},
    "film": {"coord_film": True},
    "crop": {"coord_crop": "extra"},
    "crop_replace": {"coord_crop": "replace"},  # the backbone sees only the target's surroundings
    "heatmap": {"coord_heatmap": True},
    "strong": {"coord_strong": True},
    "contrastive": {"coord_contrastive": True, "contrastive_kind": "relative"},
    "contrastive_hinge": {"coord_contrastive": True, "contrastive_kind": "hinge"},
}


def remedy_names(spec: str) -> list[str]:
    """The remedies of a cell name such as "heatmap+crop_replace" (each a key of :data:`REMEDIES`)."""
    names = [name for name in str(spec).split("+") if name]
    for name in names or [spec]:
        if name not in REMEDIES:
            raise ValueError(
                f"remedy: unknown {name!r}; expected one of {sorted(REMEDIES)}, or several joined by +"
            )
    return names


@dataclass
class ACTConfig(ChunkPolicyConfig):
    """The ACT model and its coordinate-conditioning remedies.

    Inputs (B batch, N cameras, D state dims, E environment-state dims, A action dims, C = chunk_size):
    images (B, N, 3, H, W) or uint8 (B, N, H, W, 3), ``qpos`` (B, D), ``environment_state`` (B, E) (the target's
    (x, y), when ``environment_state_dim`` > 0); output: an action chunk (B, C, A). Values are raw: the model
    holds the normalization statistics and applies them itself.

    Transformer. ``n_decoder_layers`` is a real setting: every layer runs and the last one's output feeds the
    action head. The original ACT implementation built 7 decoder layers but, through a bug, read the output of
    the first one only; the default 1 reproduces what it actually computed (LeRobot keeps 1 for the same
    reason). ``pre_norm=False`` is the original's post-norm DETR layer.

    Backbone. ResNet18 with torchvision's parameter names, so ``pretrained_backbone`` (a local ``.pth`` or
    ``.safetensors`` file of torchvision's ImageNet weights; nothing is downloaded) loads directly; random init
    otherwise. ``frozen_batchnorm`` (None: frozen exactly when pretrained weights are given) freezes the
    BatchNorm statistics and affine parameters, as ACT does with ImageNet weights; a randomly initialized
    backbone needs trainable BatchNorm.

    Execution. ``n_action_steps`` actions of each chunk are executed before the next query, or with
    ``temporal_ensemble_coeff`` = m the model is queried every step and the predictions for the current step are
    averaged with weights exp(-m * i), i = 0 for the oldest (needs ``n_action_steps`` = 1; the original uses
    m = 0.01). One public reproduction measured temporal ensembling worse than plain chunk execution on
    transfer-cube (87.6% chunked vs 70.8% ensembled); kinema's own H100 measurement (RESULTS.md) found no
    difference (90% and 90% on the same checkpoint and 50 seeds), so chunked execution, 100x fewer queries,
    is the default. Both can be overridden at evaluation time.

    Latent at inference. ``inference_z="zero"`` (ACT's): z = 0, the prior's mean, so a chunk is a deterministic
    function of the observation. ``"sample"``: z ~ N(0, I), the CVAE's prior, drawn afresh for every query
    (ACT's own answer to multimodal demonstrations, the control for the hybrid's diffusion head in issue 23);
    needs ``use_vae``. An execution setting: a checkpoint may be run either way.

    Coordinate remedies (the confuser failure: a plain ACT ignores the one coordinate token):

    - ``coord_aux_head``: an MLP predicts the coordinates from the encoder output of the image tokens (mean
      pooled: the coordinate token itself is left out, since its own output carries them trivially); loss
      weight ``coord_aux_weight`` (0.1) x MSE.
    - ``coord_film``: FiLM (kinema.conditioning) of the ResNet BasicBlocks named by ``coord_film_blocks``
      ("all", "0,2,4" or "every:2" over the 8 blocks layer1.0 .. layer4.1) by an embedding of the
      coordinates; identity at init.
    - ``coord_crop``: crops of side ``crop_size`` x image height around the target projected into each camera
      with a known geometry (``crop_cameras``, default the fixed ALOHA cameras), at world height
      ``crop_height``; ``"replace"`` shows the backbone only the crop, ``"extra"`` adds the crop as another
      view. ``crop_target`` picks the (x, y) pair of ``environment_state`` (0: entries 0 and 1).
    - ``coord_heatmap``: a fourth input channel for every camera with a known geometry: a Gaussian bump of
      width ``heatmap_sigma`` (fraction of the image height) at the target's projected pixel (zeros for other
      cameras); the first convolution's weights for it start at zero (identity at init, and torchvision's
      3-channel weights still load). A per-channel FiLM commutes with translation and modulates two identical
      objects alike; the heat map tells the backbone which of them is meant.
    - ``coord_strong``: a wider coordinate embedding (Fourier features -> MLP of width ``coord_embed_dim``)
      for the coordinate token, and a residual injection of it into every encoder layer's output.
    - ``coord_contrastive``: over pairs in a batch whose coordinates differ by more than
      ``contrastive_threshold`` (raw units), weight ``contrastive_weight``. ``contrastive_kind="relative"``
      (default): |d(p_i, p_j) - d(a_i, a_j)|, the RMS distance of the chunks predicted with z = 0 (as at
      inference, so the CVAE latent cannot carry the target) against that of the demonstrated chunks: zero
      for correct predictions, and d(a_i, a_j) for predictions collapsed to one chunk. ``"hinge"`` (kinema
      <= 0.1.4): max(0, margin - d(p_i, p_j)) on the training predictions; it cannot tell right from wrong
      (issue 21).
    """

    # inputs
    camera_names: tuple[str, ...] = ("top",)
    state_dim: int = 14
    action_dim: int = 14
    environment_state_dim: int = 0  # 0: no environment-state token
    image_size: tuple[int, int] | None = None  # (H, W) the images are resized to; None: as they come
    # chunking and execution
    chunk_size: int = 100
    n_action_steps: int = 100
    temporal_ensemble_coeff: float | None = None
    # transformer
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    dropout: float = 0.1
    pre_norm: bool = False
    n_encoder_layers: int = 4
    n_decoder_layers: int = 1  # what the original computed (see the class docstring)
    # CVAE
    use_vae: bool = True
    latent_dim: int = 32
    n_vae_encoder_layers: int = 4
    kl_weight: float = 10.0
    inference_z: str = "zero"  # "zero": z = 0 (ACT's); "sample": z ~ N(0, I) per query
    # backbone
    backbone: str = "resnet18"
    backbone_width: int = 64  # resnet18's; smaller only for tiny test models
    pretrained_backbone: str | None = None
    frozen_batchnorm: bool | None = None
    # remedies
    coord_aux_head: bool = False
    coord_aux_weight: float = 0.1
    coord_film: bool = False
    coord_film_blocks: str = "all"
    coord_crop: str = "off"
    crop_size: float = 0.4
    crop_target: int = 0
    crop_height: float = 0.02
    crop_cameras: dict | None = None
    coord_heatmap: bool = False
    heatmap_sigma: float = 0.05
    coord_strong: bool = False
    coord_embed_dim: int = 256
    coord_fourier_features: int = 16
    coord_contrastive: bool = False
    contrastive_kind: str = "relative"
    contrastive_weight: float = 0.1
    contrastive_margin: float = 0.1
    contrastive_threshold: float = 0.04
    notes: dict = field(default_factory=dict)  # free-form provenance (task, data), not used by the model

    CONFIG_FILE: ClassVar[str] = CONFIG_FILE
    FORMAT: ClassVar[str] = _FORMAT
    LABEL: ClassVar[str] = "ACT"

    def __post_init__(self) -> None:
        self.check_shared_fields(
            positive=("n_decoder_layers", "latent_dim", "n_vae_encoder_layers", "coord_embed_dim")
        )
        for name in (
            "kl_weight",
            "coord_aux_weight",
            "contrastive_weight",
            "contrastive_margin",
            "contrastive_threshold",
        ):
            self.check_non_negative(name)
        if self.inference_z not in INFERENCE_Z:
            raise ValueError(
                f"ACTConfig.inference_z: expected one of {INFERENCE_Z}, got {self.inference_z!r}"
            )
        if self.inference_z == "sample" and not self.use_vae:
            raise ValueError(
                "ACTConfig.inference_z: 'sample' draws the CVAE's latent, but use_vae is False (no latent was learned)"
            )
        if self.backbone != "resnet18":
            raise ValueError(f"ACTConfig.backbone: only 'resnet18' is implemented, got {self.backbone!r}")
        if self.coord_crop not in CROP_MODES:
            raise ValueError(f"ACTConfig.coord_crop: expected one of {CROP_MODES}, got {self.coord_crop!r}")
        if not 0.0 < float(self.crop_size) <= 1.0:
            raise ValueError(
                f"ACTConfig.crop_size: expected a fraction of the image height in (0, 1], got {self.crop_size!r}"
            )
        if isinstance(self.coord_fourier_features, bool) or not isinstance(self.coord_fourier_features, int):
            raise ValueError(
                f"ACTConfig.coord_fourier_features: expected an integer >= 0, got {self.coord_fourier_features!r}"
            )
        if self.coord_fourier_features < 0:
            raise ValueError(
                f"ACTConfig.coord_fourier_features: expected >= 0, got {self.coord_fourier_features}"
            )
        used = self.coordinate_remedies()
        if used and self.environment_state_dim == 0:
            raise ValueError(
                f"ACTConfig: the coordinate remedies {used} need coordinates, but environment_state_dim is 0 "
                "(set it to the dataset's environment_state width)"
            )
        if self.contrastive_kind not in CONTRASTIVE_KINDS:
            raise ValueError(
                f"ACTConfig.contrastive_kind: expected one of {CONTRASTIVE_KINDS}, got {self.contrastive_kind!r}"
            )
        if not float(self.heatmap_sigma) > 0:
            raise ValueError(f"ACTConfig.heatmap_sigma: expected > 0, got {self.heatmap_sigma!r}")
        if self.coord_crop != "off" or self.coord_heatmap:
            if self.environment_state_dim < 2 * self.crop_target + 2:
                raise ValueError(
                    f"ACTConfig.crop_target: pair {self.crop_target} needs environment_state entries "
                    f"{2 * self.crop_target} and {2 * self.crop_target + 1}, but environment_state_dim is "
                    f"{self.environment_state_dim}"
                )
            from ._crop import camera_geometries

            camera_geometries(self)  # raises when no configured camera has a known geometry
        if self.coord_film:
            from kinema.conditioning import select_layers

            select_layers(self.coord_film_blocks, 8)  # raises naming a bad spec

    # ------------------------------------------------------------------------------------------ derived

    def coordinate_remedies(self) -> list[str]:
        """Names of the remedies this config switches on (see :data:`REMEDIES`)."""
        on = []
        if self.coord_aux_head:
            on.append("aux_head")
        if self.coord_film:
            on.append("film")
        if self.coord_crop != "off":
            on.append("crop")
        if self.coord_heatmap:
            on.append("heatmap")
        if self.coord_strong:
            on.append("strong")
        if self.coord_contrastive:
            on.append("contrastive")
        return on

    def with_remedies(self, *names: str) -> ACTConfig:
        """A copy with the named remedies (keys of :data:`REMEDIES`, or combinations "a+b") switched on."""
        changes: dict = {}
        for spec in names:
            for name in remedy_names(spec):
                changes.update(REMEDIES[name])
        return dataclasses.replace(self, **changes)
