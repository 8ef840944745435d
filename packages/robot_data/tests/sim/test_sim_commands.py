"""record-sim and eval-sim on the command line: usage errors, refusals, a full run, lazy imports."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from kinema.robot_data.sim import write_policy_manifest
from kinema.robot_data.sim._commands import add_sim_commands


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kinema-data")
    add_sim_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


def test_importing_the_commands_loads_no_simulator():
    code = (
        "import sys, kinema.robot_data.sim, kinema.robot_data.sim._commands; "
        "print(sorted(m for m in ('mujoco', 'dm_control', 'gym_aloha', 'gymnasium') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["record-sim", "--task", "stack", "--out", "x"], "invalid choice: 'stack'"),
        (
            ["record-sim", "--task", "insertion", "--out", "x", "--episodes", "0"],
            "expected an integer >= 1, got 0",
        ),
        (
            ["record-sim", "--task", "insertion", "--out", "x", "--image-size", "4", "640"],
            "between 8 and 4096",
        ),
        (["eval-sim", "--checkpoint", "c", "--render-quality", "low"], "invalid choice: 'low'"),
        (["eval-sim"], "the following arguments are required: --checkpoint"),
    ],
)
def test_usage_errors_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as raised:
        _run(argv)
    assert raised.value.code == 2
    assert message in capsys.readouterr().err


def test_record_sim_refuses_a_folder_with_episodes(tmp_path, capsys):
    (tmp_path / "episode_0.hdf5").write_bytes(b"from another recording")
    assert _run(["record-sim", "--task", "transfer_cube", "--out", str(tmp_path), "--episodes", "1"]) == 1
    error = capsys.readouterr().err
    assert "kinema-data record-sim: error: out_dir" in error and "--overwrite" in error
    assert (tmp_path / "episode_0.hdf5").read_bytes() == b"from another recording"


def test_eval_sim_missing_manifest_is_a_failure(tmp_path, capsys):
    assert _run(["eval-sim", "--checkpoint", str(tmp_path)]) == 1
    assert "policy.json does not exist" in capsys.readouterr().err


def test_record_then_eval_on_the_command_line(transfer_recording, tmp_path, capsys):
    """eval-sim loads a checkpoint through policy.json (the built-in replay loader) and writes its results."""
    _, folder = transfer_recording
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "episode.hdf5").write_bytes((folder / "episode_0.hdf5").read_bytes())
    write_policy_manifest(
        checkpoint,
        "kinema.robot_data.sim:load_replay_policy",
        task="transfer_cube",
        image_size=(48, 64),
        render_quality="fast",
    )
    out = tmp_path / "eval"
    argv = ["eval-sim", "--checkpoint", str(checkpoint), "--seed", "0", "--episodes", "1"]
    argv += ["--episode-length", "200", "--out", str(out), "--videos", "1", "--json"]
    assert _run(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("transfer_cube: success 100.0% over 1 episodes")
    summary = json.loads(printed[-1])
    assert summary["success_rate"] == 1.0 and summary["image_size"] == [48, 64]
    assert summary["render_quality"] == "fast"
    assert (out / "videos" / "episode_000_seed_0.mp4").is_file()
    # --train-data refuses seeds the recording used.
    argv = ["eval-sim", "--checkpoint", str(checkpoint), "--seed", "0", "--train-data", str(folder)]
    assert _run(argv) == 1
    assert "evaluation seeds are also training seeds (0, 1)" in capsys.readouterr().err
