import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from kinema.robot_data import collate_vace_e, probe_video
from kinema.robot_data.testing import write_vace_e_dataset
from kinema.video_world_model.cli import main
from kinema.video_world_model.training._loop_config import add_config_arguments
from kinema.video_world_model.vace_e import (
    SHIPPED_CONFIGS,
    TaskEmbodimentEncoder,
    TaskInputs,
    VaceEConfig,
    VaceETransformer,
    guidance_loss,
    masked_video_metrics,
    shipped_config,
)
from kinema.video_world_model.vace_e._config import vace_e_config_from_args
from kinema.video_world_model.vace_e._inputs import VaceEInputs
from kinema.video_world_model.vace_e._train import (
    STAGE_DONE,
    TRAIN_CONFIG,
    VaceETrainingModule,
    episode_dataset,
    run_stages,
)
from kinema.video_world_model.vace_e.testing import tiny_vace, write_tiny_clip, write_tiny_vace

FRAMES = 13  # 4 latent frames


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vace") / "episodes"
    fixture = write_vace_e_dataset(root, num_frames=FRAMES, height=32, width=32)
    return root, fixture.metadata, fixture


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return write_tiny_vace(root / "vace"), write_tiny_clip(root / "clip")


def tiny_encoder(**overrides):
    return TaskEmbodimentEncoder(24, 16, 16, width=32, layers=1, heads=4, **overrides)


def task_inputs(batch=1, steps=9, objects=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return TaskInputs(
        hand_motion=torch.randn(batch, steps, 20, generator=g),
        hand_motion_mask=torch.ones(batch, steps, dtype=torch.bool),
        object_trajectory=torch.randn(batch, steps, objects, 9, generator=g),
        object_trajectory_mask=torch.ones(batch, steps, dtype=torch.bool),
        object_mask=torch.ones(batch, objects, dtype=torch.bool),
        image_features=torch.randn(batch, 16, generator=g),
        has_image=torch.ones(batch, dtype=torch.bool),
        prompt_embeds=torch.randn(batch, 6, 16, generator=g),
    )


def vace_inputs(frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 4, frames, 4, 4, generator=g)
    control = torch.randn(1, 72, frames, 4, 4, generator=g)
    return x, torch.tensor([500.0]), torch.randn(1, 6, 16, generator=g), control


@pytest.mark.parametrize("references", [0, 1])
def test_zero_init_is_plain_vace_bitwise(references):
    vace = tiny_vace()
    model = VaceETransformer(vace, tiny_encoder(), "0,2")
    x, t, text, control = vace_inputs()
    with torch.no_grad():
        plain = vace(x, t, text, control_hidden_states=control, return_dict=False)[0]
        ours = model(x, t, text, control, task=task_inputs(steps=9), num_reference_frames=references)
        off = VaceETransformer(vace, tiny_encoder(), "0,2", enable_vace_e=False)(
            x, t, text, control, task=task_inputs()
        )
    assert torch.equal(ours, plain) and torch.equal(off, plain)


def test_injection_changes_the_output_once_trained_and_padding_changes_nothing():
    torch.manual_seed(0)
    model = VaceETransformer(tiny_vace(), tiny_encoder(), "0,2")
    for injector in model.injectors.values():
        torch.nn.init.normal_(injector.o_proj.weight, std=0.2)
    x, t, text, control = vace_inputs()
    task = task_inputs(steps=9)
    padded = task_inputs(steps=12)  # three padded steps and a padded (masked) third object with other values
    padded.hand_motion[:, :9], padded.hand_motion_mask[:, 9:] = task.hand_motion, False
    objects = torch.randn(1, 12, 3, 9)
    objects[:, :9, :2] = task.object_trajectory
    padded.object_trajectory, padded.object_trajectory_mask[:, 9:] = objects, False
    padded.object_mask = torch.tensor([[True, True, False]])
    padded.image_features, padded.prompt_embeds = task.image_features, task.prompt_embeds
    with torch.no_grad():
        base = model(x, t, text, control, task=task)
        assert not torch.allclose(
            base, VaceETransformer(model.vace, None, "0,2", enable_vace_e=False)(x, t, text, control)
        )
        assert torch.allclose(model(x, t, text, control, task=padded), base, atol=1e-6)
        moved = task_inputs(steps=9)
        moved.hand_motion = task.hand_motion + 1.0
        moved.image_features, moved.prompt_embeds = task.image_features, task.prompt_embeds
        moved.object_trajectory = task.object_trajectory
        assert not torch.allclose(model(x, t, text, control, task=moved), base)


def test_missing_modalities_are_masked_and_task_processing_switch():
    encoder = tiny_encoder()
    task = task_inputs(steps=9)
    tokens, mask = encoder(task, 3)
    assert tokens.shape == (1, 3, 4, 24) and mask.all()
    video_only = TaskInputs(
        prompt_embeds=task.prompt_embeds
    )  # fallback_to_video_only: no trajectories, no image
    tokens, mask = encoder(video_only, 3)
    assert mask[..., :3].sum() == 0 and mask[..., 3].all()
    assert torch.equal(tokens[..., :3, :], torch.zeros_like(tokens[..., :3, :]))
    _, mask = tiny_encoder(task_processing=False)(task, 3)
    assert not mask[..., :2].any() and mask[..., 2:].all()


def test_guidance_loss_masks_and_gradient():
    pred = torch.zeros(1, 4, 20, requires_grad=True)  # 1 reference frame + 3 latent frames
    hand = torch.ones(1, 9, 20)
    mask = torch.ones(1, 9, dtype=torch.bool)
    loss = guidance_loss(pred, hand, mask, reference_frames=1)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad[:, 0].abs().sum() == 0 and pred.grad[:, 1:].abs().sum() > 0
    mask[:, 5:] = False  # latent frame 2 covers video frames 5..8: masked entirely
    hand[:, 5:] = 100.0
    assert guidance_loss(pred.detach(), hand, mask, 1).item() == pytest.approx(1.0)


def test_masked_metrics_hand_computed():
    target = torch.zeros(2, 3, 16, 16)
    generated = target.clone()
    generated[:, :, :8] = 0.1  # error 0.1 in the top half only
    mask = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    mask[:, :, 8:] = True  # the hand is in the bottom half
    metrics = masked_video_metrics(generated, target, mask)
    assert metrics["psnr_context"] == pytest.approx(20.0)  # 10 log10(1 / 0.01)
    assert metrics["psnr_hand"] == float("inf") and metrics["psnr_all"] == pytest.approx(23.0103, abs=1e-3)
    assert metrics["ssim_hand"] > metrics["ssim_context"]
    empty = masked_video_metrics(generated, target, torch.zeros_like(mask))
    assert empty["psnr_hand"] is None and empty["ssim_hand"] is None


def test_shipped_configs_parse_and_flags_override(tmp_path, data, models):
    root, metadata, _ = data
    required = {
        "model_dir": str(models[0]),
        "dataset_base_path": str(root),
        "task_metadata_path": str(metadata),
    }
    for name in SHIPPED_CONFIGS:
        values = yaml.safe_load(shipped_config(name).read_text())
        stages = VaceEConfig(**(values | required)).stages()
        assert stages and stages[0].trainable_models == "vace_e"
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, VaceEConfig)
    args = parser.parse_args(["--config", "configs/vace_e_lora.yaml", "--learning_rate", "0.5", "--vace_e_layers", "0,3",
                              "--model_dir", str(models[0]), "--dataset_base_path", str(root), "--task_metadata_path", str(metadata)])  # fmt: skip
    config = vace_e_config_from_args(args)
    assert (config.learning_rate, config.vace_e_layers, config.lora_rank) == (0.5, "0,3", 32)
    assert [s.name for s in config.stages()] == ["stage_1", "stage_2"]
    bad = tmp_path / "bad.yaml"
    for text, message in (
        ("learning_rat: 1\n", r"unknown keys \['learning_rat'\]"),
        (
            "training_stages:\n  s1: {trainable_models: everything}\n",
            "training_stages.s1: trainable_models: unknown",
        ),
        ("training_stages:\n  s1: {epoch: 3}\n", r"training_stages.s1: unknown keys \['epoch'\]"),
        (
            "training_stages:\n  s1: {epochs: 3, num_epochs: 4}\n",
            "training_stages.s1: epochs and num_epochs disagree",
        ),
        ("vace_e_layers: [0, 3\n", "not valid YAML"),
    ):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            vace_e_config_from_args(
                parser.parse_args(
                    ["--config", str(bad), *[part for k, v in required.items() for part in (f"--{k}", v)]]
                )
            )
    with pytest.raises(FileNotFoundError, match="--clip_path"):
        VaceEConfig(**required, clip_path=str(tmp_path / "no-clip"))
    # the design note writes a stage's length as `epochs`: an alias of num_epochs
    stage = VaceEConfig(
        **required, training_stages={"s1": {"epochs": "3", "trainable_models": "vace_e"}}
    ).stages()
    assert (stage[0].num_epochs, stage[0].max_steps) == (3, None)


def build_module(models, data, guidance=0.0, layers="0,2"):
    from diffusers import WanVACEPipeline, WanVACETransformer3DModel

    from kinema.video_world_model.loading._wan import load_diffusers_components
    from kinema.video_world_model.modeling._flow_matching import FlowMatchingObjective
    from kinema.video_world_model.vace_e._train import build_model, load_clip

    root, metadata, _ = data
    config = VaceEConfig(model_dir=str(models[0]), clip_path=str(models[1]), dataset_base_path=str(root),
                         task_metadata_path=str(metadata), num_frames=FRAMES, height=32, width=32,
                         vace_e_layers=layers, encoder_width=32, encoder_layers=1, encoder_heads=4,
                         guidance_loss_weight=guidance, mixed_precision="no")  # fmt: skip
    components = load_diffusers_components(config.model_dir, WanVACETransformer3DModel, torch.float32)
    clip, processor = load_clip(config.clip_path, torch.device("cpu"))
    model = build_model(config, components, clip.config.hidden_size)
    pipe = WanVACEPipeline(
        components["tokenizer"],
        components["text_encoder"],
        components["vae"],
        components["scheduler"],
        transformer=model.vace,
    )
    inputs = VaceEInputs(pipe, clip, processor)
    return config, VaceETrainingModule(model, inputs, FlowMatchingObjective(shift=3.0), guidance)


def test_single_sample_overfit(models, data):
    config, module = build_module(models, data)
    dataset = episode_dataset(config)
    encoded = module.encode(collate_vace_e([dataset[1]]))  # the pouring episode: both hands, two objects
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = module.loss(
            encoded, torch.Generator().manual_seed(0)
        )  # the same noise and sigma: a fixed target
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])


def test_guidance_head_trains_only_when_weighted(models, data):
    config, module = build_module(models, data, guidance=0.5)
    batch = collate_vace_e([episode_dataset(config)[1]])
    module(batch, torch.Generator().manual_seed(0)).backward()
    assert module.model.guidance_head.net[1].weight.grad.abs().sum() > 0
    assert module.model.guidance_head.objects.weight.grad[:6].abs().sum() > 0  # two objects' positions train
    assert module.model.guidance_head.objects.weight.grad[6:].abs().sum() == 0  # padded object slots do not
    _, plain = build_module(models, data)
    assert plain.model.guidance_head is None


def test_layers_outside_the_model_are_refused(models, data):
    with pytest.raises(ValueError, match=r"layers: \[7\] outside the model's 4 layers"):
        build_module(models, data, layers="0,7")


def test_staged_train_then_generate_and_validate_through_the_cli(tmp_path, models, data):
    root, metadata, _ = data
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({
        "num_frames": FRAMES, "height": 32, "width": 32, "encoder_width": 32, "encoder_layers": 1, "encoder_heads": 4,
        "vace_e_layers": "0,2", "mixed_precision": "no", "dataset_num_workers": 0, "save_steps": 1, "log_steps": 1,
        "training_stages": {
            "warmup": {"trainable_models": "vace_e", "learning_rate": 1e-3, "max_steps": 2},
            "joint": {"trainable_models": "vace_e,lora", "learning_rate": 1e-4, "max_steps": 2},
        },
    }))  # fmt: skip
    out = tmp_path / "run"
    common = ["--model_dir", str(models[0]), "--clip_path", str(models[1]), "--dataset_base_path", str(root),
              "--task_metadata_path", str(metadata), "--lora_rank", "4"]  # fmt: skip
    assert main(["vace-e", "train", "--config", str(config_file), *common, "--output_path", str(out)]) == 0
    for stage in ("warmup", "joint"):
        assert (out / stage / STAGE_DONE).is_file() and (out / stage / TRAIN_CONFIG).is_file()
        assert (out / stage / "checkpoints" / "step-000000002").is_dir()
    assert (out / "joint" / "lora.safetensors").is_file() and not (
        out / "warmup" / "lora.safetensors"
    ).exists()
    assert json.loads((out / "joint" / TRAIN_CONFIG).read_text())["lora"]["lora_rank"] == 4
    assert (
        main(["vace-e", "train", "--config", str(config_file), *common, "--output_path", str(out)]) == 0
    )  # all done

    episode = sorted(p for p in root.rglob("episode_*") if p.is_dir())[1]
    video = tmp_path / "demo.mp4"
    args = ["--checkpoint", str(out), "--task_metadata_path", str(metadata), "--num_inference_steps", "2",
            "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
    assert main(["vace-e", "generate", *args, "--episode", str(episode), "--out", str(video)]) == 0
    assert probe_video(video).num_frames == FRAMES
    report = tmp_path / "validation"
    assert (
        main(
            [
                "vace-e",
                "validate",
                *args,
                "--test_data",
                str(root),
                "--output_dir",
                str(report),
                "--episodes",
                "2",
            ]
        )
        == 0
    )
    rows = json.loads((report / "metrics.json").read_text())
    assert len(rows["episodes"]) == 2 and rows["mean"]["psnr_all"] is not None
    assert "| **mean** |" in (report / "metrics.md").read_text()


def test_two_processes_train_although_a_batch_leaves_a_modality_encoder_unused(tmp_path, models, data):
    """torchrun, 2 CPU processes (DDP over gloo). Batches without hand motion or objects leave those encoders
    without gradients; DDP must be told to look for unused parameters, else the second step fails."""
    root, metadata, _ = data
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump({
        "num_frames": FRAMES, "height": 32, "width": 32, "encoder_width": 32, "encoder_layers": 1, "encoder_heads": 4,
        "vace_e_layers": "0,2", "mixed_precision": "no", "dataset_num_workers": 0, "save_steps": 2, "log_steps": 1,
        "training_stages": {"warmup": {"trainable_models": "vace_e", "learning_rate": 1e-3, "max_steps": 3}},
    }))  # fmt: skip
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
               "kinema.video_world_model.cli", "vace-e", "train", "--config", str(config_file), "--model_dir",
               str(models[0]), "--clip_path", str(models[1]), "--dataset_base_path", str(root),
               "--task_metadata_path", str(metadata), "--output_path", str(out)]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("warmup: trained to step 3") == 1  # only the first process reports
    assert json.loads((out / "warmup" / STAGE_DONE).read_text())["step"] == 3


def test_interrupted_stage_resumes_and_finished_stages_are_skipped(tmp_path, models, data, monkeypatch):
    from kinema.video_world_model.vace_e._train import VaceETrainer

    root, metadata, _ = data
    config = VaceEConfig(
        model_dir=str(models[0]), dataset_base_path=str(root), task_metadata_path=str(metadata), num_frames=FRAMES,
        height=32, width=32, encoder_width=32, encoder_layers=1, encoder_heads=4, vace_e_layers="0,2",
        mixed_precision="no", dataset_num_workers=0, save_steps=1, output_path=str(tmp_path / "run"),
        training_stages={"a": {"max_steps": 2}, "b": {"max_steps": 3}},
    )  # fmt: skip
    original = VaceETrainer._save

    def crash_in_stage_b(self, step, stream):
        original(self, step, stream)
        if self.output.name == "b" and step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(VaceETrainer, "_save", crash_in_stage_b)
    with pytest.raises(KeyboardInterrupt):
        run_stages(config)
    monkeypatch.setattr(VaceETrainer, "_save", original)
    results = run_stages(config)
    assert results["a"] is None  # finished before: skipped
    assert sorted(results["b"].losses) == [3]  # resumed after step 2
