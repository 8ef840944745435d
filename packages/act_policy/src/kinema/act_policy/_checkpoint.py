"""ACT checkpoints: weights in safetensors beside ``act_config.json``; loading checks one against the other.

A checkpoint folder (what ``kinema-act train`` writes at the top of its output folder)::

    act_config.json      ACTConfig (format kinema.act_config)
    model.safetensors    every weight and the normalization statistics (buffers)
    policy_stats.json    robot_data statistics the model was normalized with (for reference)
    policy.json          kinema.robot_data.sim manifest: loader kinema.act_policy:load_sim_policy

Training states live in ``checkpoints/step-XXXXXXXXX/`` (see ``_train``).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from ._config import CONFIG_FILE, ACTConfig
from ._io import write_atomic
from ._model import ACT

WEIGHTS_FILE = "model.safetensors"
POLICY_LOADER = "kinema.act_policy:load_sim_policy"
# Settings that change how chunks are drawn or executed, not the weights: a checkpoint may be run with others.
EXECUTION_FIELDS = ("n_action_steps", "temporal_ensemble_coeff", "inference_z")
# Fields two configs may differ in and still describe the same weights.
NOT_STRUCTURAL = (*EXECUTION_FIELDS, "notes", "pretrained_backbone")


def save_weights(model: ACT, path: str | os.PathLike) -> Path:
    """The model's state dict (parameters and persistent buffers) as safetensors, atomically."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return write_atomic(path, lambda tmp: save_file(state, str(tmp), metadata={"format": "kinema.act"}))


def weights_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str | None:
    """How a loaded ``state`` differs from a model's ``own`` state dict (missing, unexpected and mis-shaped
    tensors, the first six of each), or None when it fits exactly."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if state[k].shape != own[k].shape
    )
    if not (missing or unexpected or shapes):
        return None

    def show(items):
        return f"{items[:6]}{' ...' if len(items) > 6 else ''}"

    return f"missing {show(missing)}, unexpected {show(unexpected)}, shape (file vs model) {show(shapes)}"


def load_weights(model: ACT, path: str | os.PathLike) -> None:
    """Loads ``path`` into ``model``; a ValueError naming missing, unexpected and mis-shaped tensors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (the checkpoint's weights)")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ValueError(f"{path}: unreadable safetensors file ({error})") from error
    mismatch = weights_mismatch(model.state_dict(), state)
    if mismatch:
        raise ValueError(
            f"{path}: the weights do not fit this ACTConfig (a checkpoint from another config?): {mismatch}"
        )
    model.load_state_dict(state)


def save_act(
    model: ACT,
    directory: str | os.PathLike,
    *,
    stats: dict | None = None,
    task: str | None = None,
    image_size: tuple[int, int] | None = None,
    render_quality: str | None = None,
) -> Path:
    """Writes a checkpoint folder that :func:`load_act` and ``kinema-data eval-sim --checkpoint`` read.

    ``task`` / ``image_size`` / ``render_quality`` (of the training data) become eval-sim's defaults in
    ``policy.json``; a task unknown to the simulation is left out."""
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
        image_size=image_size,
        cameras=tuple(model.config.camera_names),
        render_quality=render_quality,
    )
    return directory


def load_act(
    directory: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    expect: ACTConfig | None = None,
    **execution,
) -> ACT:
    """The ACT model of a checkpoint folder, in eval mode on ``device`` (default CPU).

    ``expect``: a config the checkpoint must match (execution settings aside), else a ValueError listing the
    differing fields. ``execution``: ``n_action_steps`` / ``temporal_ensemble_coeff`` / ``inference_z`` overrides.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint: {directory} is not a folder")
    config = ACTConfig.load(directory / CONFIG_FILE)
    if expect is not None:
        different = expect.differences(config, ignore=NOT_STRUCTURAL)
        if different:
            lines = ", ".join(
                f"{k}: checkpoint {v[1]!r}, expected {v[0]!r}" for k, v in sorted(different.items())
            )
            raise ValueError(f"checkpoint {directory} was made with another config ({lines})")
    unknown = sorted(set(execution) - set(EXECUTION_FIELDS))
    if unknown:
        raise ValueError(f"load_act: unknown execution settings {unknown}")
    # The pretrained file was only the starting point; the checkpoint holds the trained backbone.
    config = dataclasses.replace(config, pretrained_backbone=None, **execution)
    model = ACT(config)
    load_weights(model, directory / "model.safetensors")
    return model.to(device or "cpu").eval()
