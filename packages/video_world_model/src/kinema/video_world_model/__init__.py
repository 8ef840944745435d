"""kinema.video_world_model: Wan2.2-TI2V on diffusers, steered by per-frame drone actions.

Shapes: B batch, C latent channels, F latent frames (F - 1 action steps: frame 0 is the first image), h/w latent
height/width, HW tokens per latent frame, A = 8 drone actions.
"""

from ._actions import load_actions, parse_compact_actions, prepare_actions
from ._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES, WanActionController
from ._first_frame import fuse_first_frame, token_timesteps
from ._flow_matching import FlowMatchingBatch, FlowMatchingObjective
from ._loading import (
    ModelFileError,
    load_controller,
    load_pipeline,
    load_wan_components,
    write_controller_dir,
)
from ._pipeline import WanActionPipeline, WanActionPipelineOutput
from ._train_config import TrainConfig
from ._trainer import TrainingDiverged, TrainResult, WorldModelTrainer
from ._transformer import WanActionTransformer
from ._vae import decode_latents, encode_video
from ._version import __version__

__all__ = [
    "ACTION_CONTROLLER_CONFIGS",
    "INJECTION_TYPES",
    "FlowMatchingBatch",
    "FlowMatchingObjective",
    "ModelFileError",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "WanActionController",
    "WanActionPipeline",
    "WanActionPipelineOutput",
    "WanActionTransformer",
    "WorldModelTrainer",
    "__version__",
    "decode_latents",
    "encode_video",
    "fuse_first_frame",
    "load_actions",
    "load_controller",
    "load_pipeline",
    "load_wan_components",
    "parse_compact_actions",
    "prepare_actions",
    "token_timesteps",
    "write_controller_dir",
]
