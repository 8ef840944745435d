"""Training: the loss falls, checkpoints and resume, time limits, and every bad input of the issue."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kinema.act_policy import ACTConfig, episode_files, load_act, train
from kinema.act_policy._data import check_episodes, load_episodes
from kinema.act_policy.testing import tiny_config, tiny_train_config, write_episodes
from kinema.robot_data import RobotDataError


def _log(folder, key):
    lines = [json.loads(x) for x in (folder / "training_log.jsonl").read_text().splitlines()]
    return [(r["step"], r[key]) for r in lines if key in r]


def test_loss_falls_and_checkpoint_is_written(episodes, tmp_path):
    result = train(
        tiny_config(environment_state_dim=2),
        tiny_train_config(
            episodes, tmp_path / "run", max_steps=60, log_every=10, val_every=30, save_every=30
        ),
    )
    assert result.complete and result.step == 60 and result.stop_reason == "max_steps"
    losses = [value for _, value in _log(tmp_path / "run", "train/l1")]
    assert losses[-1] < 0.5 * losses[0], losses
    val = [value for _, value in _log(tmp_path / "run", "val/l1_prior")]
    assert len(val) == 2 and val[-1] < val[0]
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["step-000000030", "step-000000060"]
    step_dir = tmp_path / "run" / "checkpoints" / "step-000000060"
    assert sorted(p.name for p in step_dir.iterdir()) == [
        "act_config.json", "model.safetensors", "optimizer.pt", "rng.pt", "scheduler.pt", "trainer_state.json",
    ]  # fmt: skip
    optimizer = torch.load(step_dir / "optimizer.pt", weights_only=True)
    assert [g["lr"] for g in optimizer["param_groups"]] == [1e-3, 1e-3]
    model = load_act(tmp_path / "run")
    folder = episodes.name
    assert model.config.notes["train_episodes"] == [
        f"{folder}/episode_0.hdf5",
        f"{folder}/episode_1.hdf5",
    ]  # seeded
    # the statistics are robot_data's, computed on the training episodes
    stats = json.loads((tmp_path / "run" / "policy_stats.json").read_text())["fields"]
    torch.testing.assert_close(model.qpos_mean, torch.tensor(stats["qpos"]["mean"], dtype=torch.float32))
    assert not any(p.name.startswith(".") for p in (tmp_path / "run").rglob("*"))  # no temporary files left


def test_resume_continues_exactly(episodes, tmp_path):
    """10 steps, stop, resume to 20 == 20 steps straight (weights, optimizer state and sampling restored)."""
    config = tiny_config(environment_state_dim=2)
    straight = train(config, tiny_train_config(episodes, tmp_path / "a", max_steps=20, save_every=10))
    first = train(config, tiny_train_config(episodes, tmp_path / "b", max_steps=10, save_every=10))
    assert first.step == 10
    second = train(
        config, tiny_train_config(episodes, tmp_path / "b", max_steps=20, save_every=10, resume=True)
    )
    assert second.step == straight.step == 20
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(tmp_path / "b" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def test_session_limit_stops_with_a_checkpoint_and_resume_finishes(episodes, tmp_path):
    config = tiny_config(environment_state_dim=2)
    paused = train(
        config, tiny_train_config(episodes, tmp_path / "run", max_steps=1000, session_minutes=1e-4)
    )
    assert not paused.complete and paused.stop_reason == "session_minutes"
    state = json.loads(
        next((tmp_path / "run" / "checkpoints").iterdir()).joinpath("trainer_state.json").read_text()
    )
    assert state["step"] == paused.step
    done = train(
        config, tiny_train_config(episodes, tmp_path / "run", max_steps=paused.step + 3, resume=True)
    )
    assert done.complete and done.step == paused.step + 3


def test_two_processes_stop_at_max_steps_and_their_checkpoint_resumes_on_one(episodes, tmp_path):
    """torchrun, 2 CPU processes in one gloo group (what `accelerate launch --num_processes 2` does on GPUs)."""
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "kinema.act_policy.cli", "train", "--data", str(episodes), "--out", str(out)]
    command += ["--dim-model", "32", "--encoder-layers", "1", "--chunk-size", "5", "--n-action-steps", "5"]
    command += ["--batch-size", "2", "--max-steps", "6", "--save-every", "3", "--val-every", "3"]
    command += ["--lr", "1e-3", "--lr-backbone", "1e-3", "--load-workers", "1", "--no-progress", "--json"]
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1  # only the first process reports
    assert (
        reports[0]["num_processes"] == 2 and reports[0]["step"] == 6
    )  # max_steps exactly, not the next sync
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000000003", "step-000000006"]
    state = json.loads((out / "checkpoints" / "step-000000006" / "trainer_state.json").read_text())
    assert state["samples_seen"] == 6 * 2 * 2

    saved = load_file(out / "model.safetensors")
    resumed = train(
        load_act(out).config, tiny_train_config(episodes, out, batch_size=2, max_steps=8, resume=True)
    )  # this process alone
    assert resumed.complete and resumed.step == 8 and resumed.num_processes == 1
    assert not torch.equal(
        load_file(out / "model.safetensors")["action_head.weight"], saved["action_head.weight"]
    )


def test_time_budget_ends_the_run(episodes, tmp_path):
    result = train(
        tiny_config(environment_state_dim=2),
        tiny_train_config(episodes, tmp_path / "run", max_steps=None, max_minutes=0.002),
    )
    assert result.complete and result.stop_reason == "max_minutes" and result.step >= 1


def test_an_existing_run_is_not_overwritten_and_resume_checks_the_config(episodes, tmp_path):
    config = tiny_config(environment_state_dim=2)
    train(config, tiny_train_config(episodes, tmp_path / "run", max_steps=2))
    with pytest.raises(FileExistsError, match=r"already holds a training run.*--resume"):
        train(config, tiny_train_config(episodes, tmp_path / "run", max_steps=4))
    other = config.with_remedies("film")
    with pytest.raises(
        ValueError, match=r"trained with another model config \(coord_film: checkpoint False, now True"
    ):
        train(other, tiny_train_config(episodes, tmp_path / "run", max_steps=4, resume=True))


def test_in_memory_samples_match_robot_data(episodes):
    """The in-memory batch equals kinema.robot_data.PolicyEpisodeDataset's samples (same chunk and padding)."""
    from kinema.robot_data import PolicyEpisodeDataset

    config = tiny_config(environment_state_dim=2)
    files = sorted(episodes.glob("*.hdf5"))
    memory = load_episodes(files, config, workers=1, progress=False)
    reference = PolicyEpisodeDataset(files, ["top"], chunk_size=8, split="all", use_environment_state=True)
    for index in (0, 17, 19, 20, 59):
        batch = memory.batch(torch.tensor([index]), 8)
        sample = reference[index]
        torch.testing.assert_close(batch["action"][0], sample["action"])
        torch.testing.assert_close(batch["is_pad"][0], sample["is_pad"])
        torch.testing.assert_close(batch["qpos"][0], sample["qpos"])
        torch.testing.assert_close(batch["environment_state"][0], sample["environment_state"])
        torch.testing.assert_close(batch["image"][0].permute(0, 3, 1, 2).float() / 255, sample["image"])


def test_images_are_resized_when_asked(episodes):
    config = tiny_config(image_size=(48, 48))
    memory = load_episodes(sorted(episodes.glob("*.hdf5")), config, workers=1, progress=False)
    assert memory.images.shape == (60, 1, 48, 48, 3)
    assert int(memory.images[21, 0, 5, 5, 0]) == (1 + 10) % 256  # episode 1, step 1: a uniform grey level


# --------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("write", "config", "field", "message"),
    [
        ({"cameras": ("top",)}, {"camera_names": ("top", "angle")}, "observations/images", "missing camera(s) ['angle']"),
        ({"state_dim": 7}, {}, "observations/qpos", "state has 7 dims, ACTConfig.state_dim is 14"),
        ({"action_dim": 7}, {}, "action", "actions have 7 dims, ACTConfig.action_dim is 14 (mismatched action dimension)"),
        ({"environment_state_dim": None}, {"environment_state_dim": 2}, "observations/environment_state", "missing, but the config uses coordinates"),
        ({"environment_state_dim": 4}, {"environment_state_dim": 2}, "observations/environment_state", "4 dims"),
    ],
)  # fmt: skip
def test_data_that_does_not_fit_the_config_is_named(tmp_path, write, config, field, message):
    root = write_episodes(tmp_path / "data", 2, 6, **write)
    with pytest.raises(RobotDataError) as error:
        check_episodes(sorted(root.glob("*.hdf5")), tiny_config(**config))
    assert error.value.field == field and error.value.path.endswith("episode_0.hdf5")
    assert message in str(error.value)
    with pytest.raises(RobotDataError, match=field):  # train refuses before loading anything
        train(tiny_config(**config), tiny_train_config(root, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_missing_data_folder_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--data: .*nowhere does not exist"):
        train(tiny_config(), tiny_train_config(tmp_path / "nowhere", tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"holds no episode files \(\*\.hdf5\)"):
        train(tiny_config(), tiny_train_config(tmp_path / "empty", tmp_path / "run"))


def test_episode_files_are_in_numeric_order(tmp_path):
    """episode_2 before episode_10: "the first N" and "the last K" episodes are taken by number."""
    for e in (10, 2, 0, 1, 11, 9):
        (tmp_path / f"episode_{e}.hdf5").touch()
    (tmp_path / ".episode_3.hdf5.tmp.hdf5").touch()  # a hidden temporary file: skipped
    numeric = [f"episode_{e}.hdf5" for e in (0, 1, 2, 9, 10, 11)]
    assert [p.name for p in episode_files(tmp_path)] == numeric
    given = [tmp_path / "episode_10.hdf5", tmp_path / "episode_2.hdf5"]
    assert episode_files(given) == given  # a list keeps its order


def test_train_config_validation():
    with pytest.raises(ValueError, match="never ends"):
        tiny_train_config("d", "o", max_steps=None)
    with pytest.raises(ValueError, match="batch_size: expected an integer >= 1"):
        tiny_train_config("d", "o", batch_size=0)
    with pytest.raises(ValueError, match=r"TrainConfig.device: expected one of \('auto', 'cuda', 'cpu'\)"):
        tiny_train_config("d", "o", device="cuda:1")
    assert ACTConfig().kl_weight == 10.0


def test_the_training_device_is_honoured(episodes, tmp_path):
    config = tiny_config(environment_state_dim=2)
    result = train(config, tiny_train_config(episodes, tmp_path / "cpu", max_steps=2, device="cpu"))
    assert result.complete and result.device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"TrainConfig\.device: 'cuda' was asked for"):
            train(config, tiny_train_config(episodes, tmp_path / "cuda", max_steps=2, device="cuda"))


def test_learning_rate_schedule():
    from kinema.act_policy._loop import lr_factor as _lr_lambda

    seconds = {"now": 0.0}
    by_steps = _lr_lambda(
        tiny_train_config("d", "o", max_steps=110, warmup_steps=10, lr_schedule="cosine"), lambda: 0.0
    )
    assert [by_steps(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])  # linear warm-up
    assert [by_steps(s) for s in (10, 60, 110)] == pytest.approx([1.0, 0.5, 0.0])  # cosine to 0 at max_steps
    by_time = _lr_lambda(
        tiny_train_config("d", "o", max_steps=None, max_minutes=10.0, lr_schedule="cosine"),
        lambda: seconds["now"],
    )
    seconds["now"] = 300.0  # half of the 10-minute budget
    assert by_time(50) == pytest.approx(0.5)
    seconds["now"] = 600.0
    assert by_time(51) == pytest.approx(0.0)
    constant = _lr_lambda(tiny_train_config("d", "o"), lambda: 0.0)
    assert constant(0) == constant(10_000) == 1.0


def test_an_episode_without_the_state_is_named(tmp_path):
    import h5py

    root = write_episodes(tmp_path / "data", 2, 6)
    with h5py.File(root / "episode_1.hdf5", "a") as f:
        del f["observations/qpos"]
    with pytest.raises(RobotDataError) as error:
        train(tiny_config(), tiny_train_config(root, tmp_path / "run"))
    assert error.value.path.endswith("episode_1.hdf5") and error.value.field == "observations/qpos"


def test_act_trains_with_warmup_and_cosine_decay(episodes, tmp_path):
    """The lr ACT's optimizer used, from the log, against hand-computed values: warm-up 4, cosine over the 8
    steps after it, lr 1e-3. After step s the scheduler has stepped s times: lr = 1e-3 x factor(s)."""
    settings = {
        "max_steps": 12,
        "warmup_steps": 4,
        "lr_schedule": "cosine",
        "log_every": 2,
        "val_fraction": 0.0,
    }
    train(tiny_config(environment_state_dim=2), tiny_train_config(episodes, tmp_path / "run", **settings))
    lr = dict(_log(tmp_path / "run", "train/lr"))
    assert lr[2] == pytest.approx(1e-3 * 3 / 4)  # warm-up: (s + 1) / 4
    assert lr[4] == pytest.approx(1e-3)  # warm-up done, cosine at 0
    assert lr[8] == pytest.approx(1e-3 * 0.5)  # half way: 0.5 (1 + cos(pi / 2))
    assert lr[10] == pytest.approx(1e-3 * 0.5 * (1 - 2**-0.5))  # 0.5 (1 + cos(3 pi / 4)) = 0.1464...
    assert dict(_log(tmp_path / "run", "train/lr_backbone"))[10] == pytest.approx(1e-3 * 0.14644661)


def test_act_ema_weights_are_the_hand_computed_average(episodes, tmp_path):
    """With ema, the exported weights are the EMA of the raw weights after each step (theta_1..3, kept in the
    step checkpoints): decay 0 at the first update, then 1 - (1 + n)^-0.75 for n = 1, 2 (diffusers' warm-up)."""
    run = tmp_path / "run"
    settings = {"max_steps": 3, "save_every": 1, "keep_checkpoints": 3, "ema": True, "val_fraction": 0.0}
    train(tiny_config(environment_state_dim=2), tiny_train_config(episodes, run, **settings))
    raw = [load_file(run / "checkpoints" / f"step-{s:09d}" / "model.safetensors") for s in (1, 2, 3)]
    assert sorted(p.name for p in (run / "checkpoints" / "step-000000003").iterdir()) == [
        "act_config.json", "ema.pt", "model.safetensors", "optimizer.pt", "rng.pt", "scheduler.pt",
        "trainer_state.json",
    ]  # fmt: skip
    exported = load_file(run / "model.safetensors")
    d2, d3 = 1 - 2**-0.75, 1 - 3**-0.75  # 0.4054, 0.5613
    names = [name for name, _ in load_act(run).named_parameters()]
    changed = 0
    for name in names:
        expected = d3 * (d2 * raw[0][name] + (1 - d2) * raw[1][name]) + (1 - d3) * raw[2][name]
        torch.testing.assert_close(exported[name], expected, rtol=1e-5, atol=1e-6)
        changed += not torch.equal(raw[2][name], raw[1][name])
    assert changed > len(names) // 2  # the raw weights moved, so the average is not any one of them
    with pytest.raises(ValueError, match="ema_max_decay: expected a number in"):
        tiny_train_config("d", "o", ema=True, ema_max_decay=1.0)
    plain = tmp_path / "plain"
    train(
        tiny_config(environment_state_dim=2),
        tiny_train_config(episodes, plain, max_steps=2, val_fraction=0.0),
    )
    assert not (plain / "checkpoints" / "step-000000002" / "ema.pt").exists()  # ACT's default: no averaging
    assert torch.equal(
        load_file(plain / "model.safetensors")["action_head.weight"],
        load_file(plain / "checkpoints" / "step-000000002" / "model.safetensors")["action_head.weight"],
    )
