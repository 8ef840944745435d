"""Checkpoint state of a module that FSDP2 (``fully_shard``, accelerate's ``fsdp_version: 2``) may have sharded.

Under FSDP2 every parameter is a ``DTensor`` holding one process's shard: ``state_dict()`` and
``save_pretrained`` return shards that safetensors cannot write, the optimizer's moments are shards too, and
``parameter.copy_(full)`` fails. These helpers gather the trainable weights and the optimizer state into full
tensors (collectives: every process calls them) and scatter them back on resume, so a checkpoint written under FSDP
is the same file as one written by a single process and resumes under either. Without sharding they do what the
plain calls do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.tensor import DTensor


def is_sharded(module: torch.nn.Module) -> bool:
    """Whether any parameter of ``module`` is a DTensor (FSDP2 or tensor parallel)."""
    return any(isinstance(p, DTensor) for p in module.parameters())


@contextmanager
def full_trainable_parameters(module: torch.nn.Module) -> Iterator[None]:
    """Inside, every trainable DTensor parameter of ``module`` is replaced by a plain parameter holding the full
    tensor, so ``state_dict()``, ``save_pretrained`` and peft's state helpers see whole weights (the frozen ones
    stay sharded: exports write only what trains); on exit the shards are put back untouched. A collective under
    FSDP2 (each DTensor is all-gathered): enter it on every process. Do not run forward or optimizer steps inside."""
    swapped = []
    for owner in module.modules():
        for name, parameter in list(owner._parameters.items()):
            if parameter is not None and parameter.requires_grad and isinstance(parameter, DTensor):
                swapped.append((owner, name, parameter))
                owner._parameters[name] = torch.nn.Parameter(parameter.detach().full_tensor())
    try:
        yield
    finally:
        for owner, name, parameter in swapped:
            owner._parameters[name] = parameter


def optimizer_checkpoint_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state to save: ``optimizer.state_dict()`` when nothing is sharded, else the full state
    keyed by parameter name (torch.distributed.checkpoint's format; a collective; rank 0 receives it, on the CPU)."""
    if not is_sharded(module):
        return optimizer.state_dict()
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_optimizer_state_dict(module, optimizer, options=options)


def _keyed_by_name(state: dict) -> bool:
    return any(isinstance(key, str) for key in state.get("state", {}))


def load_trainable(module: torch.nn.Module, full: dict[str, torch.Tensor]) -> None:
    """Copies ``full`` ({name: full tensor}, as :func:`trainable_full_state` returns) into the parameters,
    scattering shards under FSDP2. Every process calls it with the same tensors."""
    if is_sharded(module):
        # a copy: torch.distributed.checkpoint replaces the dict's entries by the shards it makes
        set_model_state_dict(module, dict(full), options=StateDictOptions(full_state_dict=True, strict=False))
        return
    own = dict(module.named_parameters())
    with torch.no_grad():
        for name, tensor in full.items():
            own[name].copy_(tensor.to(own[name].device, own[name].dtype))


def load_optimizer_checkpoint_state(
    module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict
) -> None:
    """Loads what :func:`optimizer_checkpoint_state` saved, under sharding or not, whichever way it was saved
    (a name-keyed state is scattered by torch.distributed.checkpoint; an index-keyed one is loaded as is)."""
    if _keyed_by_name(state):
        set_optimizer_state_dict(
            module,
            optimizer,
            optim_state_dict=copy.deepcopy(state),
            options=StateDictOptions(full_state_dict=True),
        )
    elif is_sharded(module):
        raise ValueError(
            "--resume_from: this checkpoint's optimizer state was written by an unsharded run and is indexed by "
            "position; resume it without FSDP (a checkpoint written under FSDP resumes either way)"
        )
    else:
        optimizer.load_state_dict(state)
