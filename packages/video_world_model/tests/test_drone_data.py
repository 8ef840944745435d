"""The drone commands of kinema-wm and the action-following metric on rendered flights."""

import argparse
import shutil

import pytest

from kinema.robot_data.drone import DroneDataConfig, make_drone_dataset
from kinema.video_world_model.cli import _drone as _cli_drone

TINY = {"texture_size": 128, "grid": 33, "clips_per_world": 4}


def cli(argv):
    parser = argparse.ArgumentParser()
    _cli_drone.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


@pytest.fixture(scope="module")
def flights(tmp_path_factory, renderer_backend):
    out = tmp_path_factory.mktemp("drone") / "flights"
    config = DroneDataConfig(out=str(out), clips=8, height=32, width=32, frames=41, seed=3, **TINY)
    make_drone_dataset(config, progress=False)
    return out, config


def test_existing_output_needs_overwrite(tmp_path, capsys):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old.txt").write_text("x")
    with pytest.raises(FileExistsError, match=r"already exists and is not empty \(pass --overwrite"):
        make_drone_dataset(DroneDataConfig(out=str(tmp_path / "d"), clips=1))
    with pytest.raises(ValueError, match="--size: height 40"):
        cli(["make-drone-data", "--out", str(tmp_path / "e"), "--clips", "1", "--size", "40", "64"])
    assert (tmp_path / "d" / "old.txt").read_text() == "x"


# --- the metric on rendered data --------------------------------------------------------------------------------
def test_metric_scores_ground_truth_high_and_shuffled_near_chance(flights, tmp_path):
    from kinema.video_world_model.drone._eval import evaluate_actions, feature_pool, fit_estimator

    out, _ = flights
    estimator = fit_estimator([out], tmp_path / "estimator", steps=600)
    generated = tmp_path / "generated"
    generated.mkdir()
    for video in (out / "videos").iterdir():  # a "generator" that reproduces the ground truth, by file name
        shutil.copy(video, generated / video.name)
    results = evaluate_actions(generated, out, estimator, tmp_path / "report")
    truth, shuffled = results["ground truth"], results["ground truth, shuffled actions"]
    assert truth.accuracy > 0.95 and truth.balanced_accuracy > 0.9
    assert results["generated"].accuracy == truth.accuracy
    assert abs(shuffled.accuracy - shuffled.chance_accuracy) < 0.1
    assert shuffled.balanced_accuracy < 0.72
    for name in ("report.json", "report.md", "confusion_generated.png", "confusion_ground_truth.png"):
        assert (tmp_path / "report" / name).is_file()
    # one shared pool of spawned workers for several calls gives the in-process scores
    with feature_pool(2) as pool:
        pooled = [evaluate_actions(generated, out, estimator, pool=pool) for _ in range(2)]
    for again in pooled:
        assert again["generated"].to_dict() == results["generated"].to_dict()
        assert again["ground truth"].to_dict() == truth.to_dict()
    # the CLI: --estimator from fit-action-estimator, and a folder that matches no row
    assert cli(["eval-actions", "--generated", str(generated), "--dataset", str(out),
                "--estimator", str(tmp_path / "estimator"), "--out", str(tmp_path / "cli")]) == 0  # fmt: skip
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"no clip in .* matches a row of the dataset"):
        cli(
            [
                "eval-actions",
                "--generated",
                str(empty),
                "--dataset",
                str(out),
                "--estimator",
                str(tmp_path / "estimator"),
            ]
        )
