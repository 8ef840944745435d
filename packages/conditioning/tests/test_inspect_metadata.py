"""inspect reads the injection scheme a checkpoint's safetensors metadata names (issue 19): a WanActionController
holds every injection head, but only the one of its ``injection_type`` is used, at its ``inject_layers``."""

import json

import pytest
import torch
from safetensors.torch import save_file

from kinema.conditioning import inspect_checkpoint
from kinema.conditioning.cli import main

C = 8  # hidden size


def controller_file(path, metadata, o_proj_scale=0.0, scales=(0.0, 0.5, 0.0)):
    """A WanActionController-style state dict: all three heads, random except the cross-attention output."""
    torch.manual_seed(0)
    weights = {name: torch.randn(C, C) for name in ("q_proj", "k_proj", "v_proj", "action_to_residual")}
    weights = {f"{name}.weight": w for name, w in weights.items()}
    weights["o_proj.weight"] = torch.randn(C, C) * o_proj_scale
    weights["action_to_tmod.weight"] = torch.randn(6 * C, C)
    weights["output_scale"] = torch.tensor(scales)
    weights["action_encoder.weight"] = torch.randn(C, 16)
    save_file(weights, str(path), metadata=metadata)
    return path


def test_only_the_injector_of_the_saved_injection_type_is_reported(tmp_path, capsys):
    metadata = {"injection_type": "cross_attn_frame", "inject_layers": "[0, 2]", "action_window": "0"}
    path = controller_file(tmp_path / "ctrl.safetensors", metadata)
    (report,) = inspect_checkpoint(path)
    assert report.kind == "cross_attn" and report.norms["value_path"] == 0.0
    assert report.output_scales == [0.0, 0.0] and report.layers == [0, 2]  # layer 1's 0.5 is never applied
    assert not report.active
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "1 injector(s), 1 inactive" in out and "injection_type=cross_attn_frame" in out


@pytest.mark.parametrize(
    ("injection_type", "kind"), [("adaln_tmod", "adaln_tmod"), ("add_residual", "residual")]
)
def test_each_injection_type_selects_its_head(tmp_path, injection_type, kind):
    metadata = {"injection_type": injection_type, "inject_layers": json.dumps([1])}
    (report,) = inspect_checkpoint(controller_file(tmp_path / "c.safetensors", metadata))
    assert report.kind == kind and report.output_scales == [0.5] and report.active


def test_an_unknown_injection_type_is_named(tmp_path):
    path = controller_file(tmp_path / "c.safetensors", {"injection_type": "telepathy"})
    with pytest.raises(ValueError, match=r"injection_type='telepathy'.*cross_attn_frame"):
        inspect_checkpoint(path)


def test_without_metadata_every_head_is_reported(tmp_path):
    kinds = sorted(r.kind for r in inspect_checkpoint(controller_file(tmp_path / "c.safetensors", None)))
    assert kinds == ["adaln_tmod", "cross_attn", "residual"]
