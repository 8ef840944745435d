"""HybridConfig: every setting of the ACT + diffusion hybrid, validated at construction and saved beside the
weights as ``hybrid_config.json``.

Defaults: the observation encoder is ACT's (kinema.act_policy defaults: ResNet18, 4 encoder layers of width
512, 8 heads, FFN 3200); the diffusion settings are Diffusion Policy's (100 DDPM training steps, squared-cosine
noise schedule, epsilon prediction, clipped samples, 10 DDIM steps at inference); the chunk is ACT's (100).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from kinema.act_policy import write_json_atomic

from ._schedules import BetaSchedule

CONFIG_FILE = "hybrid_config.json"
_FORMAT = "kinema.hybrid_config"

VARIANTS = ("A", "B", "C")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddim", "dpmsolver++", "ddpm")
NOISE_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


def _positive_int(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"HybridConfig.{name}: expected an integer >= 1, got {value!r}")


def _non_negative_float(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"HybridConfig.{name}: expected a finite number >= 0, got {value!r}")


def check_sampling_steps(steps, num_train_timesteps: int, name: str = "num_inference_steps") -> int:
    """``steps`` as an int in 1..num_train_timesteps, else a ValueError naming ``name``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= num_train_timesteps:
        raise ValueError(
            f"{name}: expected an integer from 1 to num_train_timesteps ({num_train_timesteps}) reverse-diffusion "
            f"steps, got {steps!r}"
        )
    return steps


def check_variant(variant) -> str:
    if variant not in VARIANTS:
        raise ValueError(
            f"variant: unknown {variant!r}; expected one of {VARIANTS} (A: no latent, B: z = f(obs), C: posterior "
            "and learned prior)"
        )
    return variant


@dataclass
class HybridConfig:
    """The hybrid policy: ACT's observation encoder, a diffusion denoiser over the action chunk, and a style
    latent z by variant.

    Inputs (B batch, N cameras, D state dims, E environment-state dims, A action dims, C = chunk_size): images
    uint8 (B, N, H, W, 3), ``qpos`` (B, D),
    ``environment_state`` (B, E) when ``environment_state_dim`` > 0; output: an action chunk (B, C, A). Values are
    raw: the model holds the normalization statistics (qpos / environment_state: mean and std; actions: min and
    max, mapped to [-1, 1] as Diffusion Policy does, so clipped sampling stays in range).

    Variants (design note 004):

    - ``A``: the denoiser sees the observation only (no latent: z is absent, as ACT's z = 0 at inference);
    - ``B``: z = f(obs), a deterministic MLP of the pooled encoder tokens, learned with the denoiser;
    - ``C``: posterior q(z | a, obs) (a transformer over [CLS, obs, action chunk], ACT's CVAE encoder), learned
      conditional Gaussian prior p(z | obs) (an MLP of the pooled encoder tokens); loss = diffusion MSE +
      beta(step) * KL(q || p) with ``kl_schedule`` (see :class:`BetaSchedule`) and ``free_bits`` nats per latent
      dim. Inference samples z ~ p(z | obs) with its standard deviation times ``z_temperature``.

    Denoiser: a transformer over the C noisy chunk tokens; the timestep (diffusers' sinusoidal embedding + MLP)
    plus the z embedding enter every block through adaLN-Zero (kinema.conditioning), the observation through
    cross-attention to the encoder tokens.

    Execution: ``n_action_steps`` actions of each chunk are executed before the next query (default: the whole
    chunk, as kinema's ACT), or with ``temporal_ensemble_coeff`` = m the model is queried every step and the
    chunks' predictions for the current step are averaged with weights exp(-m i), i = 0 the oldest. Averaging
    chunks that were sampled from different modes averages the modes (the failure the hybrid is meant to avoid),
    so chunked execution is the default here too.
    """

    variant: str = "C"
    # observation (ACT's encoder tokens, without ACT's z token: z enters the denoiser instead)
    camera_names: tuple[str, ...] = ("top",)
    state_dim: int = 14
    action_dim: int = 14
    environment_state_dim: int = 0
    image_size: tuple[int, int] | None = None
    backbone_width: int = 64  # resnet18's; smaller for tiny and CPU models
    pretrained_backbone: str | None = None
    frozen_batchnorm: bool | None = None
    dim_model: int = 512
    n_heads: int = 8
    dim_feedforward: int = 3200
    dropout: float = 0.1
    pre_norm: bool = False
    n_encoder_layers: int = 4
    # denoiser
    n_denoiser_layers: int = 4
    # chunking and execution
    chunk_size: int = 100
    n_action_steps: int = 100
    temporal_ensemble_coeff: float | None = None
    # style latent (B, C)
    latent_dim: int = 32
    n_posterior_layers: int = 4  # ACT's CVAE encoder depth
    kl_schedule: str = "linear:0.01:2000"
    free_bits: float = 0.05  # nats per latent dim
    z_temperature: float = 1.0
    # diffusion
    num_train_timesteps: int = 100
    noise_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "epsilon"
    clip_sample: bool = True
    sampler: str = "ddim"
    num_inference_steps: int = 10
    notes: dict = field(default_factory=dict)  # provenance (task, data), not used by the model

    def __post_init__(self) -> None:
        check_variant(self.variant)
        if isinstance(self.camera_names, str) or not self.camera_names:
            raise ValueError(
                f"HybridConfig.camera_names: expected a non-empty list of names, got {self.camera_names!r}"
            )
        self.camera_names = tuple(self.camera_names)
        if not all(isinstance(c, str) and c for c in self.camera_names):
            raise ValueError(
                f"HybridConfig.camera_names: expected non-empty strings, got {self.camera_names!r}"
            )
        if len(set(self.camera_names)) != len(self.camera_names):
            raise ValueError(f"HybridConfig.camera_names: duplicate cameras in {self.camera_names!r}")
        for name in (
            "state_dim",
            "action_dim",
            "backbone_width",
            "dim_model",
            "n_heads",
            "dim_feedforward",
            "n_encoder_layers",
            "n_denoiser_layers",
            "chunk_size",
            "n_action_steps",
            "latent_dim",
            "n_posterior_layers",
            "num_train_timesteps",
        ):
            _positive_int(name, getattr(self, name))
        if isinstance(self.environment_state_dim, bool) or not isinstance(self.environment_state_dim, int):
            raise ValueError(
                f"HybridConfig.environment_state_dim: expected an integer >= 0, got {self.environment_state_dim!r}"
            )
        if self.environment_state_dim < 0:
            raise ValueError(
                f"HybridConfig.environment_state_dim: expected >= 0, got {self.environment_state_dim}"
            )
        if self.image_size is not None:
            size = tuple(self.image_size)
            if len(size) != 2 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 32 for v in size
            ):
                raise ValueError(
                    f"HybridConfig.image_size: expected (H, W), each >= 32, or None; got {self.image_size!r}"
                )
            self.image_size = size
        if self.dim_model % self.n_heads:
            raise ValueError(
                f"HybridConfig.dim_model: {self.dim_model} is not divisible by n_heads {self.n_heads}"
            )
        if self.dim_model % 4:
            raise ValueError(
                f"HybridConfig.dim_model: expected a multiple of 4 (2-D sine embedding), got {self.dim_model}"
            )
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"HybridConfig.dropout: expected 0 <= dropout < 1, got {self.dropout!r}")
        if self.n_action_steps > self.chunk_size:
            raise ValueError(
                f"HybridConfig.n_action_steps: {self.n_action_steps} is more than chunk_size {self.chunk_size}"
            )
        if self.temporal_ensemble_coeff is not None:
            _non_negative_float("temporal_ensemble_coeff", self.temporal_ensemble_coeff)
            if self.n_action_steps != 1:
                raise ValueError(
                    "HybridConfig.temporal_ensemble_coeff: temporal ensembling queries the model every step, so "
                    f"n_action_steps must be 1, got {self.n_action_steps}"
                )
        self.kl_schedule = str(BetaSchedule.parse(self.kl_schedule))
        _non_negative_float("free_bits", self.free_bits)
        _non_negative_float("z_temperature", self.z_temperature)
        if self.noise_schedule not in NOISE_SCHEDULES:
            raise ValueError(
                f"HybridConfig.noise_schedule: expected one of {NOISE_SCHEDULES}, got {self.noise_schedule!r}"
            )
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"HybridConfig.prediction_type: expected one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )
        if self.sampler not in SAMPLERS:
            raise ValueError(f"HybridConfig.sampler: expected one of {SAMPLERS}, got {self.sampler!r}")
        check_sampling_steps(
            self.num_inference_steps, self.num_train_timesteps, "HybridConfig.num_inference_steps"
        )
        if self.pretrained_backbone is not None:
            self.pretrained_backbone = str(self.pretrained_backbone)
            if self.backbone_width != 64:
                raise ValueError(
                    "HybridConfig.pretrained_backbone: torchvision's resnet18 has width 64, backbone_width is "
                    f"{self.backbone_width}"
                )
        if self.frozen_batchnorm is None:  # frozen statistics only make sense for pretrained weights
            self.frozen_batchnorm = self.pretrained_backbone is not None
        if not isinstance(self.notes, dict):
            raise ValueError(f"HybridConfig.notes: expected a dict, got {type(self.notes).__name__}")

    # ------------------------------------------------------------------------------------------ derived

    @property
    def use_environment_state(self) -> bool:
        return self.environment_state_dim > 0

    @property
    def uses_latent(self) -> bool:
        """B and C condition the denoiser on z; A has no latent."""
        return self.variant != "A"

    def beta_schedule(self) -> BetaSchedule:
        return BetaSchedule.parse(self.kl_schedule)

    # ---------------------------------------------------------------------------------------- serialization

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["camera_names"] = list(self.camera_names)
        data["image_size"] = None if self.image_size is None else list(self.image_size)
        return data

    @classmethod
    def from_dict(cls, data: dict, *, source: str = "config") -> HybridConfig:
        if not isinstance(data, dict):
            raise ValueError(
                f"{source}: expected a JSON object of HybridConfig fields, got {type(data).__name__}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"{source}: unknown HybridConfig fields {unknown} (a config of another model or kinema version?)"
            )
        values = dict(data)
        if values.get("image_size") is not None:
            values["image_size"] = tuple(values["image_size"])
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{source}: {error}") from error

    def save(self, directory: str | os.PathLike) -> Path:
        return write_json_atomic(Path(directory) / CONFIG_FILE, {"format": _FORMAT, "config": self.to_dict()})

    @classmethod
    def load(cls, path: str | os.PathLike) -> HybridConfig:
        """From ``hybrid_config.json`` or the folder that holds it."""
        path = Path(path)
        if path.is_dir():
            path = path / CONFIG_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path}: no hybrid config (expected {CONFIG_FILE} in the checkpoint folder)"
            )
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f'{path}: expected a JSON object with "format": "{_FORMAT}"')
        return cls.from_dict(payload.get("config"), source=str(path))

    def differences(self, other: HybridConfig, ignore: tuple[str, ...] = ("notes",)) -> dict[str, tuple]:
        """{field: (self's value, other's value)} for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {k: (mine[k], theirs[k]) for k in mine if k not in ignore and mine[k] != theirs[k]}
