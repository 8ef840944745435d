import pytest
import torch

from kinema.hybrid_policy import HybridPolicyModel, load_hybrid, save_hybrid
from kinema.hybrid_policy._checkpoint import load_weights
from kinema.hybrid_policy.testing import tiny_config


def batch(b: int = 2) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "image": torch.randint(0, 256, (b, 1, 64, 64, 3), generator=g, dtype=torch.uint8),
        "qpos": torch.rand(b, 2, generator=g),
        "environment_state": torch.rand(b, 4, generator=g),
    }


def test_save_load_identity(tmp_path):
    torch.manual_seed(0)
    model = HybridPolicyModel(tiny_config(variant="C"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    model.action_max.fill_(3.0)
    save_hybrid(model, tmp_path / "ckpt", task="dock")
    loaded = load_hybrid(tmp_path / "ckpt", variant="C")
    own = model.state_dict()
    assert own.keys() == loaded.state_dict().keys()
    assert all(torch.equal(own[k], v) for k, v in loaded.state_dict().items())
    model.eval()
    noise = torch.randn(2, 8, 2)
    a = model.sample(batch(), noise=noise, generator=torch.Generator().manual_seed(3))
    b = loaded.sample(batch(), noise=noise, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (tmp_path / "ckpt" / "policy.json").is_file()


def test_loading_a_checkpoint_of_another_variant_is_refused(tmp_path):
    save_hybrid(HybridPolicyModel(tiny_config(variant="C")), tmp_path / "c")
    with pytest.raises(ValueError, match="variant C model, expected variant B"):
        load_hybrid(tmp_path / "c", variant="B")
    with pytest.raises(ValueError, match="another variant"):
        load_weights(HybridPolicyModel(tiny_config(variant="B")), tmp_path / "c" / "model.safetensors")


def test_unknown_variant_when_loading(tmp_path):
    save_hybrid(HybridPolicyModel(tiny_config(variant="A")), tmp_path / "a")
    with pytest.raises(ValueError, match="variant: unknown 'Z'"):
        load_hybrid(tmp_path / "a", variant="Z")
