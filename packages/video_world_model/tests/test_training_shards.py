"""`kinema-wm train --dataset_shards`: training streams WebDataset shards written by `kinema-data shard`, and a run
stopped at a checkpoint resumes at exactly the next sample, on one process and on two."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kinema.robot_data.shards import write_action_video_shards
from kinema.robot_data.testing import write_action_video_dataset
from kinema.video_world_model.training._train_config import TrainConfig
from kinema.video_world_model.training._trainer import WorldModelTrainer

FRAMES = 5


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    write_action_video_dataset(root / "data", num_clips=7, num_frames=FRAMES, height=64, width=64)
    write_action_video_shards(root / "data", root / "shards", max_shard_samples=2, progress=False)
    return root / "shards"


def config(model_dir, shards, output, **overrides) -> TrainConfig:
    values = {
        "dataset_shards": str(shards),
        "model_dir": str(model_dir),
        "output_path": str(output),
        "height": 64,
        "width": 64,
        "num_frames": FRAMES,
        "batch_size": 2,
        "max_steps": 6,
        "save_steps": 2,
        "save_full_state": True,
        "dataset_num_workers": 0,
        "dataset_shuffle_buffer": 3,
        "mixed_precision": "no",
        "learning_rate": 1e-3,
        "action_initial_scale": 0.1,
        "log_steps": 1,
    }
    return TrainConfig(**(values | overrides))


def test_options_name_the_conflict(tiny_wan_dir, shards, tmp_path):
    with pytest.raises(ValueError, match="--dataset_shards: give one source of training data"):
        config(tiny_wan_dir, shards, tmp_path / "o", dataset_base_path=str(tmp_path))
    with pytest.raises(ValueError, match="only --dataset_shards uses them"):
        TrainConfig(model_dir=str(tiny_wan_dir), dataset_base_path=str(tmp_path), dataset_shuffle_buffer=4)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_run_resumed_from_shards_sees_the_same_samples(
    tiny_wan_dir, shards, tmp_path, interrupt_after_save, workers
):
    uninterrupted = WorldModelTrainer(
        config(tiny_wan_dir, shards, tmp_path / "full", dataset_num_workers=workers)
    )
    losses = uninterrupted.run().losses
    # 7 clips in shards of 2, 2, 2, 1; batches of 2 -> with one reader 3 whole batches an epoch (the seventh clip
    # is the ragged tail); with two workers of 2 shards each, 4 + 3 clips -> 2 + 1 whole batches
    state = json.loads(
        (tmp_path / "full" / "checkpoints" / "step-000000004" / "trainer_state.json").read_text()
    )
    assert (state["epoch"], state["data_position"]) == (1, 2)

    interrupt_after_save(WorldModelTrainer, 2)
    cut = config(tiny_wan_dir, shards, tmp_path / "cut", dataset_num_workers=workers)
    with pytest.raises(KeyboardInterrupt):
        WorldModelTrainer(cut).run()
    interrupt_after_save.restore()
    resumed = WorldModelTrainer(TrainConfig(**(cut.to_dict() | {"resume_from": "latest"}))).run().losses
    assert sorted(resumed) == [3, 4, 5, 6]
    for step in resumed:
        assert resumed[step] == pytest.approx(losses[step], abs=1e-6), step


def test_two_processes_resume_from_shards_exactly(tiny_wan_dir, shards, tmp_path):
    """torchrun, 2 CPU processes in one gloo group: each reads its own shards; stopped after step 2 (its step-4
    checkpoint removed) and resumed, the run ends with the weights of the uninterrupted one."""
    run = tmp_path / "run"
    args = ["-m", "kinema.video_world_model.cli", "train"]
    for key, value in config(tiny_wan_dir, shards, run, max_steps=4, batch_size=1).to_dict().items():
        if value is None or value is False:
            continue
        args += [f"--{key}"] if value is True else [f"--{key}", str(value)]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    step_four = run / "checkpoints" / "step-000000004"
    expected = load_file(str(step_four / "trainable.safetensors"))
    shutil.rmtree(step_four)
    done = subprocess.run(
        [*command, "--resume_from", "latest"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = load_file(str(step_four / "trainable.safetensors"))
    assert set(got) == set(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(got[name], tensor, rtol=0, atol=0, msg=name)
