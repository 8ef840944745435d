import importlib.util

import numpy as np
import pytest
from PIL import Image

from kinema.video_world_model.testing import write_tiny_controller, write_tiny_wan


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory):
    """A tiny random Wan2.2-TI2V-style model in the diffusers layout, written once per session."""
    return write_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


def pytest_configure(config):
    # Tiny models: one intra-op thread is as fast, and far faster when the 2-core CI machine is busy.
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def interrupt_after_save(monkeypatch):
    """``interrupt_after_save(trainer_class, step)``: the trainer raises KeyboardInterrupt right after saving
    ``step`` (a run killed then); ``.restore()`` undoes it so that the resumed run saves normally."""

    class Interrupt:
        def __call__(self, trainer_class, step):
            original = trainer_class._save

            def save_then_stop(self, at, stream):
                original(self, at, stream)
                if at == step:
                    raise KeyboardInterrupt

            monkeypatch.setattr(trainer_class, "_save", save_then_stop)

        def restore(self):
            monkeypatch.undo()

    return Interrupt()


@pytest.fixture(scope="module")
def renderer_backend():
    """The OpenGL backend drone flights render with; skips without the drone extra or a working backend."""
    # not imported here: MuJoCo picks its OpenGL backend when first imported
    if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("cv2") is None:
        pytest.skip("mujoco and opencv-python-headless (the drone extra) are not installed")
    from kinema.robot_data.drone import prepare_rendering
    from kinema.robot_data.sim import RenderBackendError

    try:
        return prepare_rendering()
    except (RenderBackendError, ImportError) as error:
        pytest.skip(f"no OpenGL backend can render MuJoCo scenes here: {error}")


@pytest.fixture
def image():
    """A 64x64 random RGB first frame."""
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


@pytest.fixture
def controller_dir(tmp_path):
    """A tiny cross_attn_frame controller directory (action_train_config.json + safetensors)."""
    return write_tiny_controller(tmp_path / "ctrl", "cross_attn_frame")
