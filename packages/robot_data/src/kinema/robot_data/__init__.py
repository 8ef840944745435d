"""kinema.robot_data: the data layer of kinema (video I/O, action-video clips, VACE-E episodes, policy episodes).

Shapes: T time steps or frames, H/W height/width, A action steps, D joint dims, N cameras or objects.
Bad items raise :class:`RobotDataError` (naming file and field) in strict mode and are skipped with one warning
in lenient mode (the default).
"""

from ._action_video import ActionVideoConfig, ActionVideoDataset
from ._actions import DEFAULT_MAGNITUDE_SCALE, DRONE_ACTIONS, format_action_json, parse_action_json
from ._errors import MissingFileError, RobotDataError, RobotDataWarning, SkippedItem
from ._order import natural_key
from ._policy_dataset import PolicyEpisodeDataset
from ._policy_io import check_policy_episode, read_policy_episode, write_policy_episode
from ._rotation import ROT6D_CONVENTION, matrix_to_rot6d, rot6d_to_matrix
from ._sizes import check_wan_num_frames, num_action_steps, resolve_size, wan_num_frames
from ._stats import compute_policy_stats, list_policy_episodes, load_stats, save_stats
from ._task_metadata import load_task_metadata, task_prompt
from ._vace_e import VaceEConfig, VaceEEpisodeDataset, collate_vace_e
from ._version import __version__
from ._video import VideoInfo, decode_counter, probe_video, read_video_frames, write_video

__all__ = [
    "DEFAULT_MAGNITUDE_SCALE",
    "DRONE_ACTIONS",
    "ROT6D_CONVENTION",
    "ActionVideoConfig",
    "ActionVideoDataset",
    "MissingFileError",
    "PolicyEpisodeDataset",
    "RobotDataError",
    "RobotDataWarning",
    "SkippedItem",
    "VaceEConfig",
    "VaceEEpisodeDataset",
    "VideoInfo",
    "__version__",
    "check_policy_episode",
    "check_wan_num_frames",
    "collate_vace_e",
    "compute_policy_stats",
    "decode_counter",
    "format_action_json",
    "list_policy_episodes",
    "load_stats",
    "load_task_metadata",
    "matrix_to_rot6d",
    "natural_key",
    "num_action_steps",
    "parse_action_json",
    "probe_video",
    "read_policy_episode",
    "read_video_frames",
    "resolve_size",
    "rot6d_to_matrix",
    "save_stats",
    "task_prompt",
    "wan_num_frames",
    "write_policy_episode",
    "write_video",
]
