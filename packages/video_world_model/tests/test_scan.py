import json

import numpy as np
import pytest
import torch
from PIL import Image

from kinema.robot_data import probe_video
from kinema.video_world_model import load_pipeline
from kinema.video_world_model.cli import main
from kinema.video_world_model.pipelines._grid import LABEL_HEIGHT, contact_sheet, tile_videos
from kinema.video_world_model.pipelines._scan import action_effect, scan_actions
from kinema.video_world_model.testing import write_tiny_controller

CALL = {"height": 64, "width": 64, "num_frames": 9, "num_inference_steps": 2, "guidance_scale": 1.0}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "first.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    return path


def test_one_video_per_scale_from_the_same_noise(tiny_wan_dir, tmp_path, image):
    pipe = load_pipeline(
        tiny_wan_dir, write_tiny_controller(tmp_path / "c", scale=0.5), torch_dtype=torch.float32
    )
    binary, magnitude = np.ones((2, 8), np.float32), np.full((2, 8), 0.4, np.float32)
    result = scan_actions(pipe, Image.open(image), "a drone", binary, magnitude, [0, 1, 2], **CALL)
    assert list(result.videos) == ["0", "1", "2"] and result.rows == [""]
    assert all(v.shape == (9, 64, 64, 3) for v in result.videos.values())
    assert not np.allclose(result.videos["0"], result.videos["2"])
    again = scan_actions(pipe, Image.open(image), "a drone", binary, magnitude, [0], **CALL)
    assert np.array_equal(again.videos["0"], result.videos["0"])  # the same noise every time
    rows = scan_actions(pipe, Image.open(image), "a drone", binary, magnitude, [1], per_action=True, **CALL)
    assert list(rows.videos) == [f"{name} x1" for name in rows.rows] and len(rows.rows) == 8


def test_grid_and_contact_sheet_shapes_and_labels():
    videos = [np.full((3, 8, 10, 3), v, np.float32) for v in (0.0, 0.5, 1.0)]
    grid = tile_videos(videos, ["a", "b", "c"], columns=2)
    assert grid.shape == (3, 2 * (8 + LABEL_HEIGHT), 20, 3)
    assert grid[0, LABEL_HEIGHT : LABEL_HEIGHT + 8, 10:].mean() == pytest.approx(
        128, abs=1
    )  # "b": row 0, column 1
    assert grid[0, :LABEL_HEIGHT, :10].max() > 200  # label text drawn in white (anti-aliased)
    sheet = contact_sheet(videos, ["a", "b", "c"], samples=2)
    assert sheet.shape == (3 * (8 + LABEL_HEIGHT), 20, 3)
    with pytest.raises(ValueError, match="same non-zero count"):
        tile_videos(videos, ["a"], columns=1)


def test_action_effect_is_zero_at_init_and_grows_with_the_scale(tiny_wan_dir, tmp_path, image):
    binary, magnitude = np.ones((2, 8), np.float32), np.full((2, 8), 0.4, np.float32)
    untrained = load_pipeline(
        tiny_wan_dir, write_tiny_controller(tmp_path / "zero", scale=0.0), torch_dtype=torch.float32
    )
    assert np.array_equal(
        action_effect(untrained, Image.open(image), "a drone", binary, magnitude, **CALL), np.zeros(3)
    )
    live = load_pipeline(
        tiny_wan_dir, write_tiny_controller(tmp_path / "live", scale=0.5), torch_dtype=torch.float32
    )
    effect = action_effect(live, Image.open(image), "a drone", binary, magnitude, **CALL)
    assert effect[0] == 0 and effect[1:].min() > 0  # frame 0 is the given image


def test_cli_writes_grid_contact_sheet_and_diagnostic(tiny_wan_dir, tmp_path, image, capsys):
    controller = write_tiny_controller(tmp_path / "c", scale=0.5)
    common = ["--model_dir", str(tiny_wan_dir), "--controller", str(controller), "--image", str(image), "--prompt",
              "a drone", "--actions", "forward:0.5x2", "--height", "64", "--width", "64", "--num_frames", "9",
              "--num_inference_steps", "2", "--dtype", "fp32", "--device", "cpu"]  # fmt: skip
    out = tmp_path / "scan"
    assert main(["scan-actions", *common, "--scales", "0,1", "--out_dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "contact_sheet.png",
        "scale_0.mp4",
        "scale_1.mp4",
        "scan.mp4",
    ]
    grid = probe_video(out / "scan.mp4")
    assert (grid.num_frames, grid.width) == (9, 128)
    assert main(["scan-actions", *common, "--scales", "0,1", "--out_dir", str(out)]) == 1  # not empty
    effect_dir = tmp_path / "effect"
    assert main(["action-effect", *common, "--out_dir", str(effect_dir)]) == 0
    assert "latent frame   0" in capsys.readouterr().out
    assert len(json.loads((effect_dir / "action_effect.json").read_text())["per_latent_frame"]) == 3
    assert (effect_dir / "action_effect.png").stat().st_size > 0
