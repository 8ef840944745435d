"""kinema-act train: flags, exit codes (0 ok, 1 failure, 2 usage, 3 paused) and clear errors."""

from __future__ import annotations

import json
import warnings

import pytest

from kinema.act_policy import ACTConfig
from kinema.act_policy.cli import main
from kinema.act_policy.testing import tiny_config, write_episodes

FAST = ["--batch-size", "4", "--load-workers", "1", "--no-progress", "--val-every", "2", "--log-every", "1"]


@pytest.mark.parametrize("command", [["train"], ["eval"], ["experiment", "confuser"]])
def test_every_command_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_train_writes_a_checkpoint(episodes, tmp_path, capsys):
    tiny_config().save(tmp_path)
    code = main(
        ["train", "--data", str(episodes), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "act_config.json"),
         "--coordinates", "--max-steps", "3", "--temporal-ensemble", "0.01", "--json", *FAST]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "step 3 (max_steps)" in out and json.loads(out.splitlines()[-1])["step"] == 3
    config = ACTConfig.load(tmp_path / "run")
    assert config.temporal_ensemble_coeff == 0.01 and config.n_action_steps == 1 and config.dim_model == 32


def test_train_runs_on_the_original_act_recorder_layout(tmp_path, capsys):
    """Files from tonyzhaozh/act record_sim_episodes.py (root attribute sim only; the task is the folder name)."""
    from kinema.robot_data import RobotDataWarning
    from kinema.robot_data.testing import write_act_sim_episodes

    data = write_act_sim_episodes(tmp_path / "sim_transfer_cube_scripted", num_episodes=3, num_steps=10)
    tiny_config().save(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(
            ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "act_config.json"),
             "--max-steps", "2", "--json", *FAST]
        )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["step"] == 2
    said = [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]
    assert len(said) == 1 and "fps=50" in said[0], said  # the defaults, named once
    assert ACTConfig.load(tmp_path / "run").notes["task"] == "sim_transfer_cube_scripted"


def test_train_infers_dims_and_switches_remedies_on(episodes, tmp_path, monkeypatch):
    """Without --config, dims come from the data; a remedy implies coordinates."""
    captured = {}
    import kinema.act_policy._train as training
    from kinema.act_policy import TrainResult

    def record(model, config):  # stands in for a full-size training run: only the configs matter here
        captured.update(model=model, config=config)
        return TrainResult(str(tmp_path), 0, True, "max_steps", 0.0, 0.0, 0.0, 0.0, {}, 1, "cpu")

    monkeypatch.setattr(training, "train", record)
    code = main(["train", "--data", str(episodes), "--out", str(tmp_path / "r"), "--remedy", "film", "--remedy",
                 "aux_head", "--chunk-size", "50", "--lr", "1e-4", "--max-minutes", "9", *FAST])  # fmt: skip
    assert code == 0
    model, config = captured["model"], captured["config"]
    assert model.environment_state_dim == 2 and model.coord_film and model.coord_aux_head
    assert model.chunk_size == model.n_action_steps == 50 and model.state_dim == 14
    assert config.lr == 1e-4 and config.max_minutes == 9 and config.batch_size == 4


def test_train_bad_input_exits_1_naming_what_is_missing(tmp_path, capsys):
    root = write_episodes(tmp_path / "data", 2, 6, environment_state_dim=None)
    code = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--coordinates", *FAST])
    assert code == 1
    err = capsys.readouterr().err
    assert "episode_0.hdf5: observations/environment_state: missing" in err
    code = main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), *FAST])
    assert code == 1 and "nothing does not exist" in capsys.readouterr().err


def test_train_paused_by_session_limit_exits_3_and_resumes(episodes, tmp_path, capsys):
    tiny_config().save(tmp_path)
    args = ["train", "--data", str(episodes), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "act_config.json"), *FAST]  # fmt: skip
    assert main([*args, "--max-steps", "500", "--session-minutes", "0.0001"]) == 3
    assert "--resume" in capsys.readouterr().err
    assert main([*args, "--max-steps", "2"]) == 1  # the folder holds a run: refused without --resume
    assert main([*args, "--max-steps", "2", "--resume"]) == 0


def test_usage_errors_exit_2(capsys):
    for argv in (
        ["train", "--data", "d"],  # no --out
        ["train", "--data", "d", "--out", "o", "--remedy", "magic"],
        ["train", "--data", "d", "--out", "o", "--batch-size", "0"],
        ["eval", "--checkpoint", "c", "--chunked", "--temporal-ensemble", "0.01"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv


def test_confuser_experiment_names_the_missing_data_folder(tmp_path, capsys):
    argv = ["experiment", "confuser", "--clean-data", str(tmp_path), "--out", str(tmp_path / "out")]
    assert main([*argv, "--confuser-data", str(tmp_path / "absent")]) == 1
    assert f"--confuser-data: {tmp_path / 'absent'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_train_reads_a_lerobot_dataset_folder_as_its_episodes(episodes, tmp_path, capsys):
    """kinema's recordings exported to LeRobot v3.0 train like the HDF5 folder they came from: same episodes, same
    normalization statistics, same losses."""
    from kinema.act_policy._loop import episode_files
    from kinema.robot_data.lerobot import export_lerobot

    lerobot = export_lerobot(episodes, tmp_path / "lerobot", progress=False)
    refs = episode_files(lerobot)
    assert [str(p) for p in refs] == [
        f"{lerobot}#episode_{i:06d}" for i in range(len(episode_files(episodes)))
    ]
    tiny_config().save(tmp_path)
    runs = {}
    for name, data in (("hdf5", episodes), ("lerobot", lerobot)):
        code = main(
            ["train", "--data", str(data), "--out", str(tmp_path / name), "--config", str(tmp_path / "act_config.json"),
             "--coordinates", "--max-steps", "2", "--json", *FAST]
        )  # fmt: skip
        assert code == 0, capsys.readouterr().err
        runs[name] = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert runs["lerobot"]["step"] == runs["hdf5"]["step"] == 2
    # images went through H.264 (qpos, actions and coordinates are exact), so the validation losses agree closely
    assert runs["lerobot"]["val"] and runs["lerobot"]["val"].keys() == runs["hdf5"]["val"].keys()
    for key, value in runs["hdf5"]["val"].items():
        assert runs["lerobot"]["val"][key] == pytest.approx(value, rel=0.05), key
    stats = {name: json.loads((tmp_path / name / "policy_stats.json").read_text()) for name in runs}
    assert (
        stats["lerobot"]["fields"]["qpos"] == stats["hdf5"]["fields"]["qpos"]
    )  # same steps, same statistics
