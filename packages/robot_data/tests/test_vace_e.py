import json
import warnings

import h5py
import numpy as np
import pytest
import torch

from kinema.robot_data import (
    RobotDataError,
    RobotDataWarning,
    VaceEConfig,
    VaceEEpisodeDataset,
    collate_vace_e,
    load_task_metadata,
    task_prompt,
)
from kinema.robot_data._task_metadata import TaskAttributes
from kinema.robot_data._trajectories import read_hand_motion, read_object_trajectories
from kinema.robot_data.testing import (
    GRASP_TASK,
    POUR_TASK,
    VACE_E_BROKEN,
    decode_frame_code,
    write_hand_trajectories,
    write_malformed_json,
    write_object_trajectories,
    write_vace_e_dataset,
)


def task(left, right, objects, kind="pouring"):
    return TaskAttributes("t", kind, "h1", left, right, objects)


def test_prompts_follow_the_reference_examples():
    assert task_prompt(task(False, True, "white bottle with black lid.", "grasping")) == (
        "Right hand grasping white bottle with black lid."
    )
    assert task_prompt(task(True, True, "cup, bottle.")) == "Pouring, left hand cup, right hand bottle"
    assert task_prompt(task(True, False, "sponge", "wiping")) == "Left hand wiping sponge."
    assert task_prompt(task(True, True, "box.", "lifting")) == "Lifting, both hands box"
    assert task_prompt(task(False, False, "cup, bottle.")) == "Pouring cup, bottle."


def test_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(RobotDataError, match="not valid JSON") as error:
        load_task_metadata(write_malformed_json(tmp_path / "m.json"))
    assert error.value.path == str(tmp_path / "m.json")
    (tmp_path / "n.json").write_text(json.dumps({"tasks": {}}))
    with pytest.raises(RobotDataError, match="per_task_attributes"):
        load_task_metadata(tmp_path / "n.json")
    with pytest.raises(FileNotFoundError, match="metadata"):
        load_task_metadata(tmp_path / "missing.json")


def test_hand_motion_layout_dual_and_legacy(tmp_path):
    dual = read_hand_motion(write_hand_trajectories(tmp_path / "dual.hdf5", 12)).data
    assert dual.shape == (12, 20) and dual.dtype == np.float32
    np.testing.assert_array_equal(dual[:, 0], np.arange(12))  # left x
    np.testing.assert_array_equal(dual[:, 1], 0.5)  # left y
    np.testing.assert_array_equal(dual[:, 9], np.arange(12))  # right x
    np.testing.assert_array_equal(dual[:, 10], -0.5)  # right y
    with h5py.File(tmp_path / "dual.hdf5") as f:
        np.testing.assert_array_equal(dual[:, 3:9], f["left_wrist/rotations_6d"][()])
        np.testing.assert_array_equal(dual[:, 12:18], f["right_wrist/rotations_6d"][()])
    expected_grip = ((np.arange(12) // 4) % 2 == 0).astype(
        np.float32
    )  # open (1) for 4 steps, closed (0) for 4
    np.testing.assert_array_equal(dual[:, 18], expected_grip)
    np.testing.assert_array_equal(dual[:, 19], expected_grip)
    legacy = read_hand_motion(write_hand_trajectories(tmp_path / "legacy.hdf5", 12, hands=("right",))).data
    assert legacy.shape == (12, 20)
    np.testing.assert_array_equal(legacy[:, :9], 0.0)  # left hand zero
    np.testing.assert_array_equal(legacy[:, 18], 0.0)
    np.testing.assert_array_equal(legacy[:, 9:18], dual[:, 9:18])
    np.testing.assert_array_equal(legacy[:, 19], dual[:, 19])


def test_gripper_states_become_binary(tmp_path):
    path = write_hand_trajectories(tmp_path / "h.hdf5", 4, hands=("right",))
    with h5py.File(path, "a") as f:
        f["right_hand_states"][...] = [0.2, 0.7, 0.5, 1.0]
    np.testing.assert_array_equal(read_hand_motion(path).data[:, 19], [0, 1, 0, 1])


def test_objects_ordered_by_object_id_and_capped(tmp_path):
    path = write_object_trajectories(tmp_path / "o.hdf5", 6, object_ids=(2, 0, 1))
    data = read_object_trajectories(path, max_objects=10).data
    assert data.shape == (6, 3, 9)
    for slot, object_id in enumerate((0, 1, 2)):
        np.testing.assert_array_equal(data[:, slot, 0], np.arange(6) + 100 * object_id)
    capped = read_object_trajectories(path, max_objects=2).data
    assert capped.shape == (6, 2, 9)
    np.testing.assert_array_equal(capped, data[:, :2])


def dataset(fixture, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        return VaceEEpisodeDataset(base_path=fixture.root, metadata_path=fixture.metadata, **options)


def by_episode(ds, suffix):
    return next(i for i, e in enumerate(ds.episodes) if str(e.path).endswith(suffix))


def test_samples_keep_video_and_motion_aligned(vace_e_clean):
    ds = dataset(vace_e_clean, num_frames=9)
    assert len(ds) == 3
    sample = ds[by_episode(ds, f"{POUR_TASK}/episode_0")]
    assert sample["video"].shape == sample["control_video"].shape == (3, 9, 32, 32)
    assert sample["mask"].shape == (1, 9, 32, 32)
    assert sample["prompt"] == "Pouring, left hand cup, right hand bottle"
    assert sample["embodiment_type"] == "h1_inspire"
    frames = sample["frame_indices"].tolist()
    assert frames == list(range(9))
    assert [decode_frame_code(f) for f in sample["video"].permute(1, 2, 3, 0).numpy()] == frames
    assert [decode_frame_code(f) for f in sample["control_video"].permute(1, 2, 3, 0).numpy()] == [
        1000 + t for t in frames
    ]
    assert sample["hand_motion"].shape == (9, 20)
    assert sample["hand_motion"][:, 9].tolist() == frames  # row of the same source frame
    assert sample["object_trajectory"].shape == (9, 2, 9)
    assert sample["object_trajectory"][:, 1, 0].tolist() == [100 + t for t in frames]
    # mask: the left half is the hand region
    assert sample["mask"].dtype == torch.bool and sample["video"].dtype == torch.uint8
    assert torch.all(sample["mask"][..., :16]) and not torch.any(sample["mask"][..., 16:])
    assert sample["embodiment_image"] is None


def test_resampled_frames_sample_the_trajectories_at_the_same_times(vace_e_clean):
    ds = dataset(vace_e_clean, num_frames=81, fps=8)  # 13 frames at 16 fps -> 7 at 8 fps -> 5 (4n+1)
    sample = ds[by_episode(ds, f"{POUR_TASK}/episode_0")]
    assert sample["frame_indices"].tolist() == [0, 2, 4, 6, 8]
    assert [decode_frame_code(f) for f in sample["video"].permute(1, 2, 3, 0).numpy()] == [0, 2, 4, 6, 8]
    assert sample["hand_motion"][:, 0].tolist() == [0, 2, 4, 6, 8]


def test_trajectories_at_their_own_rate_map_by_time(tmp_path):
    fixture = write_vace_e_dataset(tmp_path / "base")
    episode = fixture.root / POUR_TASK / "episode_0"
    hand = episode / "episode_0_hand_trajectories.hdf5"
    hand.unlink()
    write_hand_trajectories(hand, 26)  # 32 Hz: two rows per 16 fps video frame
    with h5py.File(hand, "a") as f:
        f.attrs["fps"] = 32.0
    ds = dataset(fixture, num_frames=9)
    sample = ds[by_episode(ds, f"{POUR_TASK}/episode_0")]
    assert sample["hand_motion"][:, 9].tolist() == [2 * t for t in range(9)]


def test_legacy_episode_image_and_video_only(vace_e_clean):
    ds = dataset(vace_e_clean, num_frames=9)
    grasp = ds[by_episode(ds, f"{GRASP_TASK}/episode_0")]
    assert grasp["prompt"] == "Right hand grasping white bottle with black lid."
    assert torch.all(grasp["hand_motion"][:, :9] == 0) and grasp["hand_motion"][:, 9].tolist() == list(
        range(9)
    )
    assert grasp["object_trajectory"] is None
    assert grasp["embodiment_image"].shape == (3, 32, 32)
    assert decode_frame_code(grasp["embodiment_image"].permute(1, 2, 0).numpy()) == 7
    video_only = ds[by_episode(ds, f"{POUR_TASK}/episode_1")]
    assert video_only["hand_motion"] is None and video_only["object_trajectory"] is None


def test_fallback_off_and_unknown_task_policies(vace_e):
    strict_fallback = dataset(vace_e, num_frames=9, fallback_to_video_only=False)
    assert len(strict_fallback) == 1  # only the pouring episode with both files remains
    assert any(
        item.field == "hand_trajectories" and "fallback_to_video_only" in item.reason
        for item in strict_fallback.skipped
    )
    default = dataset(vace_e, num_frames=9, unknown_task="default", default_prompt="A demonstration.")
    unknown = [e for e in default.episodes if e.task.embodiment_type == "unknown"]
    assert len(unknown) == 1 and unknown[0].prompt == "A demonstration."


def test_lenient_mode_skips_every_broken_episode_with_one_warning(vace_e):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VaceEEpisodeDataset(base_path=vace_e.root, metadata_path=vace_e.metadata, num_frames=9)
    messages = [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]
    assert len(messages) == 1 and f"skipped {len(VACE_E_BROKEN)} of {len(VACE_E_BROKEN) + 3}" in messages[0]
    assert len(ds) == 3
    for kind, episode in vace_e.broken.items():
        assert any(item.path.startswith(episode) for item in ds.skipped), kind
        assert episode in messages[0]


EXPECTED_FIELDS = {
    "zero_byte_video": "video",
    "truncated_video": "video",
    "missing_control_video": "video",
    "truncated_hdf5": "hand_trajectories",
    "missing_group": "right_wrist",
    "missing_dataset": "left_wrist/rotations_6d",
    "wrong_shape": "right_wrist/positions",
    "nan_values": "object_0/positions",
    "length_mismatch": "hand_trajectories",
    "unknown_task": "task",
}


@pytest.mark.parametrize("kind", VACE_E_BROKEN)
def test_strict_mode_raises_naming_file_and_field(tmp_path, kind):
    fixture = write_vace_e_dataset(tmp_path / "base", num_frames=5, broken=[kind])
    with pytest.raises(RobotDataError) as error:
        VaceEEpisodeDataset(base_path=fixture.root, metadata_path=fixture.metadata, num_frames=5, strict=True)
    assert error.value.path.startswith(fixture.broken[kind])
    assert error.value.field == EXPECTED_FIELDS[kind]


def test_malformed_metadata_raises_even_in_lenient_mode(vace_e_clean, tmp_path):
    with pytest.raises(RobotDataError, match="not valid JSON"):
        VaceEEpisodeDataset(
            base_path=vace_e_clean.root, metadata_path=write_malformed_json(tmp_path / "bad.json")
        )


def test_config_validation(vace_e_clean):
    with pytest.raises(ValueError, match="max_hand_motion_length"):
        VaceEConfig(vace_e_clean.root, vace_e_clean.metadata, num_frames=81, max_hand_motion_length=64)
    with pytest.raises(ValueError, match="unknown_task"):
        VaceEConfig(vace_e_clean.root, vace_e_clean.metadata, unknown_task="guess")
    with pytest.raises(ValueError, match="4n\\+1"):
        VaceEConfig(vace_e_clean.root, vace_e_clean.metadata, num_frames=12)


def fake(length, objects=None, image=False):
    return {
        "video": torch.zeros(3, 5, 16, 16),
        "control_video": torch.zeros(3, 5, 16, 16),
        "mask": torch.zeros(1, 5, 16, 16),
        "frame_indices": torch.arange(5),
        "prompt": "p",
        "task": "t",
        "embodiment_type": "e",
        "episode": "x",
        "hand_motion": None if length is None else torch.ones(length, 20),
        "object_trajectory": None if objects is None else torch.ones(objects[0], objects[1], 9),
        "embodiment_image": torch.ones(3, 16, 16) if image else None,
    }


def test_collate_pads_and_masks():
    batch = collate_vace_e([fake(3, (3, 1)), fake(5, (5, 2), image=True), fake(None)])
    assert batch["video"].shape == (3, 3, 5, 16, 16)
    assert batch["hand_motion"].shape == (3, 5, 20)
    assert batch["hand_motion_lengths"].tolist() == [3, 5, 0]
    assert batch["hand_motion_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5, [False] * 5]
    assert torch.all(batch["hand_motion"][0, 3:] == 0) and torch.all(batch["hand_motion"][0, :3] == 1)
    assert batch["object_trajectory"].shape == (3, 5, 2, 9)
    assert batch["object_mask"].tolist() == [[True, False], [True, True], [False, False]]
    assert torch.all(batch["object_trajectory"][0, :, 1] == 0) and torch.all(
        batch["object_trajectory"][0, :3, 0] == 1
    )
    assert batch["object_trajectory_lengths"].tolist() == [3, 5, 0]
    assert batch["has_embodiment_image"].tolist() == [False, True, False]
    assert torch.all(batch["embodiment_image"][1] == 1) and torch.all(batch["embodiment_image"][0] == 0)
    assert batch["prompt"] == ["p", "p", "p"]
    other = fake(3)
    other["video"] = torch.zeros(3, 9, 16, 16)
    with pytest.raises(ValueError, match="batch_size=1"):
        collate_vace_e([fake(3), other])


def test_collate_over_a_dataloader(vace_e_clean):
    ds = dataset(vace_e_clean, num_frames=9)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate_vace_e)))
    assert batch["hand_motion_lengths"].tolist() == [9, 9, 0]
    assert batch["object_mask"].tolist() == [[False, False], [True, True], [False, False]]


def test_loading_never_writes_into_the_dataset(vace_e):
    def snapshot():
        return sorted((str(p), p.stat().st_mtime_ns) for p in vace_e.root.rglob("*"))

    before = snapshot()
    ds = dataset(vace_e, num_frames=9)
    [ds[i] for i in range(len(ds))]
    assert snapshot() == before


def test_episodes_are_listed_in_numeric_order(tmp_path):
    import shutil

    from kinema.robot_data._vace_e import find_episodes

    fixture = write_vace_e_dataset(tmp_path / "base")
    source = tmp_path / "base" / POUR_TASK / "episode_1"
    for n in (10, 2, 11):
        shutil.copytree(source, source.with_name(f"episode_{n}"))
    found = [(task, path.name) for task, path in find_episodes(fixture.root)]
    assert found == [(GRASP_TASK, "episode_0")] + [(POUR_TASK, f"episode_{n}") for n in (0, 1, 2, 10, 11)]
