"""The joint-space gymnasium environment and the end-effector environment used for scripting.

Imports gymnasium, dm_control and gym-aloha: reach it through :func:`kinema.robot_data.sim.make_env`, which
configures rendering first.
"""

from __future__ import annotations

from typing import ClassVar

import gymnasium as gym
import numpy as np
from gym_aloha.constants import normalize_puppet_gripper_position

from ._scene import make_control_environment, object_positions
from ._tasks import (
    ACTION_DIM,
    DEFAULT_CAMERAS,
    DEFAULT_EPISODE_LENGTH,
    DEFAULT_IMAGE_SIZE,
    FPS,
    MAX_REWARD,
    check_image_size,
    get_task,
    sample_object_poses,
)


class AlohaSimEnv(gym.Env):
    """A gym-aloha task in joint space: action (14,) absolute joint targets, reward stages 0..4.

    Action: [left arm 6 joint angles (rad), left gripper (0 closed .. 1 open), right arm 6, right gripper].
    Observation (a dict):
        ``qpos`` (14,) joint positions (grippers normalized), ``qvel`` (14,) joint velocities,
        ``environment_state`` (E,) see :func:`kinema.robot_data.sim._tasks.environment_state`,
        ``images`` {camera: (H, W, 3) uint8}.
    ``reset(seed=s)`` places the objects with ``sample_object_poses(task, s)``; ``options={"object_poses":
    array (num_objects, 7)}`` places them explicitly. An episode is ``terminated`` when the reward reaches 4
    (if ``terminate_on_success``) and ``truncated`` after ``episode_length`` steps. ``info`` holds
    ``is_success`` (reward 4 at this step), ``max_reward`` so far, ``seed`` and ``object_poses`` (reset).
    ``render_quality``: "full" (the scene's shadows and multisampling) or "fast" (neither; far cheaper under
    software rendering).
    """

    metadata: ClassVar[dict] = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(
        self,
        task: str = "transfer_cube",
        *,
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
        cameras: tuple[str, ...] = DEFAULT_CAMERAS,
        episode_length: int = DEFAULT_EPISODE_LENGTH,
        terminate_on_success: bool = True,
        render_quality: str = "full",
        render_mode: str = "rgb_array",
    ):
        super().__init__()
        self.spec_task = get_task(task)
        self.image_size = check_image_size(image_size)
        self.cameras = tuple(cameras)
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be a positive number of steps, got {episode_length}")
        self.episode_length = int(episode_length)
        self.terminate_on_success = bool(terminate_on_success)
        self.render_mode = render_mode
        self.render_quality = render_quality
        self._env = make_control_environment(
            self.spec_task,
            end_effector=False,
            cameras=self.cameras,
            image_size=self.image_size,
            render_quality=render_quality,
        )
        height, width = self.image_size
        image_space = gym.spaces.Box(0, 255, shape=(height, width, 3), dtype=np.uint8)
        dim_e = self.spec_task.environment_state_dim
        self.observation_space = gym.spaces.Dict(
            {
                "qpos": gym.spaces.Box(-np.inf, np.inf, shape=(ACTION_DIM,), dtype=np.float64),
                "qvel": gym.spaces.Box(-np.inf, np.inf, shape=(ACTION_DIM,), dtype=np.float64),
                "environment_state": gym.spaces.Box(-np.inf, np.inf, shape=(dim_e,), dtype=np.float64),
                "images": gym.spaces.Dict({camera: image_space for camera in self.cameras}),
            }
        )
        # Arm joints within the actuators' control ranges; grippers normalized. MuJoCo clamps out-of-range values.
        ctrl_range = self._env.physics.model.actuator_ctrlrange
        low = np.concatenate([ctrl_range[0:6, 0], [0.0], ctrl_range[8:14, 0], [0.0]])
        high = np.concatenate([ctrl_range[0:6, 1], [1.0], ctrl_range[8:14, 1], [1.0]])
        self.action_space = gym.spaces.Box(low, high, dtype=np.float64)
        self._steps = 0
        self._max_reward = 0
        self._last_observation: dict | None = None

    @property
    def physics(self):
        """The dm_control Physics (e.g. for object positions in tests)."""
        return self._env.physics

    def object_positions(self) -> np.ndarray:
        """Current object positions (num_objects, 3)."""
        return object_positions(self._env.physics, self.spec_task)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is None:
            seed = int(self.np_random.integers(0, 2**31 - 1))
        options = options or {}
        poses = options.get("object_poses")
        poses = sample_object_poses(self.spec_task, seed) if poses is None else np.asarray(poses, np.float64)
        self._env.task.set_object_poses(poses)
        time_step = self._env.reset()
        self._steps = 0
        self._max_reward = 0
        observation = self._observation(time_step.observation)
        info = {"seed": int(seed), "object_poses": poses.copy(), "is_success": False, "max_reward": 0}
        return observation, info

    def step(self, action):
        if self._last_observation is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (ACTION_DIM,):
            raise ValueError(f"action: expected shape ({ACTION_DIM},), got {action.shape}")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action: expected finite values, got {action.tolist()}")
        time_step = self._env.step(action)
        reward = int(time_step.reward)
        self._steps += 1
        self._max_reward = max(self._max_reward, reward)
        success = reward >= MAX_REWARD
        terminated = success and self.terminate_on_success
        truncated = self._steps >= self.episode_length
        info = {"is_success": success, "max_reward": self._max_reward, "step": self._steps}
        return self._observation(time_step.observation), float(reward), terminated, truncated, info

    def render(self):
        """The first camera's latest image (H, W, 3) uint8."""
        if self._last_observation is None or not self.cameras:
            raise RuntimeError("render() needs a camera and a reset() first")
        return self._last_observation["images"][self.cameras[0]]

    def _observation(self, raw) -> dict:
        observation = {
            "qpos": np.asarray(raw["qpos"], dtype=np.float64),
            "qvel": np.asarray(raw["qvel"], dtype=np.float64),
            "environment_state": np.asarray(raw["environment_state"], dtype=np.float64),
            "images": {camera: raw["images"][camera] for camera in self.cameras},
        }
        self._last_observation = observation
        return observation

    def close(self):
        self._last_observation = None


class EndEffectorEnv:
    """gym-aloha's end-effector (mocap) scene of ``task``, for scripted demonstrations.

    Action (16,): per arm [xyz (3), quat (4) [w, x, y, z], gripper (1) normalized]. The observation has the
    joint-space keys plus ``mocap_pose_left`` / ``mocap_pose_right`` (7,) and ``gripper_ctrl`` (4,). No
    camera is rendered unless ``cameras`` asks.
    """

    def __init__(
        self,
        task: str,
        *,
        cameras: tuple[str, ...] = (),
        image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    ):
        self.spec_task = get_task(task)
        self._env = make_control_environment(
            self.spec_task, end_effector=True, cameras=tuple(cameras), image_size=check_image_size(image_size)
        )

    @property
    def physics(self):
        return self._env.physics

    def object_positions(self) -> np.ndarray:
        """Current object positions (num_objects, 3)."""
        return object_positions(self._env.physics, self.spec_task)

    def reset(self, object_poses: np.ndarray) -> dict:
        self._env.task.set_object_poses(object_poses)
        return self._env.reset().observation

    def step(self, action: np.ndarray) -> tuple[dict, int]:
        time_step = self._env.step(np.asarray(action, dtype=np.float64))
        return time_step.observation, int(time_step.reward)


def joint_targets(observation: dict) -> np.ndarray:
    """The joint-space action (14,) that reproduces an end-effector observation: joint positions, with the
    gripper entries replaced by the commanded (not the measured) gripper openings, normalized."""
    action = np.array(observation["qpos"], dtype=np.float64)
    ctrl = observation["gripper_ctrl"]
    action[6] = normalize_puppet_gripper_position(ctrl[0])
    action[13] = normalize_puppet_gripper_position(ctrl[2])
    return action
