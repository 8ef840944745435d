import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kinema.robot_data import probe_video
from kinema.robot_data.testing import write_action_video_dataset
from kinema.video_world_model import load_controller, load_wan_components
from kinema.video_world_model.cli import build_parser, main
from kinema.video_world_model.loading import _checkpoint as checkpoint_module
from kinema.video_world_model.training._cache import write_cache
from kinema.video_world_model.training._loop import lr_schedule
from kinema.video_world_model.training._loop_config import config_from_args
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.training._train_data import CachedLatentDataset, build_dataset, collate
from kinema.video_world_model.training._trainer import TrainingDiverged, WorldModelTrainer

FRAMES = 5  # 2 latent frames, 1 action step: the smallest clip that trains the controller


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips") / "data"
    write_action_video_dataset(root, num_clips=3, num_frames=FRAMES, height=64, width=64)
    return root


@pytest.fixture(scope="module")
def cache(tmp_path_factory, tiny_wan_dir, clips):
    cache_dir = tmp_path_factory.mktemp("cache") / "cache"
    write_cache(
        base_config(tiny_wan_dir, clips, tmp_path_factory.mktemp("o") / "o"),
        cache_dir,
        torch.device("cpu"),
        torch.float32,
    )
    return cache_dir


def base_config(model_dir, clips, output, **overrides) -> TrainConfig:
    values = {
        "dataset_base_path": str(clips),
        "model_dir": str(model_dir),
        "output_path": str(output),
        "height": 64,
        "width": 64,
        "num_frames": FRAMES,
        "max_steps": 4,
        "save_steps": 2,
        "save_full_state": True,
        "dataset_num_workers": 0,
        "mixed_precision": "no",
        "learning_rate": 1e-3,
        "lr_warmup_ratio": 0.25,
        "action_initial_scale": 0.1,
        "log_steps": 1,
    }
    return TrainConfig(**(values | overrides))


def train_args(config: TrainConfig) -> list[str]:
    args = ["train"]
    for key, value in config.to_dict().items():
        if value is None or value is False:
            continue
        args += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    return args


def test_cli_train_writes_exactly_the_layout(tiny_wan_dir, clips, tmp_path):
    config = base_config(tiny_wan_dir, clips, tmp_path / "run", max_checkpoints=1)
    assert main(train_args(config)) == 0
    out = tmp_path / "run"
    assert sorted(p.name for p in out.iterdir()) == [
        "action_controller.safetensors",
        "action_train_config.json",
        "checkpoints",
    ]
    assert [p.name for p in (out / "checkpoints").iterdir()] == [
        "step-000000004"
    ]  # the older one was rotated out
    assert sorted(p.name for p in (out / "checkpoints" / "step-000000004").iterdir()) == sorted(
        checkpoint_module.FILES
    )
    saved = json.loads((out / "action_train_config.json").read_text())
    assert saved["action_controller_config"]["injection_type"] == "cross_attn_frame"
    assert saved["action_magnitude_scale"] == [100.0] * 4 + [1.0] * 4
    assert saved["lora"] == {} and saved["step"] == 4
    controller, _ = load_controller(out)
    trained = load_file(str(out / "checkpoints" / "step-000000004" / "trainable.safetensors"))
    assert torch.equal(trained["output_scale"], controller.output_scale.detach())
    assert not torch.allclose(
        controller.output_scale, torch.full_like(controller.output_scale, 0.1)
    )  # it learned
    state = json.loads((out / "checkpoints" / "step-000000004" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and {"epoch", "data_position", "rng", "config"} <= set(state)


def test_resume_after_interruption_gives_the_same_losses(
    tiny_wan_dir, clips, cache, tmp_path, interrupt_after_save
):
    config = base_config(
        tiny_wan_dir, clips, tmp_path / "full", cache_dir=str(cache), max_steps=6, save_steps=2
    )
    uninterrupted = WorldModelTrainer(config).run().losses

    interrupt_after_save(WorldModelTrainer, 2)
    interrupted = base_config(
        tiny_wan_dir, clips, tmp_path / "cut", cache_dir=str(cache), max_steps=6, save_steps=2
    )
    with pytest.raises(KeyboardInterrupt):
        WorldModelTrainer(interrupted).run()
    interrupt_after_save.restore()
    resumed = (
        WorldModelTrainer(TrainConfig(**(interrupted.to_dict() | {"resume_from": "latest"}))).run().losses
    )
    assert sorted(resumed) == [3, 4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-6), step


def test_two_processes_share_one_schedule_and_their_checkpoint_resumes_on_one(tiny_wan_dir, clips, tmp_path):
    """torchrun, 2 CPU processes in one gloo group (what `accelerate launch --num_processes 2` does on GPUs)."""
    config = base_config(tiny_wan_dir, clips, tmp_path / "run", max_steps=4, save_steps=2)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "kinema.video_world_model.cli", *train_args(config)]
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained to step 4") == 1  # only the first process reports
    step_two = tmp_path / "run" / "checkpoints" / "step-000000002"
    state = json.loads((step_two / "trainer_state.json").read_text())
    # 3 clips, a global batch of 2 (1 per process): step 1 takes samples 0-1 of epoch 0; its ragged tail is
    # dropped, so step 2 takes samples 0-1 of epoch 1. One process alone would be at (epoch 0, position 2).
    assert (state["epoch"], state["data_position"]) == (1, 2)
    # the schedule advanced once per optimizer step, not once per process
    schedule = torch.load(step_two / "scheduler.pt", weights_only=True)
    assert schedule["last_epoch"] == 2
    assert schedule["_last_lr"][0] == pytest.approx(1e-3 * kinema_0_5_lr_factor(2, 4, 0.25, 0.0))

    resumed = base_config(tiny_wan_dir, clips, tmp_path / "run", max_steps=4, save_steps=2)
    resumed = TrainConfig(**(resumed.to_dict() | {"resume_from": str(step_two)}))
    result = WorldModelTrainer(resumed).run()  # this process alone
    assert sorted(result.losses) == [3, 4] and all(math.isfinite(v) for v in result.losses.values())
    state = json.loads(
        (tmp_path / "run" / "checkpoints" / "step-000000004" / "trainer_state.json").read_text()
    )
    assert (state["epoch"], state["data_position"]) == (2, 1)  # from (1, 2), one sample per step, 3 per epoch


def test_crash_between_write_and_rename_keeps_the_previous_checkpoint(
    tiny_wan_dir, clips, cache, tmp_path, monkeypatch
):
    config = base_config(tiny_wan_dir, clips, tmp_path / "run", cache_dir=str(cache))
    real_replace = checkpoint_module.os.replace

    def fail_for_step_four(src, dst):
        if str(dst).endswith("step-000000004"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_module.os, "replace", fail_for_step_four)
    with pytest.raises(OSError, match="disk full"):
        WorldModelTrainer(config).run()
    latest = checkpoint_module.resolve_checkpoint(tmp_path / "run", "latest")
    assert latest.name == "step-000000002"
    assert (tmp_path / "run" / "checkpoints" / ".step-000000004.tmp").is_dir()  # left behind, never picked up


def test_nan_losses_are_skipped_then_training_stops_with_the_last_checkpoint_intact(
    tiny_wan_dir, clips, cache, tmp_path, monkeypatch
):
    from kinema.video_world_model.training._train_model import ActionTrainingModule

    forward = ActionTrainingModule.forward
    calls = {"n": 0}

    def nan_after_two(self, batch, generator):
        calls["n"] += 1
        loss = forward(self, batch, generator)
        return loss * float("nan") if calls["n"] > 2 else loss

    monkeypatch.setattr(ActionTrainingModule, "forward", nan_after_two)
    config = base_config(
        tiny_wan_dir, clips, tmp_path / "run", cache_dir=str(cache), max_steps=8, max_bad_steps=3
    )
    with pytest.raises(TrainingDiverged, match="3 consecutive steps"):
        WorldModelTrainer(config).run()
    assert checkpoint_module.resolve_checkpoint(tmp_path / "run", "latest").name == "step-000000002"


def test_resume_refuses_a_different_configuration_and_a_foreign_output(tiny_wan_dir, clips, cache, tmp_path):
    config = base_config(tiny_wan_dir, clips, tmp_path / "run", cache_dir=str(cache), max_steps=2)
    WorldModelTrainer(config).run()
    with pytest.raises(FileExistsError, match="holds another run"):
        WorldModelTrainer(config)
    changed = TrainConfig(
        **(config.to_dict() | {"resume_from": "latest", "learning_rate": 0.5, "lora_rank": 8})
    )
    with pytest.raises(
        ValueError,
        match=r"differs from the checkpoint's run in learning_rate: checkpoint 0.001 vs now 0.5, lora_rank",
    ):
        WorldModelTrainer(changed)
    longer = TrainConfig(**(config.to_dict() | {"resume_from": "latest", "max_steps": 3}))
    assert sorted(WorldModelTrainer(longer).run().losses) == [3]  # max_steps may change


def test_cached_and_uncached_paths_give_the_same_loss(tiny_wan_dir, clips, cache, tmp_path):
    uncached = WorldModelTrainer(base_config(tiny_wan_dir, clips, tmp_path / "a"))
    cached = WorldModelTrainer(base_config(tiny_wan_dir, clips, tmp_path / "b", cache_dir=str(cache)))
    for trainer in (uncached, cached):
        trainer._build()
    cached.raw.controller.load_state_dict(uncached.raw.controller.state_dict())
    dataset, _ = build_dataset(uncached.config)
    cache_set = CachedLatentDataset(cache)
    for i in range(len(cache_set)):
        assert cache_set[i]["row"] == dataset[i]["row"]
        losses = [
            trainer.raw(collate([source[i]]), torch.Generator().manual_seed(7)).item()
            for trainer, source in ((uncached, dataset), (cached, cache_set))
        ]
        assert losses[0] == pytest.approx(losses[1], abs=1e-6)


def test_lora_train_save_merge_generate(tiny_wan_dir, clips, cache, tmp_path):
    out = tmp_path / "run"
    config = base_config(
        tiny_wan_dir, clips, out, cache_dir=str(cache), trainable_models="action_controller,lora", lora_rank=4,
        max_steps=2, learning_rate=1e-2, lr_warmup_ratio=0.0,
    )  # fmt: skip
    WorldModelTrainer(config).run()
    lora = load_file(str(out / "lora.safetensors"))
    key = "blocks.0.attn1.to_q.lora_B.weight"
    assert key in lora and all(".default." not in k and not k.startswith("model.") for k in lora)
    assert json.loads((out / "action_train_config.json").read_text())["lora"]["lora_rank"] == 4

    merged = tmp_path / "merged"
    assert (
        main(
            [
                "merge-lora",
                "--model_dir",
                str(tiny_wan_dir),
                "--lora_path",
                str(out / "lora.safetensors"),
                "--output_dir",
                str(merged),
                "--dtype",
                "fp32",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "merge-lora",
                "--model_dir",
                str(tiny_wan_dir),
                "--lora_path",
                str(out / "lora.safetensors"),
                "--output_dir",
                str(merged),
            ]
        )
        == 1
    )
    base = load_wan_components(tiny_wan_dir, torch.float32)["transformer"].state_dict()
    fused = load_wan_components(merged, torch.float32)["transformer"].state_dict()
    a, b = lora["blocks.0.attn1.to_q.lora_A.weight"], lora["blocks.0.attn1.to_q.lora_B.weight"]
    assert torch.allclose(
        fused["blocks.0.attn1.to_q.weight"], base["blocks.0.attn1.to_q.weight"] + b @ a, atol=1e-6
    )

    rng = np.random.default_rng(0)
    from PIL import Image

    image = tmp_path / "first.png"
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(image)
    video = tmp_path / "v.mp4"
    controller_only = tmp_path / "controller"
    controller_only.mkdir()
    for name in ("action_controller.safetensors", "action_train_config.json"):
        (controller_only / name).write_bytes((out / name).read_bytes())
    config_json = json.loads((controller_only / "action_train_config.json").read_text())
    config_json["lora"] = {}  # the LoRA is merged into the model now
    (controller_only / "action_train_config.json").write_text(json.dumps(config_json))
    args = ["generate", "--model_dir", str(merged), "--controller", str(controller_only), "--image", str(image),
            "--prompt", "a drone", "--actions", "forward:0.5x1", "--out", str(video), "--height", "64", "--width",
            "64", "--num_frames", str(FRAMES), "--num_inference_steps", "2", "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    assert probe_video(video).num_frames == FRAMES
    # the unmerged controller directory applies its LoRA through diffusers' loader at generation time
    args[args.index("--model_dir") + 1], args[args.index("--controller") + 1] = str(tiny_wan_dir), str(out)
    assert main([*args, "--overwrite"]) == 0


def test_config_file_and_flag_precedence(tmp_path, tiny_wan_dir):
    path = tmp_path / "train.yaml"
    path.write_text(
        f"model_dir: {tiny_wan_dir}\ndataset_base_path: {tmp_path}\nlearning_rate: 0.5\nmax_steps: 7\n"
    )
    args = build_parser().parse_args(["train", "--config", str(path), "--learning_rate", "0.1"])
    config = config_from_args(args, TrainConfig)
    assert (config.learning_rate, config.max_steps) == (0.1, 7)
    path.write_text("model_dir: x\nlearning_rat: 0.5\n")
    with pytest.raises(ValueError, match=r"unknown keys \['learning_rat'\]"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]), TrainConfig)
    path.write_text("model_dir: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]), TrainConfig)


def test_bad_options_are_named(tmp_path, tiny_wan_dir):
    with pytest.raises(ValueError, match="--trainable_models"):
        TrainConfig(model_dir="m", dataset_base_path="d", trainable_models="everything")
    with pytest.raises(ValueError, match="--model_dir: required"):
        TrainConfig(dataset_base_path="d")
    with pytest.raises(ValueError, match="only local paths"):
        TrainConfig(
            dataset_base_path="d",
            model_id_with_origin_paths="Wan-AI/Wan2.2-TI2V-5B:diffusion_pytorch_model*.safetensors",
        )
    config = TrainConfig(
        dataset_base_path="d",
        model_id_with_origin_paths=f"{tiny_wan_dir}:x.safetensors, {tiny_wan_dir}:y.pth",
    )
    assert config.model_dir == str(tiny_wan_dir.resolve())
    with pytest.raises(ValueError, match="--lora_target_modules: unknown"):
        TrainConfig(model_dir="m", dataset_base_path="d", lora_target_modules="q,mlp")
    assert TrainConfig(model_dir="m", dataset_base_path="d").lora_modules() == [
        "to_q",
        "to_k",
        "to_v",
        "to_out.0",
        "ffn.net.0.proj",
        "ffn.net.2",
    ]
    with pytest.raises(ValueError, match="--height: 48 is not a multiple of 32"):
        TrainConfig(model_dir="m", dataset_base_path="d", height=48, width=64)


def kinema_0_5_lr_factor(step: int, max_steps: int, warmup_ratio: float, min_ratio: float) -> float:
    """The schedule kinema wrote by hand until 0.5, the reference for transformers' that replaced it."""
    warmup = int(warmup_ratio * max_steps)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def learning_rates(max_steps: int, warmup_ratio: float, lr: float, min_lr: float) -> list[float]:
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([parameter], lr=lr)
    config = SimpleNamespace(
        max_steps=max_steps, lr_warmup_ratio=warmup_ratio, learning_rate=lr, lr_min_lr=min_lr
    )
    scheduler = lr_schedule(optimizer, config)
    rates = []
    for _ in range(max_steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize(
    ("max_steps", "warmup_ratio", "min_lr"), [(10, 0.2, 1e-4), (600, 0.15, 2e-4), (7, 0.0, 0.0)]
)
def test_learning_rate_schedule_is_kinema_0_5_s_but_for_the_warmup_s_first_step(
    max_steps, warmup_ratio, min_lr
):
    lr = 1e-3
    rates = learning_rates(max_steps, warmup_ratio, lr, min_lr)
    warmup = int(warmup_ratio * max_steps)
    old = [lr * kinema_0_5_lr_factor(s, max_steps, warmup_ratio, min_lr / lr) for s in range(max_steps + 1)]
    # after the warmup: the same numbers (up to float rounding) down to the minimum at max_steps
    assert rates[warmup:] == pytest.approx(old[warmup:], rel=1e-12, abs=1e-15)
    assert rates[max_steps] == pytest.approx(min_lr)
    # during the warmup transformers' is one step behind: s / warmup instead of (s + 1) / warmup
    assert rates[:warmup] == pytest.approx([lr * s / warmup for s in range(warmup)])
    assert rates[1:warmup] == pytest.approx(old[: max(warmup - 1, 0)])


def test_the_generic_loop_knows_no_world_model_key_names_the_task_renames_through_its_hook():
    import inspect

    from kinema.video_world_model.training import Trainer, _loop

    assert "controller" not in inspect.getsource(_loop)
    assert Trainer.exported_name(None, "model.controller.output_scale") == "model.controller.output_scale"
    assert WorldModelTrainer.exported_name(None, "model.controller.output_scale") == "output_scale"
    lora = "model.transformer.blocks.0.attn1.to_q.lora_A.default.weight"
    assert WorldModelTrainer.exported_name(None, lora) == "transformer.blocks.0.attn1.to_q.lora_A.weight"
