"""Files on disk, read locally (never the network): Wan models in the diffusers and original layouts, trained
controller folders, training checkpoints, and LoRA weights in kinema's, diffusers' and DiffSynth's key names.

    from kinema.video_world_model.loading import load_pipeline, load_controller, write_controller_dir
"""

from ._lora import add_lora, load_lora_state_dict, lora_state_dict
from ._wan import (
    ModelFileError,
    load_controller,
    load_diffusers_components,
    load_pipeline,
    load_wan_components,
    write_controller_dir,
)

__all__ = [
    "ModelFileError",
    "add_lora",
    "load_controller",
    "load_diffusers_components",
    "load_lora_state_dict",
    "load_pipeline",
    "load_wan_components",
    "lora_state_dict",
    "write_controller_dir",
]
