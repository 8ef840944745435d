import json

import pytest

from kinema.hybrid_policy.cli import main


@pytest.mark.parametrize("command", [[], ["train"], ["eval"], ["ablate"], ["demo"], ["record-dock"]])
def test_help_exits_zero_with_examples(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "kinema-hybrid" in out
    if command:
        assert "examples:" in out


def test_usage_errors_exit_two(capsys):
    assert main(["train"]) == 2  # --data and --out are required
    assert main(["frobnicate"]) == 2
    assert "usage" in capsys.readouterr().err


def test_record_dock(tmp_path, capsys):
    assert main(["record-dock", "--out", str(tmp_path / "d"), "--episodes", "2"]) == 0
    assert "2 dock episodes" in capsys.readouterr().out
    assert main(["record-dock", "--out", str(tmp_path / "d"), "--episodes", "2"]) == 1
    assert "overwrite" in capsys.readouterr().err


def test_train_unknown_variant_and_bad_schedule_name_the_argument(dock_data, tmp_path, capsys):
    assert main(["train", "--data", str(dock_data), "--out", str(tmp_path / "r"), "--variant", "D"]) == 1
    assert "variant: unknown 'D'" in capsys.readouterr().err
    args = ["train", "--data", str(dock_data), "--out", str(tmp_path / "r"), "--kl-schedule", "linear:oops"]
    assert main(args) == 1
    assert "kl schedule 'linear:oops' does not parse" in capsys.readouterr().err
    assert main(["train", "--data", str(dock_data), "--out", str(tmp_path / "r"), "--steps", "0"]) == 1
    assert "num_inference_steps" in capsys.readouterr().err


def test_eval_refuses_a_checkpoint_of_another_variant(trained, capsys):
    _, out = trained
    assert (
        main(["eval", "--checkpoint", str(out), "--task", "dock", "--variant", "B", "--episodes", "1"]) == 1
    )
    assert "expected variant B" in capsys.readouterr().err


def test_eval_on_dock(trained, tmp_path, capsys):
    _, out = trained
    args = [
        "eval",
        "--checkpoint",
        str(out),
        "--episodes",
        "2",
        "--out",
        str(tmp_path / "e"),
        "--json",
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["task"] == "dock" and summary["episodes"] == 2
    assert (tmp_path / "e" / "eval_summary.json").is_file()


def test_ablate_rejects_unknown_variants(tmp_path, capsys):
    assert main(["ablate", "--task", "dock", "--variants", "act,X", "--out", str(tmp_path)]) == 1
    assert "variants: unknown ['X']" in capsys.readouterr().err
    assert main(["ablate", "--task", "pong", "--out", str(tmp_path)]) == 1
    assert "task: unknown 'pong'" in capsys.readouterr().err
    assert main(["ablate", "--task", "dock", "--demos", "ten", "--out", str(tmp_path)]) == 1
    assert "--demos" in capsys.readouterr().err


def test_train_reads_a_lerobot_dataset_folder(dock_data, tmp_path, capsys):
    """The dock recordings exported to LeRobot v3.0 train the hybrid through the same episode readers."""
    from kinema.robot_data.lerobot import export_lerobot

    lerobot = export_lerobot(dock_data, tmp_path / "lerobot", progress=False)
    args = ["train", "--data", str(lerobot), "--out", str(tmp_path / "run"), "--variant", "C", "--size", "tiny",
            "--max-steps", "2", "--batch-size", "2"]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    config = json.loads((tmp_path / "run" / "hybrid_config.json").read_text())
    assert config["config"]["state_dim"] > 0 and (tmp_path / "run" / "model.safetensors").is_file()
