"""Hybrid checkpoints: weights in safetensors beside ``hybrid_config.json``; loading checks one against the other
and, when asked, the variant.

A checkpoint folder (what training writes at the top of its output folder)::

    hybrid_config.json   HybridConfig (format kinema.hybrid_config)
    model.safetensors    every weight and the normalization statistics; metadata format kinema.hybrid, variant
    policy_stats.json    the kinema.robot_data statistics the model was normalized with (for reference)
    policy.json          kinema.robot_data.sim manifest: loader kinema.hybrid_policy:load_sim_policy
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from kinema.act_policy import weights_mismatch, write_atomic

from ._config import CONFIG_FILE, HybridConfig, check_variant
from ._model import HybridPolicyModel

WEIGHTS_FILE = "model.safetensors"
POLICY_LOADER = "kinema.hybrid_policy:load_sim_policy"
_FORMAT = "kinema.hybrid"
EXECUTION_FIELDS = (
    "n_action_steps",
    "temporal_ensemble_coeff",
    "sampler",
    "num_inference_steps",
    "z_temperature",
)


def save_weights(model: HybridPolicyModel, path: str | os.PathLike) -> Path:
    """The model's state dict (parameters and persistent buffers) as safetensors, atomically; the metadata
    records the variant."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": _FORMAT, "variant": model.config.variant}
    return write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata=metadata))


def load_weights(model: HybridPolicyModel, path: str | os.PathLike) -> None:
    """Loads ``path`` into ``model``: a ValueError for weights of another variant or that do not fit (naming the
    missing, unexpected and mis-shaped tensors)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the checkpoint's weights)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: unreadable safetensors file ({error})") from error
    saved_variant = metadata.get("variant")
    if saved_variant is not None and saved_variant != model.config.variant:
        raise ValueError(
            f"{path}: weights of a variant {saved_variant} model, but the config is variant {model.config.variant} "
            "(a checkpoint from another variant)"
        )
    mismatch = weights_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(
            f"{path}: the weights do not fit this HybridConfig (variant {model.config.variant}; a checkpoint from "
            f"another variant or config?): {mismatch}"
        )
    model.load_state_dict(state)


def save_hybrid(
    model: HybridPolicyModel,
    directory: str | os.PathLike,
    *,
    stats: dict | None = None,
    task: str | None = None,
    image_size: tuple[int, int] | None = None,
    render_quality: str | None = None,
) -> Path:
    """Writes a checkpoint folder that :func:`load_hybrid` and ``kinema-data eval-sim --checkpoint`` read.

    ``task`` / ``image_size`` / ``render_quality`` of the training data become eval-sim's defaults in
    ``policy.json`` (a task the ALOHA simulation does not know, such as ``dock``, is left out there)."""
    from kinema.robot_data import save_stats
    from kinema.robot_data.sim import TASK_NAMES, write_policy_manifest

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_weights(model, directory / WEIGHTS_FILE)
    model.config.save(directory)
    if stats is not None:
        save_stats(stats, directory / "policy_stats.json")
    write_policy_manifest(
        directory,
        POLICY_LOADER,
        task=task if task in TASK_NAMES else None,
        image_size=tuple(image_size) if image_size is not None and task in TASK_NAMES else None,
        cameras=tuple(model.config.camera_names) or None,
        render_quality=render_quality if task in TASK_NAMES else None,
    )
    return directory


def load_hybrid(
    directory: str | os.PathLike,
    *,
    variant: str | None = None,
    device: str | torch.device | None = None,
    **execution,
) -> HybridPolicyModel:
    """The model of a checkpoint folder, in eval mode on ``device`` (default CPU).

    ``variant``: the variant the checkpoint must hold, else a ValueError naming both. ``execution``: overrides
    of ``n_action_steps``, ``temporal_ensemble_coeff``, ``sampler``, ``num_inference_steps``, ``z_temperature``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint: {directory} is not a folder")
    config = HybridConfig.load(directory / CONFIG_FILE)
    if variant is not None and check_variant(variant) != config.variant:
        raise ValueError(
            f"checkpoint {directory} holds a variant {config.variant} model, expected variant {variant} "
            "(a checkpoint from another variant)"
        )
    unknown = sorted(set(execution) - set(EXECUTION_FIELDS))
    if unknown:
        raise ValueError(
            f"load_hybrid: unknown execution settings {unknown}; expected some of {EXECUTION_FIELDS}"
        )
    if "temporal_ensemble_coeff" in execution and execution["temporal_ensemble_coeff"] is not None:
        execution.setdefault("n_action_steps", 1)
    # The pretrained file was only the starting point; the checkpoint holds the trained backbone.
    config = dataclasses.replace(config, pretrained_backbone=None, **execution)
    model = HybridPolicyModel(config)
    load_weights(model, directory / WEIGHTS_FILE)
    return model.to(device or "cpu").eval()
