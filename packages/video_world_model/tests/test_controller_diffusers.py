"""The controller as a diffusers model: save_pretrained / from_pretrained, a pipeline component, CPU offload, and
the magnitude contract (raw magnitudes in, the controller scales them)."""

import json
import warnings

import numpy as np
import pytest
import torch
from accelerate import cpu_offload
from diffusers import ConfigMixin, ModelMixin

from kinema.video_world_model import (
    WanActionController,
    WanActionPipeline,
    load_controller,
    load_pipeline,
)
from kinema.video_world_model.testing import tiny_controller, write_tiny_controller

SIZE = {"height": 64, "width": 64}
DRONE_SCALE = np.array([100.0] * 4 + [1.0] * 4, np.float32)


def actions(forward: float = 0.5, yaw: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Two action steps (num_frames 9) of raw magnitudes: forward (scale 100) and yaw left (scale 1)."""
    binary, magnitude = np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)
    binary[:, [0, 4]] = 1.0
    magnitude[:, 0], magnitude[:, 4] = forward, yaw
    return binary, magnitude


def generate(pipe, image, output_type="latent", magnitude=None, **call):
    binary, raw = actions()
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a drone flies over hills", image, binary, raw if magnitude is None else magnitude, **SIZE, num_frames=9,
        num_inference_steps=2, guidance_scale=2.0, generator=generator, output_type=output_type, **call,
    ).frames  # fmt: skip


def public(config) -> dict:
    return {k: v for k, v in dict(config).items() if not k.startswith("_")}


# ---- 1. a diffusers model, saved and loaded with the pipeline ---------------------------------------------------
def test_controller_save_pretrained_round_trip(tmp_path):
    controller = tiny_controller(
        "cross_attn_frame", action_window=1, inject_layers=[1], magnitude_scale=[50.0] * 4 + [2.0] * 4
    )
    with torch.no_grad():
        controller.output_scale.fill_(0.5)
    assert isinstance(controller, ModelMixin) and isinstance(controller, ConfigMixin)
    controller.save_pretrained(tmp_path / "c")
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    loaded = WanActionController.from_pretrained(tmp_path / "c")
    assert public(loaded.config) == public(controller.config)
    assert public(loaded.config)["inject_layers"] == [1]
    assert loaded.magnitude_scale.tolist() == [50.0] * 4 + [2.0] * 4  # a buffer rebuilt from the config
    assert loaded.state_dict().keys() == controller.state_dict().keys()
    for key, value in controller.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x, binary, magnitude = torch.randn(1, 16, 24), torch.ones(1, 3, 8), torch.rand(1, 3, 8)
    with torch.no_grad():
        assert torch.equal(
            loaded(x, binary, magnitude, 4, 2, 2, 1), controller(x, binary, magnitude, 4, 2, 2, 1)
        )


def test_controller_from_pretrained_reads_controller_directories(tmp_path):
    """kinema-wm train's (and the reference's) layout: action_train_config.json + action_controller.safetensors."""
    directory = write_tiny_controller(tmp_path / "ctrl", "add_residual")
    expected, _ = load_controller(directory)
    loaded = WanActionController.from_pretrained(directory)
    assert public(loaded.config) == public(expected.config)
    for key, value in expected.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


@pytest.mark.parametrize("injection_type", ["cross_attn_frame", "adaln_tmod"])
def test_pipeline_save_pretrained_round_trips_the_controller(tiny_wan_dir, tmp_path, image, injection_type):
    pipe = load_pipeline(
        tiny_wan_dir, write_tiny_controller(tmp_path / "ctrl", injection_type), torch_dtype=torch.float32
    )
    before = generate(pipe, image)
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["action_controller"] == [
        "kinema.video_world_model.modeling._controller",
        "WanActionController",
    ]
    assert (tmp_path / "saved" / "action_controller" / "diffusion_pytorch_model.safetensors").is_file()

    reloaded = WanActionPipeline.from_pretrained(tmp_path / "saved")
    assert isinstance(reloaded.action_controller, WanActionController)
    assert reloaded.action_model.controller is reloaded.action_controller
    assert public(reloaded.action_controller.config) == public(pipe.action_controller.config)
    assert torch.equal(generate(reloaded, image), before)
    # kinema's own loader reads the saved pipeline, controller included, and its controller folder alone
    assert torch.equal(generate(load_pipeline(tmp_path / "saved", torch_dtype=torch.float32), image), before)
    alone, _ = load_controller(tmp_path / "saved" / "action_controller")
    for key, value in pipe.action_controller.state_dict().items():
        assert torch.equal(alone.state_dict()[key], value), key


def test_a_pipeline_saved_by_0_5_names_the_old_module_and_still_loads(
    tiny_wan_dir, controller_dir, tmp_path, image
):
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    pipe.save_pretrained(tmp_path / "saved")
    index_file = tmp_path / "saved" / "model_index.json"
    index = json.loads(index_file.read_text())
    index["action_controller"] = [
        "kinema.video_world_model._controller",
        "WanActionController",
    ]  # 0.5 wrote this
    index_file.write_text(json.dumps(index))
    reloaded = WanActionPipeline.from_pretrained(tmp_path / "saved")
    assert isinstance(reloaded.action_controller, WanActionController)
    assert torch.equal(generate(reloaded, image), generate(pipe, image))


def test_save_pretrained_refuses_an_unfused_lora(tiny_wan_dir, controller_dir, tmp_path):
    """diffusers would write peft's wrapped keys (``to_q.base_layer.weight``) and from_pretrained would then
    initialize the base weights at random, silently."""
    from kinema.video_world_model.loading._lora import add_lora

    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    add_lora(pipe.transformer, 4, ["to_q"])
    with pytest.raises(ValueError, match=r"LoRA.*fuse_lora"):
        pipe.save_pretrained(tmp_path / "saved")
    assert not (tmp_path / "saved").exists()


def test_assigning_a_controller_steers_the_pipeline(tiny_wan_dir, tmp_path, image):
    live = load_controller(write_tiny_controller(tmp_path / "live", scale=0.5))[0]
    pipe = load_pipeline(tiny_wan_dir, torch_dtype=torch.float32)
    with pytest.raises(ValueError, match="no action controller"):
        generate(pipe, image)
    pipe.action_controller = live
    assert pipe.action_model.controller is live
    assert pipe.components["action_controller"] is live
    expected = generate(load_pipeline(tiny_wan_dir, tmp_path / "live", torch_dtype=torch.float32), image)
    assert torch.equal(generate(pipe, image), expected)


# ---- 2. CPU offload ---------------------------------------------------------------------------------------------
def test_sequential_cpu_offload_gives_the_same_video(tiny_wan_dir, controller_dir, image):
    """Sequential offload keeps the weights on the meta device and materializes them at each module's call, so on
    the CPU too a weight used outside a hooked forward (or an input sent to the meta device) fails."""
    expected = generate(load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32), image, "np")
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    # enable_sequential_cpu_offload(device="cpu") executes on "cpu:0", where accelerate 1.16 cannot put a weight back
    # on the meta device (it has become a plain Tensor), so this runs that method's loop with device "cpu"; the CUDA
    # test below calls the method itself
    for model in pipe.components.values():
        if isinstance(model, torch.nn.Module):
            cpu_offload(model, torch.device("cpu"), offload_buffers=len(model._parameters) > 0)
    assert pipe.transformer.scale_shift_table.device.type == "meta"
    assert pipe.action_controller.output_scale.device.type == "meta"
    np.testing.assert_array_equal(generate(pipe, image, "np"), expected)


def test_model_cpu_offload_onloads_each_model_before_it_runs(tiny_wan_dir, controller_dir, image):
    """With the CPU as the execution device nothing moves, so this checks the mechanics: accelerate's offload hook
    of each model fires before the model's weights are used (the CUDA test below checks the real thing)."""
    expected = generate(load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32), image)
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    pipe.enable_model_cpu_offload(device="cpu")
    events = []
    for name in ("text_encoder", "vae", "transformer", "action_controller"):
        hook = getattr(pipe, name)._hf_hook

        def spy(module, *args, _name=name, _original=hook.pre_forward, **kwargs):
            events.append(("onload", _name))
            return _original(module, *args, **kwargs)

        hook.pre_forward = spy
    pipe.text_encoder.encoder.register_forward_pre_hook(lambda *_: events.append(("use", "text_encoder")))
    pipe.vae.encoder.register_forward_pre_hook(lambda *_: events.append(("use", "vae")))
    pipe.transformer.blocks[0].register_forward_pre_hook(lambda *_: events.append(("use", "transformer")))
    pipe.action_controller.action_embed.register_forward_pre_hook(
        lambda *_: events.append(("use", "action_controller"))
    )
    assert torch.equal(generate(pipe, image), expected)

    # accelerate's model offload: onloading a model of the chain offloads the one before it
    previous = {"transformer": "text_encoder", "vae": "transformer"}
    resident, used = set(), set()
    for kind, name in events:
        if kind == "onload":
            resident.add(name)
            resident.discard(previous.get(name))
        else:
            assert name in resident, f"{name} ran without its offload hook (events: {events})"
            used.add(name)
    assert used == {"text_encoder", "vae", "transformer", "action_controller"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="moving models between devices needs CUDA")
@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_cpu_offload_on_cuda_gives_the_same_video(tiny_wan_dir, controller_dir, image, mode):
    expected = generate(
        load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32, device="cuda"), image, "np"
    )
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    getattr(pipe, f"enable_{mode}_cpu_offload")()
    np.testing.assert_allclose(generate(pipe, image, "np"), expected, atol=1e-5)
    # offloaded again after the call
    assert pipe.action_controller.output_scale.device.type in ("cpu", "meta")


def vace_e_pipeline(model_dir):
    """A tiny VACE-E pipeline whose injectors act (their zero-init output projections randomized)."""
    from diffusers import WanVACETransformer3DModel

    from kinema.video_world_model.loading._wan import load_diffusers_components
    from kinema.video_world_model.vace_e import TaskEmbodimentEncoder, VaceETransformer
    from kinema.video_world_model.vace_e._pipeline import VaceEPipeline

    components = load_diffusers_components(model_dir, WanVACETransformer3DModel, torch.float32)
    torch.manual_seed(0)
    encoder = TaskEmbodimentEncoder(24, 16, None, width=32, layers=1, heads=4)
    model = VaceETransformer(components["transformer"], encoder, vace_e_layers="0,2").eval()
    with torch.no_grad():
        for injector in model.injectors.values():
            injector.o_proj.weight.normal_()
    return VaceEPipeline(
        components["tokenizer"], components["text_encoder"], components["vae"], components["scheduler"],
        transformer=components["transformer"], vace_e_model=model,
    )  # fmt: skip


def vace_e_generate(pipe):
    generator = torch.Generator().manual_seed(0)
    video = torch.randint(0, 255, (3, 5, 32, 32), dtype=torch.uint8, generator=generator)
    mask = torch.zeros(1, 5, 32, 32, dtype=torch.bool)
    mask[..., 8:24, 8:24] = True
    return pipe(
        "a drone", video, mask, vace_e_hand_motion_sequence=torch.randn(5, 20, generator=generator),
        num_inference_steps=2, guidance_scale=2.0, generator=generator, output_type="np",
    ).frames  # fmt: skip


@pytest.fixture(scope="module")
def tiny_vace_dir(tmp_path_factory):
    from kinema.video_world_model.vace_e.testing import write_tiny_vace

    return write_tiny_vace(tmp_path_factory.mktemp("vace") / "vace")


def test_vace_e_model_cpu_offload_onloads_the_transformer(tiny_vace_dir):
    expected = vace_e_generate(vace_e_pipeline(tiny_vace_dir))
    pipe = vace_e_pipeline(tiny_vace_dir)
    pipe.enable_model_cpu_offload(device="cpu")
    events = []
    hook = pipe.transformer._hf_hook

    def spy(module, *args, _original=hook.pre_forward, **kwargs):
        events.append("onload")
        return _original(module, *args, **kwargs)

    hook.pre_forward = spy
    pipe.transformer.blocks[0].register_forward_pre_hook(lambda *_: events.append("use"))
    np.testing.assert_array_equal(vace_e_generate(pipe), expected)
    assert "use" in events and events.index("onload") < events.index("use"), events


@pytest.mark.skipif(not torch.cuda.is_available(), reason="moving models between devices needs CUDA")
def test_vace_e_model_cpu_offload_on_cuda_gives_the_same_video(tiny_vace_dir):
    expected = vace_e_generate(vace_e_pipeline(tiny_vace_dir).to("cuda"))
    pipe = vace_e_pipeline(tiny_vace_dir)
    pipe.enable_model_cpu_offload()
    np.testing.assert_allclose(vace_e_generate(pipe), expected, atol=1e-5)


# ---- 4. magnitudes: raw in, the controller scales them ----------------------------------------------------------
def _magnitude_warnings(run) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run()
    found = [w for w in caught if "action_magnitude" in str(w.message)]
    assert all(w.filename == __file__ for w in found)  # the warning points at the caller's line
    return [str(w.message) for w in found]


def test_prescaled_magnitudes_warn_once_per_call(tiny_wan_dir, controller_dir, image):
    pipe = load_pipeline(tiny_wan_dir, controller_dir, torch_dtype=torch.float32)
    _, raw = actions(forward=0.5)
    assert _magnitude_warnings(lambda: generate(pipe, image, magnitude=raw)) == []
    # the design's inference code multiplies by the scale before the call: forward 0.5 becomes 50, then 5000
    messages = _magnitude_warnings(lambda: generate(pipe, image, magnitude=raw * DRONE_SCALE))
    assert len(messages) == 1  # one per call, though the transformer runs 2 steps x 2 branches
    assert "raw" in messages[0] and "forward" in messages[0] and "50" in messages[0]


def test_controller_forward_warns_on_prescaled_magnitudes():
    controller = tiny_controller()
    x, binary = torch.randn(1, 16, 24), torch.ones(1, 3, 8)
    raw = torch.zeros(1, 3, 8)
    raw[..., 0], raw[..., 4] = 0.5, 0.3
    assert _magnitude_warnings(lambda: controller(x, binary, raw, 4, 2, 2, 0)) == []
    prescaled = raw * torch.from_numpy(DRONE_SCALE)
    assert len(_magnitude_warnings(lambda: controller(x, binary, prescaled, 4, 2, 2, 0))) == 1


def test_magnitude_contract_is_in_the_docstrings():
    for doc in (WanActionController.__doc__, WanActionPipeline.__call__.__doc__):
        assert "raw" in doc and "pre-scale" in doc, doc
