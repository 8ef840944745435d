"""Loading what users have: the reference design's (DiffSynth) LoRA keys, training checkpoints' trainable.safetensors
where a controller is expected, and the reference's ``base_model_id``. Every file is written here in the exact
layout its writer uses (the reference's train_action.py, or kinema-wm train's checkpoint code)."""

import json
import re
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kinema.video_world_model import ModelFileError, load_controller, load_pipeline
from kinema.video_world_model.loading._lora import ADAPTER, add_lora, load_lora_state_dict
from kinema.video_world_model.testing import (
    TINY_TRANSFORMER,
    tiny_controller,
    tiny_transformer,
    write_tiny_controller,
)

SIZE = {"height": 64, "width": 64}
LORA_RANK = 4
STEP = "checkpoints/step-000000010"
# DiffSynth (original Wan) module names -> diffusers' WanTransformer3DModel names, written out independently of the
# code under test
ATTENTION = {"self_attn": "attn1", "cross_attn": "attn2"}
PROJECTION = {"q": "to_q", "k": "to_k", "v": "to_v", "o": "to_out.0"}
FFN = {"ffn.0": "ffn.net.0.proj", "ffn.2": "ffn.net.2"}


def diffsynth_lora(seed: int = 1) -> dict[str, torch.Tensor]:
    """lora.safetensors as the reference writes it: peft keys of DiffSynth's Wan model, adapter name kept
    (``blocks.N.self_attn.q.lora_A.default.weight``), LoRA on q,k,v,o,ffn.0,ffn.2, alpha = rank (no alpha keys)."""
    generator = torch.Generator().manual_seed(seed)
    hidden, ffn = (
        TINY_TRANSFORMER["num_attention_heads"] * TINY_TRANSFORMER["attention_head_dim"],
        TINY_TRANSFORMER["ffn_dim"],
    )
    shapes = {f"{a}.{p}": (hidden, hidden) for a in ATTENTION for p in PROJECTION} | {
        "ffn.0": (hidden, ffn),
        "ffn.2": (ffn, hidden),
    }
    state = {}
    for block in range(TINY_TRANSFORMER["num_layers"]):
        for name, (fan_in, fan_out) in shapes.items():
            state[f"blocks.{block}.{name}.lora_A.default.weight"] = torch.randn(
                LORA_RANK, fan_in, generator=generator
            )
            state[f"blocks.{block}.{name}.lora_B.default.weight"] = torch.randn(
                fan_out, LORA_RANK, generator=generator
            )
    return state


def diffusers_module_name(diffsynth_key: str) -> str:
    """``blocks.0.self_attn.q.lora_A.default.weight`` -> ``blocks.0.attn1.to_q``."""
    block, rest = re.match(r"(blocks\.\d+)\.(.+)\.lora_[AB]\.default\.weight", diffsynth_key).groups()
    if rest in FFN:
        return f"{block}.{FFN[rest]}"
    attention, projection = rest.split(".")
    return f"{block}.{ATTENTION[attention]}.{PROJECTION[projection]}"


def reference_run(root, lora: bool = True, base_model_id: str = "Wan-AI/Wan2.2-TI2V-5B", scale: float = 0.5):
    """An output folder of the reference's train_action.py: action_train_config.json, action_controller.safetensors
    (the whole controller state dict), lora.safetensors and one checkpoint whose trainable.safetensors holds the
    trainable weights with ``pipe.action_controller.`` removed (the LoRA keys keep ``pipe.dit.``)."""
    controller = tiny_controller("cross_attn_frame", seed=3)
    with torch.no_grad():
        controller.output_scale.fill_(scale)
    arguments = {k: v for k, v in controller.config.items() if not k.startswith("_")}
    preset_keys = "action_dim hidden_size num_heads num_latent_frames num_layers inject_layers qk_norm"
    lora_config = {"lora_target_modules": "q,k,v,o,ffn.0,ffn.2", "lora_rank": LORA_RANK}
    config = {
        "base_model_id": base_model_id,
        # the reference writes its preset plus injection_type and initial_scale, and ints for the scale
        "action_controller_config": {
            k: arguments[k] for k in (*preset_keys.split(), "initial_scale", "injection_type")
        },
        "action_magnitude_scale": [100, 100, 100, 100, 1, 1, 1, 1],
        "lora": {"lora_base_model": "dit" if lora else None} | lora_config,
    }
    (root / STEP).mkdir(parents=True)
    (root / "action_train_config.json").write_text(json.dumps(config, indent=2))
    controller_state = {k: v.contiguous() for k, v in controller.state_dict().items()}
    save_file(controller_state, str(root / "action_controller.safetensors"))
    trainable = dict(controller_state)
    if lora:
        save_file(diffsynth_lora(), str(root / "lora.safetensors"))
        trainable |= {f"pipe.dit.{k}": v for k, v in diffsynth_lora().items()}
    save_file(trainable, str(root / STEP / "trainable.safetensors"))
    return root


def generate(pipe, image):
    binary, magnitude = np.ones((2, 8), np.float32), np.full((2, 8), 0.3, np.float32)
    return pipe(
        "a drone", image, binary, magnitude, **SIZE, num_frames=9, num_inference_steps=2, guidance_scale=1.0,
        generator=torch.Generator().manual_seed(0), output_type="latent",
    ).frames  # fmt: skip


# ---- DiffSynth-format LoRA ---------------------------------------------------------------------------------------
def test_diffsynth_lora_loads_every_key(tiny_wan_dir, tmp_path):
    run = reference_run(tmp_path / "run")
    pipe = load_pipeline(tiny_wan_dir, run, torch_dtype=torch.float32)
    modules = dict(pipe.transformer.named_modules())
    lora = diffsynth_lora()
    loaded = [n for n, _ in pipe.transformer.named_parameters() if ".lora_" in n]
    assert len(loaded) == len(lora)  # every tensor of the file, nothing else
    for key, value in lora.items():
        layer = modules[diffusers_module_name(key)]
        weights = layer.lora_A if ".lora_A." in key else layer.lora_B
        (adapter,) = weights.keys()
        assert torch.equal(weights[adapter].weight, value), key
    # and it acts as W + B A (alpha = rank: scale 1)
    layer, key = modules["blocks.1.attn2.to_out.0"], "blocks.1.cross_attn.o.lora_{}.default.weight"
    x = torch.randn(3, 24)
    merged = layer.base_layer.weight + lora[key.format("B")] @ lora[key.format("A")]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), x @ merged.T + layer.base_layer.bias, rtol=1e-5, atol=1e-5)


def test_training_lora_checkpoint_reads_diffsynth_keys(tmp_path):
    transformer = tiny_transformer()
    add_lora(transformer, LORA_RANK, ["to_q", "to_k", "to_v", "to_out.0", "net.0.proj", "net.2"])
    lora = diffsynth_lora()
    load_lora_state_dict(transformer, lora, "lora.safetensors")
    modules = dict(transformer.named_modules())
    for key, value in lora.items():
        layer = modules[diffusers_module_name(key)]
        weights = layer.lora_A if ".lora_A." in key else layer.lora_B
        assert torch.equal(weights[ADAPTER].weight, value), key


@pytest.mark.parametrize("damage", ["shape", "unknown_block", "no_lora"])
def test_bad_lora_files_are_named(tiny_wan_dir, tmp_path, damage):
    run = reference_run(tmp_path / "run")
    lora = diffsynth_lora()
    if damage == "shape":
        lora["blocks.0.self_attn.q.lora_A.default.weight"] = torch.zeros(LORA_RANK, 20)
    elif damage == "unknown_block":
        lora["blocks.7.self_attn.q.lora_A.default.weight"] = torch.zeros(LORA_RANK, 24)
        lora["blocks.7.self_attn.q.lora_B.default.weight"] = torch.zeros(24, LORA_RANK)
    else:
        lora = {"blocks.0.self_attn.q.weight": torch.zeros(24, 24)}
    save_file(lora, str(run / "lora.safetensors"))
    with pytest.raises(ValueError, match=re.escape(str(run / "lora.safetensors"))):
        load_pipeline(tiny_wan_dir, run, torch_dtype=torch.float32)


# ---- trainable.safetensors where a controller is expected ---------------------------------------------------------
def test_reference_checkpoint_loads_like_its_output_folder(tiny_wan_dir, tmp_path, image):
    run = reference_run(tmp_path / "run")
    expected = generate(load_pipeline(tiny_wan_dir, run, torch_dtype=torch.float32), image)
    for source in (run / STEP, run / STEP / "trainable.safetensors"):
        assert torch.equal(
            generate(load_pipeline(tiny_wan_dir, source, torch_dtype=torch.float32), image), expected
        )


def test_kinema_checkpoint_loads_like_its_output_folder(tmp_path):
    """kinema-wm train's trainable.safetensors holds only parameters that train: the heads an injection type never
    uses are frozen and absent."""
    run = write_tiny_controller(tmp_path / "run", "cross_attn_frame", scale=0.5)
    exported, config = load_controller(run)
    trainable = {n: p.detach().contiguous() for n, p in exported.named_parameters() if p.requires_grad}
    assert "q_proj.weight" not in trainable  # unused by cross_attn_frame without a window
    (run / STEP).mkdir(parents=True)
    save_file(trainable, str(run / STEP / "trainable.safetensors"))
    controller, step_config = load_controller(run / STEP)
    assert step_config == config
    for name, value in trainable.items():
        assert torch.equal(controller.state_dict()[name], value), name
    x, binary, magnitude = torch.randn(1, 16, 24), torch.ones(1, 3, 8), torch.rand(1, 3, 8)
    with torch.no_grad():
        for layer in range(2):
            assert torch.equal(
                controller(x, binary, magnitude, 4, 2, 2, layer),
                exported(x, binary, magnitude, 4, 2, 2, layer),
            )


def test_trainable_safetensors_as_a_training_controller_checkpoint(tmp_path):
    """kinema-wm train --action_controller_checkpoint loads with load_reference_state_dict: a checkpoint's
    trainable.safetensors (controller + LoRA keys) is accepted, and the LoRA keys it leaves to --lora_checkpoint
    are named in a warning."""
    run = reference_run(tmp_path / "run")
    from safetensors.torch import load_file

    state = load_file(str(run / STEP / "trainable.safetensors"))
    controller = tiny_controller("cross_attn_frame", seed=9)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        controller.load_reference_state_dict(state)
    assert any("LoRA" in str(w.message) and "lora_checkpoint" in str(w.message) for w in caught)
    for key, value in load_file(str(run / "action_controller.safetensors")).items():
        assert torch.equal(controller.state_dict()[key], value), key


def test_checkpoint_without_a_config_names_where_it_looked(tmp_path):
    run = reference_run(tmp_path / "run")
    (run / "action_train_config.json").unlink()
    with pytest.raises(ModelFileError, match=r"action_train_config\.json") as error:
        load_controller(run / STEP)
    message = str(error.value)  # both places a config may be: beside the checkpoint and in its run's folder
    assert (
        str(run / STEP / "action_train_config.json") in message
        and str(run / "action_train_config.json") in message
    )


# ---- base_model_id -------------------------------------------------------------------------------------------------
def test_reference_base_model_id_names_the_model(tiny_wan_dir, tmp_path, image):
    hub = reference_run(tmp_path / "hub", lora=False)
    with pytest.raises(ModelFileError, match=r"base_model_id 'Wan-AI/Wan2\.2-TI2V-5B'.*model_dir"):
        load_pipeline(None, hub, torch_dtype=torch.float32)
    local = reference_run(tmp_path / "local", lora=False, base_model_id=str(tiny_wan_dir))
    expected = generate(load_pipeline(tiny_wan_dir, local, torch_dtype=torch.float32), image)
    assert torch.equal(generate(load_pipeline(None, local, torch_dtype=torch.float32), image), expected)
    own = write_tiny_controller(tmp_path / "own")  # kinema writes base_model
    config = json.loads((own / "action_train_config.json").read_text())
    (own / "action_train_config.json").write_text(json.dumps(config | {"base_model": str(tiny_wan_dir)}))
    expected = generate(load_pipeline(tiny_wan_dir, own, torch_dtype=torch.float32), image)
    assert torch.equal(generate(load_pipeline(None, own, torch_dtype=torch.float32), image), expected)


def test_merge_lora_reads_diffsynth_keys(tiny_wan_dir, tmp_path):
    """kinema-wm merge-lora on the reference's lora.safetensors: W + B A in every targeted layer."""
    from kinema.video_world_model import load_wan_components
    from kinema.video_world_model.cli import main

    lora = diffsynth_lora()
    save_file(lora, tmp_path / "lora.safetensors")
    merged = tmp_path / "merged"
    args = ["merge-lora", "--model_dir", str(tiny_wan_dir), "--lora_path", str(tmp_path / "lora.safetensors"),
            "--output_dir", str(merged), "--dtype", "fp32"]  # fmt: skip
    assert main(args) == 0
    base = load_wan_components(tiny_wan_dir, torch.float32)["transformer"].state_dict()
    fused = load_wan_components(merged, torch.float32)["transformer"].state_dict()
    for key in [k for k in lora if ".lora_A." in k]:
        name = diffusers_module_name(key) + ".weight"
        expected = base[name] + lora[key.replace("lora_A", "lora_B")] @ lora[key]
        torch.testing.assert_close(fused[name], expected, rtol=1e-5, atol=1e-5)
