"""End to end at the smallest size: the ablation and the demo write their tables, plots and video."""

import json

import numpy as np
import pytest

from kinema.hybrid_policy import AblationConfig, run_ablation
from kinema.hybrid_policy._demo import DemoConfig, run_demo

TINY_ABLATION = {
    "size": "tiny",
    "chunk_size": 8,
    "n_action_steps": 8,
    "max_steps": 3,
    "batch_size": 4,
    "eval_episodes": 2,
    "val_episodes": 2,
    "diversity_samples": 2,
    "diversity_observations": 2,
    "num_inference_steps": 2,
    "device": "cpu",
    "progress": False,
    "hybrid": {"num_train_timesteps": 10},
}


def test_ablation_writes_results_and_resumes(tmp_path):
    config = AblationConfig(
        task="dock", out_dir=str(tmp_path), variants=("act", "act_z", "C"), seeds=(0,), demos=(2, 4),
        **TINY_ABLATION,
    )  # fmt: skip
    results = run_ablation(config)
    assert [(r["policy"], r["demos"]) for r in results["rows"]] == [
        ("act", 2),
        ("act_z", 2),
        ("C", 2),
        ("act", 4),
        ("act_z", 4),
        ("C", 4),
    ]
    for row in results["rows"]:
        assert 0 <= row["success"] <= 1 and row["steps"] == 3
        assert {"l1", "l2", "chunk_spread", "jerk", "step", "both_sides_fraction"} <= set(row)
        assert {"jerk_success", "step_success", "successes"} <= set(row)
        assert row["successes"] == round(row["success"] * 2)  # 2 evaluation episodes
    act = next(r for r in results["rows"] if r["policy"] == "act")
    assert act["chunk_spread"] == 0.0  # ACT with z = 0 is deterministic at inference
    act_z = next(r for r in results["rows"] if r["policy"] == "act_z")
    assert act_z["chunk_spread"] > 0.0  # z ~ N(0, I): the chunks for one observation differ
    # act_z evaluates the act cell's training (same weights), it does not train its own
    assert act_z["steps"] == act["steps"] and act_z["train_seconds"] == act["train_seconds"]
    assert not (tmp_path / "runs" / "act_z_d2_s0" / "checkpoints").exists()
    assert (tmp_path / "runs" / "act_z_d2_s0" / "cell.json").is_file()
    # every cell trains on the same schedule: cosine, warm-up min(500, 3 // 10) = 0, EMA weights (issue 23)
    schedule = ("lr", "lr_backbone", "lr_schedule", "warmup_steps", "ema", "ema_power", "ema_max_decay",
                "batch_size", "max_steps", "weight_decay", "grad_clip")  # fmt: skip
    settings = {
        cell: {k: json.loads((tmp_path / "runs" / cell / "train_config.json").read_text())["train"][k]
               for k in schedule}
        for cell in ("act_d2_s0", "C_d2_s0")
    }  # fmt: skip
    assert settings["act_d2_s0"] == settings["C_d2_s0"]
    assert settings["act_d2_s0"]["lr_schedule"] == "cosine" and settings["act_d2_s0"]["ema"] is True
    assert (tmp_path / "runs" / "act_d2_s0" / "checkpoints" / "step-000000003" / "ema.pt").is_file()
    for name in ("results.json", "results.md", "results.png", "sample_efficiency.png"):
        assert (tmp_path / name).is_file(), name
    report = (tmp_path / "results.md").read_text()
    assert "| policy | demos | success | step | jerk | jerk ok |" in report
    assert "(cosine, 0 warm-up steps, EMA True;" in report and "on seeds from 100000" in report
    again = run_ablation(config)  # finished cells are read back, not retrained
    assert again["rows"] == results["rows"]


def test_demo_writes_report_plot_and_video(tmp_path):
    config = DemoConfig(
        out_dir=str(tmp_path), demos=2, max_steps=2, eval_episodes=4, video_scenes=2, progress=False
    )
    summary = run_demo(config)
    report = (tmp_path / "report.md").read_text()
    assert f"{summary['act']['success']:.0%}" in report and "| policy | success |" in report
    assert (tmp_path / "trajectories.png").stat().st_size > 1000
    assert (tmp_path / "rollouts.mp4").stat().st_size > 1000
    assert json.loads((tmp_path / "demo.json").read_text())["summary"]["C"]["policy"] == "C"


def test_ablation_in_pieces_prepare_then_session_limited_cells(tmp_path):
    base = {"task": "dock", "out_dir": str(tmp_path), "variants": ("C",), "seeds": (0,), "demos": (2,)}
    prepared = run_ablation(AblationConfig(**base, **TINY_ABLATION), prepare_only=True)
    assert prepared["complete"] is False and prepared["rows"] == []
    assert (tmp_path / "data" / "train" / "recording.json").is_file() and not (tmp_path / "runs").exists()

    # a session limit reached after the first step: checkpoint kept, cell neither evaluated nor tabulated
    piece = run_ablation(AblationConfig(**base, **TINY_ABLATION, session_minutes=1e-9))
    assert piece == {"complete": False, "rows": [], "unfinished": ["C_d2_s0"]}
    assert (tmp_path / "runs" / "C_d2_s0" / "checkpoints").is_dir()
    assert (
        not (tmp_path / "runs" / "C_d2_s0" / "cell.json").exists()
        and not (tmp_path / "results.json").exists()
    )

    finished = run_ablation(AblationConfig(**base, **TINY_ABLATION, eval_seed=70_000))
    assert finished["complete"] is True and [r["steps"] for r in finished["rows"]] == [3]
    summary = json.loads((tmp_path / "runs" / "C_d2_s0" / "eval_dock" / "eval_summary.json").read_text())
    assert summary["seed"] == 70_000  # a validation range, not the reported one
    assert "on seeds from 70000" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "results.json").is_file()


def test_given_episodes_are_split_in_numeric_order(tmp_path):
    """Cells train on the first ``demos`` episodes and hold out the last ``val_episodes``, by number."""
    from kinema.hybrid_policy._ablation import prepare_data

    data = tmp_path / "data"
    data.mkdir()
    for e in range(12):
        (data / f"episode_{e}.hdf5").touch()
    config = AblationConfig(
        task="transfer_cube", data=str(data), out_dir=str(tmp_path / "out"), demos=(3,), val_episodes=2
    )
    train, held_out = prepare_data(config)
    assert [p.name for p in train] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert [p.name for p in held_out] == ["episode_10.hdf5", "episode_11.hdf5"]


def test_jerk_over_all_and_over_successful_episodes_by_hand():
    """a_t = t (success): third difference 0; a_t = t^3 (failure): third difference 6 at every step; a_t = 2t
    (success): 0. All episodes: jerk (0 + 6 + 0) / 3 = 2, successful ones: 0; step: mean |a_{t+1} - a_t|."""
    from kinema.hybrid_policy._ablation import episode_smoothness

    t = np.arange(6.0)[:, None]  # (T, 1)
    sequences = [t, t**3, 2 * t]
    records = [{"success": True}, {"success": False}, {"success": True}]
    out = episode_smoothness(sequences, records)
    assert out["jerk"] == pytest.approx(2.0) and out["jerk_success"] == pytest.approx(0.0)
    cubic_step = np.mean(np.diff(t[:, 0] ** 3))  # (1 + 7 + 19 + 37 + 61) / 5 = 25
    assert out["step"] == pytest.approx((1 + cubic_step + 2) / 3) and out["step_success"] == pytest.approx(
        1.5
    )
    assert out["successes"] == 2
    none = episode_smoothness(sequences, [{"success": False}] * 3)
    assert none["jerk_success"] is None and none["jerk"] == pytest.approx(2.0)
    with pytest.raises(RuntimeError, match="recorded 3 action sequences for 2 evaluated episodes"):
        episode_smoothness(sequences, records[:2])


def test_recorded_actions_follow_the_harness_episode_order():
    """More episodes than environments (rows restart mid-run): the recorder's sequences are the harness's
    episodes in order (closed_loop checks them against the dock records and raises otherwise)."""
    from kinema.hybrid_policy._ablation import ActionRecorder, episode_smoothness
    from kinema.robot_data.sim.dock import evaluate, sample_scenes

    class Upward:  # straight up, at a speed that depends on the start: episodes end at different steps
        def reset(self, num_envs):
            pass

        def act(self, observation):
            qpos = np.asarray(observation["qpos"], np.float64)
            return qpos + np.array([0.0, 0.03]) + 0.02 * (qpos[:, :1] - 0.5)

    recorder = ActionRecorder(Upward())
    result = evaluate(recorder, 7, num_envs=3, progress=False)
    sequences = recorder.finish()
    assert len(sequences) == 7
    for record, actions in zip(result.episodes, sequences, strict=True):
        np.testing.assert_array_equal(record["actions"], actions)
        scene = sample_scenes([record["seed"]]).environment_state()[0]
        np.testing.assert_allclose(recorder.starts[record["episode"]], scene, atol=1e-6)  # its own scene
    smooth = episode_smoothness(sequences, result.episodes)
    assert smooth["successes"] == sum(r["success"] for r in result.episodes)
