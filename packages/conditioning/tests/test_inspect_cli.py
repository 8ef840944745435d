import json

import pytest
import torch
from safetensors.torch import save_file

from kinema.conditioning import AdaLNZero, FiLM, PerFrameCrossAttention, inspect_checkpoint
from kinema.conditioning.cli import main


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    weights = {}
    used = AdaLNZero(4, 8)
    with torch.no_grad():
        used.adaLN_modulation[1].weight[16:24] = 1.0  # gate_attn rows: norm sqrt(8 * 4) = 5.657
    weights |= {f"blocks.0.{k}": v for k, v in used.state_dict().items()}
    weights |= {f"blocks.1.{k}": v for k, v in AdaLNZero(4, 8).state_dict().items()}  # still zero: unused
    attn = PerFrameCrossAttention(8, 4, 2, initial_scale=0.25)
    weights |= {f"ctrl.{k}": v for k, v in attn.state_dict().items()}
    weights |= {f"film.{k}": v for k, v in FiLM(4, 8).state_dict().items()}
    weights["ctrl.output_scale"] = torch.tensor([0.25, 0.0, 0.5])  # a per-layer scale vector
    weights["backbone.linear.weight"] = torch.randn(3, 3)
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
    return path, attn


def test_inspect_finds_injectors_and_norms(checkpoint):
    path, attn = checkpoint
    reports = {r.name: r for r in inspect_checkpoint(path)}
    assert set(reports) == {"blocks.0", "blocks.1", "ctrl", "film"}
    used, unused = reports["blocks.0"], reports["blocks.1"]
    assert used.kind == "adaln_zero" and used.norms["gate_attn"] == pytest.approx(32**0.5)
    assert used.norms["shift_attn"] == 0.0 and used.active
    assert not unused.active and max(unused.norms.values()) == 0.0
    ctrl = reports["ctrl"]
    expected = torch.linalg.matrix_norm(attn.o_proj.weight @ attn.v_proj.weight).item()
    assert ctrl.kind == "cross_attn" and ctrl.norms["value_path"] == pytest.approx(expected, rel=1e-5)
    assert ctrl.output_scales == [0.25, 0.0, 0.5]
    assert ctrl.contribution == pytest.approx(expected * 0.5, rel=1e-5)
    assert reports["film"].kind == "film" and not reports["film"].active


def test_cli_inspect_prints_table_and_writes_json(checkpoint, tmp_path, capsys):
    path, _ = checkpoint
    report = tmp_path / "out" / "report.json"
    assert main(["inspect", str(path), "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert "blocks.1" in out and "inactive" in out and "4 injector(s), 2 inactive" in out
    rows = {r["name"]: r for r in json.loads(report.read_text())}
    assert rows["blocks.0"]["active"] is True and rows["film"]["active"] is False


def test_cli_errors(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.safetensors")]) == 1
    assert "no file at" in capsys.readouterr().err
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    assert main(["inspect", str(broken)]) == 1
    assert "not a readable safetensors file" in capsys.readouterr().err
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    assert main(["inspect", str(plain)]) == 1
    assert "no injector parameters" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["frobnicate"])
    assert usage.value.code == 2
