"""The design note's (shared/design/002) config blocks and command lines, accepted as written (issue 26)."""

import argparse

import pytest
import yaml

from kinema.video_world_model.training._loop_config import add_config_arguments
from kinema.video_world_model.vace_e import VaceEConfig
from kinema.video_world_model.vace_e._config import vace_e_config_from_args

LOGGING = """
logging:
  wandb_project: "vace_e_training"
  experiment_name: "my_experiment"
  log_frequency: 100
  save_model_artifacts: true
"""
VALIDATION = """
validation:
  enabled: true
  frequency: 5              # Every 5 epochs
  num_samples: 10
  save_videos: true
  metrics:
    - "video_quality"
    - "task_alignment"
    - "motion_accuracy"
"""
MEMORY = """
vram_optimization:
  enabled: true
  offload_optimizer: true      # Move optimizer to CPU
  cpu_offload: true           # Offload frozen models
  gradient_compression: 0.5    # Compress gradients

use_gradient_checkpointing: true
use_gradient_checkpointing_offload: true
"""
ROBOT_DATA = """
robot_data_path: "/path/to/robot/data"              # HDF5 demonstration data
task_metadata_path: "/path/to/metadata.json"       # Task descriptions and metadata
max_hand_motion_length: 512                        # Maximum motion sequence length
max_object_trajectory_length: 512                  # Maximum trajectory length
max_objects: 10                                    # Maximum tracked objects
fallback_to_video_only: true                      # Allow training without robot data
"""


def parser():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, VaceEConfig)
    return parser


def config_from(tmp_path, text, *flags, model_dir="models/vace"):
    path = tmp_path / "note.yaml"
    path.write_text(text)
    required = ["--model_dir", model_dir, "--task_metadata_path", "meta.json"]
    if "dataset_base_path" not in text and "robot_data_path" not in text:
        required += ["--dataset_base_path", "data"]
    return vace_e_config_from_args(parser().parse_args(["--config", str(path), *required, *flags]))


def test_logging_block_maps_to_wandb_and_log_steps(tmp_path):
    with pytest.warns(
        UserWarning, match=r"logging.save_model_artifacts: .*no W&B artifacts.*save_steps"
    ) as caught:
        config = config_from(tmp_path, LOGGING)
    assert (config.use_wandb, config.wandb_project, config.wandb_run_name, config.log_steps) == (
        True, "vace_e_training", "my_experiment", 100,
    )  # fmt: skip
    assert len(caught) == 1
    # a command-line flag still wins over the block
    with pytest.warns(UserWarning):
        config = config_from(tmp_path, LOGGING, "--log_steps", "7", "--no-use_wandb")
    assert (config.log_steps, config.use_wandb) == (7, False)


def test_validation_block_maps_to_epochs_and_episodes_and_says_which_metrics(tmp_path):
    with pytest.warns(UserWarning) as caught:
        config = config_from(tmp_path, VALIDATION, "--validation_base_path", "held_out")
    assert (config.validate_every_epochs, config.validation_episodes) == (5, 10)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "validation.metrics: task_alignment, motion_accuracy are not computed; kinema reports PSNR and SSIM over "
        "the whole frame (video_quality), inside the hand mask and outside it"
    ]
    with pytest.warns(
        UserWarning, match="validation: validate_every_epochs is 5 but validation_base_path is not"
    ):
        config_from(tmp_path, VALIDATION)
    with pytest.warns(UserWarning, match=r"validation: enabled is false, so \['frequency'\] are ignored"):
        disabled = config_from(tmp_path, "validation:\n  enabled: false\n  frequency: 5\n")
    assert disabled.validate_every_epochs is None
    with pytest.warns(UserWarning, match="validation.save_videos: false cannot be honoured"):
        config_from(tmp_path, "validation:\n  save_videos: false\n")
    with pytest.raises(ValueError, match=r"validation.metrics: unknown \['fid'\]"):
        config_from(tmp_path, "validation:\n  metrics: [fid]\n")


def test_vram_block_maps_to_checkpointing_and_warns_what_is_not_done(tmp_path):
    with pytest.warns(UserWarning) as caught:
        config = config_from(tmp_path, MEMORY)
    assert (config.use_gradient_checkpointing, config.use_gradient_checkpointing_offload) == (True, True)
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 3
    assert messages[0].startswith(
        "vram_optimization.cpu_offload: kinema offloads the checkpointed activations"
    )
    assert messages[1].startswith("vram_optimization.gradient_compression: 0.5 is not applied")
    assert messages[2].startswith("vram_optimization.offload_optimizer: not applied")
    with pytest.raises(
        ValueError, match=r"vram_optimization\.cpu_offload and use_gradient_checkpointing_offload"
    ):
        config_from(
            tmp_path, "vram_optimization: {cpu_offload: true}\nuse_gradient_checkpointing_offload: false\n"
        )
    off = config_from(tmp_path, "vram_optimization: {enabled: false}\n")
    assert off.use_gradient_checkpointing is False and off.use_gradient_checkpointing_offload is False


def test_robot_data_path_is_the_episode_base_folder_and_unknown_keys_still_fail(tmp_path):
    config = config_from(tmp_path, ROBOT_DATA)
    assert (config.dataset_base_path, config.task_metadata_path) == ("/path/to/robot/data", "meta.json")
    assert config_from(tmp_path, ROBOT_DATA, "--dataset_base_path", "small").dataset_base_path == "small"
    with pytest.raises(ValueError, match="robot_data_path and dataset_base_path disagree"):
        config_from(tmp_path, ROBOT_DATA + "dataset_base_path: other\n")
    for text, message in (
        ("logging: {wandb_projekt: x}\n", r"logging: unknown keys \['wandb_projekt'\]"),
        ("vram_optimization: {zero_stage: 3}\n", r"vram_optimization: unknown keys \['zero_stage'\]"),
        ("logging: 3\n", "logging: expected a mapping"),
        ("loging: {}\n", r"unknown keys \['loging'\]"),
    ):
        with pytest.raises(ValueError, match=message):
            config_from(tmp_path, text)


def vace_e_parser():
    from kinema.video_world_model.vace_e._config import add_vace_e_arguments

    parser = argparse.ArgumentParser()
    add_vace_e_arguments(parser)
    return parser


REQUIRED = ["--model_dir", "m", "--dataset_base_path", "d", "--task_metadata_path", "t.json"]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--debug", "True"], {"debug": True, "log_steps": 1}),
        (["--debug", "false"], {"debug": False, "log_steps": 10}),
        (["--debug"], {"debug": True}),
        (["--no-debug"], {"debug": False}),
        (["--compile_model", "True"], {"compile_model": True}),
        (["--fallback_to_video_only", "no"], {"fallback_to_video_only": False}),
        (["--fallback_to_video_only", "True"], {"fallback_to_video_only": True}),
        (["--use_gradient_checkpointing_offload", "True"], {"use_gradient_checkpointing_offload": True}),
        (["--use_gradient_checkpointing", "0"], {"use_gradient_checkpointing": False}),
        (["--verbose_logging", "True"], {"verbose_logging": True, "log_steps": 1}),
        (
            ["--vram_optimization", "True", "--cpu_offload", "True"],
            {"use_gradient_checkpointing": True, "use_gradient_checkpointing_offload": True},
        ),
        (["--vram_optimization", "False"], {"use_gradient_checkpointing": False}),
    ],
)
def test_switches_take_an_optional_true_or_false(flags, expected):
    config = vace_e_config_from_args(vace_e_parser().parse_args([*REQUIRED, *flags]))
    assert {key: getattr(config, key) for key in expected} == expected


def test_bad_switch_values_and_save_intermediate_outputs(capsys):
    with pytest.raises(SystemExit) as exit_:
        vace_e_parser().parse_args([*REQUIRED, "--debug", "maybe"])
    assert exit_.value.code == 2
    assert "--debug: expected True or False (true/false, 1/0, yes/no), got 'maybe'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        vace_e_parser().parse_args([*REQUIRED, "--no-debug", "True"])
    assert "--no-debug: takes no value (use --debug False)" in capsys.readouterr().err
    with pytest.warns(UserWarning, match=r"save_intermediate_outputs: kinema saves no intermediate latents"):
        config = vace_e_config_from_args(
            vace_e_parser().parse_args([*REQUIRED, "--save_intermediate_outputs", "True"])
        )
    assert config.save_intermediate_outputs is True


def test_kinema_wm_train_switches_also_take_a_value():
    from kinema.video_world_model.training._loop_config import config_from_args
    from kinema.video_world_model.training._train_config import TrainConfig

    train = argparse.ArgumentParser()
    add_config_arguments(train, TrainConfig)
    for flags, value in (([], None), (["--use_wandb"], True), (["--use_wandb", "True"], True),
                         (["--use_wandb", "False"], False), (["--no-use_wandb"], False)):  # fmt: skip
        assert train.parse_args(flags).use_wandb is value
    config = config_from_args(train.parse_args(["--model_dir", "m", "--dataset_base_path", "d",
                                                "--use_gradient_checkpointing", "False"]), TrainConfig)  # fmt: skip
    assert config.use_gradient_checkpointing is False


def fake_run(root, step=4):
    """A run with one finished stage, as far as resolving a checkpoint needs: its saved config and files."""
    import json

    from kinema.video_world_model.vace_e._train import STAGE_DONE, TRAIN_CONFIG

    stage = root / "run" / "stage_1"
    (stage / "checkpoints" / "step-000000002").mkdir(parents=True)
    (stage / "checkpoints" / f"step-{step:09d}").mkdir(parents=True)
    train_args = VaceEConfig(
        model_dir="m", dataset_base_path="d", task_metadata_path="recorded.json"
    ).to_dict()
    (stage / TRAIN_CONFIG).write_text(json.dumps({"base_model": "m", "train_args": train_args, "step": step}))
    (stage / STAGE_DONE).write_text("{}")
    for name in ("vace_e.safetensors", "checkpoints/step-000000002/trainable.safetensors",
                 f"checkpoints/step-{step:09d}/optimizer.pt"):  # fmt: skip
        (stage / name).write_bytes(b"")
    return stage


def test_checkpoint_file_resolves_to_its_stage_folder(tmp_path):
    from kinema.video_world_model.vace_e._train import resolve_checkpoint

    stage = fake_run(tmp_path)
    assert resolve_checkpoint(stage / "vace_e.safetensors") == stage
    assert (
        resolve_checkpoint(stage / "checkpoints" / "step-000000004" / "optimizer.pt") == stage
    )  # the last save
    with pytest.warns(
        UserWarning, match=r"--checkpoint: .*step-000000002.* is step 2; .*exported weights of step 4"
    ):
        assert resolve_checkpoint(stage / "checkpoints" / "step-000000002" / "trainable.safetensors") == stage
    assert resolve_checkpoint(tmp_path / "run") == tmp_path / "run"  # folders: as before
    stray = tmp_path / "stray.pt"
    stray.write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=r"--checkpoint: .*stray.pt is not inside a VACE-E training output"
    ):
        resolve_checkpoint(stray)
    with pytest.raises(FileNotFoundError, match=r"--checkpoint: .*missing\.pt does not exist"):
        resolve_checkpoint(tmp_path / "missing.pt")


def test_validate_parses_the_notes_command_line_and_defaults_the_metadata_to_the_run(tmp_path):
    from kinema.video_world_model.cli import build_parser
    from kinema.video_world_model.cli._vace_e import _saved_config

    stage = fake_run(tmp_path)
    args = build_parser().parse_args(["vace-e", "validate", "--checkpoint", str(stage / "vace_e.safetensors"),
                                      "--test_data", "test/data", "--output_dir", "./validation_results"])  # fmt: skip
    assert (args.test_data, str(args.output_dir), args.task_metadata_path) == (
        "test/data",
        "validation_results",
        None,
    )
    assert _saved_config(args).task_metadata_path == "recorded.json"
    args.task_metadata_path = "other.json"
    assert _saved_config(args).task_metadata_path == "other.json"


def test_guidance_loss_covers_object_positions_hand_computed():
    import torch

    from kinema.video_world_model.vace_e import TaskAlignmentHead, guidance_loss

    objects = 2
    pred = torch.zeros(1, 4, 20 + 3 * objects, requires_grad=True)  # 1 reference frame + 3 latent frames
    hand, hand_mask = torch.ones(1, 9, 20), torch.ones(1, 9, dtype=torch.bool)
    trajectory = torch.zeros(1, 9, objects, 9)
    trajectory[:, :, 0, :3] = 2.0  # object 0 at (2, 2, 2): squared error 4
    trajectory[:, :, 0, 3:] = 50.0  # its rotation is not a target
    trajectory[:, :, 1] = 100.0  # object 1 is padding
    trajectory_mask, object_mask = torch.ones(1, 9, dtype=torch.bool), torch.tensor([[True, False]])
    loss = guidance_loss(pred, hand, hand_mask, 1, trajectory, trajectory_mask, object_mask)
    assert loss.item() == pytest.approx(1.0 + 4.0)  # the hand term + the object term
    loss.backward()
    assert pred.grad[:, 0].abs().sum() == 0  # the reference frame counts for nothing
    assert pred.grad[:, 1:, 23:].abs().sum() == 0 and pred.grad[:, 1:, 20:23].abs().sum() > 0  # masked object
    trajectory_mask[:, 5:] = False  # latent frame 2 covers video frames 5..8: no object positions there
    trajectory[:, 5:, 0, :3] = 7.0
    assert guidance_loss(
        pred.detach(), hand, hand_mask, 1, trajectory, trajectory_mask, object_mask
    ).item() == (pytest.approx(5.0))
    # an episode without hand motion still trains on its objects; without either the loss is 0
    assert guidance_loss(pred.detach(), None, None, 1, trajectory, trajectory_mask, object_mask).item() == (
        pytest.approx(4.0)
    )
    assert guidance_loss(pred.detach(), hand, hand_mask, 1).item() == pytest.approx(
        1.0
    )  # hand only, as before
    with pytest.raises(ValueError, match="3 objects but the guidance head predicts 2"):
        guidance_loss(
            pred, hand, hand_mask, 1, torch.zeros(1, 9, 3, 9), trajectory_mask, torch.ones(1, 3).bool()
        )
    head = TaskAlignmentHead(8, width=4, max_objects=objects)
    assert head(torch.randn(2, 3 * 5, 8), 3).shape == (2, 3, 20 + 3 * objects)
    assert TaskAlignmentHead(8, width=4)(torch.randn(2, 3 * 5, 8), 3).shape == (2, 3, 20)  # saved heads load


def test_length_flags_replace_every_stages_length_and_say_so():
    args = [
        *REQUIRED,
        "--config",
        "configs/vace_e_dev.yaml",
        "--dataset_repeat",
        "100",
        "--num_epochs",
        "10",
        "--batch_size",
        "1",
    ]  # fmt: skip  (the note's single-sample overfitting test)
    with pytest.warns(
        UserWarning, match=r"--num_epochs 10 replaces the length of stage_1 \(max_steps: 200\)"
    ):
        config = vace_e_config_from_args(vace_e_parser().parse_args(args))
    stage = config.stages()[0]
    assert (stage.num_epochs, stage.max_steps, stage.learning_rate, config.dataset_repeat) == (
        10,
        None,
        1e-4,
        100,
    )
    with pytest.warns(
        UserWarning,
        match=r"--max_steps 3 replaces the length of stage_1 \(num_epochs: 10\), stage_2 \(num_epochs: 20\)",
    ):
        config = vace_e_config_from_args(vace_e_parser().parse_args(
            [*REQUIRED, "--config", "configs/vace_e_lora.yaml", "--max_steps", "3"]))  # fmt: skip
    assert [(s.num_epochs, s.max_steps) for s in config.stages()] == [(None, 3), (None, 3)]


# --- the note's blocks and command lines, end to end (tiny models, 32x32, 13 frames, a step or an epoch each) ---

FRAMES = 13
TINY = {"num_frames": FRAMES, "height": 32, "width": 32, "max_pixels": None, "encoder_width": 32,
        "encoder_layers": 1, "encoder_heads": 4, "vace_e_layers": "0,2", "mixed_precision": "no",
        "dataset_num_workers": 0, "gradient_accumulation_steps": 1, "lora_rank": 4}  # fmt: skip


@pytest.fixture(scope="module")
def note_data(tmp_path_factory):
    from kinema.robot_data.testing import write_vace_e_dataset
    from kinema.video_world_model.vace_e.testing import write_tiny_clip, write_tiny_vace

    root = tmp_path_factory.mktemp("note")
    fixture = write_vace_e_dataset(root / "small_test", num_frames=FRAMES, height=32, width=32)
    return (
        root / "small_test",
        fixture.metadata,
        write_tiny_vace(root / "vace"),
        write_tiny_clip(root / "clip"),
    )


def note_config_file(tmp_path, note_data):
    """The note's YAML blocks as printed, one after another; only paths and sizes changed (marked)."""
    root, metadata, _, _ = note_data
    text = f"""
enable_vace_e: true                    # Enable/disable VACE-E features
vace_e_layers: "0,2"                   # (size: the tiny model has 4 layers; the note writes "0,5,10,15,20,25")
vace_e_task_processing: true           # Enable task feature processing

robot_data_path: "{root}"              # HDF5 demonstration data
task_metadata_path: "{metadata}"       # Task descriptions and metadata
max_hand_motion_length: 512                        # Maximum motion sequence length
max_object_trajectory_length: 512                  # Maximum trajectory length
max_objects: 10                                    # Maximum tracked objects
fallback_to_video_only: true                      # Allow training without robot data

training_stages:
  stage_1:
    description: "Text and motion encoder warm-up"
    epochs: 1                           # (size: 15)
    trainable_models: "vace_e"
    learning_rate: 5e-4

  stage_2:
    description: "Joint VACE-E and DiT training"
    epochs: 1                           # (size: 20)
    trainable_models: "dit,vace_e"
    learning_rate: 1e-5
{MEMORY}
{LOGGING}
use_wandb: false                        # (this machine has no wandb installed)
{VALIDATION}
"""
    text += yaml.safe_dump({key: value for key, value in TINY.items() if key != "vace_e_layers"})
    path = tmp_path / "note.yaml"
    path.write_text(text)
    return path


def test_the_notes_blocks_train_and_its_validation_command_runs(tmp_path, note_data, monkeypatch):
    import json

    from kinema.video_world_model.cli import main
    from kinema.video_world_model.vace_e._train import STAGE_DONE, TRAIN_CONFIG

    root, _, vace, clip = note_data
    out = tmp_path / "checkpoints"
    with pytest.warns(UserWarning) as caught:
        assert main(["vace-e", "train", "--config", str(note_config_file(tmp_path, note_data)), "--model_dir",
                     str(vace), "--clip_path", str(clip), "--output_path", str(out)]) == 0  # fmt: skip
    messages = " | ".join(str(w.message) for w in caught)
    for expected in ("logging.save_model_artifacts", "validation.metrics: task_alignment, motion_accuracy",
                     "vram_optimization.offload_optimizer: not applied", "vram_optimization.gradient_compression",
                     "validation: validate_every_epochs is 5 but validation_base_path is not set"):  # fmt: skip
        assert expected in messages
    for stage in ("stage_1", "stage_2"):
        assert json.loads((out / stage / STAGE_DONE).read_text())["step"] == 3  # one epoch of the 3 episodes
    saved = json.loads((out / "stage_2" / TRAIN_CONFIG).read_text())
    train_args = saved["train_args"]
    assert {key: train_args[key] for key in ("dataset_base_path", "wandb_project", "wandb_run_name", "log_steps",
            "validate_every_epochs", "validation_episodes", "use_gradient_checkpointing",
            "use_gradient_checkpointing_offload", "learning_rate", "num_epochs")} == {
        "dataset_base_path": str(root), "wandb_project": "vace_e_training", "wandb_run_name": "my_experiment",
        "log_steps": 100, "validate_every_epochs": 5, "validation_episodes": 10, "use_gradient_checkpointing": True,
        "use_gradient_checkpointing_offload": True, "learning_rate": 1e-5, "num_epochs": 1,
    }  # fmt: skip
    assert saved["transformer_trained"] and (out / "stage_2" / "transformer").is_dir()

    # python validate_E.py --checkpoint "/path/to/checkpoint.pt" --test_data "/path/to/test/data" \
    #     --output_dir "./validation_results"      (+ sizes: 2 steps, 1 episode, fp32 on the CPU)
    monkeypatch.chdir(tmp_path)
    assert main(["vace-e", "validate", "--checkpoint", str(out / "stage_2" / "vace_e.safetensors"), "--test_data",
                 str(root), "--output_dir", "./validation_results", "--num_inference_steps", "2", "--episodes", "1",
                 "--dtype", "fp32", "--device", "cpu"]) == 0  # fmt: skip
    rows = json.loads((tmp_path / "validation_results" / "metrics.json").read_text())
    assert len(rows["episodes"]) == 1 and rows["mean"]["psnr_all"] is not None


def tiny_shipped(tmp_path, name):
    """configs/<name>.yaml: the shipped config with tiny sizes and one step per stage."""
    from kinema.video_world_model.vace_e import shipped_config

    values = yaml.safe_load(shipped_config(name).read_text()) | TINY
    values["training_stages"] = {
        stage: {k: v for k, v in options.items() if k not in ("num_epochs", "max_steps")} | {"max_steps": 1}
        for stage, options in values["training_stages"].items()
    }
    path = tmp_path / "configs" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        (
            "vace_e_dev",
            ["--debug", "True", "--verbose_logging", "True", "--save_intermediate_outputs", "True"],
        ),
        ("vace_e_lora", ["--use_gradient_checkpointing_offload", "True", "--fallback_to_video_only", "True"]),
        ("vace_e_full", ["--vram_optimization", "True", "--cpu_offload", "True"]),
    ],
)
def test_the_notes_training_command_lines(tmp_path, note_data, monkeypatch, capsys, name, extra):
    import json

    from kinema.video_world_model.cli import main
    from kinema.video_world_model.vace_e._train import STAGE_DONE, TRAIN_CONFIG

    root, metadata, vace, clip = note_data
    tiny_shipped(tmp_path, name)
    monkeypatch.chdir(tmp_path)
    # python train_E.py --config configs/<name>.yaml --dataset_base_path ... --task_metadata_path ...
    #     --output_path "./debug_checkpoints"      (+ the note's debugging / memory switches, + the tiny models)
    command = ["vace-e", "train", "--config", f"configs/{name}.yaml", "--dataset_base_path", str(root),
               "--task_metadata_path", str(metadata), "--output_path", "./debug_checkpoints", *extra,
               "--model_dir", str(vace), "--clip_path", str(clip)]  # fmt: skip
    expected = {"vace_e_dev": "save_intermediate_outputs: kinema saves no intermediate latents",
                "vace_e_lora": "validation: validate_every_epochs is 5 but validation_base_path is not set",
                "vace_e_full": "validation: validate_every_epochs is 5"}[name]  # fmt: skip
    with pytest.warns(UserWarning, match=expected):
        assert main(command) == 0
    stages = sorted(p.parent.name for p in (tmp_path / "debug_checkpoints").glob(f"*/{STAGE_DONE}"))
    assert stages == (["stage_1"] if name == "vace_e_dev" else ["stage_1", "stage_2"])
    train_args = json.loads((tmp_path / "debug_checkpoints" / stages[-1] / TRAIN_CONFIG).read_text())[
        "train_args"
    ]
    if name == "vace_e_dev":
        assert (train_args["debug"], train_args["verbose_logging"], train_args["log_steps"]) == (
            True,
            True,
            1,
        )
        assert "vace-e debug: 3 samples of 3 episodes" in capsys.readouterr().out
    else:
        assert (train_args["use_gradient_checkpointing"], train_args["use_gradient_checkpointing_offload"]) == (
            True, True,
        )  # fmt: skip


def test_the_notes_override_command_line_sets_every_stages_learning_rate():
    # python train_E.py --config configs/vace_e_lora.yaml --learning_rate 1e-4 \
    #     --vace_e_layers "0,3,6,9,12,15,18,21,24" --batch_size 4
    args = [*REQUIRED, "--config", "configs/vace_e_lora.yaml", "--learning_rate", "1e-4", "--vace_e_layers",
            "0,3,6,9,12,15,18,21,24", "--batch_size", "4"]  # fmt: skip
    with pytest.warns(UserWarning, match=r"--learning_rate 0.0001 replaces the learning_rate of stage_1 \(5e-05\), "
                                         r"stage_2 \(1e-05\)"):  # fmt: skip
        config = vace_e_config_from_args(vace_e_parser().parse_args(args))
    assert [(s.learning_rate, s.num_epochs) for s in config.stages()] == [(1e-4, 10), (1e-4, 20)]
    assert (config.vace_e_layers, config.batch_size) == ("0,3,6,9,12,15,18,21,24", 4)
