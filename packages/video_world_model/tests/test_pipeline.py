import json

import numpy as np
import pytest
import torch

from kinema.robot_data import probe_video, read_video_frames
from kinema.video_world_model import ModelFileError, load_controller, load_pipeline, load_wan_components
from kinema.video_world_model.cli import main
from kinema.video_world_model.modeling import encode_video
from kinema.video_world_model.testing import write_tiny_controller, write_tiny_wan

SIZE = {"height": 64, "width": 64}


def test_first_frame_latent_is_exactly_clean_at_every_step(tiny_wan_dir, controller_dir, image):
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    seen = []
    out = pipe(
        "a drone flies over hills", image, np.ones((2, 8)), np.full((2, 8), 0.3), **SIZE, num_frames=9,
        num_inference_steps=3, guidance_scale=2.0, output_type="latent",
        step_callback=lambda step, latents: seen.append(latents.clone()),
    )  # fmt: skip
    clean = encode_video(pipe.vae, pipe.video_processor.preprocess(image, **SIZE).unsqueeze(2))
    assert len(seen) == 3
    for latents in seen:
        assert torch.equal(latents[:, :, :1], clean)
        assert not torch.equal(latents[:, :, 1:2], clean)  # the other frames are being denoised
    assert torch.equal(out.frames[:, :, :1], clean)


def test_actions_steer_and_zero_scale_controller_changes_nothing(tiny_wan_dir, tmp_path, image):
    def generate(controller, magnitude):
        pipe = load_pipeline(tiny_wan_dir, controller, torch_dtype=torch.float32)
        generator = torch.Generator().manual_seed(0)
        return pipe(
            "a drone", image, None if controller is None else np.ones((2, 8)),
            None if controller is None else np.full((2, 8), magnitude), **SIZE, num_frames=9,
            num_inference_steps=2, guidance_scale=1.0, generator=generator, output_type="latent",
        ).frames  # fmt: skip

    plain = generate(None, 0.0)
    zero = write_tiny_controller(tmp_path / "zero", scale=0.0)
    live = write_tiny_controller(tmp_path / "live", scale=0.5)
    assert torch.equal(generate(zero, 0.5), plain)
    assert not torch.allclose(generate(live, 0.5), generate(live, 0.0))


def test_action_guidance_runs_the_zero_action_branch(tiny_wan_dir, controller_dir, image):
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    calls = []
    forward = pipe.action_model.forward

    def counting(*args, **kwargs):
        calls.append(args[3] if len(args) > 3 else kwargs.get("action_binary"))
        return forward(*args, **kwargs)

    pipe.action_model.forward = counting
    pipe("a drone", image, np.ones((2, 8)), np.ones((2, 8)), **SIZE, num_frames=9, num_inference_steps=1,
         guidance_scale=3.0, action_guidance_scale=2.0, output_type="latent")  # fmt: skip
    assert len(calls) == 3  # conditional, negative prompt (actions kept), zero actions
    assert calls[1] is not None and torch.equal(calls[2], torch.zeros_like(calls[0]))


def test_bad_sizes_and_actions_raise_before_model_work(tiny_wan_dir, controller_dir, image):
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    actions = np.ones((2, 8))
    with pytest.raises(ValueError, match="height: 48 is not a positive multiple of 32"):
        pipe("a", image, actions, height=48, width=64, num_frames=9)
    with pytest.raises(ValueError, match="num_frames: 10 is not 4n\\+1"):
        pipe("a", image, actions, **SIZE, num_frames=10)
    with pytest.raises(ValueError, match=r"3 action steps for 3 latent frames"):
        pipe("a", image, np.ones((3, 8)), **SIZE, num_frames=9)


def test_original_layout_loads_the_same_transformer(tiny_wan_dir, tmp_path):
    original = write_tiny_wan(tmp_path / "original", layout="original")
    with pytest.raises(ModelFileError, match="text_encoder_path"):
        load_wan_components(original, torch.float32, vae_path=original / "vae")
    components = load_wan_components(
        original, torch.float32, text_encoder_path=original / "text_encoder", vae_path=original / "vae"
    )
    reference = load_wan_components(tiny_wan_dir, torch.float32)["transformer"].state_dict()
    converted = components["transformer"].state_dict()
    assert converted.keys() == reference.keys()
    for key in reference:
        assert torch.equal(converted[key], reference[key]), key


def test_missing_files_are_named(tmp_path, tiny_wan_dir, controller_dir):
    with pytest.raises(ModelFileError, match=r"neither model_index\.json"):
        load_wan_components(tmp_path)
    with pytest.raises(ModelFileError, match=r"action_train_config.json does not exist"):
        load_controller(tmp_path)
    (controller_dir / "action_controller.safetensors").unlink()
    with pytest.raises(ModelFileError, match=r"action_controller\.safetensors does not exist"):
        load_controller(controller_dir)


def test_config_that_disagrees_with_checkpoint_is_refused(tmp_path):
    directory = write_tiny_controller(tmp_path / "c", "cross_attn_frame", qk_norm=True)
    config = json.loads((directory / "action_train_config.json").read_text())
    config["action_controller_config"]["qk_norm"] = False
    (directory / "action_train_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"unexpected keys \['k_norm.weight', 'q_norm.weight'\]"):
        load_controller(directory)
    config["action_controller_config"] |= {"qk_norm": True, "num_layers": 3, "inject_layers": [0, 1]}
    (directory / "action_train_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"output_scale has shape \(2,\), this controller expects \(3,\)"):
        load_controller(directory)
    config["action_controller_config"] |= {"num_layers": 2, "inject_layers": [0, 4]}
    (directory / "action_train_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"layers: \[4\] outside"):
        load_controller(directory)
    config["action_controller_config"] |= {"inject_layers": None, "injection_type": "adaln_tmod"}
    (directory / "action_train_config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"trained with injection_type=cross_attn_frame, but action_train_config\.json"
    ):
        load_controller(directory)
    config["action_controller_config"] |= {"injection_type": "cross_attn_frame", "inject_layers": [1]}
    (directory / "action_train_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"trained with inject_layers=\[0, 1\]"):
        load_controller(directory)


def test_cli_generate_writes_a_playable_mp4(tiny_wan_dir, controller_dir, image, tmp_path, capsys):
    first = tmp_path / "first.png"
    image.save(first)
    out = tmp_path / "video.mp4"
    args = [
        "generate", "--model_dir", str(tiny_wan_dir), "--controller", str(controller_dir), "--image", str(first),
        "--prompt", "a drone flies forward", "--actions", "forward:0.5x1,yaw_left:0.3+pitch_up:0.1x1",
        "--out", str(out), "--height", "64", "--width", "64", "--num_frames", "9", "--num_inference_steps", "2",
        "--dtype", "fp32", "--device", "cpu",
    ]  # fmt: skip
    assert main(args) == 0
    info = probe_video(out)
    assert (info.num_frames, info.height, info.width) == (9, 64, 64)
    assert read_video_frames(out).shape == (9, 64, 64, 3)
    assert main(args) == 1  # refuses to overwrite
    assert "--overwrite" in capsys.readouterr().err
    bad_actions = [*args, "--overwrite"]
    bad_actions[bad_actions.index("--actions") + 1] = "forward:0.5x3"
    assert main(bad_actions) == 1
    assert "gives 3 steps, expected 2" in capsys.readouterr().err
