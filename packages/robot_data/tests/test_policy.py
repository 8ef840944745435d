import os
import warnings

import h5py
import numpy as np
import pytest
import torch

from kinema.robot_data import (
    PolicyEpisodeDataset,
    RobotDataError,
    RobotDataWarning,
    check_policy_episode,
    compute_policy_stats,
    load_stats,
    read_policy_episode,
    save_stats,
    write_policy_episode,
)
from kinema.robot_data.testing import POLICY_BROKEN, synthetic_policy_episode, write_policy_dataset

ATTRS = {"sim": True, "fps": 50.0, "task": "transfer_cube"}


def test_write_read_round_trip(tmp_path):
    arrays = synthetic_policy_episode(2, num_steps=7, cameras=("top", "angle"), environment_state_dim=2)
    path = write_policy_episode(tmp_path / "ep.hdf5", **arrays, attrs={**ATTRS, "seed": 3})
    assert os.listdir(tmp_path) == ["ep.hdf5"]
    episode = read_policy_episode(path)
    for key in ("qpos", "qvel", "action", "environment_state"):
        np.testing.assert_array_equal(episode[key], arrays[key])
        assert episode[key].dtype == np.float32
    for camera in ("top", "angle"):
        np.testing.assert_array_equal(episode["images"][camera], arrays["images"][camera])
    assert episode["attrs"] == {"sim": True, "fps": 50.0, "task": "transfer_cube", "seed": 3}
    assert type(episode["attrs"]["sim"]) is bool
    with h5py.File(path) as f:
        images = f["observations/images/top"]
        assert images.chunks == (1, 24, 32, 3)  # one frame per chunk
        assert images.compression == "gzip"
        assert f["observations/qpos"].shape == (7, 14) and f["action"].shape == (7, 14)
    info = check_policy_episode(path)
    assert (info.num_steps, info.qpos_dim, info.action_dim, info.environment_state_dim) == (7, 14, 14, 2)
    assert info.cameras == {"top": (24, 32), "angle": (24, 32)}


def test_dims_are_read_from_the_file(tmp_path):
    arrays = synthetic_policy_episode(0, num_steps=5, qpos_dim=6, action_dim=7)
    episode = read_policy_episode(write_policy_episode(tmp_path / "ep.hdf5", **arrays, attrs=ATTRS))
    assert episode["qpos"].shape == (5, 6) and episode["action"].shape == (5, 7)
    assert "environment_state" not in episode


def bad(**changes):
    arrays = synthetic_policy_episode(0, num_steps=6)
    arrays["attrs"] = dict(ATTRS)
    for key, value in changes.items():
        arrays[key] = value
    return arrays


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        (bad(qpos=np.full((6, 14), np.nan)), "qpos: holds NaN or Inf"),
        (bad(qvel=np.zeros((6, 13))), "qvel: expected the shape of qpos"),
        (bad(action=np.zeros((5, 14))), "action: expected 6 time steps"),
        (bad(action=np.zeros(6)), "action: expected a numeric array of shape"),
        (bad(environment_state=np.array([[np.inf, 0]] * 6)), "environment_state: holds NaN or Inf"),
        (bad(images={"top": np.zeros((6, 8, 8, 3), np.float32)}), "images/top: expected dtype uint8"),
        (bad(images={"top": np.zeros((5, 8, 8, 3), np.uint8)}), r"images/top: expected shape \(6, H, W, 3\)"),
        (bad(images={}), "images: expected a non-empty dict"),
        (bad(attrs={"sim": True, "fps": 50.0}), r"attrs: missing \['task'\]"),
        (bad(attrs={**ATTRS, "fps": 0}), r"attrs\['fps'\]"),
        (bad(attrs={**ATTRS, "sim": "yes"}), r"attrs\['sim'\]"),
        (bad(attrs={**ATTRS, "extra": {"a": 1}}), r"attrs\['extra'\]: expected a str, number"),
    ],
)
def test_writer_validates_before_writing(tmp_path, arrays, message):
    with pytest.raises(ValueError, match=message):
        write_policy_episode(tmp_path / "ep.hdf5", **arrays)
    assert os.listdir(tmp_path) == []


def test_dataset_samples_chunks_with_padding(policy_clean):
    ds = PolicyEpisodeDataset(policy_clean.root, ["wrist", "top"], chunk_size=5, split="all")
    assert len(ds) == 6 * 20
    sample = ds[20 + 17]  # episode 1, step 17
    assert (sample["episode"], sample["timestep"]) == (1, 17)
    assert sample["image"].shape == (2, 3, 24, 32) and sample["image"].dtype == torch.float32
    # camera order follows camera_names: wrist is camera 1 of the fixture, top camera 0
    torch.testing.assert_close(sample["image"][0], torch.full((3, 24, 32), ((17 + 10 + 50) % 256) / 255))
    torch.testing.assert_close(sample["image"][1], torch.full((3, 24, 32), ((17 + 10) % 256) / 255))
    expected = synthetic_policy_episode(1, num_steps=20)
    np.testing.assert_array_equal(sample["qpos"].numpy(), expected["qpos"][17])
    np.testing.assert_array_equal(sample["action"][:3].numpy(), expected["action"][17:20])
    assert torch.all(sample["action"][3:] == 0)
    assert sample["is_pad"].tolist() == [False, False, False, True, True]
    assert "environment_state" not in sample


def test_split_is_by_episode_and_seeded(policy_clean):
    def episodes(split, seed=0):
        ds = PolicyEpisodeDataset(policy_clean.root, ["top"], 4, split=split, val_fraction=0.34, seed=seed)
        return {p.name for p in ds.files}

    train, val = episodes("train"), episodes("val")
    assert len(val) == 2 and len(train) == 4 and not train & val
    assert train | val == {f"episode_{i}.hdf5" for i in range(6)}
    assert episodes("val") == val  # deterministic
    assert any(episodes("val", seed) != val for seed in range(1, 6))
    with pytest.raises(ValueError, match="split"):
        PolicyEpisodeDataset(policy_clean.root, ["top"], 4, split="test")


def test_normalization_with_stats(policy_clean, tmp_path):
    stats = compute_policy_stats(policy_clean.root)
    ds = PolicyEpisodeDataset(
        policy_clean.root, ["top"], 3, split="all", use_environment_state=True, stats=stats
    )
    sample = ds[5]
    raw = synthetic_policy_episode(0, num_steps=20, environment_state_dim=2)
    for name, key in (("qpos", "qpos"), ("environment_state", "environment_state")):
        expected = (raw[key][5] - stats[name]["mean"]) / stats[name]["std"]
        np.testing.assert_allclose(sample[name].numpy(), expected, rtol=1e-5, atol=1e-5)
    expected = (raw["action"][5:8] - stats["action"]["mean"]) / stats["action"]["std"]
    np.testing.assert_allclose(sample["action"].numpy(), expected, rtol=1e-5, atol=1e-5)
    from_file = PolicyEpisodeDataset(
        policy_clean.root, ["top"], 3, split="all", stats=save_stats(stats, tmp_path / "s.json")
    )
    torch.testing.assert_close(from_file[5]["qpos"], sample["qpos"])
    with pytest.raises(ValueError, match="environment_state"):
        PolicyEpisodeDataset(
            policy_clean.root,
            ["top"],
            3,
            use_environment_state=True,
            stats={k: stats[k] for k in ("qpos", "action")},
        )


def test_stats_values_and_round_trip(policy_clean, tmp_path):
    before = sorted(os.listdir(policy_clean.root))
    stats = compute_policy_stats(policy_clean.root)
    assert sorted(os.listdir(policy_clean.root)) == before  # computing never writes
    qpos = np.concatenate([synthetic_policy_episode(i, num_steps=20)["qpos"] for i in range(6)]).astype(
        np.float64
    )
    np.testing.assert_allclose(stats["qpos"]["mean"], qpos.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["qpos"]["std"], qpos.std(0), rtol=1e-6)
    np.testing.assert_allclose(stats["qpos"]["min"], qpos.min(0))
    np.testing.assert_allclose(stats["qpos"]["max"], qpos.max(0))
    np.testing.assert_allclose(stats["qpos"]["q01"], np.quantile(qpos, 0.01, axis=0), rtol=1e-6)
    np.testing.assert_allclose(stats["qpos"]["q99"], np.quantile(qpos, 0.99, axis=0), rtol=1e-6)
    assert stats["qpos"]["count"] == 120
    np.testing.assert_array_equal(
        stats["qvel"]["std"], np.float32(0.01)
    )  # constant qvel: std clipped at 0.01
    assert set(stats) == {"qpos", "qvel", "action", "environment_state"}
    path = save_stats(stats, tmp_path)
    assert path == tmp_path / "policy_stats.json"
    loaded = load_stats(tmp_path)
    for field, values in stats.items():
        for key in ("mean", "std", "min", "max", "q01", "q99"):
            np.testing.assert_array_equal(loaded[field][key], values[key])
        assert loaded[field]["count"] == values["count"]
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(RobotDataError, match="format"):
        load_stats(tmp_path / "bad.json")


def test_lenient_mode_skips_every_broken_episode(policy):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = PolicyEpisodeDataset(policy.root, ["top"], 4, split="all")
    messages = [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]
    assert len(messages) == 1
    assert f"skipped {len(POLICY_BROKEN)} of {len(POLICY_BROKEN) + 3}" in messages[0]
    assert {item.path for item in ds.skipped} == set(policy.broken.values())
    assert len(ds) == 60


EXPECTED_FIELDS = {
    "zero_byte": "episode",
    "truncated_hdf5": "episode",
    "missing_group": "observations/images",
    "missing_dataset": "action",
    "missing_attrs": "attrs",
    "wrong_shape": "observations/qvel",
    "nan_values": "observations/qpos",
    "inf_values": "action",
    "length_mismatch": "action",
}


@pytest.mark.parametrize("kind", POLICY_BROKEN)
def test_strict_mode_raises_naming_file_and_field(policy, kind):
    with pytest.raises(RobotDataError) as error:
        PolicyEpisodeDataset([policy.broken[kind]], ["top"], 4, split="all", strict=True)
    assert error.value.path == policy.broken[kind]
    assert error.value.field == EXPECTED_FIELDS[kind]


def test_missing_camera_environment_state_and_files_are_bad_items(policy_clean, tmp_path):
    with pytest.raises(RobotDataError, match=r"missing camera\(s\) \['left'\]"):
        PolicyEpisodeDataset(policy_clean.root, ["left"], 4, split="all", strict=True)
    no_env = write_policy_dataset(tmp_path, num_episodes=1)
    with pytest.raises(RobotDataError, match="use_environment_state"):
        PolicyEpisodeDataset(no_env.root, ["top"], 4, split="all", use_environment_state=True, strict=True)
    with pytest.raises(FileNotFoundError):
        PolicyEpisodeDataset(tmp_path / "nothing", ["top"], 4)
    with pytest.raises(RobotDataError, match="does not exist"):
        PolicyEpisodeDataset([tmp_path / "gone.hdf5"], ["top"], 4, split="all", strict=True)


def corrupt_chunk(path, camera, step):
    """Overwrites the compressed bytes of one image chunk: the file opens and checks fine, that frame fails."""
    with h5py.File(path) as f:
        info = f[f"observations/images/{camera}"].id.get_chunk_info(step)
    with open(path, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)


@pytest.mark.parametrize("context", ["spawn", "forkserver"])
def test_dataloader_workers_open_their_own_handles_and_survive_a_bad_chunk(tmp_path, context):
    fixture = write_policy_dataset(tmp_path, num_episodes=2, num_steps=6, cameras=("top",))
    corrupt_chunk(fixture.valid[1], "top", 2)
    ds = PolicyEpisodeDataset(fixture.root, ["top"], 2, split="all")
    ds[0]  # the parent opens a handle; workers must not inherit or pickle it
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, multiprocessing_context=context)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        batches = list(loader)
    timesteps = torch.cat([b["timestep"] for b in batches]).tolist()
    episodes = torch.cat([b["episode"] for b in batches]).tolist()
    assert len(timesteps) == 12
    # the bad sample (episode 1, step 2) was replaced by the next one (episode 1, step 3)
    assert list(zip(episodes, timesteps))[8] == (1, 3)
    assert list(zip(episodes, timesteps))[:8] == [(0, t) for t in range(6)] + [(1, 0), (1, 1)]
    ds._fetch.strict = True
    with pytest.raises(RobotDataError, match="frame 2 unreadable"):
        ds[8]
    ds.close()


def test_episodes_of_other_dims_are_bad_items(tmp_path):
    write_policy_episode(tmp_path / "a.hdf5", **synthetic_policy_episode(0, num_steps=4), attrs=ATTRS)
    write_policy_episode(
        tmp_path / "b.hdf5", **synthetic_policy_episode(1, num_steps=4, qpos_dim=6), attrs=ATTRS
    )
    with pytest.warns(
        RobotDataWarning, match=r"b.hdf5: dims: \(qpos, action, environment_state\) dims \(6, 14"
    ):
        ds = PolicyEpisodeDataset(tmp_path, ["top"], 2, split="all")
    assert [p.name for p in ds.files] == ["a.hdf5"] and len(ds) == 4
    with pytest.raises(RobotDataError, match="dims"):
        PolicyEpisodeDataset(tmp_path, ["top"], 2, split="all", strict=True)


def test_loading_never_writes_into_the_dataset(policy):
    before = sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in policy.root.iterdir())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RobotDataWarning)
        ds = PolicyEpisodeDataset(policy.root, ["top", "wrist"], 4, split="all", use_environment_state=True)
        [ds[i] for i in range(0, len(ds), 7)]
        compute_policy_stats(policy.root)
    ds.close()
    assert sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in policy.root.iterdir()) == before


def test_episodes_written_by_other_tools_read_the_same(tmp_path):
    """Uncompressed or lzf images (another writer's layout) go through h5py's regular read."""
    arrays = synthetic_policy_episode(0, num_steps=5)
    for name, options in (("plain", {}), ("lzf", {"compression": "lzf", "chunks": (2, 24, 32, 3)})):
        path = write_policy_episode(tmp_path / f"{name}.hdf5", **arrays, attrs=ATTRS)
        with h5py.File(path, "a") as f:
            del f["observations/images/top"]
            f["observations/images"].create_dataset("top", data=arrays["images"]["top"], **options)
    ds = PolicyEpisodeDataset(tmp_path, ["top"], 2, split="all")
    for i in range(len(ds)):
        t = ds[i]["timestep"]
        torch.testing.assert_close(ds[i]["image"][0], torch.full((3, 24, 32), t / 255))


def test_episode_folders_list_in_numeric_order(tmp_path):
    """episode_2 before episode_10, wherever episodes are listed (the split, the sample order, stats)."""
    from kinema.robot_data._stats import list_policy_episodes
    from kinema.robot_data.sim._io import recording_files

    for e in (10, 2, 0, 1, 11, 9):
        write_policy_episode(tmp_path / f"episode_{e}.hdf5", **synthetic_policy_episode(e), attrs=ATTRS)
    numeric = [f"episode_{e}.hdf5" for e in (0, 1, 2, 9, 10, 11)]
    assert [p.name for p in list_policy_episodes(tmp_path)] == numeric
    assert [p.name for p in recording_files(tmp_path)] == numeric
    dataset = PolicyEpisodeDataset(tmp_path, ["top"], chunk_size=2, split="all")
    assert [p.name for p in dataset.files] == numeric
    assert dataset[3 * 20]["qpos"][0] == 1000.0 * 9  # sample 60 is the fourth episode's first step: episode_9


def test_natural_key_orders_numbers_as_numbers_and_any_names_together():
    from kinema.robot_data import natural_key

    names = [
        "episode_10.hdf5",
        "episode_2.hdf5",
        "grasp2",
        "grasp",
        "episode_02.hdf5",
        "ep1.h5",  # "ep" < "ep.h"
        "ep.h5",
        "b",
        "a10",
    ]
    assert sorted(names, key=natural_key) == [
        "a10",
        "b",
        "ep1.h5",  # "ep" < "ep.h"
        "ep.h5",
        "episode_02.hdf5",
        "episode_2.hdf5",
        "episode_10.hdf5",
        "grasp",
        "grasp2",
    ]
