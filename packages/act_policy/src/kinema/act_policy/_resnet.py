"""ResNet18 with torchvision's parameter names, frozen-BatchNorm option and FiLM hooks inside the stages.

torchvision cannot be installed beside kinema's CPU torch, and FiLM needs hooks inside the residual blocks, so
the network is written here. Every parameter and buffer has torchvision's name (``conv1.weight``,
``layer2.0.downsample.1.running_var``, ...), so torchvision's ImageNet state dict loads as is (its ``fc.*``
keys are not used: ACT reads the layer4 feature map). FiLM modules live under ``film.<layerN_block>``, outside
torchvision's names.

Shapes: x (B, 3, H, W) -> layer4 feature map (B, 512, ceil(H/32), ceil(W/32)); cond (B, Dc).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from kinema.conditioning import FiLM

BLOCK_NAMES = tuple(f"layer{stage}.{block}" for stage in range(1, 5) for block in range(2))  # 8 BasicBlocks


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters (buffers, never trained), as torchvision's.

    Loads a regular BatchNorm2d state dict (its ``num_batches_tracked`` is dropped).
    """

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()  # (C,)
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock; ``film`` (when given) modulates the second BN's output before the residual add."""

    def __init__(self, inplanes: int, planes: int, stride: int, norm: type[nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), norm(planes))

    def forward(
        self, x: torch.Tensor, film: FiLM | None = None, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if film is not None:
            out = film(out, cond)  # (1 + delta) * out + beta: identity at init
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """The convolutional trunk of torchvision's ``resnet18`` (no avgpool / fc), returning layer4's feature map.

    - ``frozen_batchnorm``: :class:`FrozenBatchNorm2d` everywhere (ACT's choice with ImageNet weights).
    - ``film_cond_dim`` / ``film_blocks``: FiLM (kinema.conditioning) in the named blocks (see
      :data:`BLOCK_NAMES`), conditioned on a (B, film_cond_dim) vector passed to ``forward``.
    - ``width``: channels of the first stage (64 is resnet18; the stages have width, 2, 4 and 8 x width). Only
      64 loads torchvision's weights; smaller widths make tiny test models.
    - ``in_channels``: 3 (RGB), or more for extra input planes (ACT's target heat map); the first
      convolution's weights for the planes past RGB start at zero, so the network is the RGB one at init.
    """

    def __init__(
        self,
        frozen_batchnorm: bool = False,
        film_cond_dim: int | None = None,
        film_blocks: Iterable[str] = (),
        width: int = 64,
        in_channels: int = 3,
    ):
        super().__init__()
        if in_channels < 3:
            raise ValueError(f"in_channels: expected >= 3 (RGB first), got {in_channels}")
        norm = FrozenBatchNorm2d if frozen_batchnorm else nn.BatchNorm2d
        self.frozen_batchnorm = frozen_batchnorm
        self.width = width
        widths = (width, 2 * width, 4 * width, 8 * width)
        self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes = width
        for stage, planes in enumerate(widths, start=1):
            stride = 1 if stage == 1 else 2
            blocks = [BasicBlock(inplanes, planes, stride, norm), BasicBlock(planes, planes, 1, norm)]
            self.add_module(f"layer{stage}", nn.Sequential(*blocks))
            inplanes = planes
        self.num_channels = inplanes
        # torchvision's init: He (fan_out) for convolutions, BN weight 1 / bias 0.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():  # zero-init of the extra input planes: the RGB network at init
            self.conv1.weight[:, 3:] = 0
        film_blocks = tuple(film_blocks)
        unknown = [b for b in film_blocks if b not in BLOCK_NAMES]
        if unknown:
            raise ValueError(f"film_blocks: unknown blocks {unknown}; expected some of {list(BLOCK_NAMES)}")
        if film_blocks and film_cond_dim is None:
            raise ValueError("film_cond_dim: FiLM blocks need the width of their condition")
        self.film = nn.ModuleDict(
            {
                name.replace(".", "_"): FiLM(film_cond_dim, widths[int(name[5]) - 1], channel_dim=1)
                for name in film_blocks
            }
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, in_channels, H, W) normalized images -> (B, 8 * width, H/32, W/32)."""
        if len(self.film) and cond is None:
            raise ValueError("cond: this ResNet18 has FiLM blocks, so forward needs cond (B, Dc)")
        films = dict(self.film.items())
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, width, H/4, W/4)
        for stage in range(1, 5):
            for index, block in enumerate(getattr(self, f"layer{stage}")):
                x = block(x, films.get(f"layer{stage}_{index}"), cond)
        return x  # (B, 8 * width, H/32, W/32)

    def torchvision_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the FiLM modules: exactly torchvision's names (minus ``fc.*``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("film.")}


def load_torchvision_resnet18(model: ResNet18, path: str | os.PathLike) -> None:
    """Loads torchvision's resnet18 weights from a local file (``.pth``/``.pt`` via ``torch.load(weights_only=True)``
    or ``.safetensors``) into ``model``. ``fc.*`` is ignored; any other missing or unexpected key is an error
    naming the keys. Nothing is downloaded."""
    path = Path(path)
    if model.width != 64:
        raise ValueError(
            f"pretrained_backbone: torchvision's resnet18 has width 64, this model {model.width}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained_backbone: {path} does not exist (a local torchvision resnet18 file)"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        from ._io import load_torch

        state = load_torch(path)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"pretrained_backbone: {path} does not hold a state dict")
    state = {
        k.removeprefix("module."): v for k, v in state.items() if not k.startswith(("fc.", "module.fc."))
    }
    extra = model.conv1.in_channels - 3
    if extra and "conv1.weight" in state and state["conv1.weight"].shape[1] == 3:
        rgb = state["conv1.weight"]  # (64, 3, 7, 7): the extra planes keep zero weights
        state["conv1.weight"] = torch.cat([rgb, rgb.new_zeros(rgb.shape[0], extra, *rgb.shape[2:])], dim=1)
    expected = set(model.torchvision_state_dict())
    if model.frozen_batchnorm:
        state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"pretrained_backbone: {path} is not a torchvision resnet18 state dict: missing {missing[:8]}"
            f"{' ...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict(state, strict=False)  # FiLM modules keep their identity init
