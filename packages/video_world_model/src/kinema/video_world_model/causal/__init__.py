"""The block-causal rollout: a Wan transformer run block by block with a rolling KV cache, streaming VAE decoding,
trained action weights, and the interactive ``kinema-wm play``.

    from kinema.video_world_model.causal import load_causal_pipeline
    pipe = load_causal_pipeline(model_dir, checkpoint_dir)

Shapes: B batch, F latent frames, C latent channels, h/w latent height/width; a block is ``block_size`` frames.
"""

from ._attention import block_causal_mask
from ._checkpoint import load_action_checkpoint, load_causal_pipeline, write_action_checkpoint
from ._config import CausalRolloutConfig
from ._model import CausalWanModel
from ._pipeline import ActionCausalInferencePipeline
from ._training import causal_training_loss, freeze_generator
from ._vae import StreamingVAEDecoder

__all__ = [
    "ActionCausalInferencePipeline",
    "CausalRolloutConfig",
    "CausalWanModel",
    "StreamingVAEDecoder",
    "block_causal_mask",
    "causal_training_loss",
    "freeze_generator",
    "load_action_checkpoint",
    "load_causal_pipeline",
    "write_action_checkpoint",
]
