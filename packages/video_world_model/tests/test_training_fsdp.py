"""Controller training under accelerate's FSDP2 and DeepSpeed ZeRO-2 on one GPU: a checkpoint written from shards
resumes under the same sharding and without it (run on the GPU machine; the CPU half of the FSDP logic is
test_sharded_state.py, since accelerate applies FSDP and DeepSpeed only on accelerators)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from kinema.robot_data.testing import write_action_video_dataset

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="accelerate applies FSDP only on accelerators"
)

FSDP2_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
fsdp_config:
  fsdp_version: 2
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: WanTransformerBlock
  fsdp_reshard_after_forward: true
  fsdp_state_dict_type: FULL_STATE_DICT
mixed_precision: 'no'
num_machines: 1
num_processes: 1
machine_rank: 0
main_training_function: main
"""

ZERO2_CONFIG = """\
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  zero_stage: 2
  gradient_accumulation_steps: 1
  offload_optimizer_device: none
  offload_param_device: none
mixed_precision: 'no'
num_machines: 1
num_processes: 1
machine_rank: 0
main_training_function: main
"""
CONFIGS = {"fsdp2": FSDP2_CONFIG, "zero2": ZERO2_CONFIG}


def train(model_dir, clips, output, *extra, config_file=None):
    args = ["-m", "kinema.video_world_model.cli", "train", "--dataset_base_path", str(clips), "--model_dir",
            str(model_dir), "--output_path", str(output), "--height", "64", "--width", "64", "--num_frames", "5",
            "--max_steps", "4", "--save_steps", "2", "--save_full_state", "--dataset_num_workers", "0",
            "--mixed_precision", "no", "--learning_rate", "1e-3", "--action_initial_scale", "0.1", *extra]  # fmt: skip
    if config_file is None:
        command = [sys.executable, *args]
    else:
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(config_file),
            *args,
        ]
    done = subprocess.run(command, env=dict(os.environ), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def weights(run, step):
    return load_file(str(run / "checkpoints" / f"step-{step:09d}" / "trainable.safetensors"))


@pytest.mark.parametrize("sharding", sorted(CONFIGS))
def test_a_sharded_checkpoint_resumes_sharded_and_without(tiny_wan_dir, tmp_path, sharding):
    if sharding == "zero2":
        pytest.importorskip("deepspeed")
    clips = tmp_path / "data"
    write_action_video_dataset(clips, num_clips=3, num_frames=5, height=64, width=64)
    config = tmp_path / f"{sharding}.yaml"
    config.write_text(CONFIGS[sharding])
    full = tmp_path / "full"
    train(tiny_wan_dir, clips, full, config_file=config)
    # the exported controller and the checkpoint hold whole tensors, named as without FSDP
    controller = load_file(str(full / "action_controller.safetensors"))
    assert controller and all(t.dim() >= 1 for t in controller.values())
    trained = weights(full, 4)
    assert trained and set(trained) <= set(controller)
    for key, tensor in trained.items():
        assert torch.equal(controller[key], tensor), key

    # interrupted after step 2 (the run without its step-4 checkpoint), resumed under the same sharding, then again
    # in one plain process: the same weights at step 4
    for name, resume_config in ((sharding, config), ("plain", None)):
        shutil.rmtree(full / "checkpoints" / "step-000000004")
        train(tiny_wan_dir, clips, full, "--resume_from", "latest", config_file=resume_config)
        for key, tensor in trained.items():
            # sharded again: the same kernels; one plain process may reduce in another order
            tolerance = {"rtol": 1e-5, "atol": 1e-6} if resume_config else {"rtol": 1e-4, "atol": 1e-5}
            torch.testing.assert_close(weights(full, 4)[key], tensor, **tolerance, msg=f"{name}: {key}")
