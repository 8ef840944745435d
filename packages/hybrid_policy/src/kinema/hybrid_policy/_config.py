"""HybridConfig: every setting of the ACT + diffusion hybrid, validated at construction and saved beside the
weights as ``hybrid_config.json``.

Defaults: the observation encoder is ACT's (kinema.act_policy defaults: ResNet18, 4 encoder layers of width
512, 8 heads, FFN 3200); the diffusion settings are Diffusion Policy's (100 DDPM training steps, squared-cosine
noise schedule, epsilon prediction, clipped samples, 10 DDIM steps at inference); the chunk is ACT's (100).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from kinema.act_policy import ChunkPolicyConfig

from ._schedules import BetaSchedule

CONFIG_FILE = "hybrid_config.json"
_FORMAT = "kinema.hybrid_config"

VARIANTS = ("A", "B", "C")
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
SAMPLERS = ("ddim", "dpmsolver++", "ddpm")
NOISE_SCHEDULES = ("squaredcos_cap_v2", "linear", "scaled_linear")


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
class HybridConfig(ChunkPolicyConfig):
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

    CONFIG_FILE: ClassVar[str] = CONFIG_FILE
    FORMAT: ClassVar[str] = _FORMAT
    LABEL: ClassVar[str] = "hybrid"

    def __post_init__(self) -> None:
        check_variant(self.variant)
        self.check_shared_fields(
            positive=("n_denoiser_layers", "latent_dim", "n_posterior_layers", "num_train_timesteps")
        )
        self.kl_schedule = str(BetaSchedule.parse(self.kl_schedule))
        self.check_non_negative("free_bits")
        self.check_non_negative("z_temperature")
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

    # ------------------------------------------------------------------------------------------ derived

    @property
    def uses_latent(self) -> bool:
        """B and C condition the denoiser on z; A has no latent."""
        return self.variant != "A"

    def beta_schedule(self) -> BetaSchedule:
        return BetaSchedule.parse(self.kl_schedule)
