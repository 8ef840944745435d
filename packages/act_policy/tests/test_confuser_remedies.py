"""The remedies that address the confuser's cause (issue 21): a contrastive loss that tells right from wrong, the
target's heat map as an input channel, planar crops; and the CPU-scale confuser experiment at a tiny size."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from kinema.act_policy import ACT, contrastive_coordinate_loss, relative_contrastive_loss
from kinema.act_policy._crop import camera_geometries, crop_around, project, target_heatmap
from kinema.act_policy.testing import tiny_config
from kinema.robot_data.sim.dock import CONFUSER_CAMERAS, render_confuser, sample_confuser_scenes

PLANE = {"top": {"plane": [[0.0, 1.0], [0.0, 1.0]]}}


def _two_goal_chunks():
    """Two chunks (C=4, A=2) from one start toward a left and a right dock, and the coordinates of the docks."""
    steps = torch.linspace(0.25, 1.0, 4).unsqueeze(-1)  # (4, 1)
    left = steps * torch.tensor([-1.0, 1.0])  # (4, 2)
    right = steps * torch.tensor([1.0, 1.0])
    chunks = torch.stack([left, right])  # (2, 4, 2)
    coordinates = torch.tensor([[0.25, 0.8], [0.75, 0.8]])
    return chunks, coordinates


def test_relative_contrastive_is_zero_for_correct_chunks_and_the_true_distance_for_collapsed_ones():
    chunks, coordinates = _two_goal_chunks()
    is_pad = torch.zeros(2, 4, dtype=torch.bool)
    correct = relative_contrastive_loss(chunks, chunks, is_pad, coordinates, threshold=0.04)
    collapsed_chunks = chunks.mean(0, keepdim=True).expand(2, -1, -1)  # the midpoint: straight up
    collapsed = relative_contrastive_loss(collapsed_chunks, chunks, is_pad, coordinates, threshold=0.04)
    # by hand: the chunks differ only in x, by 2 * s for s = 0.25, 0.5, 0.75, 1 over 8 entries
    true_distance = math.sqrt(sum((2 * s) ** 2 for s in (0.25, 0.5, 0.75, 1.0)) / 8)
    assert correct.item() == pytest.approx(0.0, abs=1e-5)
    assert collapsed.item() == pytest.approx(true_distance, rel=1e-5)
    # the constant-margin hinge cannot tell them apart when the margin is below the true distance: 0 for both
    # correct and (slightly perturbed) wrong-but-different chunks
    swapped = chunks.flip(0)
    assert contrastive_coordinate_loss(chunks, coordinates, 0.1, 0.04).item() == 0.0
    assert contrastive_coordinate_loss(swapped, coordinates, 0.1, 0.04).item() == 0.0


def test_relative_contrastive_leaves_out_pairs_with_the_same_coordinates_and_padded_steps():
    chunks, coordinates = _two_goal_chunks()
    same = torch.tensor([[0.5, 0.8], [0.5, 0.8]])
    collapsed = chunks.mean(0, keepdim=True).expand(2, -1, -1)
    is_pad = torch.zeros(2, 4, dtype=torch.bool)
    assert relative_contrastive_loss(collapsed, chunks, is_pad, same, 0.04).item() == 0.0
    padded = torch.ones(2, 4, dtype=torch.bool)  # nothing real to compare
    assert relative_contrastive_loss(collapsed, chunks, padded, coordinates, 0.04).item() == pytest.approx(
        0.0, abs=1e-5
    )


def test_planar_geometry_projects_x_right_y_up():
    geometry = camera_geometries(tiny_config(environment_state_dim=2, crop_cameras=PLANE))["top"]
    points = torch.tensor([[0.2, 0.7, 0.0], [1.0, 0.0, 5.0]])
    torch.testing.assert_close(project(points, geometry, (64, 64)), torch.tensor([[0.2, 0.3], [1.0, 1.0]]))


def test_heatmap_peaks_at_the_projected_pixel():
    u, v = (10 + 0.5) / 64, (20 + 0.5) / 64  # the centre of pixel (row 20, column 10)
    heat = target_heatmap(torch.tensor([[u, v]]), (64, 64), sigma=0.05)  # (1, 1, 64, 64)
    assert heat.shape == (1, 1, 64, 64)
    row, column = divmod(int(heat.flatten().argmax()), 64)
    assert (row, column) == (20, 10) and heat[0, 0, 20, 10].item() == pytest.approx(1.0)
    # one sigma (3.2 pixels) away: exp(-1/2); far away (the other dock, 32 pixels right): about 0
    assert heat[0, 0, 20, 10 + 16].item() == pytest.approx(
        math.exp(-((16 / 64) ** 2) / (2 * 0.05**2)), rel=1e-4
    )
    assert heat[0, 0, 20, 42].item() < 1e-10


def _dock_image_batch(targets):
    scenes = sample_confuser_scenes([4] * len(targets), targets)
    images = render_confuser(scenes.start, scenes, 64)  # both docks drawn alike
    return {
        "image": torch.from_numpy(images).unsqueeze(1),  # (B, 1, 64, 64, 3)
        "qpos": torch.from_numpy(scenes.start).float(),
        "environment_state": torch.from_numpy(scenes.target_xy()).float(),
    }, scenes


def test_heatmap_lets_the_backbone_tell_the_two_docks_apart():
    """Same image, target left vs right: identical features at init (the heat-map weights start at zero), then
    the features at the target's site differ from those at the confuser's site, mirrored when the target swaps."""
    torch.manual_seed(0)
    config = tiny_config(state_dim=2, action_dim=2, environment_state_dim=2, crop_cameras=CONFUSER_CAMERAS)
    model = ACT(config.with_remedies("heatmap")).eval()
    batch, scenes = _dock_image_batch([0, 1])
    np.testing.assert_array_equal(batch["image"][0].numpy(), batch["image"][1].numpy())

    def features():
        images = model._with_heatmap(model.prepare_images(batch["image"]), batch["environment_state"])
        return model.backbone.conv1(images[:, 0])  # (2, width, 32, 32): where the sites are still resolved

    with torch.no_grad():
        at_init = features()
        torch.testing.assert_close(at_init[0], at_init[1], rtol=0, atol=0)
        model.backbone.conv1.weight[:, 3:].normal_(0, 1.0)
        moved = features()
    sites = [(int((1 - y) * 32), int(x * 32)) for x, y in scenes.docks[0]]  # (row, column) of each dock

    def change(row, site):  # how much the heat map changed the features around a dock's site
        r, c = sites[site]
        return (moved[row] - at_init[row])[:, r - 1 : r + 2, c - 1 : c + 2].abs().mean().item()

    # row 0 targets the left dock, row 1 the right one: only the target's site is modulated
    assert change(0, 0) > 0.1 and change(1, 1) > 0.1
    assert change(0, 1) < 1e-6 * change(0, 0) and change(1, 0) < 1e-6 * change(1, 1)


def test_replace_crop_shows_only_the_target_dock():
    batch, scenes = _dock_image_batch([1])
    image = batch["image"][:, 0].permute(0, 3, 1, 2).float() / 255  # (1, 3, 64, 64)
    geometry = camera_geometries(tiny_config(environment_state_dim=2, crop_cameras=CONFUSER_CAMERAS))["top"]
    target = torch.cat([batch["environment_state"], torch.zeros(1, 1)], dim=-1)
    crop = crop_around(image, project(target, geometry, (64, 64)), 16)  # (1, 3, 16, 16)
    green = torch.tensor([60, 170, 90]) / 255
    centre = crop[0, :, 7:9, 7:9].mean((1, 2))
    torch.testing.assert_close(centre, green, atol=0.02, rtol=0)
    other = torch.cat([torch.from_numpy(scenes.confuser_xy()).float(), torch.zeros(1, 1)], dim=-1)
    assert project(other, geometry, (64, 64))[0, 0] < 0.5  # the confuser lies left, far outside the crop


def test_heatmap_backbone_loads_three_channel_weights(tmp_path):
    from kinema.act_policy import ResNet18, load_torchvision_resnet18

    rgb = ResNet18(width=64)
    path = tmp_path / "resnet18.pth"
    torch.save(rgb.torchvision_state_dict(), path)
    four = ResNet18(width=64, in_channels=4)
    load_torchvision_resnet18(four, path)
    torch.testing.assert_close(four.conv1.weight[:, :3], rgb.conv1.weight)
    assert four.conv1.weight[:, 3].abs().max().item() == 0.0


def test_remedy_combinations_and_unknown_names():
    config = tiny_config(environment_state_dim=2, crop_cameras=PLANE).with_remedies("heatmap+crop_replace")
    assert config.coord_heatmap and config.coord_crop == "replace"
    assert config.coordinate_remedies() == ["crop", "heatmap"]
    with pytest.raises(ValueError, match="unknown"):
        tiny_config(environment_state_dim=2).with_remedies("heatmap+nope")
    with pytest.raises(ValueError, match="contrastive_kind"):
        tiny_config(environment_state_dim=2, contrastive_kind="other")


def test_tiny_dock_confuser_experiment(tmp_path):
    """The data path and cells at a tiny size: counterfactual pairs recorded, every run evaluated on unseen
    scenes, rates that add up, and the table, markdown and plot written."""
    from kinema.act_policy import DockConfuserExperiment, run_dock_confuser_experiment
    from kinema.robot_data import read_policy_episode

    experiment = DockConfuserExperiment(
        out_dir=str(tmp_path),
        remedies=("heatmap",),
        seeds=(0,),
        episodes=4,
        steps=3,
        batch_size=8,
        eval_episodes=6,
        model={"dim_model": 32, "dim_feedforward": 32, "n_encoder_layers": 1},
        progress=False,
    )
    table = run_dock_confuser_experiment(experiment)
    first, second = (
        read_policy_episode(tmp_path / "data" / "confuser" / f"episode_{i}.hdf5") for i in (0, 1)
    )
    np.testing.assert_array_equal(first["images"]["top"][0], second["images"]["top"][0])
    assert not np.allclose(first["environment_state"][0], second["environment_state"][0])
    assert [row["cell"] for row in table["rows"]] == ["clean", "confuser_plain", "confuser_heatmap"]
    for row in table["rows"]:
        (run,) = row["seeds"]
        assert run["success"] + run["wrong"] + run["neither"] == pytest.approx(1.0)
        assert row["mean_success"] == run["success"]
        episodes = (
            tmp_path / "runs" / row["cell"] / "seed0" / "eval_confuser" / "eval_episodes.jsonl"
        ).read_text()
        seeds = [json.loads(line)["seed"] for line in episodes.splitlines()]
        assert seeds == list(range(100_000, 100_006))
    saved = json.loads((tmp_path / "confuser_2d.json").read_text())
    assert saved["rows"] == table["rows"] and saved["recording_scenes"] == [0, 1]
    assert "| confuser_heatmap | confuser | heatmap |" in (tmp_path / "confuser_2d.md").read_text()
    assert (tmp_path / "confuser_2d.png").read_bytes()[:4] == b"\x89PNG"
    again = run_dock_confuser_experiment(experiment)  # finished runs are read back, not retrained
    assert again["rows"] == table["rows"]
    with pytest.raises(ValueError, match="overlap"):
        DockConfuserExperiment(out_dir=str(tmp_path), episodes=4, eval_seed=1)
