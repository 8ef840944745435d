"""Where :class:`WanActionController` lived until 0.5. Pipelines saved by kinema 0.5 name this module in their
model_index.json (``["kinema.video_world_model._controller", "WanActionController"]``), and diffusers imports it to
load them; saving them again writes the public path. Removed in 0.7."""

import warnings

from .modeling._controller import WanActionController

warnings.warn(
    "kinema.video_world_model._controller moved to kinema.video_world_model.modeling (a pipeline saved by kinema "
    "0.5 names it in model_index.json; save the pipeline again to write the public path)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["WanActionController"]
