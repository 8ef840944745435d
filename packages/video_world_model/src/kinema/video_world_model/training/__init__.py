"""Training: kinema's loop (accelerate; checkpoints, resume, logging), the world-model task on it, its options,
data and latent cache.

    from kinema.video_world_model.training import TrainConfig, WorldModelTrainer
    WorldModelTrainer(TrainConfig(model_dir=..., dataset_base_path=..., output_path=...)).run()
"""

from ._cache import write_cache
from ._loop import Trainer, TrainingDiverged, TrainResult
from ._loop_config import LoopConfig
from ._train_config import TrainConfig
from ._trainer import WorldModelTrainer

__all__ = [
    "LoopConfig",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDiverged",
    "WorldModelTrainer",
    "write_cache",
]
