"""The backbone: torchvision's resnet18 names, frozen BatchNorm, FiLM identity at init, loading local weights."""

from __future__ import annotations

import pytest
import torch

from kinema.act_policy import ResNet18, load_torchvision_resnet18

# torchvision.models.resnet18().state_dict().keys(), written out (torchvision cannot be installed here).
TORCHVISION_RESNET18_KEYS = [
    "conv1.weight",
    "bn1.weight",
    "bn1.bias",
    "bn1.running_mean",
    "bn1.running_var",
    "bn1.num_batches_tracked",
    "layer1.0.conv1.weight",
    "layer1.0.bn1.weight",
    "layer1.0.bn1.bias",
    "layer1.0.bn1.running_mean",
    "layer1.0.bn1.running_var",
    "layer1.0.bn1.num_batches_tracked",
    "layer1.0.conv2.weight",
    "layer1.0.bn2.weight",
    "layer1.0.bn2.bias",
    "layer1.0.bn2.running_mean",
    "layer1.0.bn2.running_var",
    "layer1.0.bn2.num_batches_tracked",
    "layer1.1.conv1.weight",
    "layer1.1.bn1.weight",
    "layer1.1.bn1.bias",
    "layer1.1.bn1.running_mean",
    "layer1.1.bn1.running_var",
    "layer1.1.bn1.num_batches_tracked",
    "layer1.1.conv2.weight",
    "layer1.1.bn2.weight",
    "layer1.1.bn2.bias",
    "layer1.1.bn2.running_mean",
    "layer1.1.bn2.running_var",
    "layer1.1.bn2.num_batches_tracked",
    "layer2.0.conv1.weight",
    "layer2.0.bn1.weight",
    "layer2.0.bn1.bias",
    "layer2.0.bn1.running_mean",
    "layer2.0.bn1.running_var",
    "layer2.0.bn1.num_batches_tracked",
    "layer2.0.conv2.weight",
    "layer2.0.bn2.weight",
    "layer2.0.bn2.bias",
    "layer2.0.bn2.running_mean",
    "layer2.0.bn2.running_var",
    "layer2.0.bn2.num_batches_tracked",
    "layer2.0.downsample.0.weight",
    "layer2.0.downsample.1.weight",
    "layer2.0.downsample.1.bias",
    "layer2.0.downsample.1.running_mean",
    "layer2.0.downsample.1.running_var",
    "layer2.0.downsample.1.num_batches_tracked",
    "layer2.1.conv1.weight",
    "layer2.1.bn1.weight",
    "layer2.1.bn1.bias",
    "layer2.1.bn1.running_mean",
    "layer2.1.bn1.running_var",
    "layer2.1.bn1.num_batches_tracked",
    "layer2.1.conv2.weight",
    "layer2.1.bn2.weight",
    "layer2.1.bn2.bias",
    "layer2.1.bn2.running_mean",
    "layer2.1.bn2.running_var",
    "layer2.1.bn2.num_batches_tracked",
    "layer3.0.conv1.weight",
    "layer3.0.bn1.weight",
    "layer3.0.bn1.bias",
    "layer3.0.bn1.running_mean",
    "layer3.0.bn1.running_var",
    "layer3.0.bn1.num_batches_tracked",
    "layer3.0.conv2.weight",
    "layer3.0.bn2.weight",
    "layer3.0.bn2.bias",
    "layer3.0.bn2.running_mean",
    "layer3.0.bn2.running_var",
    "layer3.0.bn2.num_batches_tracked",
    "layer3.0.downsample.0.weight",
    "layer3.0.downsample.1.weight",
    "layer3.0.downsample.1.bias",
    "layer3.0.downsample.1.running_mean",
    "layer3.0.downsample.1.running_var",
    "layer3.0.downsample.1.num_batches_tracked",
    "layer3.1.conv1.weight",
    "layer3.1.bn1.weight",
    "layer3.1.bn1.bias",
    "layer3.1.bn1.running_mean",
    "layer3.1.bn1.running_var",
    "layer3.1.bn1.num_batches_tracked",
    "layer3.1.conv2.weight",
    "layer3.1.bn2.weight",
    "layer3.1.bn2.bias",
    "layer3.1.bn2.running_mean",
    "layer3.1.bn2.running_var",
    "layer3.1.bn2.num_batches_tracked",
    "layer4.0.conv1.weight",
    "layer4.0.bn1.weight",
    "layer4.0.bn1.bias",
    "layer4.0.bn1.running_mean",
    "layer4.0.bn1.running_var",
    "layer4.0.bn1.num_batches_tracked",
    "layer4.0.conv2.weight",
    "layer4.0.bn2.weight",
    "layer4.0.bn2.bias",
    "layer4.0.bn2.running_mean",
    "layer4.0.bn2.running_var",
    "layer4.0.bn2.num_batches_tracked",
    "layer4.0.downsample.0.weight",
    "layer4.0.downsample.1.weight",
    "layer4.0.downsample.1.bias",
    "layer4.0.downsample.1.running_mean",
    "layer4.0.downsample.1.running_var",
    "layer4.0.downsample.1.num_batches_tracked",
    "layer4.1.conv1.weight",
    "layer4.1.bn1.weight",
    "layer4.1.bn1.bias",
    "layer4.1.bn1.running_mean",
    "layer4.1.bn1.running_var",
    "layer4.1.bn1.num_batches_tracked",
    "layer4.1.conv2.weight",
    "layer4.1.bn2.weight",
    "layer4.1.bn2.bias",
    "layer4.1.bn2.running_mean",
    "layer4.1.bn2.running_var",
    "layer4.1.bn2.num_batches_tracked",
    "fc.weight",
    "fc.bias",
]


def test_state_dict_has_torchvision_names():
    expected = [k for k in TORCHVISION_RESNET18_KEYS if not k.startswith("fc.")]  # ACT reads layer4, no fc
    assert list(ResNet18().state_dict()) == expected
    frozen = [
        k for k in expected if not k.endswith("num_batches_tracked")
    ]  # as torchvision's FrozenBatchNorm2d
    assert list(ResNet18(frozen_batchnorm=True).state_dict()) == frozen
    with_film = ResNet18(film_cond_dim=4, film_blocks=["layer2.1"])
    assert list(with_film.torchvision_state_dict()) == expected
    assert sorted(set(with_film.state_dict()) - set(expected)) == [
        "film.layer2_1.to_gamma_beta.bias",
        "film.layer2_1.to_gamma_beta.weight",
    ]


def test_feature_map_size_and_torchvision_shapes():
    model = ResNet18()
    assert tuple(model.state_dict()["layer3.0.downsample.0.weight"].shape) == (256, 128, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == 11_689_512 - (512 * 1000 + 1000)  # resnet18 minus fc
    small = ResNet18(width=8).eval()
    assert small(torch.zeros(1, 3, 480, 640)).shape == (1, 64, 15, 20)  # 480x640 -> 15x20, as ACT's


def test_film_is_identity_at_init():
    torch.manual_seed(0)
    plain = ResNet18(width=8).eval()
    film = ResNet18(
        width=8, film_cond_dim=3, film_blocks=[f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    )
    film.load_state_dict(plain.state_dict(), strict=False)
    film.eval()
    x = torch.randn(2, 3, 64, 64)
    cond = torch.randn(2, 3)
    assert torch.equal(film(x, cond), plain(x))
    with torch.no_grad():  # once the FiLM weights move, the condition changes the features
        film.film["layer3_0"].to_gamma_beta.weight.fill_(0.5)
    assert not torch.allclose(film(x, cond), plain(x))
    with pytest.raises(ValueError, match="forward needs cond"):
        film(x)


def test_frozen_batchnorm_matches_batchnorm_in_eval_and_does_not_train():
    torch.manual_seed(0)
    regular = ResNet18(width=8)
    with torch.no_grad():
        for module in regular.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    frozen = ResNet18(width=8, frozen_batchnorm=True)
    frozen.load_state_dict(regular.state_dict())  # num_batches_tracked is dropped
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(frozen(x), regular.eval()(x), rtol=1e-4, atol=1e-5)
    trainable = {n for n, _ in frozen.named_parameters()}
    assert not any(".bn" in n or "bn1" in n or "downsample.1" in n for n in trainable)


def test_loads_a_local_torchvision_file(tmp_path):
    torch.manual_seed(1)
    source = ResNet18()
    state = {**source.state_dict(), "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "resnet18.pth")
    target = ResNet18(frozen_batchnorm=True, film_cond_dim=2, film_blocks=["layer1.0"])
    load_torchvision_resnet18(target, tmp_path / "resnet18.pth")
    assert torch.equal(
        target.state_dict()["layer4.1.conv2.weight"], source.state_dict()["layer4.1.conv2.weight"]
    )
    assert (
        torch.count_nonzero(target.film["layer1_0"].to_gamma_beta.weight) == 0
    )  # FiLM keeps its identity init
    del state["layer2.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(
        ValueError, match=r"missing \['layer2.0.conv1.weight'\], unexpected \['extra.weight'\]"
    ):
        load_torchvision_resnet18(ResNet18(), tmp_path / "broken.pth")
    with pytest.raises(FileNotFoundError, match=r"nothing\.pth does not exist"):
        load_torchvision_resnet18(ResNet18(), tmp_path / "nothing.pth")
