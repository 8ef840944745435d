"""Checkpoints under FSDP2: the trainable weights and the optimizer state gathered from shards resume a sharded
run exactly and an unsharded one as well (torchrun, 2 CPU processes in one gloo group, ``fully_shard`` applied
the way accelerate's ``fsdp_version: 2`` applies it: frozen bf16 weights beside trainable fp32 ones)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch

from kinema.video_world_model.training._sharded_state import (
    full_trainable_parameters,
    is_sharded,
    load_optimizer_checkpoint_state,
    load_trainable,
    optimizer_checkpoint_state,
)


class Frozen(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(8, 8).to(torch.bfloat16).requires_grad_(False)

    def forward(self, x):
        return self.proj(x.to(torch.bfloat16)).float()


class Model(torch.nn.Module):
    """A frozen bf16 backbone block (its own FSDP unit) and a trainable fp32 head, like a controller on Wan."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = Frozen()
        self.head = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.backbone(x))


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(step)
    return torch.randn(6, 8, generator=generator), torch.randn(6, 3, generator=generator)


def train(model, optimizer, steps) -> list[float]:
    losses = []
    for step in steps:
        x, y = batch(step)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


def shard(model):
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.backbone)
    fully_shard(model)
    return model


def make(sharded: bool):
    model = shard(Model()) if sharded else Model()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    return model, optimizer


def worker(out: str) -> None:
    """Every process: train 2 steps sharded, save, train 2 more; then a fresh sharded model resumes from the
    save and trains the same 2 steps. Rank 0 writes the checkpoint and both runs' results for the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, optimizer = make(sharded=True)
    assert is_sharded(model)
    train(model, optimizer, range(2))
    optimizer_state = optimizer_checkpoint_state(model, optimizer)
    with full_trainable_parameters(model):
        weights = {n: t.detach().clone() for n, t in model.state_dict().items() if n.startswith("head.")}
        plain = all(type(t) is torch.Tensor for t in weights.values())
        frozen_still_sharded = is_sharded(model.backbone)
    # as in the trainer: rank 0 writes the checkpoint (only it holds the gathered optimizer state), every rank reads it
    checkpoint = out + ".checkpoint.pt"
    if rank == 0:
        torch.save({"weights": weights, "optimizer": optimizer_state}, checkpoint)
    dist.barrier()
    uninterrupted = train(model, optimizer, range(2, 4))

    saved = torch.load(checkpoint, weights_only=True)
    resumed_model, resumed_optimizer = make(sharded=True)
    load_trainable(resumed_model, saved["weights"])
    load_optimizer_checkpoint_state(resumed_model, resumed_optimizer, saved["optimizer"])
    resumed = train(resumed_model, resumed_optimizer, range(2, 4))
    if rank == 0:
        torch.save(
            {
                "weights": saved["weights"],
                "optimizer": saved["optimizer"],  # as written (on a CPU the live state shares its tensors)
                "plain": plain,
                "frozen_still_sharded": frozen_still_sharded,
                "uninterrupted": uninterrupted,
                "resumed": resumed,
            },
            out,
        )
    dist.destroy_process_group()


def test_a_checkpoint_gathered_from_shards_resumes_sharded_and_unsharded(tmp_path):
    out = tmp_path / "result.pt"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += [__file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = torch.load(out, weights_only=False)
    # inside full_trainable_parameters the trainable weights are whole, plain tensors; the frozen ones stay sharded
    assert result["plain"] and result["frozen_still_sharded"]
    assert result["weights"]["head.0.weight"].shape == (16, 8)
    # the optimizer state is keyed by parameter name, whole tensors
    assert set(result["optimizer"]["state"]) == {
        "head.0.weight",
        "head.0.bias",
        "head.2.weight",
        "head.2.bias",
    }
    assert result["optimizer"]["state"]["head.0.weight"]["exp_avg"].shape == (16, 8)
    # a sharded resume continues exactly
    assert result["resumed"] == result["uninterrupted"]

    # and one process without FSDP resumes the same checkpoint (both ranks saw the same batch, so the averaged
    # gradient is the single-process gradient up to the order of the reduction)
    model, optimizer = make(sharded=False)
    assert not is_sharded(model)
    load_trainable(model, result["weights"])
    load_optimizer_checkpoint_state(model, optimizer, result["optimizer"])
    assert train(model, optimizer, range(2, 4)) == pytest.approx(result["uninterrupted"], rel=1e-5)


def test_an_index_keyed_optimizer_state_loads_unsharded():
    model, optimizer = make(sharded=False)
    train(model, optimizer, range(2))
    state = copy.deepcopy(
        optimizer_checkpoint_state(model, optimizer)
    )  # state_dict() shares the live moments
    assert isinstance(next(iter(state["state"])), int)  # unsharded: optimizer.state_dict() as before
    fresh_model, fresh_optimizer = make(sharded=False)
    load_trainable(fresh_model, {n: p for n, p in model.named_parameters() if p.requires_grad})
    load_optimizer_checkpoint_state(fresh_model, fresh_optimizer, state)
    assert train(fresh_model, fresh_optimizer, range(2, 4)) == train(model, optimizer, range(2, 4))


if __name__ == "__main__":
    worker(sys.argv[1])
