import json
import subprocess
import sys

import pytest

from kinema.robot_data import RobotDataError, load_stats
from kinema.robot_data import cli as cli_module
from kinema.robot_data._detect import ACTION_VIDEO, POLICY, VACE_E, detect_format
from kinema.robot_data.cli import REGISTRARS, build_parser, main
from kinema.robot_data.testing import write_policy_dataset


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_detects_each_format(policy_clean, action_video_clean, vace_e_clean, tmp_path):
    assert detect_format(policy_clean.root).format == POLICY
    assert detect_format(policy_clean.valid[0]).format == POLICY
    detected = detect_format(action_video_clean.root)
    assert (detected.format, detected.metadata) == (ACTION_VIDEO, action_video_clean.metadata)
    assert detect_format(action_video_clean.metadata).root == action_video_clean.root
    detected = detect_format(vace_e_clean.root, vace_e_clean.metadata)
    assert (detected.format, detected.metadata) == (VACE_E, vace_e_clean.metadata)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(RobotDataError, match="no dataset found"):
        detect_format(tmp_path)


def test_validate_clean_datasets_pass(policy_clean, action_video_clean, capsys):
    for path in (policy_clean.root, action_video_clean.root):
        code, out, _ = run(["validate", str(path)], capsys)
        assert code == 0, out
        assert "PASSED" in out and "0 error(s)" in out


def test_validate_lists_every_broken_item_and_fails(policy, action_video, vace_e, tmp_path, capsys):
    cases = [
        (policy, ["validate", str(policy.root)], lambda item: item),
        (action_video, ["validate", str(action_video.root)], lambda item: item.split("/")[-1]),
        (
            vace_e,
            ["validate", str(vace_e.root), "--metadata", str(vace_e.metadata)],
            lambda item: item.split("/")[-1],
        ),
    ]
    for fixture, argv, name in cases:
        report = tmp_path / "report.json"
        code, out, _ = run([*argv, "--json", str(report)], capsys)
        assert code == 1
        assert "FAILED" in out
        data = json.loads(report.read_text())
        errors = [item for item in data["items"] if item["status"] == "error"]
        assert data["passed"] is False and data["counts"]["error"] == len(errors)
        for kind, item in fixture.broken.items():
            if fixture is action_video and kind.startswith("action"):
                continue  # named by their CSV row below
            assert any(name(item) in e["path"] for e in errors), (kind, errors)
            assert name(item).split("/")[-1] in out
        assert all(e["reason"] for e in errors)
    rows = [e["field"] for e in json.loads(report.read_text())["items"]]
    assert rows  # the last report (VACE-E) has fields


def test_action_rows_are_named_in_the_table(action_video, capsys):
    code, out, _ = run(["validate", str(action_video.root)], capsys)
    assert code == 1
    assert "row 6 (line 8): action: not valid JSON" in out
    assert "row 8 (line 10): action: 3 action steps cover 13 frames, but video" in out
    assert "truncated: the header declares 9 frames" in out  # found by decoding, not by the index


def test_validate_strict_fails_on_warnings(vace_e_clean, capsys):
    argv = ["validate", str(vace_e_clean.root), "--metadata", str(vace_e_clean.metadata)]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "warning" in out and "video only" in out
    code, out, _ = run([*argv, "--strict"], capsys)
    assert code == 1 and "FAILED" in out


def test_usage_errors_exit_2(vace_e_clean, tmp_path, capsys):
    code, _, err = run(["validate", str(vace_e_clean.root)], capsys)
    assert code == 2 and "--metadata" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["validate"])
    assert exit_info.value.code == 2
    capsys.readouterr()
    code, _, err = run(["inspect", str(tmp_path / "missing")], capsys)
    assert code == 1 and "does not exist" in err


def test_inspect_prints_counts_and_statistics(policy_clean, action_video_clean, vace_e_clean, capsys):
    code, out, _ = run(["inspect", str(policy_clean.root)], capsys)
    assert code == 0
    assert "6 readable, 0 unreadable" in out and "total 120" in out and "top 24x32 (6)" in out
    assert "synthetic (6)" in out and "action mean" in out
    code, out, _ = run(["inspect", str(action_video_clean.metadata)], capsys)
    assert code == 0 and "3 usable, 0 skipped" in out and "action forward" in out and "16 (3)" in out
    code, out, _ = run(["inspect", str(vace_e_clean.root), "--metadata", str(vace_e_clean.metadata)], capsys)
    assert code == 0 and "h1_inspire (2), human_avp (1)" in out and "with hand trajectories        2" in out


def test_stats_writes_beside_the_dataset_or_to_out(tmp_path, action_video_clean, capsys):
    fixture = write_policy_dataset(tmp_path / "episodes", num_episodes=2)
    code, out, _ = run(["stats", str(fixture.root)], capsys)
    assert code == 0 and "policy_stats.json" in out
    stats = load_stats(fixture.root)
    assert stats["qpos"]["count"] == 40 and stats["action"]["mean"].shape == (14,)
    code, _, _ = run(["stats", str(action_video_clean.root), "--out", str(tmp_path / "a.json")], capsys)
    assert code == 0
    actions = load_stats(tmp_path / "a.json")
    assert set(actions) == {"action_binary", "action_magnitude"} and actions["action_binary"]["count"] == 6


def test_every_command_has_help_with_examples(capsys):
    for command in ("validate", "inspect", "stats"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0 and "examples:" in capsys.readouterr().out


def test_console_script_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "kinema.robot_data.cli", "--version"], capture_output=True, text=True
    )
    from kinema.robot_data import __version__

    assert result.returncode == 0 and f"kinema-data {__version__}" in result.stdout


def test_other_modules_can_register_commands(capsys):
    def register(commands):
        parser = commands.add_parser("hello", help="say hello")
        parser.set_defaults(handler=lambda args: print("hello") or 0)

    REGISTRARS.append(register)
    try:
        assert "hello" in build_parser().format_help()
        assert main(["hello"]) == 0 and capsys.readouterr().out == "hello\n"
    finally:
        REGISTRARS.remove(register)
    assert register not in cli_module.REGISTRARS
