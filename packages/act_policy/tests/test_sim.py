"""With the ALOHA simulation (skipped without the sim extra): the crop cameras' geometry against MuJoCo, ACT
through the evaluation harness, `kinema-act eval`, and the confuser experiment at a tiny scale.

Kept cheap for a CPU: 48x64 (or 32x32) images, "fast" rendering, a few steps per episode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kinema.act_policy import ACT, ACTPolicy, ConfuserExperiment, run_confuser_experiment
from kinema.act_policy._crop import ALOHA_CAMERAS, project
from kinema.act_policy.cli import main
from kinema.act_policy.testing import tiny_config, write_episodes

SMALL = {"image_size": (48, 64), "render_quality": "fast"}


def test_camera_geometry_matches_mujoco(sim_backend):
    import gym_aloha
    import mujoco

    xml = Path(gym_aloha.__file__).parent / "assets" / "bimanual_viperx_transfer_cube.xml"
    model = mujoco.MjModel.from_xml_path(str(xml))
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    for name, geometry in ALOHA_CAMERAS.items():
        index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
        np.testing.assert_allclose(data.cam_xpos[index], geometry["position"], atol=1e-9)
        np.testing.assert_allclose(data.cam_xmat[index].reshape(3, 3), geometry["rotation"], atol=1e-9)
        assert model.cam_fovy[index] == geometry["fovy"]


def test_projection_lands_on_the_rendered_cube(sim_backend):
    """The red cube's pixels in a rendered top view are centred where the crop projection puts its (x, y)."""
    from kinema.robot_data.sim import make_env

    env = make_env("transfer_cube", image_size=(96, 128), cameras=("top",), render_quality="fast")
    geometry = {
        k: torch.tensor(v, dtype=torch.float64) if k != "fovy" else v for k, v in ALOHA_CAMERAS["top"].items()
    }
    try:
        for x, y in ((0.05, 0.45), (0.18, 0.58)):
            pose = np.array([[x, y, 0.05, 1.0, 0.0, 0.0, 0.0]])
            observation, _ = env.reset(seed=0, options={"object_poses": pose})
            image = observation["images"]["top"].astype(int)
            red = (image[..., 0] > 120) & (image[..., 1] < 60) & (image[..., 2] < 60)
            rows, cols = np.nonzero(red)
            assert len(rows) > 4
            # the top face (z = 0.07) is what the camera sees of a 4 cm cube centred at z = 0.05
            u, v = project(torch.tensor([[x, y, 0.07]], dtype=torch.float64), geometry, (96, 128))[0].tolist()
            assert abs(cols.mean() + 0.5 - u * 128) < 1.5 and abs(rows.mean() + 0.5 - v * 96) < 1.5
    finally:
        env.close()


def test_act_policy_runs_in_the_evaluation_harness(sim_backend, tmp_path):
    from kinema.robot_data.sim import evaluate

    torch.manual_seed(0)
    config = tiny_config(environment_state_dim=2).with_remedies("crop")
    policy = ACTPolicy(ACT(config), device="cpu")
    result = evaluate(
        policy, "transfer_cube_confuser", seeds=[100_000, 100_001], workers=1, episode_length=6,
        out_dir=tmp_path, videos=1, progress=False, **SMALL,
    )  # fmt: skip
    assert [r["steps"] for r in result.episodes] == [6, 6]
    assert policy.queries == 2  # chunked: one 8-step chunk per episode of 6 steps
    assert (tmp_path / result.episodes[0]["video"]).is_file()


def test_eval_command_on_a_trained_checkpoint(sim_backend, trained, tmp_path, capsys):
    _, checkpoint = trained
    code = main(
        ["eval", "--checkpoint", str(checkpoint), "--task", "transfer_cube", "--episodes", "1", "--episode-length",
         "4", "--render-quality", "fast", "--out", str(tmp_path / "eval"), "--videos", "1", "--device", "cpu",
         "--temporal-ensemble", "0.01", "--json"]
    )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "transfer_cube: success 0.0% over 1 episodes" in out and "temporal ensembling m=0.01" in out
    summary = json.loads((tmp_path / "eval" / "eval_summary.json").read_text())
    assert summary["image_size"] == [32, 32]  # the checkpoint's data size, from policy.json
    assert len(list((tmp_path / "eval" / "videos").glob("*.mp4"))) == 1


def test_confuser_experiment_runs_the_grid_and_tabulates(sim_backend, tmp_path):
    clean = write_episodes(tmp_path / "clean", 2, 10, image_size=(48, 64))
    confuser = write_episodes(tmp_path / "confuser", 2, 10, image_size=(48, 64))
    experiment = ConfuserExperiment(
        clean_data=str(clean),
        confuser_data=str(confuser),
        out_dir=str(tmp_path / "exp"),
        model=tiny_config(environment_state_dim=2),
        train={"max_steps": 2, "batch_size": 2, "load_workers": 1, "val_fraction": 0.0, "log_every": 1},
        remedies=("film",),
        episodes=1,
        episode_length=3,
        videos=0,
        device="cpu",
        progress=False,
        **SMALL,
    )
    table = run_confuser_experiment(experiment)
    assert table["complete"]
    assert [r["cell"] for r in table["rows"]] == ["clean", "confuser_plain", "confuser_film"]
    assert all(r["status"] == "done" and r["episodes"] == 1 and r["train_steps"] == 2 for r in table["rows"])
    out = tmp_path / "exp"
    assert json.loads((out / "confuser_experiment.json").read_text())["rows"] == table["rows"]
    markdown = (out / "confuser_experiment.md").read_text()
    assert "| confuser_film | confuser demos | film | 0.0% |" in markdown
    assert (out / "confuser_experiment.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "runs" / "confuser_film" / "act_config.json").read_text())["config"][
        "coord_film"
    ]
    # a second run finds every cell done and trains nothing
    again = run_confuser_experiment(experiment)
    assert again["rows"] == table["rows"]


def test_confuser_cells_split_over_processes_then_tabulated_together(sim_backend, tmp_path):
    data = write_episodes(tmp_path / "data", 2, 10, image_size=(48, 64))
    common = {
        "clean_data": str(data), "confuser_data": str(data), "out_dir": str(tmp_path / "exp"),
        "model": tiny_config(environment_state_dim=2), "remedies": ("film",), "episodes": 1, "episode_length": 3,
        "videos": 0, "device": "cpu", "progress": False, **SMALL,
        "train": {"max_steps": 2, "batch_size": 2, "load_workers": 1, "val_fraction": 0.0},
    }  # fmt: skip
    part = run_confuser_experiment(ConfuserExperiment(**common, only=("confuser_film",)))
    assert not part["complete"]
    assert [r["status"] for r in part["rows"]] == ["pending (run by another process)"] * 2 + ["done"]
    assert not (tmp_path / "exp" / "runs" / "clean").exists()
    whole = run_confuser_experiment(ConfuserExperiment(**common))  # trains the other two, reads film back
    assert whole["complete"] and [r["status"] for r in whole["rows"]] == ["done"] * 3
    assert whole["rows"][2] == part["rows"][2]
    with pytest.raises(ValueError, match=r"cells: unknown \['confuser_crop'\]"):
        ConfuserExperiment(**common, only=("confuser_crop",))


def test_confuser_experiment_stops_at_the_session_limit(sim_backend, tmp_path):
    data = write_episodes(tmp_path / "data", 2, 6)
    experiment = ConfuserExperiment(
        clean_data=str(data), confuser_data=str(data), out_dir=str(tmp_path / "exp"),
        model=tiny_config(environment_state_dim=2), session_minutes=0.001, progress=False,
    )  # fmt: skip
    table = run_confuser_experiment(experiment)
    assert not table["complete"] and {r["status"] for r in table["rows"]} == {"pending"}
    assert "INCOMPLETE" in (tmp_path / "exp" / "confuser_experiment.md").read_text()
    with pytest.raises(ValueError, match=r"remedies: unknown \['plain'\]"):
        ConfuserExperiment(
            clean_data="a", confuser_data="b", out_dir="c", model=experiment.model, remedies=("plain",)
        )
