"""Chooses MuJoCo's OpenGL backend before anything imports MuJoCo, and proves it works.

- ``MUJOCO_GL`` already set: that backend, as the user asked.
- An NVIDIA GPU present: ``egl`` (hardware rendering).
- Otherwise software rendering: Mesa's ``egl`` (llvmpipe, Debian packages libegl1, libegl-mesa0 and
  libgl1-mesa-dri), else ``osmesa`` (Debian package libosmesa6).

Each candidate is tried by rendering an 8x8 image in a child process, so a missing or broken backend is a
clear :class:`RenderBackendError` before any episode starts, never a crash in a worker. The choice is
written to ``os.environ`` (``MUJOCO_GL``, ``PYOPENGL_PLATFORM``) so worker processes inherit it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("kinema.robot_data.sim")

_KNOWN_BACKENDS = ("egl", "osmesa", "glfw")
_PROBE = r"""
import sys
import mujoco
model = mujoco.MjModel.from_xml_string("<mujoco><worldbody><light pos='0 0 1'/><geom type='sphere' size='0.1'/></worldbody></mujoco>")
renderer = mujoco.Renderer(model, height=8, width=8)
renderer.update_scene(mujoco.MjData(model))
image = renderer.render()
assert image.shape == (8, 8, 3), image.shape
name = "unknown"
try:
    from OpenGL import GL
    name = GL.glGetString(GL.GL_RENDERER).decode()
except Exception:
    pass
print("KINEMA_RENDERER=" + name)
"""
_SOFTWARE_HINT = (
    "for software rendering install Debian's libegl1, libegl-mesa0 and libgl1-mesa-dri (Mesa EGL, llvmpipe) "
    "or libosmesa6 (OSMesa); with an NVIDIA GPU, its driver's EGL library (libEGL_nvidia)"
)


_SIM_MODULES = {
    "mujoco": "mujoco",
    "dm_control": "dm-control",
    "gym_aloha": "gym-aloha",
    "gymnasium": "gymnasium",
}


def require_sim_extra() -> None:
    """Raises ImportError naming the install line when the ``sim`` extra's packages are missing."""
    missing = [dist for module, dist in _SIM_MODULES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ImportError(
            f"kinema.robot_data.sim needs {', '.join(missing)}: pip install 'kinema-robot-data[sim]'"
        )


class RenderBackendError(RuntimeError):
    """No OpenGL backend can render MuJoCo scenes on this machine (raised before any work starts)."""


@dataclass(frozen=True)
class RenderBackend:
    """The backend in use: ``name`` is the MUJOCO_GL value, ``renderer`` the OpenGL renderer string."""

    name: str
    renderer: str
    reason: str

    @property
    def software(self) -> bool:
        return any(word in self.renderer.lower() for word in ("llvmpipe", "softpipe", "swrast", "osmesa"))

    def describe(self) -> str:
        kind = "software rendering" if self.software else "hardware rendering"
        return f"rendering with MUJOCO_GL={self.name} ({self.renderer}, {kind}; {self.reason})"


_CHOSEN: RenderBackend | None = None


def nvidia_gpu_present() -> bool:
    """True where an NVIDIA driver is visible (device node, /proc entry or nvidia-smi)."""
    return (
        Path("/dev/nvidiactl").exists()
        or Path("/proc/driver/nvidia/version").exists()
        or shutil.which("nvidia-smi") is not None
    )


def _probe(backend: str, timeout: float) -> tuple[bool, str]:
    """Renders a tiny scene with ``backend`` in a child process: (works, renderer string or error text)."""
    env = dict(os.environ, MUJOCO_GL=backend)
    env.pop("PYOPENGL_PLATFORM", None)
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"the probe did not finish within {timeout:.0f} s"
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).strip().splitlines() if line.strip()]
        return False, lines[-1] if lines else f"exit code {done.returncode}"
    for line in done.stdout.splitlines():
        if line.startswith("KINEMA_RENDERER="):
            return True, line.split("=", 1)[1]
    return True, "unknown"


def configure_rendering(*, timeout: float = 120.0) -> RenderBackend:
    """Chooses and checks the rendering backend once per process; returns it.

    Raises:
        RenderBackendError: ``MUJOCO_GL`` names an unknown backend, or no candidate can render; the message
            lists what was tried and which Debian packages provide a software backend.
    """
    global _CHOSEN
    requested = os.environ.get("MUJOCO_GL")
    if _CHOSEN is not None and requested == _CHOSEN.name:
        return _CHOSEN
    if requested:
        if requested not in _KNOWN_BACKENDS:
            raise RenderBackendError(
                f"MUJOCO_GL={requested!r} is not a rendering backend kinema can use: expected one of "
                f"{', '.join(_KNOWN_BACKENDS)}, or unset it to choose automatically"
            )
        candidates = [(requested, "MUJOCO_GL set in the environment")]
    elif nvidia_gpu_present():
        candidates = [("egl", "NVIDIA GPU found"), ("osmesa", "NVIDIA EGL failed, software fallback")]
    else:
        candidates = [("egl", "no NVIDIA GPU: Mesa EGL"), ("osmesa", "no NVIDIA GPU, no Mesa EGL: OSMesa")]
    failures = []
    for name, reason in candidates:
        works, detail = _probe(name, timeout)
        if works:
            os.environ["MUJOCO_GL"] = name
            if name in ("egl", "osmesa"):
                os.environ["PYOPENGL_PLATFORM"] = name
            _CHOSEN = RenderBackend(name=name, renderer=detail, reason=reason)
            logger.info(_CHOSEN.describe())
            return _CHOSEN
        failures.append(f"MUJOCO_GL={name}: {detail}")
    raise RenderBackendError(
        "no OpenGL backend can render MuJoCo scenes here (tried "
        + "; ".join(failures)
        + "); "
        + _SOFTWARE_HINT
    )
