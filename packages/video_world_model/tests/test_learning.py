"""The world model learns to follow actions: a small Wan model + action controller trained here, on rendered drone
flights, by kinema-wm's own loop, generates held-out flights whose camera motion the estimator reads back.

This is the evidence that the whole chain (controller, injection, training loop, sampler) works: a disconnected,
zeroed or ignored controller makes the own-action and shuffled-action clips identical (same noise), so the gap
asserted below would vanish (up to codec noise). A few minutes on two cores (the "ci" preset of the drone experiment)."""

import argparse
import json
import os

import numpy as np
import pytest

from kinema.robot_data import read_video_frames
from kinema.video_world_model.cli import _demo as _cli_demo
from kinema.video_world_model.drone._experiment import PRESETS, VARIANTS, DroneExperiment, preset, summary_row


@pytest.fixture()
def all_cores():
    """conftest.py runs the tiny models on one thread; this test trains for minutes and wants both cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(4, os.cpu_count() or 1))
    yield
    torch.set_num_threads(before)


def test_a_small_world_model_follows_the_actions_it_is_given(renderer_backend, all_cores, tmp_path):
    results = DroneExperiment(preset("ci"), tmp_path / "work", tmp_path / "out").run(["adaln_tmod"])
    row = summary_row(results, "adaln_tmod")
    assert row["ground_truth"] >= 0.85  # the estimator reads real flights (its ceiling)
    assert (
        row["shuffled_actions"] <= 0.56 and row["zero_actions"] <= 0.56
    )  # the floor: actions that do not fit
    assert row["actions"] - row["shuffled_actions"] >= 0.15
    assert row["actions"] - row["zero_actions"] >= 0.15
    for name in ("results_adaln_tmod.json", "per_action_adaln_tmod.png", "grid_adaln_tmod.mp4"):
        assert (tmp_path / "out" / name).stat().st_size > 0


def test_an_ignored_controller_scores_no_gap(renderer_backend, tmp_path, monkeypatch):
    """The control for the test above: with the controller frozen at output scale 0 the model never sees its
    actions, and own, shuffled and zero actions generate the same clips (up to H.264 noise: libx264 does not
    encode tiny frames bit for bit the same twice), so there is no gap to measure."""
    from kinema.video_world_model.drone import _experiment as _drone_experiment

    original = _drone_experiment.DroneWorldModelTrainer

    def frozen(config, transformer):
        config.action_initial_scale = 0.0
        return original(config, transformer, train_controller=False)

    monkeypatch.setattr(_drone_experiment, "DroneWorldModelTrainer", frozen)
    experiment = DroneExperiment(preset("smoke"), tmp_path / "work")
    experiment.run(["add_residual"])
    for name in sorted((experiment.gen_dir("add_residual", "actions") / "videos").iterdir()):
        own = read_video_frames(name).astype(float)
        for condition in ("shuffled_actions", "zero_actions"):
            other = read_video_frames(experiment.gen_dir("add_residual", condition) / "videos" / name.name)
            assert np.abs(own - other).mean() < 1.0, (name.name, condition)


def test_the_cli_knows_the_experiment_s_names():
    assert tuple(VARIANTS) == _cli_demo.VARIANTS and set(_cli_demo.PRESETS) == set(PRESETS)
    assert PRESETS["cpu"].steps == _cli_demo.DEMO_STEPS
    parser = argparse.ArgumentParser()
    _cli_demo.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["demo", "--out", "x", "--steps", "5"])
    assert args.variant == "adaln_tmod" and args.steps == 5
    with pytest.raises(ValueError, match="--steps"):
        _cli_demo.run_demo(parser.parse_args(["demo", "--out", "x", "--steps", "0"]))


def test_a_budgeted_series_resumes_and_its_last_call_scores_the_last_checkpoint(tmp_path):
    """A call that must keep its reserve stops at a checkpoint and scores nothing; the next call resumes from that
    checkpoint; with finish=True a variant short of its steps is scored at the steps it has, and says so."""
    settings = preset("smoke", steps=8, chunk=4, warmup_ratio=0.0, min_lr_ratio=1.0)
    work, out = tmp_path / "work", tmp_path / "out"
    # a reserve as large as the budget: after its first chunk the variant must stop for it
    first = DroneExperiment(settings, work, out, budget_seconds=1e6, reserve_seconds=1e6)
    assert first.run(["add_residual"]) == {}
    assert first.steps_done("add_residual") == 4 and not out.exists()
    last = DroneExperiment(settings, work, out, budget_seconds=1e6, reserve_seconds=1e6, finish=True)
    results = last.run(["add_residual"])
    assert last.steps_done("add_residual") == 4  # no chunk fitted beside the reserve; nothing was retrained
    assert set(summary_row(results, "add_residual")) == {"actions", "shuffled_actions", "zero_actions",
                                                         "ground_truth"}  # fmt: skip
    meta = json.loads((out / "results_add_residual.json").read_text())["meta"]
    assert (meta["steps_trained"], meta["steps_target"]) == (4, 8)
    # an unbounded call trains on from the checkpoint to the preset's steps
    DroneExperiment(settings, work, out).run(["add_residual"])
    assert json.loads((out / "results_add_residual.json").read_text())["meta"]["steps_trained"] == 8
