"""Config files as users write them (YAML 1.1 numbers), flow-matching settings, and VACE-E stages under several
processes."""

import shutil

import pytest
import yaml

from kinema.video_world_model.cli import build_parser
from kinema.video_world_model.training._loop_config import config_from_args
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.vace_e import VaceEConfig
from kinema.video_world_model.vace_e._config import vace_e_config_from_args


def load(path, *flags):
    return config_from_args(build_parser().parse_args(["train", "--config", str(path), *flags]), TrainConfig)


def test_yaml_numbers_without_a_dot_are_numbers(tmp_path):
    path = tmp_path / "train.yaml"
    # YAML 1.1 reads 1e-4 (no dot) as the string "1e-4"; the design notes write floats this way
    path.write_text("model_dir: m\ndataset_base_path: d\nlearning_rate: 1e-4\nlr_min_lr: 0\nmax_steps: 2e3\n")
    assert yaml.safe_load(path.read_text())["learning_rate"] == "1e-4"
    config = load(path)
    assert (config.learning_rate, config.lr_min_lr, config.max_steps) == (1e-4, 0.0, 2000)
    assert type(config.learning_rate) is float and type(config.max_steps) is int
    path.write_text(
        "model_dir: m\ndataset_base_path: d\nuse_gradient_checkpointing: 'False'\nlora_rank: '8'\n"
    )
    config = load(path)
    assert config.use_gradient_checkpointing is False and config.lora_rank == 8
    # YAML 1.1 reads `no` as the boolean false
    path.write_text("model_dir: m\ndataset_base_path: d\nmixed_precision: no\n")
    assert load(path).mixed_precision == "no"


@pytest.mark.parametrize(
    "line, message",
    [
        ("learning_rate: fast", r"train.yaml: learning_rate: expected a number \(float\), got 'fast'"),
        ("max_steps: 10.5", "max_steps: expected a whole number, got 10.5"),
        ("max_steps: true", r"max_steps: expected a number \(int\), got bool True"),
        ("use_wandb: maybe", "use_wandb: expected true or false, got 'maybe'"),
        ("output_path: [a, b]", "output_path: expected a str, got list"),
        ("learning_rate: null", "learning_rate: expected a value of type float, got null"),
    ],
)
def test_a_value_of_the_wrong_kind_is_refused_at_load_naming_file_and_key(tmp_path, line, message):
    path = tmp_path / "train.yaml"
    path.write_text(f"model_dir: m\ndataset_base_path: d\n{line}\n")
    with pytest.raises(ValueError, match=message):
        load(path)


def test_vace_e_stage_values_are_coerced_and_checked(tmp_path):
    path = tmp_path / "vace.yaml"
    stages = {"stage_1": {"learning_rate": "5e-5", "num_epochs": "2"}, "stage_2": {"learning_rate": 1e-5}}
    path.write_text(yaml.safe_dump({"model_dir": "m", "dataset_base_path": "d", "task_metadata_path": "t",
                                    "learning_rate": "1e-4", "training_stages": stages}))  # fmt: skip
    args = build_parser().parse_args(["vace-e", "train", "--config", str(path)])
    config = vace_e_config_from_args(args)
    assert config.learning_rate == 1e-4
    assert [(s.learning_rate, s.num_epochs) for s in config.stages()] == [(5e-5, 2), (1e-5, None)]
    bad = VaceEConfig.__new__(VaceEConfig)
    bad.trainable_models, bad.learning_rate, bad.num_epochs = "vace_e", 1e-4, None
    bad.training_stages = {"s": {"num_epochs": "two"}}
    with pytest.raises(
        ValueError, match=r"training_stages.s.num_epochs: expected a number \(int\), got 'two'"
    ):
        bad.stages()
    bad.training_stages = {"s": {"max_steps": 0}}
    with pytest.raises(ValueError, match=r"training_stages.s.max_steps: expected >= 1, got 0"):
        bad.stages()


def test_flow_options_are_checked_when_the_config_is_made():
    for key, value in (("sigma_schedule", "linear"), ("loss_weighting", "snr"), ("flow_shift", 0.0)):
        with pytest.raises(ValueError, match=f"--{key}"):
            TrainConfig(model_dir="m", dataset_base_path="d", **{key: value})
        with pytest.raises(ValueError, match=f"--{key}"):
            VaceEConfig(model_dir="m", dataset_base_path="d", task_metadata_path="t", **{key: value})
    defaults = TrainConfig(model_dir="m", dataset_base_path="d")
    assert (defaults.sigma_schedule, defaults.loss_weighting, defaults.flow_shift) == (
        "train",
        "diffsynth",
        5.0,
    )
    vace = VaceEConfig(model_dir="m", dataset_base_path="d", task_metadata_path="t")
    assert (vace.sigma_schedule, vace.loss_weighting, vace.flow_shift) == ("train", "diffsynth", 3.0)


def test_runs_saved_before_the_flow_options_resume_with_what_they_trained_with():
    old = {"model_dir": "m", "dataset_base_path": "d", "loss_weighting": "none"}  # a 0.4 run's saved options
    config = TrainConfig(
        model_dir="m", dataset_base_path="d", loss_weighting="none", sigma_schedule="inference"
    )
    assert "sigma_schedule" not in config.differences(old)
    assert TrainConfig(model_dir="m", dataset_base_path="d").differences(old)["sigma_schedule"] == (
        "inference",
        "train",
    )
    vace = VaceEConfig(model_dir="m", dataset_base_path="d", task_metadata_path="t")
    assert {k: v[0] for k, v in vace.differences({}).items() if k in ("flow_shift", "loss_weighting")} == {
        "loss_weighting": "none"
    }  # shift 3 was fixed before the field existed: no difference


def test_only_the_main_process_clears_a_stage_folder_and_marks_it_done(tmp_path, monkeypatch):
    """run_stages runs on every process; a second process must neither delete a stage folder the first may be
    writing nor write stage_done.json. Here this process plays a non-main one, then the main one."""
    from kinema.robot_data.testing import write_vace_e_dataset
    from kinema.video_world_model.vace_e import _train
    from kinema.video_world_model.vace_e._train import STAGE_DONE, run_stages
    from kinema.video_world_model.vace_e.testing import write_tiny_vace

    class State:
        def __init__(self, main):
            self.is_main_process, self.waits = main, 0

        def wait_for_everyone(self):
            self.waits += 1

    root = tmp_path / "episodes"
    metadata = write_vace_e_dataset(root, num_frames=13, height=32, width=32).metadata
    config = VaceEConfig(
        model_dir=str(write_tiny_vace(tmp_path / "vace")), dataset_base_path=str(root),
        task_metadata_path=str(metadata), num_frames=13, height=32, width=32, encoder_width=32, encoder_layers=1,
        encoder_heads=4, vace_e_layers="0,2", mixed_precision="no", dataset_num_workers=0, save_steps=5,
        output_path=str(tmp_path / "run"), training_stages={"a": {"max_steps": 1}},
    )  # fmt: skip
    stale = tmp_path / "run" / "a" / "started_by_an_interrupted_run.txt"
    stale.parent.mkdir(parents=True)
    stale.write_text("x")
    other = State(main=False)
    monkeypatch.setattr(_train, "PartialState", lambda **_: other)
    run_stages(config)
    assert stale.is_file() and not (stale.parent / STAGE_DONE).exists() and other.waits == 2
    # as if that run had been interrupted before its first checkpoint: the main process starts the stage over
    shutil.rmtree(stale.parent / "checkpoints")
    monkeypatch.setattr(_train, "PartialState", lambda **_: State(main=True))
    run_stages(config)
    assert not stale.exists() and (stale.parent / STAGE_DONE).is_file()


def test_every_train_flag_has_help_a_group_a_default_and_its_choices():
    from dataclasses import MISSING, fields

    from kinema.video_world_model.training._option_help import GROUPS, OPTION_HELP

    parser = build_parser()
    train = next(
        a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" train")
    )
    actions = {a.dest: a for a in train._actions if a.dest != "help"}
    titles = {a.dest: g.title for g in train._action_groups for a in g._group_actions}
    for f in fields(TrainConfig):
        if str(f.type).startswith("dict"):
            continue
        action = actions[f.name]
        assert f.name in OPTION_HELP and OPTION_HELP[f.name][0] in GROUPS, f.name
        assert titles[f.name] == f"{OPTION_HELP[f.name][0]} options"
        assert len(action.help) > 10, f.name
        if f.default not in (None, MISSING):
            assert action.help.endswith(f"(default: {str(f.default).replace('%', '%%')})"), f.name
    assert actions["sigma_schedule"].choices == ("train", "inference")
    assert actions["loss_weighting"].choices[0] == "diffsynth"
    text = train.format_help()
    assert "flow matching options:" in text and "(default: diffsynth)" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--sigma_schedule", "linear"])
