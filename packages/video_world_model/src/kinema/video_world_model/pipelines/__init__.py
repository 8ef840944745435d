"""Generation: image + prompt + per-frame actions -> video, and the diagnostics of what the actions do.

from kinema.video_world_model.pipelines import WanActionPipeline, scan_actions, action_effect
"""

from ._grid import write_contact_sheet, write_grid
from ._pipeline import WanActionPipeline, WanActionPipelineOutput
from ._scan import ScanResult, action_effect, scan_actions

__all__ = [
    "ScanResult",
    "WanActionPipeline",
    "WanActionPipelineOutput",
    "action_effect",
    "scan_actions",
    "write_contact_sheet",
    "write_grid",
]
