"""kinema.hybrid_policy: ACT's action chunks and style latent with a diffusion head (variants A, B, C).

A: diffusion conditioned on the observation only; B: deterministic z = f(obs); C: posterior q(z | a, obs),
learned conditional prior p(z | obs), diffusion MSE + beta * KL(q || p) with annealing and free bits. The
observation encoder and the temporal ensembler are ACT's (kinema.act_policy); timestep and z enter the
denoiser through adaLN-Zero (kinema.conditioning); schedulers and EMA are diffusers'. The bundled multimodal
task lives in :mod:`kinema.robot_data.sim.dock` (the old path warns).

Shapes: B batch, N cameras, H/W image size, D state dims, C chunk steps, A action dims, L latent dims.
"""

from ._ablation import AblationConfig, run_ablation
from ._checkpoint import load_hybrid, save_hybrid
from ._config import VARIANTS, HybridConfig
from ._metrics import chunk_fidelity, chunk_spread, mode_coverage, smoothness
from ._model import HybridPolicyModel
from ._policy import HybridPolicy, load_policy, load_sim_policy
from ._schedules import BetaSchedule, free_bits_kl, gaussian_kl
from ._train import TrainConfig, TrainResult, train
from ._version import __version__

__all__ = [
    "VARIANTS",
    "AblationConfig",
    "BetaSchedule",
    "HybridConfig",
    "HybridPolicy",
    "HybridPolicyModel",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "chunk_fidelity",
    "chunk_spread",
    "free_bits_kl",
    "gaussian_kl",
    "load_hybrid",
    "load_policy",
    "load_sim_policy",
    "mode_coverage",
    "run_ablation",
    "save_hybrid",
    "smoothness",
    "train",
]
