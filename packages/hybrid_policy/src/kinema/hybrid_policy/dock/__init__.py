"""Deprecated: the docking task moved to :mod:`kinema.robot_data.sim.dock` (kinema-hybrid-policy 0.2.3,
kinema-robot-data 0.3.0), beside the ALOHA tasks, so ACT evaluates on it without this package. This module
re-exports it for one version and warns once on import."""

import warnings

from kinema.robot_data.sim.dock import *  # noqa: F403
from kinema.robot_data.sim.dock import __all__  # noqa: F401

warnings.warn(
    "kinema.hybrid_policy.dock moved to kinema.robot_data.sim.dock; the old path will be removed in "
    "kinema-hybrid-policy 0.3",
    DeprecationWarning,
    stacklevel=2,
)
