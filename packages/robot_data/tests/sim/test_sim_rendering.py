"""Choice of the rendering backend and its errors."""

from __future__ import annotations

import pytest

from kinema.robot_data.sim import RenderBackendError, _rendering, configure_rendering


def test_unknown_mujoco_gl_is_an_error(monkeypatch):
    monkeypatch.setattr(_rendering, "_CHOSEN", None)
    monkeypatch.setenv("MUJOCO_GL", "vulkan")
    with pytest.raises(
        RenderBackendError, match="MUJOCO_GL='vulkan' is not a rendering backend kinema can use"
    ):
        configure_rendering()


def test_no_working_backend_names_the_debian_packages(monkeypatch):
    monkeypatch.setattr(_rendering, "_CHOSEN", None)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.setattr(_rendering, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(_rendering, "_probe", lambda backend, timeout: (False, f"{backend} failed"))
    with pytest.raises(RenderBackendError) as raised:
        configure_rendering()
    message = str(raised.value)
    assert "MUJOCO_GL=egl: egl failed" in message and "MUJOCO_GL=osmesa: osmesa failed" in message
    assert "libegl-mesa0" in message and "libosmesa6" in message


def test_the_first_working_candidate_is_chosen_and_exported(monkeypatch):
    monkeypatch.setattr(_rendering, "_CHOSEN", None)
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    monkeypatch.delenv("PYOPENGL_PLATFORM", raising=False)
    monkeypatch.setattr(_rendering, "nvidia_gpu_present", lambda: False)
    monkeypatch.setattr(
        _rendering,
        "_probe",
        lambda backend, timeout: (
            backend == "osmesa",
            "llvmpipe (LLVM 15)" if backend == "osmesa" else "no EGL",
        ),
    )
    backend = configure_rendering()
    assert (backend.name, backend.software) == ("osmesa", True)
    assert (
        _rendering.os.environ["MUJOCO_GL"] == "osmesa"
        and _rendering.os.environ["PYOPENGL_PLATFORM"] == "osmesa"
    )
    assert "software rendering" in backend.describe()


def test_this_machine_renders(sim_backend):
    assert sim_backend.name in ("egl", "osmesa", "glfw")
    assert sim_backend.renderer
