"""kinema.conditioning: put a condition into a network without disturbing a pretrained backbone at step 0.

Shapes: B batch, F frames, HW tokens per frame, D hidden, Dc condition width, K condition tokens per frame.
"""

from ._action_encoder import ActionEncoder
from ._adaln import MODULATION_CHUNKS, ActionModulationProjection, AdaLNZero, apply_gate, modulate
from ._cross_attention import PerFrameCrossAttention, frame_window, per_frame_cross_attention
from ._film import FiLM
from ._frames import add_per_frame
from ._inspect import InjectorReport, inspect_checkpoint
from ._layers import output_scales, select_layers
from ._registry import INJECTORS, build_injector
from ._residual import ResidualInjector
from ._version import __version__

__all__ = [
    "INJECTORS",
    "MODULATION_CHUNKS",
    "ActionEncoder",
    "ActionModulationProjection",
    "AdaLNZero",
    "FiLM",
    "InjectorReport",
    "PerFrameCrossAttention",
    "ResidualInjector",
    "__version__",
    "add_per_frame",
    "apply_gate",
    "build_injector",
    "frame_window",
    "inspect_checkpoint",
    "modulate",
    "output_scales",
    "per_frame_cross_attention",
    "select_layers",
]
