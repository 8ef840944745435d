"""Issue 19: inputs the caller gives are honoured or refused with an error that names them, never dropped."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from kinema.robot_data import probe_video
from kinema.video_world_model.causal._play_input import parse_keys
from kinema.video_world_model.cli import build_parser, main
from kinema.video_world_model.modeling import WanActionTransformer
from kinema.video_world_model.modeling._action_modules import ActionSequenceEncoder, MultimodalActionModule
from kinema.video_world_model.pipelines._scan import scan_actions
from kinema.video_world_model.testing import (
    TINY_ACTION_DIM,
    TINY_TRANSFORMER,
    randomize_projection,
    tiny_causal_pipeline,
    tiny_controller,
    tiny_noise,
    tiny_transformer,
    write_tiny_controller,
)

PROMPT = ["a drone flies over hills"]


# ---- 1. ActionCausalInferencePipeline: action inputs nothing reads ---------------------------------------------
def test_target_actions_without_a_sequence_module_are_refused():
    pipe = tiny_causal_pipeline(vae=False)
    randomize_projection(pipe)
    with pytest.raises(ValueError, match=r"target_actions: .*no ActionSequenceEncoder"):
        pipe.inference(tiny_noise(4), PROMPT, {"target_actions": torch.tensor([[1, 2]])}, return_latents=True)


def test_control_signals_without_a_multimodal_module_are_refused():
    pipe = tiny_causal_pipeline(vae=False)
    control = torch.randn(1, TINY_TRANSFORMER["text_dim"])
    with pytest.raises(ValueError, match=r"control_signals: .*no MultimodalActionModule"):
        pipe.inference(tiny_noise(4), PROMPT, {"control_signals": control}, return_latents=True)


def test_action_features_override_nothing_silently():
    sequence = tiny_causal_pipeline(
        action_module=ActionSequenceEncoder(action_dim=TINY_ACTION_DIM), vae=False
    )
    features = torch.randn(1, TINY_ACTION_DIM)
    with pytest.raises(ValueError, match=r"target_actions: .*action_features"):
        sequence.inference(
            tiny_noise(4),
            PROMPT,
            {"action_features": features, "target_actions": torch.tensor([[1, 2]])},
            return_latents=True,
        )
    text_dim = TINY_TRANSFORMER["text_dim"]
    module = MultimodalActionModule(visual_dim=4, text_dim=text_dim, action_dim=TINY_ACTION_DIM)
    multimodal = tiny_causal_pipeline(action_module=module, vae=False)
    with pytest.raises(ValueError, match=r"control_signals: .*action_features"):
        multimodal.inference(
            tiny_noise(4),
            PROMPT,
            {"action_features": features, "control_signals": torch.randn(1, text_dim)},
            return_latents=True,
        )


def test_an_overridden_process_action_hook_still_receives_target_actions():
    pipe = tiny_causal_pipeline(vae=False)
    seen = []

    def hook(self, generated_frames, current_frame_idx, action_inputs):
        seen.append(action_inputs["target_actions"].clone())
        return None

    pipe._process_action = hook.__get__(pipe)
    targets = torch.tensor([[3, 4]])
    pipe.inference(tiny_noise(4), PROMPT, {"target_actions": targets}, return_latents=True)
    assert len(seen) == 2 and all(torch.equal(s, targets) for s in seen)


# ---- 2 and 9. kinema-wm generate: --actions needs --controller; --fps defaults to Wan2.2's 24 -------------------
@pytest.fixture
def first_image(tmp_path):
    path = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def generate_args(model_dir, image, out, *extra):
    return ["generate", "--model_dir", str(model_dir), "--image", str(image), "--prompt", "a drone",
            "--out", str(out), "--height", "64", "--width", "64", "--num_frames", "9",
            "--num_inference_steps", "2", "--dtype", "fp32", "--device", "cpu", *extra]  # fmt: skip


def test_generate_refuses_actions_without_a_controller(tiny_wan_dir, first_image, tmp_path, capsys):
    out = tmp_path / "v.mp4"
    assert main(generate_args(tiny_wan_dir, first_image, out, "--actions", "forward:0.5x2")) == 1
    error = capsys.readouterr().err
    assert "--actions" in error and "--controller" in error
    assert main(generate_args(tiny_wan_dir, first_image, out, "--action_guidance_scale", "2")) == 1
    assert "--action_guidance_scale" in capsys.readouterr().err
    assert not out.exists()


def test_generate_without_a_controller_writes_24_fps_and_a_controller_needs_actions(
    tiny_wan_dir, first_image, tmp_path, capsys
):
    out = tmp_path / "v.mp4"
    assert main(generate_args(tiny_wan_dir, first_image, out)) == 0
    info = probe_video(out)
    assert info.num_frames == 9 and info.fps == pytest.approx(24)
    assert (
        main(generate_args(tiny_wan_dir, first_image, out, "--controller", str(tmp_path), "--overwrite")) == 1
    )
    assert "--actions" in capsys.readouterr().err


def test_generate_fps_help_names_the_model_rate():
    generate = build_parser()._subparsers._group_actions[0].choices["generate"]
    fps = next(a for a in generate._actions if a.dest == "fps")
    assert fps.default == 24 and "Wan2.2" in fps.help and "16" in fps.help


# ---- 3. WanActionTransformer: diffusers' image embeddings and attention_kwargs ---------------------------------
def video_inputs(seed=0, text_tokens=5):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(1, 4, 3, 4, 4, generator=g),
        torch.tensor([700.0]),
        torch.randn(1, text_tokens, 16, generator=g),
    )


def test_image_embeddings_go_through_the_condition_embedder_as_in_diffusers():
    # Wan2.1-I2V style: an image embedder and added K/V; diffusers' processor takes the tokens before the last 512
    # as the image context, so the text is 512 tokens long
    transformer = tiny_transformer(image_dim=8, added_kv_proj_dim=24)
    model = WanActionTransformer(transformer, tiny_controller(initial_scale=0.0))
    latents, timestep, text = video_inputs(text_tokens=512)
    image = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        (expected,) = transformer(latents, timestep, text, image, return_dict=False)
        ours = model(latents, timestep, text, encoder_hidden_states_image=image)
        without = model(latents, timestep, text, encoder_hidden_states_image=image * 0)
    assert torch.equal(ours, expected)
    assert not torch.allclose(ours, without)


def test_image_embeddings_without_an_image_embedder_are_refused():
    model = WanActionTransformer(tiny_transformer())
    latents, timestep, text = video_inputs()
    with pytest.raises(ValueError, match=r"encoder_hidden_states_image: .*image_dim"):
        model(latents, timestep, text, encoder_hidden_states_image=torch.randn(1, 3, 8))


def test_attention_kwargs_scale_the_lora_as_in_diffusers():
    from peft import LoraConfig

    transformer = tiny_transformer()
    torch.manual_seed(0)  # init_lora_weights=False: random B, so the LoRA changes the output at scale 1
    transformer.add_adapter(LoraConfig(r=2, target_modules=["to_q", "to_v"], init_lora_weights=False))
    model = WanActionTransformer(transformer)
    latents, timestep, text = video_inputs()
    with torch.no_grad():
        full = model(latents, timestep, text)
        half = model(latents, timestep, text, attention_kwargs={"scale": 0.5})
        expected = transformer(latents, timestep, text, attention_kwargs={"scale": 0.5}, return_dict=False)[0]
        after = model(latents, timestep, text)
    assert torch.equal(half, expected) and not torch.allclose(half, full)
    assert torch.equal(after, full)  # the scale is undone after the call
    with pytest.raises(ValueError, match=r"attention_kwargs: .*\['dropout'\]"):
        model(latents, timestep, text, attention_kwargs={"dropout": 0.1})
    model.enable_gradient_checkpointing()
    with pytest.raises(ValueError, match=r"attention_kwargs: .*gradient checkpointing"):
        model(latents, timestep, text, attention_kwargs={"scale": 0.5})


# ---- 4 and 5. VACE-E: --guidance_scale reaches validation; the negative branch has the negative prompt ---------
@pytest.fixture(scope="module")
def vace_e(tmp_path_factory):
    """(config, VaceEPipeline) over tiny VACE / CLIP models, with trained-looking (non-zero) injector outputs."""
    from diffusers import WanVACETransformer3DModel

    from kinema.robot_data.testing import write_vace_e_dataset
    from kinema.video_world_model.loading._wan import load_diffusers_components
    from kinema.video_world_model.vace_e import VaceEConfig
    from kinema.video_world_model.vace_e._pipeline import VaceEPipeline
    from kinema.video_world_model.vace_e._train import build_model, load_clip
    from kinema.video_world_model.vace_e.testing import write_tiny_clip, write_tiny_vace

    root = tmp_path_factory.mktemp("vace_e")
    data = write_vace_e_dataset(root / "episodes", num_frames=13, height=32, width=32)
    config = VaceEConfig(model_dir=str(write_tiny_vace(root / "vace")), clip_path=str(write_tiny_clip(root / "clip")),
                         dataset_base_path=str(root / "episodes"), task_metadata_path=str(data.metadata),
                         num_frames=13, height=32, width=32, vace_e_layers="0,2", encoder_width=32,
                         encoder_layers=1, encoder_heads=4, mixed_precision="no")  # fmt: skip
    parts = load_diffusers_components(config.model_dir, WanVACETransformer3DModel, torch.float32)
    clip, processor = load_clip(config.clip_path, torch.device("cpu"))
    model = build_model(config, parts, clip.config.hidden_size).eval()
    torch.manual_seed(0)
    with torch.no_grad():  # the zero-initialized injector outputs, as if trained: task tokens reach the video
        for injector in model.injectors.values():
            injector.o_proj.weight.normal_(0, 0.5)
    pipe = VaceEPipeline(parts["tokenizer"], parts["text_encoder"], parts["vae"], parts["scheduler"],
                         transformer=model.vace, vace_e_model=model, clip=clip, clip_processor=processor)  # fmt: skip
    return config, pipe


def test_validation_uses_the_guidance_scale(vace_e, tmp_path):
    from kinema.video_world_model.vace_e._validate import validate

    config, pipe = vace_e

    def psnr(guidance_scale):
        out = tmp_path / f"g{guidance_scale}"
        rows = validate(pipe.vace_e_model, pipe.vace_e_inputs, config, out, 1, None, 2, 0, guidance_scale)
        return rows[0]["psnr_all"]

    assert psnr(1.0) != psnr(4.0)
    assert psnr(4.0) == psnr(4.0)  # the same seed: the difference is the guidance alone


def test_cli_validate_passes_guidance_scale(monkeypatch, tmp_path):
    from kinema.video_world_model.cli import _vace_e as _cli
    from kinema.video_world_model.vace_e import _validate

    seen = {}

    def fake_validate(model, inputs, config, out_dir, *args, **kwargs):
        seen.update(args=args, kwargs=kwargs)
        (out_dir / "metrics.md").parent.mkdir(parents=True, exist_ok=True)
        (out_dir / "metrics.md").write_text("")
        return []

    monkeypatch.setattr(_validate, "validate", fake_validate)
    monkeypatch.setattr(_cli, "_saved_config", lambda args: None)
    monkeypatch.setattr(
        _cli, "_pipeline", lambda args: SimpleNamespace(vace_e_model=None, vace_e_inputs=None)
    )
    argv = ["vace-e", "validate", "--checkpoint", "ckpt", "--task_metadata_path", "meta.json", "--test_data", "test",
            "--output_dir", str(tmp_path / "report"), "--guidance_scale", "2.5"]  # fmt: skip
    assert main(argv) == 0
    assert seen["kwargs"]["guidance_scale"] == 2.5


def test_the_negative_branch_encodes_the_negative_prompt_into_the_task_tokens(vace_e):
    _, pipe = vace_e
    model = pipe.vace_e_model
    prompts = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: prompts.append(args[0].prompt_embeds))
    video = torch.zeros(3, 5, 32, 32, dtype=torch.uint8)
    mask = torch.zeros(1, 5, 32, 32, dtype=torch.bool)
    try:
        pipe("a hand pours water", video, mask, num_inference_steps=1, guidance_scale=3.0,
             negative_prompt="the sea", generator=torch.Generator().manual_seed(0), output_type="latent")  # fmt: skip
    finally:
        hook.remove()
    embed = pipe.vace_e_inputs.prompt_embeds
    positive, negative = (
        embed([p], torch.device("cpu"), torch.float32) for p in ("a hand pours water", "the sea")
    )
    assert len(prompts) == 2  # one step: the conditional, then the unconditional branch
    assert torch.equal(prompts[0], positive) and torch.equal(prompts[1], negative)


# ---- 6. kinema-conditioning inspect on a real controller file ---------------------------------------------------
@pytest.mark.parametrize(
    ("injection_type", "kind"), [("cross_attn_frame", "cross_attn"), ("adaln_tmod", "adaln_tmod")]
)
def test_inspect_lists_only_the_head_a_controller_file_uses(tmp_path, injection_type, kind):
    from kinema.conditioning import inspect_checkpoint

    directory = write_tiny_controller(tmp_path / "c", injection_type, scale=0.5, inject_layers=[1])
    (report,) = inspect_checkpoint(directory / "action_controller.safetensors")
    assert (report.kind, report.injection_type) == (kind, injection_type)
    assert report.layers == [1] and report.output_scales == [0.5]


# ---- 7. scan-actions scales magnitudes, never the binary flags ------------------------------------------------
class RecordingPipe:
    """Just what scan_actions reads of a WanActionPipeline; records the actions of each call."""

    action_controller = object()
    vae_scale_factor_temporal, vae_scale_factor_spatial = 4, 16
    transformer = SimpleNamespace(config=SimpleNamespace(in_channels=4))

    def __init__(self):
        self.calls = []

    def __call__(self, action_binary, action_magnitude, latents, output_type, **call):
        self.calls.append((action_binary.copy(), action_magnitude.copy()))
        return SimpleNamespace(frames=[np.zeros((9, 64, 64, 3), np.float32)])


def test_scan_scales_magnitudes_and_keeps_the_flags_binary():
    pipe = RecordingPipe()
    binary = np.zeros((2, 8), np.float32)
    binary[:, 0] = 1.0
    magnitude = binary * 0.4
    scan_actions(pipe, None, "a drone", binary, magnitude, [0, 0.5, 2], height=64, width=64, num_frames=9)
    (b0, m0), (b_half, m_half), (b2, m2) = pipe.calls
    assert not b0.any() and not m0.any()  # scale 0: no action at all
    assert np.array_equal(b_half, binary) and np.array_equal(b2, binary)  # a flag is 0 or 1, never 2
    assert np.allclose(m_half, magnitude * 0.5) and np.allclose(m2, magnitude * 2)
    with pytest.raises(ValueError, match=r"scales: .*negative"):
        scan_actions(pipe, None, "a drone", binary, magnitude, [-1], height=64, width=64, num_frames=9)


# ---- 8. kinema-wm play: escape sequences are consumed whole -----------------------------------------------------
def test_unknown_escape_sequences_are_ignored_whole():
    ctrl_left, ctrl_right, f5, alt_w = "\x1b[1;5D", "\x1b[1;5C", "\x1b[15~", "\x1bw"
    assert parse_keys(ctrl_left + ctrl_right + f5) == []
    assert parse_keys("w" + ctrl_left + "a" + alt_w + "\x1b[D") == ["forward", "left", "yaw_left"]
    # a sequence cut short at the end of what was read is dropped, not read as keys
    assert parse_keys("d\x1b[1;5") == ["right"]
    assert parse_keys("\x1b") == []
    assert parse_keys("\x1bOD\x1bOP") == ["yaw_left"]  # SS3: application-mode Left, then F1 (ignored)
