"""Drone flights over procedural terrain, rendered with MuJoCo, written as action-video clips.

The training data of the action-following experiment (``kinema-wm make-drone-data`` drives it): each of the 20
latent-frame steps of an 81-frame clip applies the commanded drone actions (Forward, Back, Left, Right, Yaw Left,
Yaw Right, Pitch Up, Pitch Down; binary + magnitude, several at once) to the camera, in 4 equal increments.
Needs the ``sim`` extra (MuJoCo); rendering uses the simulation's backend choice (EGL on NVIDIA, Mesa otherwise).

Units: translations in kilometres per latent step (1-3 m), rotations in radians per latent step (0.05-0.15), so
the action magnitude scale [100, 100, 100, 100, 1, 1, 1, 1] brings them level.
"""

from ._data import (
    DATA_INDEX,
    DroneDataConfig,
    DroneDataSummary,
    make_drone_dataset,
    plan_clip,
    read_drone_index,
)
from ._flight import (
    AXES,
    AXIS_INDEX,
    FRAMES_PER_STEP,
    FlightConfig,
    axis_values,
    camera_matrix,
    integrate_flight,
    sample_actions,
)
from ._render import FOVY_DEGREES, FlightRenderer, prepare_rendering
from ._world import World, make_world

__all__ = [
    "AXES",
    "AXIS_INDEX",
    "DATA_INDEX",
    "FOVY_DEGREES",
    "FRAMES_PER_STEP",
    "DroneDataConfig",
    "DroneDataSummary",
    "FlightConfig",
    "FlightRenderer",
    "World",
    "axis_values",
    "camera_matrix",
    "integrate_flight",
    "make_drone_dataset",
    "make_world",
    "plan_clip",
    "prepare_rendering",
    "read_drone_index",
    "sample_actions",
]
