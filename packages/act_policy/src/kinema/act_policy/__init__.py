"""kinema.act_policy: ACT (Action Chunking with Transformers) with switchable remedies for its coordinate-conditioning
failure (design note 003). On the 2-D dock confuser the failure did not reproduce (RESULTS.md: plain ACT reached
the target, so no remedy has been shown to fix it); the ALOHA confuser grid has not been run.

Shapes: B batch, N cameras, H/W image size, D state dims, E coordinate dims, C chunk steps, A action dims.
"""

from ._checkpoint import load_act, save_act, weights_mismatch
from ._config import REMEDIES, ACTConfig
from ._config_base import ChunkPolicyConfig
from ._data import check_episodes, load_episodes, split_episodes
from ._execution import ChunkedSimPolicy, ChunkExecutor, TemporalEnsembler
from ._experiment import ConfuserExperiment, run_confuser_experiment
from ._experiment_dock import DockConfuserExperiment, run_dock_confuser_experiment
from ._io import load_torch, save_torch_atomic, write_atomic, write_json_atomic, write_text_atomic
from ._loop import LoopHooks, lr_factor, make_ema, run_training
from ._losses import (
    contrastive_coordinate_loss,
    kl_divergence,
    masked_l1,
    relative_contrastive_loss,
)
from ._model import ACT
from ._policy import ACTPolicy, load_policy, load_sim_policy
from ._resnet import ResNet18, load_torchvision_resnet18
from ._train import TrainConfig, TrainResult, episode_files, train
from ._transformer import Encoder, sine_embedding_1d, sine_embedding_2d
from ._version import __version__

__all__ = [
    "ACT",
    "REMEDIES",
    "ACTConfig",
    "ACTPolicy",
    "ChunkExecutor",
    "ChunkPolicyConfig",
    "ChunkedSimPolicy",
    "ConfuserExperiment",
    "DockConfuserExperiment",
    "Encoder",
    "LoopHooks",
    "ResNet18",
    "TemporalEnsembler",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "check_episodes",
    "contrastive_coordinate_loss",
    "episode_files",
    "kl_divergence",
    "load_act",
    "load_episodes",
    "load_policy",
    "load_sim_policy",
    "load_torch",
    "load_torchvision_resnet18",
    "lr_factor",
    "make_ema",
    "masked_l1",
    "relative_contrastive_loss",
    "run_confuser_experiment",
    "run_dock_confuser_experiment",
    "run_training",
    "save_act",
    "save_torch_atomic",
    "sine_embedding_1d",
    "sine_embedding_2d",
    "split_episodes",
    "train",
    "weights_mismatch",
    "write_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
