"""kinema.act_policy: ACT (Action Chunking with Transformers) with working coordinate conditioning.

Shapes: B batch, N cameras, H/W image size, D state dims, E coordinate dims, C chunk steps, A action dims.
"""

from ._checkpoint import load_act, save_act
from ._config import REMEDIES, ACTConfig
from ._execution import TemporalEnsembler
from ._experiment import ConfuserExperiment, run_confuser_experiment
from ._losses import contrastive_coordinate_loss, kl_divergence, masked_l1
from ._model import ACT
from ._policy import ACTPolicy, load_policy, load_sim_policy
from ._resnet import ResNet18, load_torchvision_resnet18
from ._train import TrainConfig, TrainResult, train
from ._version import __version__

__all__ = [
    "ACT",
    "REMEDIES",
    "ACTConfig",
    "ACTPolicy",
    "ConfuserExperiment",
    "ResNet18",
    "TemporalEnsembler",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "contrastive_coordinate_loss",
    "kl_divergence",
    "load_act",
    "load_policy",
    "load_sim_policy",
    "load_torchvision_resnet18",
    "masked_l1",
    "run_confuser_experiment",
    "save_act",
    "train",
]
