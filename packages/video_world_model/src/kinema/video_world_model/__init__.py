"""kinema.video_world_model: Wan2.2-TI2V on diffusers, steered by per-frame drone actions.

The product is here; everything else lives in the sub-package a user thinks in:

    modeling    the controller, the transformer it steers, action modules, first frame, flow matching, latents
    pipelines   generation and the action diagnostics (scan, action effect)
    loading     local Wan layouts, controller folders, training checkpoints, LoRA
    training    kinema's loop, the world-model task, its options, data and cache
    causal      the block-causal rollout (KV cache, streaming VAE, action checkpoints, play)
    vace_e      VACE-E: Wan2.1-VACE with hand motion, object trajectories and embodiment images
    drone       the drone experiment (small model, action estimator, metric, report)
    cli         the kinema-wm command line
    testing     tiny random models in the real on-disk layouts, for tests

Shapes: B batch, C latent channels, F latent frames (F - 1 action steps: frame 0 is the first image), h/w latent
height/width, HW tokens per latent frame, A = 8 drone actions.
"""

import importlib
import sys
import warnings

from ._version import __version__
from .causal._checkpoint import load_causal_pipeline
from .causal._config import CausalRolloutConfig
from .causal._pipeline import ActionCausalInferencePipeline
from .loading._wan import (
    ModelFileError,
    load_controller,
    load_pipeline,
    load_wan_components,
    write_controller_dir,
)
from .modeling import _controller
from .modeling._actions import parse_compact_actions
from .modeling._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES, WanActionController
from .pipelines._pipeline import WanActionPipeline
from .training._loop import TrainingDiverged, TrainResult
from .training._train_config import TrainConfig
from .training._trainer import WorldModelTrainer

__all__ = [
    "ACTION_CONTROLLER_CONFIGS",
    "INJECTION_TYPES",
    "ActionCausalInferencePipeline",
    "CausalRolloutConfig",
    "ModelFileError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "WanActionController",
    "WanActionPipeline",
    "WorldModelTrainer",
    "__version__",
    "load_causal_pipeline",
    "load_controller",
    "load_pipeline",
    "load_wan_components",
    "parse_compact_actions",
    "write_controller_dir",
]

# A WanActionPipeline saved by 0.5 names kinema.video_world_model._controller in its model_index.json, and diffusers
# loads the controller from that module only if it is imported already: the old path stays an alias until 0.7.
sys.modules.setdefault(f"{__name__}._controller", _controller)

# Names exported here until 0.5, now in a sub-package: still importable from here until 0.7, with a warning.
MOVED = {
    "ACTION_MODULES": "modeling",
    "PLAY_ACTIONS": "modeling",
    "ActionSequenceEncoder": "modeling",
    "FlowMatchingBatch": "modeling",
    "FlowMatchingObjective": "modeling",
    "HistoryActionModule": "modeling",
    "MultimodalActionModule": "modeling",
    "PixelLatentSpace": "modeling",
    "WanActionTransformer": "modeling",
    "decode_latents": "modeling",
    "encode_video": "modeling",
    "fuse_first_frame": "modeling",
    "load_actions": "modeling",
    "prepare_actions": "modeling",
    "token_timesteps": "modeling",
    "WanActionPipelineOutput": "pipelines",
    "CausalWanModel": "causal",
    "StreamingVAEDecoder": "causal",
    "WanPromptEncoder": "modeling",
    "block_causal_mask": "causal",
    "causal_training_loss": "causal",
    "freeze_generator": "causal",
    "load_action_checkpoint": "causal",
    "write_action_checkpoint": "causal",
    "ActionEstimator": "drone",
    "ActionScores": "drone",
    "DroneWorldModelTrainer": "drone",
    "evaluate_actions": "drone",
    "fit_estimator": "drone",
    "generate_latents": "drone",
    "score_actions": "drone",
}


def __getattr__(name: str):
    if name not in MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    new = f"{__name__}.{MOVED[name]}"
    warnings.warn(
        f"{__name__}.{name} moved to {new}.{name} in 0.6 (import it from there); "
        f"the old path is removed in 0.7",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(new), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(MOVED))
