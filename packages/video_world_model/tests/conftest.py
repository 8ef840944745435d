import pytest

from kinema.video_world_model.testing import write_tiny_wan


@pytest.fixture(scope="session")
def tiny_wan_dir(tmp_path_factory):
    """A tiny random Wan2.2-TI2V-style model in the diffusers layout, written once per session."""
    return write_tiny_wan(tmp_path_factory.mktemp("models") / "tiny-wan")


def pytest_configure(config):
    # Tiny models: one intra-op thread is as fast, and far faster when the 2-core CI machine is busy.
    import torch

    torch.set_num_threads(1)
