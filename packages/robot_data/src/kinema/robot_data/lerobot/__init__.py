"""LeRobot datasets: read a LeRobot folder (v3.0, v2.1) as kinema policy episodes, and export kinema's policy
episodes as a LeRobot v3.0 folder. Needs pyarrow."""

from ._layout import DEFAULT_KEY_MAP, is_lerobot_dataset
from ._observation import kinema_observation
from ._reader import LeRobotEpisodeRef, LeRobotEpisodes, read_lerobot_episode
from ._writer import export_lerobot

__all__ = [
    "DEFAULT_KEY_MAP",
    "LeRobotEpisodeRef",
    "LeRobotEpisodes",
    "export_lerobot",
    "is_lerobot_dataset",
    "kinema_observation",
    "read_lerobot_episode",
]
