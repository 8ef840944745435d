"""MuJoCo offscreen rendering of a camera flying over a :class:`World`.

The scene is a textured MuJoCo heightfield under a skybox with scattered clouds (a gradient with random marks,
so rotations move the sky while translations do not), a directional sun, a headlight and distance fog that hides
the edge of the world. The camera sits on a mocap body whose pose is set per frame.

Rendering needs the ``drone`` extra (mujoco) and an OpenGL backend, chosen by
``kinema.robot_data.sim.configure_rendering`` (EGL with an NVIDIA GPU, else Mesa EGL or OSMesa); call
:func:`prepare_rendering` once in the parent process before starting workers.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from ._flight import camera_matrix
from ._world import World

FOVY_DEGREES = 60.0
SKY_HORIZON = (0.78, 0.84, 0.92)

_SCENE = """
<mujoco model="drone_flight">
  <visual>
    <global offwidth="{width}" offheight="{height}" fovy="{fovy}"/>
    <map fogstart="0.25" fogend="0.7" znear="0.0005" zfar="4"/>
    <rgba fog="{fog} 1" haze="{fog} 1"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.35 0.35 0.35" specular="0 0 0"/>
    <quality shadowsize="0"/>
  </visual>
  <asset>
    <texture name="sky" type="skybox" builtin="gradient" rgb1="0.38 0.58 0.88" rgb2="{fog}" width="512"
             height="512" mark="random" random="0.015" markrgb="1 1 1"/>
    <texture name="ground" type="2d" builtin="flat" width="{texture}" height="{texture}" rgb1="0.5 0.5 0.5"/>
    <material name="ground" texture="ground" texrepeat="1 1" specular="0" shininess="0"/>
    <hfield name="terrain" nrow="{grid}" ncol="{grid}" size="{half} {half} {relief} 1"/>
  </asset>
  <worldbody>
    <light directional="true" pos="0 0 100" dir="{sun}" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="terrain" type="hfield" hfield="terrain" material="ground"/>
    <body name="drone" mocap="true" pos="0 0 50">
      <camera name="drone" fovy="{fovy}"/>
    </body>
  </worldbody>
</mujoco>
"""


def prepare_rendering() -> str:
    """Chooses and checks the OpenGL backend (sets MUJOCO_GL for this process and its workers); returns its
    description. Raises ImportError naming the extra, or RenderBackendError when nothing can render."""
    if importlib.util.find_spec("mujoco") is None:  # not imported: MuJoCo reads MUJOCO_GL when imported
        raise ImportError(
            "rendering drone flights needs mujoco: pip install 'kinema-video-world-model[drone]'"
        )
    from kinema.robot_data.sim import configure_rendering

    return configure_rendering().describe()


class FlightRenderer:
    """Renders camera poses over one world. ``render(poses (T, 5)) -> (T, H, W, 3) uint8``.

    ``with FlightRenderer(world, height, width) as renderer: ...`` frees the OpenGL context at the end."""

    def __init__(
        self, world: World, height: int, width: int, sun: tuple[float, float, float] = (0.3, 0.2, -1)
    ):
        import mujoco

        self._mujoco = mujoco
        grid = world.heights.shape[0]
        relief = max(float(world.heights.max()), 1e-3)
        xml = _SCENE.format(
            width=max(width, 64),
            height=max(height, 64),
            fovy=FOVY_DEGREES,
            fog=" ".join(f"{c:.3f}" for c in SKY_HORIZON),
            texture=world.texture.shape[0],
            grid=grid,
            half=world.half_size,
            relief=relief,
            sun=" ".join(str(c) for c in sun),
        )
        self.model = mujoco.MjModel.from_xml_string(xml)
        # uploaded to the GPU when the renderer's context is made, so set before it
        self.model.hfield_data[:] = (world.heights / relief).reshape(-1)
        texture = self.model.texture("ground")
        start = int(texture.adr[0])
        self.model.tex_data[start : start + world.texture.size] = world.texture.reshape(-1)
        self.data = mujoco.MjData(self.model)
        self.renderer = mujoco.Renderer(self.model, height, width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_FOG] = True
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_HAZE] = True

    def render(self, poses: np.ndarray) -> np.ndarray:
        mujoco = self._mujoco
        frames = []
        quaternion = np.zeros(4)
        for x, y, z, yaw, pitch in np.asarray(poses, np.float64):
            mujoco.mju_mat2Quat(quaternion, camera_matrix(yaw, pitch).reshape(-1))
            self.data.mocap_pos[0] = (x, y, z)
            self.data.mocap_quat[0] = quaternion
            mujoco.mj_kinematics(self.model, self.data)
            mujoco.mj_camlight(self.model, self.data)
            self.renderer.update_scene(self.data, camera="drone")
            frames.append(self.renderer.render())
        return np.stack(frames)

    def close(self) -> None:
        self.renderer.close()

    def __enter__(self) -> FlightRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
