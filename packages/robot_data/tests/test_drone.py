"""Rendered drone flights: bad input, action sampling, the CSV round trip, camera motion vs command."""

import csv
import importlib.util

import numpy as np
import pytest

from kinema.robot_data import DRONE_ACTIONS, ActionVideoDataset, parse_action_json
from kinema.robot_data.drone import (
    DroneDataConfig,
    FlightConfig,
    integrate_flight,
    make_drone_dataset,
    plan_clip,
    sample_actions,
)

TINY = {"texture_size": 128, "grid": 33, "clips_per_world": 4}


@pytest.fixture(scope="module")
def renderer_backend():
    # not imported here: MuJoCo picks its OpenGL backend when first imported
    if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("cv2") is None:
        pytest.skip("mujoco and opencv-python-headless are not installed")
    from kinema.robot_data.drone import prepare_rendering
    from kinema.robot_data.sim import RenderBackendError

    try:
        return prepare_rendering()
    except (RenderBackendError, ImportError) as error:
        pytest.skip(f"no OpenGL backend can render MuJoCo scenes here: {error}")


@pytest.fixture(scope="module")
def flights(tmp_path_factory, renderer_backend):
    out = tmp_path_factory.mktemp("drone") / "flights"
    config = DroneDataConfig(out=str(out), clips=8, height=32, width=32, frames=41, seed=3, **TINY)
    make_drone_dataset(config, progress=False)
    return out, config


# --- bad input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"height": 48}, "--size: height 48 is not a positive multiple of 32"),
        ({"width": 100}, "--size: width 100 is not a positive multiple of 32"),
        ({"frames": 80}, r"--frames: expected a frame count of the form 4n\+1 \(e.g. 81\), got 80"),
        ({"frames": 1}, "--frames: expected at least 5"),
        ({"clips": 0}, "--clips: expected >= 1"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        DroneDataConfig(out=str(tmp_path / "d"), **({"clips": 1} | options))


def test_action_sampling_is_seeded_diverse_and_exclusive():
    rng = np.random.default_rng(0)
    binary, magnitude = zip(*(sample_actions(rng, 20, -0.5) for _ in range(200)))
    binary, magnitude = np.stack(binary), np.stack(magnitude)
    assert np.array_equal(sample_actions(np.random.default_rng(5), 20, -0.5)[1],
                          sample_actions(np.random.default_rng(5), 20, -0.5)[1])  # fmt: skip
    for p, n in ((0, 1), (2, 3), (4, 5), (6, 7)):  # opposite actions never together
        assert not np.any(binary[..., p] * binary[..., n])
    assert np.all((magnitude > 0) == (binary > 0))
    config = FlightConfig()
    assert magnitude[..., :4][binary[..., :4] > 0].min() >= config.translation_range[0]
    assert magnitude[..., 4:][binary[..., 4:] > 0].max() <= config.rotation_range[1]
    steps = binary.reshape(-1, 8)
    assert 0.03 < (steps.sum(1) == 0).mean() < 0.2  # some idle steps
    assert (steps.sum(1) >= 2).mean() > 0.3  # several actions at once
    assert 0.15 < steps.mean() < 0.35 and np.all(steps.mean(0) > 0.1)  # every action used
    assert len({tuple(s) for s in steps}) > 40  # many combinations


def test_pitch_stays_within_limits():
    config = FlightConfig()
    for seed in range(50):
        rng = np.random.default_rng(seed)
        b, m = sample_actions(rng, 20, config.start_pitch[0], config)
        poses = integrate_flight(np.array([0, 0, 10, 0, config.start_pitch[0]]), b, m)
        assert (
            config.pitch_limits[0] - 1e-9 <= poses[:, 4].min()
            and poses[:, 4].max() <= config.pitch_limits[1] + 1e-9
        )


def test_integrate_flight_applies_each_step_in_four_increments():
    b, m = np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)
    b[0, 0], m[0, 0] = 1, 0.002  # forward 2 m
    b[1, 4], m[1, 4] = 1, 0.1  # yaw left 0.1 rad
    poses = integrate_flight(np.array([1.0, 2.0, 10.0, np.pi / 2, -0.3]), b, m)
    assert poses.shape == (9, 5)
    np.testing.assert_allclose(poses[4], [1.0, 4.0, 10.0, np.pi / 2, -0.3], atol=1e-9)  # heading +y
    np.testing.assert_allclose(poses[8, 3], np.pi / 2 + 0.1)
    np.testing.assert_allclose(poses[2, 1], 3.0)


# --- rendered data --------------------------------------------------------------------------------------------
def test_csv_round_trips_through_action_video_dataset(flights):
    out, config = flights
    dataset = ActionVideoDataset(base_path=out, num_frames=41, strict=True)
    assert len(dataset) == 8
    with open(out / "metadata.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["video", "prompt", "action"]
    from kinema.robot_data.drone import make_world

    world = make_world(np.random.default_rng([3, 1, 0]), grid=33, texture_size=128)
    plan = plan_clip(config, world, 1, 5)
    sample = dataset[5]
    assert sample["video"].shape == (3, 41, 32, 32)
    np.testing.assert_array_equal(sample["action_binary"].numpy(), plan["binary"])
    np.testing.assert_allclose(sample["action_magnitude"].numpy(), plan["magnitude"], rtol=1e-6)
    binary, _ = parse_action_json(rows[5]["action"], 10)
    assert binary.shape == (10, len(DRONE_ACTIONS))
    assert rows[5]["prompt"].startswith("A drone flies over")


def test_same_seed_gives_the_same_data(tmp_path, renderer_backend):
    config = DroneDataConfig(out=str(tmp_path / "a"), clips=2, height=32, width=32, frames=9, seed=7, **TINY)
    make_drone_dataset(config, progress=False)
    make_drone_dataset(DroneDataConfig(**(config.__dict__ | {"out": str(tmp_path / "b")})), progress=False)
    assert (tmp_path / "a" / "metadata.csv").read_text() == (tmp_path / "b" / "metadata.csv").read_text()
    from kinema.robot_data import read_video_frames

    # the rendered frames are identical; the mp4s hold them through lossy H.264, which libx264 does not always
    # reproduce bit for bit at this tiny size, so the decoded clips agree up to codec noise
    first = read_video_frames(tmp_path / "a" / "videos" / "clip_00001.mp4").astype(np.float32)
    second = read_video_frames(tmp_path / "b" / "videos" / "clip_00001.mp4").astype(np.float32)
    assert first.shape == second.shape and np.abs(first - second).mean() < 4.0
    from kinema.robot_data.drone import make_world
    from kinema.robot_data.drone._render import FlightRenderer

    world = make_world(np.random.default_rng([7, 0, 0]), grid=TINY["grid"], texture_size=TINY["texture_size"])
    poses = plan_clip(config, world, 0, 1)["poses"]
    renders = []
    for _ in range(2):
        with FlightRenderer(world, 32, 32) as renderer:
            renders.append(renderer.render(poses))
    np.testing.assert_array_equal(renders[0], renders[1])
    make_drone_dataset(config, overwrite=True, progress=False)  # --overwrite replaces it
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["drone_data.json", "metadata.csv", "videos"]


@pytest.mark.parametrize(
    ("action", "magnitude", "check"),
    [
        ("yaw_left", 0.12, lambda top, bottom: top[0] > 0.5 and bottom[0] > 0.5),  # the scene slides right
        ("yaw_right", 0.12, lambda top, bottom: top[0] < -0.5 and bottom[0] < -0.5),
        ("pitch_up", 0.12, lambda top, bottom: top[1] > 0.5 and bottom[1] > 0.5),  # the scene slides down
        ("pitch_down", 0.12, lambda top, bottom: top[1] < -0.5 and bottom[1] < -0.5),
        ("left", 0.0025, lambda top, bottom: bottom[0] > 0.5 and bottom[0] > 1.3 * top[0]),  # near moves more
        ("right", 0.0025, lambda top, bottom: bottom[0] < -0.5 and bottom[0] < 1.3 * top[0]),
        ("forward", 0.0025, lambda top, bottom: bottom[1] > 0.5 and bottom[1] > 1.3 * top[1]),
        ("back", 0.0025, lambda top, bottom: bottom[1] < -0.5 and bottom[1] < 1.3 * top[1]),
    ],
)
def test_rendered_motion_follows_the_command(renderer_backend, action, magnitude, check):
    """Mean optical flow (pixels per step, image x right / y down) in the top and bottom thirds of a 64x64 view."""
    import cv2

    from kinema.robot_data.drone import FlightRenderer, make_world

    world = make_world(np.random.default_rng(11), grid=65, texture_size=512)
    b, m = np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32)
    b[:, DRONE_ACTIONS.index(action)], m[:, DRONE_ACTIONS.index(action)] = 1, magnitude
    z = float(world.ground_height(np.array(0.0), np.array(0.0))) + 12
    poses = integrate_flight(np.array([0.0, 0.0, z, 0.7, -0.6]), b, m)
    with FlightRenderer(world, 64, 64) as renderer:
        frames = renderer.render(poses)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    flow = sum(
        cv2.calcOpticalFlowFarneback(grey[i], grey[i + 1], None, 0.5, 3, 9, 3, 5, 1.1, 0) for i in range(4)
    )
    top, bottom = flow[8:24, 8:56].reshape(-1, 2).mean(0), flow[42:58, 8:56].reshape(-1, 2).mean(0)
    assert check(top, bottom), (action, top, bottom)


def test_contrast_scales_the_field_tints_and_keeps_the_default_world():
    from kinema.robot_data.drone import make_world

    def world(contrast):
        return make_world(np.random.default_rng([5, 2, 0]), grid=33, texture_size=128, contrast=contrast)

    default = make_world(np.random.default_rng([5, 2, 0]), grid=33, texture_size=128)
    np.testing.assert_array_equal(world(1.0).texture, default.texture)  # 1.0 is the world of before
    np.testing.assert_array_equal(world(3.0).heights, default.heights)  # the same draws: relief unchanged
    spread = [world(c).texture.astype(np.float32).std() for c in (0.0, 1.0, 3.0)]
    assert spread[0] < spread[1] < spread[2]
