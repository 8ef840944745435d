"""VACE-E: Wan2.1-VACE with dual-hand motion, object trajectories and embodiment images as task features.

    from kinema.video_world_model.vace_e import VaceEConfig, run_stages, load_vace_e_pipeline

Shapes: B batch, T video frames, F latent frames (R reference frames first), N objects, D model width.
"""

from ._config import SHIPPED_CONFIGS, Stage, VaceEConfig, shipped_config
from ._metrics import masked_video_metrics
from ._model import TaskAlignmentHead, VaceETransformer
from ._pipeline import VaceEOutput, VaceEPipeline, load_vace_e_pipeline
from ._task_encoder import MODALITIES, TaskEmbodimentEncoder, TaskInputs
from ._train import VaceETrainer, guidance_loss, run_stages
from ._validate import validate

__all__ = [
    "MODALITIES",
    "SHIPPED_CONFIGS",
    "Stage",
    "TaskAlignmentHead",
    "TaskEmbodimentEncoder",
    "TaskInputs",
    "VaceEConfig",
    "VaceEOutput",
    "VaceEPipeline",
    "VaceETrainer",
    "VaceETransformer",
    "guidance_loss",
    "load_vace_e_pipeline",
    "masked_video_metrics",
    "run_stages",
    "shipped_config",
    "validate",
]
