"""Episodes written by the original ACT sim recorder and the ALOHA real-robot recorder load as kinema's own: the
missing root attributes get stated defaults (one warning), JPEG frames are decoded in the recorded channel order,
and a broken compressed file is named with the dataset at fault."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest

from kinema.robot_data import (
    PolicyEpisodeDataset,
    RobotDataError,
    RobotDataWarning,
    check_policy_episode,
    compute_policy_stats,
    read_policy_episode,
)
from kinema.robot_data.cli import main
from kinema.robot_data.testing import (
    ALOHA_CAMERAS,
    recorder_episode,
    write_act_sim_episodes,
    write_aloha_episodes,
)

cv2 = pytest.importorskip("cv2", reason="the ALOHA fixtures encode JPEG with OpenCV, as the recorder does")


def _reports(function, *args, **kwargs):
    """(result, messages of the RobotDataWarnings it emitted), every warning recorded."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = function(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]


def _pixels(sample) -> np.ndarray:
    """A sample's images (N, 3, H, W) in [0, 1] -> (N, H, W, 3) on the 0..255 scale."""
    return np.round(sample["image"].permute(0, 2, 3, 1).numpy() * 255)


def test_act_sim_recordings_load_with_their_defaults_named_once(tmp_path):
    root = write_act_sim_episodes(tmp_path / "sim_transfer_cube_scripted", num_episodes=2, num_steps=6)
    dataset, reports = _reports(PolicyEpisodeDataset, root, ["top"], 3, split="all", strict=True)
    assert len(reports) == 1, reports
    assert "fps=50" in reports[0] and "0.02 s" in reports[0] and "ALOHA" in reports[0]
    assert "task='sim_transfer_cube_scripted'" in reports[0]
    assert len(dataset) == 12
    for index in (0, 5, 8):
        sample = dataset[index]
        episode, t = divmod(index, 6)
        source = recorder_episode(episode, 6, ["top"])
        np.testing.assert_array_equal(
            sample["qpos"].numpy(), source["/observations/qpos"][t].astype(np.float32)
        )
        actions = source["/action"][t : t + 3].astype(np.float32)
        np.testing.assert_array_equal(sample["action"][: len(actions)].numpy(), actions)
        assert sample["is_pad"].tolist() == [t + k >= 6 for k in range(3)]
        np.testing.assert_array_equal(_pixels(sample)[0], source["/observations/images/top"][t])  # raw: exact
    episode = read_policy_episode(root / "episode_1.hdf5")
    assert episode["attrs"] == {"sim": True, "fps": 50.0, "task": "sim_transfer_cube_scripted"}
    np.testing.assert_array_equal(episode["qvel"], np.full((6, 14), 0.25, np.float32))
    _, again = _reports(compute_policy_stats, root)  # the same folder in the same process: already said
    assert again == []


def test_compressed_aloha_recordings_decode_in_the_recorded_channel_order(tmp_path):
    root = write_aloha_episodes(tmp_path / "aloha_wear_shoe", num_episodes=2, num_steps=5)
    cameras = ["cam_high", "cam_left_wrist", "cam_right_wrist"]
    dataset, reports = _reports(PolicyEpisodeDataset, root, cameras, 2, split="all", strict=True)
    assert len(reports) == 1 and "task='aloha_wear_shoe'" in reports[0] and "fps=50" in reports[0]
    for index in (0, 4, 7):
        sample = dataset[index]
        episode, t = divmod(index, 5)
        source = recorder_episode(episode, 5, ALOHA_CAMERAS)
        np.testing.assert_array_equal(
            sample["qpos"].numpy(), source["/observations/qpos"][t].astype(np.float32)
        )
        pixels = _pixels(sample)  # (3, 48, 64, 3)
        for n, camera in enumerate(cameras):
            expected = source[f"/observations/images/{camera}"][t].astype(np.float64)
            assert np.abs(pixels[n] - expected).mean() < 4  # JPEG at quality 50
            # away from the red/grey border (chroma is subsampled 2x): within a few levels, and red stays red
            np.testing.assert_allclose(pixels[n][:, 4:28], expected[:, 4:28], atol=8)
            np.testing.assert_allclose(pixels[n][:, 36:60], expected[:, 36:60], atol=8)
            red = pixels[n][:, 4:28].reshape(-1, 3)
            assert red[:, 0].min() > 240 and red[:, 1:].max() < 15, red.mean(axis=0)
    info = check_policy_episode(root / "episode_0.hdf5", deep=True)
    assert info.cameras == {camera: (48, 64) for camera in ALOHA_CAMERAS}
    assert (info.num_steps, info.qpos_dim, info.action_dim) == (5, 14, 14)
    episode = read_policy_episode(root / "episode_0.hdf5")
    assert (
        episode["images"]["cam_low"].shape == (5, 48, 64, 3)
        and episode["images"]["cam_low"].dtype == np.uint8
    )
    assert episode["attrs"] == {"sim": False, "compress": True, "fps": 50.0, "task": "aloha_wear_shoe"}


def test_uncompressed_aloha_and_files_without_qvel_load(tmp_path):
    root = write_aloha_episodes(tmp_path / "raw", num_episodes=2, num_steps=4, compress=False)
    for path in root.iterdir():
        with h5py.File(path, "a") as f:
            del f["observations/qvel"]  # no policy uses it
    dataset, _ = _reports(PolicyEpisodeDataset, root, ["cam_low"], 2, split="all", strict=True)
    expected = recorder_episode(1, 4, ALOHA_CAMERAS)["/observations/images/cam_low"][3]
    np.testing.assert_array_equal(_pixels(dataset[7])[0], expected)
    assert "qvel" not in read_policy_episode(root / "episode_0.hdf5")
    assert sorted(compute_policy_stats(root)) == ["action", "qpos"]


def _truncate_compress_len(f: h5py.File) -> None:
    lengths = f["compress_len"][()]
    del f["compress_len"]
    f.create_dataset("compress_len", data=lengths[:, :-2])


BROKEN_ALOHA = {
    "truncated_compress_len": (
        _truncate_compress_len,
        "compress_len",
        r"expected shape \(4, 5\).*got \(4, 3\)",
    ),
    "missing_camera": (
        lambda f: f.__delitem__("observations/images/cam_low"),
        "observations/images",
        r"3 camera\(s\).*compress_len has 4 rows",
    ),
    "corrupt_frame": (
        lambda f: f["observations/images/cam_high"].__setitem__(2, 0),
        "observations/images/cam_high",
        "frame 2",
    ),
}


@pytest.mark.parametrize("kind", BROKEN_ALOHA)
def test_broken_compressed_aloha_files_name_the_file_and_dataset(tmp_path, kind):
    edit, field, reason = BROKEN_ALOHA[kind]
    root = write_aloha_episodes(tmp_path / "aloha", num_episodes=2, num_steps=5)
    path = root / "episode_1.hdf5"
    with h5py.File(path, "a") as f:
        edit(f)
    with pytest.raises(RobotDataError, match=reason) as error:
        check_policy_episode(path, deep=True)
    assert (error.value.path, error.value.field) == (str(path), field)
    with pytest.raises(RobotDataError, match=reason) as error:
        dataset, _ = _reports(PolicyEpisodeDataset, root, ["cam_high"], 2, split="all", strict=True)
        [dataset[i] for i in range(len(dataset))]  # a corrupt frame is found when it is read
    assert (error.value.path, error.value.field) == (str(path), field)


def test_kinema_data_validate_and_inspect_accept_both_layouts(tmp_path, capsys):
    act = write_act_sim_episodes(tmp_path / "sim_insertion_scripted", num_episodes=2, num_steps=4)
    aloha = write_aloha_episodes(tmp_path / "aloha_battery", num_episodes=2, num_steps=4)
    for root, task in ((act, "sim_insertion_scripted"), (aloha, "aloha_battery")):
        code, _ = _reports(main, ["validate", str(root)])
        out = capsys.readouterr().out
        assert code == 0 and "PASSED" in out and "0 error(s)" in out, out
        code, _ = _reports(main, ["inspect", str(root)])
        out = capsys.readouterr().out
        assert code == 0 and "50.0 (2)" in out and f"{task} (2)" in out, out
