"""Drone flights: action sequences over the 8 drone actions and the camera poses they produce.

Units (the reason for the magnitude scale [100, 100, 100, 100, 1, 1, 1, 1]): translations (Forward, Back, Left,
Right) are in kilometres per latent step, rotations (Yaw Left, Yaw Right, Pitch Up, Pitch Down) in radians per
latent step. A step of 1-3 m (0.001-0.003 km: 4-12 m/s at 16 fps) and a turn of 0.05-0.15 rad move the image
of a camera about 12 m above the ground (ground some 20 m away in the image centre) by a similar few percent of
its width, and the x100 scale brings both to the same order (0.1-0.3 and 0.05-0.15).

A pose is (x, y, z, yaw, pitch): position in metres, ``yaw`` the heading measured from the world x axis
counter-clockwise (Yaw Left increases it), ``pitch`` the view direction above the horizontal (negative looks
down; Pitch Up increases it). Forward moves along the heading in the horizontal plane, Left to its left; the
altitude never changes. Latent step k (k = 1..A) moves the camera from video frame 4(k-1) to frame 4k in 4 equal
increments; frame 0 is the first image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import DRONE_ACTIONS

FRAMES_PER_STEP = 4
METRES_PER_UNIT = 1000.0  # translation magnitudes are kilometres
AXES = (("forward", "back"), ("left", "right"), ("yaw_left", "yaw_right"), ("pitch_up", "pitch_down"))
"""The four motion axes as (positive action, negative action) pairs of :data:`DRONE_ACTIONS`."""
AXIS_INDEX = tuple((DRONE_ACTIONS.index(p), DRONE_ACTIONS.index(n)) for p, n in AXES)


@dataclass(frozen=True)
class FlightConfig:
    """How action sequences and start poses are drawn.

    Steps come in segments of 1..``max_segment`` latent steps with constant actions. A segment is idle with
    probability ``idle_probability``; otherwise each axis is active with probability ``axis_probability`` (at
    least one), in a random direction, with a magnitude drawn uniformly from the axis' range. Pitch stays inside
    ``pitch_limits`` (radians): a pitch action that would leave it is reversed.
    """

    translation_range: tuple[float, float] = (0.001, 0.003)  # km per latent step
    rotation_range: tuple[float, float] = (0.05, 0.15)  # rad per latent step
    idle_probability: float = 0.1
    axis_probability: float = 0.55
    max_segment: int = 4
    start_pitch: tuple[float, float] = (np.deg2rad(-40.0), np.deg2rad(-20.0))
    pitch_limits: tuple[float, float] = (np.deg2rad(-65.0), np.deg2rad(-5.0))
    altitude: tuple[float, float] = (9.0, 15.0)  # metres above the ground under the start

    def magnitude_range(self, action: int) -> tuple[float, float]:
        return self.translation_range if action < 4 else self.rotation_range


def sample_actions(
    rng: np.random.Generator, num_steps: int, start_pitch: float, config: FlightConfig = FlightConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """(binary (A, 8) in {0, 1}, magnitude (A, 8) raw, 0 where binary is 0), float32, A = ``num_steps``.

    Opposite actions (Forward/Back, ...) are never active together, so the binary labels are identifiable."""
    binary = np.zeros((num_steps, len(DRONE_ACTIONS)), np.float32)
    magnitude = np.zeros_like(binary)
    pitch = start_pitch
    step = 0
    while step < num_steps:
        length = min(int(rng.integers(1, config.max_segment + 1)), num_steps - step)
        row_b = np.zeros(len(DRONE_ACTIONS), np.float32)
        row_m = np.zeros(len(DRONE_ACTIONS), np.float32)
        if rng.random() >= config.idle_probability:
            active = rng.random(len(AXES)) < config.axis_probability
            if not active.any():
                active[rng.integers(len(AXES))] = True
            for axis in np.flatnonzero(active):
                positive, negative = AXIS_INDEX[axis]
                action = positive if rng.random() < 0.5 else negative
                low, high = config.magnitude_range(action)
                amount = float(rng.uniform(low, high))
                if axis == 3:  # keep the pitch inside its limits over the whole segment
                    sign = 1.0 if action == positive else -1.0
                    end = pitch + sign * amount * length
                    if not config.pitch_limits[0] <= end <= config.pitch_limits[1]:
                        action = negative if action == positive else positive
                        sign = -sign
                        if (
                            not config.pitch_limits[0]
                            <= pitch + sign * amount * length
                            <= config.pitch_limits[1]
                        ):
                            continue
                    pitch += sign * amount * length
                row_b[action], row_m[action] = 1.0, amount
        binary[step : step + length] = row_b
        magnitude[step : step + length] = row_m
        step += length
    return binary, magnitude


def axis_values(binary: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """(..., 8) binary + raw magnitude -> (..., 4) signed motion per axis: [forward (km), left (km), yaw left
    (rad), pitch up (rad)] per latent step."""
    signed = np.asarray(binary, np.float64) * np.asarray(magnitude, np.float64)
    return np.stack([signed[..., p] - signed[..., n] for p, n in AXIS_INDEX], axis=-1)


def integrate_flight(start: np.ndarray, binary: np.ndarray, magnitude: np.ndarray) -> np.ndarray:
    """Camera poses (4A + 1, 5) [x, y, z, yaw, pitch] of video frames 0..4A from the start pose (5,).

    Each latent step's motion is applied in 4 equal increments (translation along the current heading)."""
    moves = axis_values(binary, magnitude)  # (A, 4)
    pose = np.asarray(start, np.float64).copy()
    poses = [pose.copy()]
    for forward, left, yaw, pitch in moves:
        for _ in range(FRAMES_PER_STEP):
            heading = pose[3]
            dx, dy = forward * METRES_PER_UNIT / FRAMES_PER_STEP, left * METRES_PER_UNIT / FRAMES_PER_STEP
            pose[0] += dx * np.cos(heading) - dy * np.sin(heading)
            pose[1] += dx * np.sin(heading) + dy * np.cos(heading)
            pose[3] += yaw / FRAMES_PER_STEP
            pose[4] += pitch / FRAMES_PER_STEP
            poses.append(pose.copy())
    return np.stack(poses)


def camera_matrix(yaw: float, pitch: float) -> np.ndarray:
    """(3, 3) rotation whose columns are the camera's right, up and backward axes in world coordinates (a camera
    looks along its -z axis, MuJoCo's convention)."""
    view = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    up = np.cross(right, view)
    return np.stack([right, up, -view], axis=1)
