"""The model: the action controller, the transformer it steers, action modules, and the pieces shared by training
and generation (first-frame conditioning, the flow-matching objective, latent spaces, action inputs, prompts).

    from kinema.video_world_model.modeling import WanActionController, WanActionTransformer

Shapes: B batch, C latent channels, F latent frames (F - 1 action steps: frame 0 is the first image), h/w latent
height/width, HW tokens per latent frame, A = 8 drone actions.
"""

from ._action_modules import (
    ACTION_MODULES,
    PLAY_ACTIONS,
    ActionSequenceEncoder,
    HistoryActionModule,
    MultimodalActionModule,
)
from ._actions import load_actions, parse_compact_actions, prepare_actions
from ._controller import ACTION_CONTROLLER_CONFIGS, INJECTION_TYPES, WanActionController
from ._first_frame import fuse_first_frame, token_timesteps
from ._flow_matching import FlowMatchingBatch, FlowMatchingObjective
from ._pixel_latents import PixelLatentSpace
from ._prompt import WanPromptEncoder
from ._transformer import WanActionTransformer
from ._vae import decode_latents, encode_video

__all__ = [
    "ACTION_CONTROLLER_CONFIGS",
    "ACTION_MODULES",
    "INJECTION_TYPES",
    "PLAY_ACTIONS",
    "ActionSequenceEncoder",
    "FlowMatchingBatch",
    "FlowMatchingObjective",
    "HistoryActionModule",
    "MultimodalActionModule",
    "PixelLatentSpace",
    "WanActionController",
    "WanActionTransformer",
    "WanPromptEncoder",
    "decode_latents",
    "encode_video",
    "fuse_first_frame",
    "load_actions",
    "parse_compact_actions",
    "prepare_actions",
    "token_timesteps",
]
