"""Test settings for kinema.conditioning."""


def pytest_configure(config):
    # Tiny modules: one intra-op thread is as fast, and far faster on a busy 2-core CI machine.
    import torch

    torch.set_num_threads(1)
