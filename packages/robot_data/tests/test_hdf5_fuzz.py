"""The HDF5 readers (policy episodes, VACE-E trajectories) on broken files: truncated at any point, wrong dtypes,
NaN/Inf, missing or misplaced groups, dangling links, corrupt image chunks. Every call runs under a timeout and
ends in a value that round-trips or a RobotDataError naming the file and the field; datasets in lenient mode
skip the item and report it, never return a wrong sample."""

from __future__ import annotations

import shutil
import warnings

import h5py
import numpy as np
import pytest

from kinema.robot_data import (
    PolicyEpisodeDataset,
    RobotDataError,
    RobotDataWarning,
    VaceEEpisodeDataset,
    check_policy_episode,
    read_policy_episode,
    write_policy_episode,
)
from kinema.robot_data._trajectories import read_hand_motion, read_object_trajectories
from kinema.robot_data.testing import (
    POUR_TASK,
    call_with_timeout,
    synthetic_policy_episode,
    truncate_file,
    write_hand_trajectories,
    write_object_trajectories,
    write_vace_e_dataset,
)

TIMEOUT = 30.0
ATTRS = {"sim": True, "fps": 50.0, "task": "fuzz"}


def with_warnings(function, *args, **kwargs):
    """(function's result, the messages of the RobotDataWarnings it emitted): run in a child process by
    call_with_timeout, whose warnings do not reach the parent."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = function(*args, **kwargs)
    return value, [str(w.message) for w in caught if issubclass(w.category, RobotDataWarning)]


def _replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f.create_dataset(name, data=data)


def _strings(shape) -> np.ndarray:
    return np.full(shape, b"x", dtype="S1")


# name -> (edit of a valid 20-step episode, the field the error must name)
POLICY_EDITS = {
    "qpos_strings": (lambda f: _replace(f, "observations/qpos", _strings((20, 14))), "observations/qpos"),
    "qpos_compound": (
        lambda f: _replace(f, "observations/qpos", np.zeros((20, 14), dtype=[("a", "f4"), ("b", "i4")])),
        "observations/qpos",
    ),
    "qpos_1d": (lambda f: _replace(f, "observations/qpos", np.zeros(20, np.float32)), "observations/qpos"),
    "qvel_nan": (lambda f: f["observations/qvel"].__setitem__((3, 3), np.nan), "observations/qvel"),
    "action_inf": (lambda f: f["action"].__setitem__((19, 0), -np.inf), "action"),
    "action_strings": (lambda f: _replace(f, "action", _strings((20, 14))), "action"),
    "images_float": (
        lambda f: _replace(f, "observations/images/top", np.zeros((20, 24, 32, 3), np.float32)),
        "observations/images/top",
    ),
    "images_without_channels": (
        lambda f: _replace(f, "observations/images/top", np.zeros((20, 24, 32), np.uint8)),
        "observations/images/top",
    ),
    "images_too_short": (
        lambda f: _replace(f, "observations/images/top", np.zeros((19, 24, 32, 3), np.uint8)),
        "observations/images/top",
    ),
    "camera_is_a_group": (
        lambda f: (f.__delitem__("observations/images/top"), f["observations/images"].create_group("top")),
        "observations/images/top",
    ),
    "observations_is_a_dataset": (
        lambda f: (f.__delitem__("observations"), f.create_dataset("observations", data=np.zeros(3))),
        "observations/qpos",
    ),
    "no_images_group": (lambda f: f.__delitem__("observations/images"), "observations/images"),
    "dangling_action_link": (
        lambda f: (f.__delitem__("action"), f.__setitem__("action", h5py.SoftLink("/nowhere"))),
        "episode",
    ),
    "zero_steps": (
        lambda f: [
            _replace(f, name, np.zeros((0, 14), np.float32))
            for name in ("observations/qpos", "observations/qvel", "action")
        ],
        "observations/qpos",
    ),
    "missing_sim_attribute": (lambda f: f.attrs.__delitem__("sim"), "attrs"),  # fps and task have defaults
}
TRUNCATIONS = (0.01, 0.3, 0.7, 0.95, 0.999)


def _episode(path, episode: int = 0):
    return write_policy_episode(
        path, **synthetic_policy_episode(episode, cameras=("top",), environment_state_dim=2), attrs=ATTRS
    )


def _corrupt_chunk(path, dataset: str, t: int) -> None:
    """Overwrites the middle of the stored (compressed) chunk of step ``t``."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info_by_coord((t, 0, 0, 0))
    with open(path, "r+b") as handle:
        handle.seek(info.byte_offset + info.size // 2)
        handle.write(b"\xff\x00"[: info.size - info.size // 2])  # stays inside this chunk


@pytest.fixture(scope="module")
def broken_policy(tmp_path_factory):
    """A folder of three valid episodes plus one file per broken kind; returns (root, {kind: (path, field)})."""
    root = tmp_path_factory.mktemp("policy_fuzz")
    for e in range(3):
        _episode(root / f"episode_{e}.hdf5", e)
    broken = {}
    for kind, (edit, field) in POLICY_EDITS.items():
        path = _episode(root / f"broken_{kind}.hdf5", 90)
        with h5py.File(path, "a") as f:
            edit(f)
        broken[kind] = (path, field)
    for fraction in TRUNCATIONS:
        path = truncate_file(_episode(root / f"broken_truncated_{fraction}.hdf5", 90), fraction)
        broken[f"truncated_{fraction}"] = (path, "episode")
    return root, broken


@pytest.mark.parametrize("kind", [*POLICY_EDITS, *(f"truncated_{x}" for x in TRUNCATIONS)])
def test_policy_readers_raise_naming_file_and_field(broken_policy, kind):
    _, broken = broken_policy
    path, field = broken[kind]
    for reader in (check_policy_episode, read_policy_episode):
        with pytest.raises(RobotDataError) as error:
            call_with_timeout(reader, path, timeout=TIMEOUT)
        assert (error.value.path, error.value.field) == (str(path), field), str(error.value)


def test_lenient_dataset_skips_and_reports_every_broken_file_and_keeps_exact_samples(broken_policy):
    root, broken = broken_policy
    dataset, reports = call_with_timeout(
        with_warnings, PolicyEpisodeDataset, root, ["top"], chunk_size=5, split="all", timeout=TIMEOUT
    )
    assert len(reports) == 1  # one warning listing every skipped file
    assert sorted(item.path for item in dataset.skipped) == sorted(str(p) for p, _ in broken.values())
    for path, _ in broken.values():
        assert str(path) in reports[0]
    assert [p.name for p in dataset.files] == ["episode_0.hdf5", "episode_1.hdf5", "episode_2.hdf5"]
    assert len(dataset) == 3 * 20
    for index in (0, 19, 20, 45, 59):
        sample = call_with_timeout(dataset.__getitem__, index, timeout=TIMEOUT)
        episode, t = divmod(index, 20)
        expected = synthetic_policy_episode(episode, cameras=("top",), environment_state_dim=2)
        np.testing.assert_array_equal(sample["qpos"].numpy(), expected["qpos"][t])
        pixels = np.round(sample["image"][0].permute(1, 2, 0).numpy() * 255)
        np.testing.assert_array_equal(pixels, expected["images"]["top"][t])
    with pytest.raises(RobotDataError) as error:
        call_with_timeout(PolicyEpisodeDataset, root, ["top"], chunk_size=5, split="all", strict=True)
    assert error.value.path in {str(p) for p, _ in broken.values()}


def test_a_corrupt_image_chunk_raises_or_is_replaced_never_returned(tmp_path):
    for e in range(2):
        _episode(tmp_path / f"episode_{e}.hdf5", e)
    path = tmp_path / "episode_0.hdf5"
    _corrupt_chunk(path, "observations/images/top", 7)
    with pytest.raises(RobotDataError) as error:
        call_with_timeout(check_policy_episode, path, deep=True, timeout=TIMEOUT)
    assert (error.value.path, error.value.field) == (str(path), "observations/images/top")
    strict = PolicyEpisodeDataset(tmp_path, ["top"], chunk_size=5, split="all", strict=True)
    assert call_with_timeout(strict.__getitem__, 6, timeout=TIMEOUT)["timestep"] == 6
    with pytest.raises(RobotDataError) as error:
        call_with_timeout(strict.__getitem__, 7, timeout=TIMEOUT)
    assert error.value.path == str(path) and "frame 7" in error.value.reason
    lenient = PolicyEpisodeDataset(tmp_path, ["top"], chunk_size=5, split="all")
    sample, reports = call_with_timeout(with_warnings, lenient.__getitem__, 7, timeout=TIMEOUT)
    assert len(reports) == 1 and "replaced by the next readable item" in reports[0]
    assert (sample["episode"], sample["timestep"]) == (0, 8)  # the next item, labelled as what it is
    expected = synthetic_policy_episode(0, cameras=("top",))["images"]["top"][8]
    np.testing.assert_array_equal(np.round(sample["image"][0].permute(1, 2, 0).numpy() * 255), expected)


# name -> (file kind, edit, the field the error must name)
TRAJECTORY_EDITS = {
    "fps_text": ("hand", lambda f: f.attrs.__setitem__("fps", "fast"), "attrs.fps"),
    "fps_array": ("hand", lambda f: f.attrs.__setitem__("fps", np.array([1.0, 2.0])), "attrs.fps"),
    "fps_nan": ("hand", lambda f: f.attrs.__setitem__("fps", np.nan), "attrs.fps"),
    "positions_strings": (
        "hand",
        lambda f: _replace(f, "right_wrist/positions", _strings((13, 3))),
        "right_wrist/positions",
    ),
    "positions_nan": (
        "hand",
        lambda f: f["left_wrist/positions"].__setitem__((4, 0), np.nan),
        "left_wrist/positions",
    ),
    "states_2d": (
        "hand",
        lambda f: _replace(f, "right_hand_states", np.ones((13, 2), np.float32)),
        "right_hand_states",
    ),
    "wrist_is_a_dataset": (
        "hand",
        lambda f: (f.__delitem__("right_wrist"), f.create_dataset("right_wrist", data=np.zeros(3))),
        "right_wrist",
    ),
    "dangling_positions": (
        "hand",
        lambda f: (
            f.__delitem__("right_wrist/positions"),
            f["right_wrist"].__setitem__("positions", h5py.SoftLink("/nowhere")),
        ),
        "right_wrist/positions",
    ),
    "object_id_text": (
        "object",
        lambda f: f["object_0"].attrs.__setitem__("object_id", "abc"),
        "object_0.attrs.object_id",
    ),
    "object_id_fraction": (
        "object",
        lambda f: f["object_0"].attrs.__setitem__("object_id", 1.5),
        "object_0.attrs.object_id",
    ),
    "object_is_a_dataset": (
        "object",
        lambda f: (f.__delitem__("object_0"), f.create_dataset("object_0", data=np.zeros(3))),
        "object_0",
    ),
    "rotations_inf": (
        "object",
        lambda f: f["object_1/rotations_6d"].__setitem__((2, 5), np.inf),
        "object_1/rotations_6d",
    ),
    "truncated_hand": ("hand", None, "hand_trajectories"),
    "truncated_object": ("object", None, "object_trajectories"),
}


def _trajectory_file(folder, name: str, kind: str, edit):
    if kind == "hand":
        path = write_hand_trajectories(folder / f"{name}_hand_trajectories.hdf5", 13)
    else:
        path = write_object_trajectories(folder / f"{name}_object_trajectories.hdf5", 13)
    if edit is None:
        truncate_file(path, 0.6)
    else:
        with h5py.File(path, "a") as f:
            edit(f)
    return path


@pytest.mark.parametrize("name", TRAJECTORY_EDITS)
def test_trajectory_readers_raise_naming_file_and_field(tmp_path, name):
    kind, edit, field = TRAJECTORY_EDITS[name]
    path = _trajectory_file(tmp_path, name, kind, edit)
    reader = read_hand_motion if kind == "hand" else (lambda p: read_object_trajectories(p, 10))
    with pytest.raises(RobotDataError) as error:
        call_with_timeout(reader, path, timeout=TIMEOUT)
    assert (error.value.path, error.value.field) == (str(path), field), str(error.value)


def test_vace_e_lenient_mode_skips_broken_trajectories_and_keeps_aligned_samples(tmp_path):
    fixture = write_vace_e_dataset(tmp_path / "base")
    template = tmp_path / "base" / POUR_TASK / "episode_0"
    broken = {}
    for n, (name, (kind, edit, _)) in enumerate(TRAJECTORY_EDITS.items(), start=20):
        episode = template.parent / f"episode_{n}"
        shutil.copytree(template, episode)
        for old in episode.iterdir():
            old.rename(episode / old.name.replace("episode_0", episode.name))
        target = episode / f"{episode.name}_{kind}_trajectories.hdf5"
        target.unlink()
        _trajectory_file(tmp_path, name, kind, edit).rename(target)
        broken[str(episode)] = name
    dataset, reports = call_with_timeout(
        with_warnings,
        VaceEEpisodeDataset,
        base_path=fixture.root,
        metadata_path=fixture.metadata,
        num_frames=13,
        timeout=TIMEOUT,
    )
    assert len(reports) == 1
    assert sorted(str(e.path) for e in dataset.episodes) == sorted(fixture.valid)
    assert sorted(str(item.path).rsplit("/", 1)[0] for item in dataset.skipped) == sorted(broken)
    for index in range(len(dataset)):
        sample = call_with_timeout(dataset.__getitem__, index, timeout=TIMEOUT)
        if sample["hand_motion"] is not None:  # the right wrist's x holds the source frame index
            np.testing.assert_array_equal(
                sample["hand_motion"][:, 9].numpy(), sample["frame_indices"].numpy()
            )
