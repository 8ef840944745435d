"""kinema.video_world_model: Wan2.2-TI2V on diffusers, steered by per-frame drone actions.

Shapes: B batch, C latent channels, F latent frames (F - 1 action steps: frame 0 is the first image), h/w latent
height/width, HW tokens per latent frame, A = 8 drone actions.
"""

from ._action_estimator import ActionEstimator
from ._action_eval import evaluate_actions, fit_estimator
from ._action_metric import ActionScores, score_actions
from ._action_modules import (
    ACTION_MODULES,
    PLAY_ACTIONS,
    ActionSequenceEncoder,
    HistoryActionModule,
    MultimodalActionModule,
)
from ._actions import load_actions, parse_compact_actions, prepare_actions
from ._causal_attention import block_causal_mask
from ._causal_checkpoint import load_action_checkpoint, load_causal_pipeline, write_action_checkpoint
from ._causal_config import CausalRolloutConfig
from ._causal_model import CausalWanModel
from ._causal_pipeline import ActionCausalInferencePipeline, WanPromptEncoder
from ._causal_training import causal_training_loss, freeze_generator
from ._causal_vae import StreamingVAEDecoder
from ._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES, WanActionController
from ._drone_model import DroneWorldModelTrainer, generate_latents
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
from ._pixel_latents import PixelLatentSpace
from ._train_config import TrainConfig
from ._trainer import TrainingDiverged, TrainResult, WorldModelTrainer
from ._transformer import WanActionTransformer
from ._vae import decode_latents, encode_video
from ._version import __version__

__all__ = [
    "ACTION_CONTROLLER_CONFIGS",
    "ACTION_MODULES",
    "INJECTION_TYPES",
    "PLAY_ACTIONS",
    "ActionCausalInferencePipeline",
    "ActionEstimator",
    "ActionScores",
    "ActionSequenceEncoder",
    "CausalRolloutConfig",
    "CausalWanModel",
    "DroneWorldModelTrainer",
    "FlowMatchingBatch",
    "FlowMatchingObjective",
    "HistoryActionModule",
    "ModelFileError",
    "MultimodalActionModule",
    "PixelLatentSpace",
    "StreamingVAEDecoder",
    "TrainConfig",
    "TrainResult",
    "TrainingDiverged",
    "WanActionController",
    "WanActionPipeline",
    "WanActionPipelineOutput",
    "WanActionTransformer",
    "WanPromptEncoder",
    "WorldModelTrainer",
    "__version__",
    "block_causal_mask",
    "causal_training_loss",
    "decode_latents",
    "encode_video",
    "evaluate_actions",
    "fit_estimator",
    "freeze_generator",
    "fuse_first_frame",
    "generate_latents",
    "load_action_checkpoint",
    "load_actions",
    "load_causal_pipeline",
    "load_controller",
    "load_pipeline",
    "load_wan_components",
    "parse_compact_actions",
    "prepare_actions",
    "score_actions",
    "token_timesteps",
    "write_action_checkpoint",
    "write_controller_dir",
]
