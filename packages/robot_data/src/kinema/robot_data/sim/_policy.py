"""The policy protocol of the evaluation harness, checkpoint loading, and a built-in replay policy.

A policy is any object with two methods (:class:`SimPolicy`):

``reset(num_envs)``
    Called once before evaluation with the number N of environments stepped in parallel.
``act(observation) -> actions``
    ``observation`` is a batch over the N environments, all numpy arrays:

    - ``qpos`` (N, 14) float32 joint positions (grippers normalized 0 closed .. 1 open)
    - ``qvel`` (N, 14) float32 joint velocities
    - ``images`` {camera: (N, H, W, 3) uint8}
    - ``environment_state`` (N, E) float32 (the target (x, y) on the confuser task; see ``environment_state``)
    - ``step`` (N,) int64 time step within each row's episode; **0 starts a new episode in that row**, so a
      policy that keeps per-row history (action chunks, temporal ensembling) clears that row then
    - ``active`` (N,) bool; inactive rows (no episode left to run) repeat their last observation and their
      actions are ignored

    and it returns actions (N, 14): absolute joint targets [left arm 6, left gripper, right arm 6, right
    gripper], as a numpy array or anything ``numpy.asarray`` takes (a torch tensor is moved to the CPU).
    A wrong shape or a NaN / Inf is a :class:`PolicyError` naming the rows.

The policy runs in the evaluating process (one batched query per step, so a GPU model serves all
environments at once); the simulators run in worker processes.

Checkpoint convention for ``kinema-data eval-sim --checkpoint DIR``: ``DIR/policy.json`` holds

    {"format": "kinema-sim-policy", "version": 1,
     "loader": "package.module:function",       # an installed module, imported by name
     "task": "transfer_cube",                    # optional defaults for eval-sim
     "image_size": [480, 640], "cameras": ["top"], "render_quality": "full",
     "options": {...}}                           # keyword arguments for the loader

and the loader is called as ``function(checkpoint_dir: Path, device=device, **options)`` and returns a
policy. :func:`write_policy_manifest` writes the file.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ._io import write_json_atomic
from ._tasks import ACTION_DIM, check_render_quality, get_task

POLICY_MANIFEST = "policy.json"
_MANIFEST_FORMAT = "kinema-sim-policy"


class PolicyError(ValueError):
    """A policy broke the protocol (missing methods, actions of the wrong shape, NaN) or cannot be loaded."""


@runtime_checkable
class SimPolicy(Protocol):
    """What :func:`kinema.robot_data.sim.evaluate` runs (see the module documentation for the batch keys)."""

    def reset(self, num_envs: int) -> None: ...

    def act(self, observation: dict[str, Any]) -> Any: ...


def check_policy(policy) -> None:
    """A PolicyError unless ``policy`` has callable ``reset`` and ``act``."""
    missing = [name for name in ("reset", "act") if not callable(getattr(policy, name, None))]
    if missing:
        raise PolicyError(
            f"{type(policy).__name__} is not a sim policy: it lacks {' and '.join(missing)}(); a policy needs "
            "reset(num_envs) and act(observation) -> actions (num_envs, 14)"
        )


def validate_actions(actions, num_envs: int, active: np.ndarray | None = None) -> np.ndarray:
    """``actions`` as a float64 array (num_envs, 14); a PolicyError for a wrong shape or non-finite values.

    Only ``active`` rows must be finite (inactive rows are ignored).
    """
    if hasattr(actions, "detach"):  # a torch tensor, possibly on a GPU
        actions = actions.detach().cpu().numpy()
    try:
        array = np.asarray(actions, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise PolicyError(
            f"policy actions must be numeric (N, {ACTION_DIM}), got {type(actions).__name__}"
        ) from error
    if array.shape != (num_envs, ACTION_DIM):
        raise PolicyError(
            f"policy actions must have shape ({num_envs}, {ACTION_DIM}) for {num_envs} environments, "
            f"got {tuple(array.shape)}"
        )
    rows = np.ones(num_envs, dtype=bool) if active is None else np.asarray(active, dtype=bool)
    bad = np.flatnonzero(rows & ~np.isfinite(array).all(axis=1))
    if bad.size:
        raise PolicyError(
            f"policy actions contain NaN or Inf in rows {bad.tolist()} (of {num_envs} environments)"
        )
    return array


class ReplayPolicy:
    """Plays a fixed action sequence (T, 14) in every environment: row i gets ``actions[step[i]]``.

    Replaying a recorded episode's actions from the same seed reproduces the recording, which makes this
    the harness's reference policy (success expected); after T steps the last action is held.
    """

    def __init__(self, actions: np.ndarray, *, seed: int | None = None, task: str | None = None):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[1] != ACTION_DIM or len(actions) == 0:
            raise PolicyError(f"ReplayPolicy actions must have shape (T, {ACTION_DIM}), got {actions.shape}")
        self.actions = actions
        self.seed = seed
        self.task = task
        self.num_envs = 0

    @classmethod
    def from_episode(cls, path: str | Path) -> ReplayPolicy:
        """The ``/action`` dataset (T, 14) and the ``seed`` / ``task`` attributes of a policy episode file."""
        import h5py

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"episode file {path} does not exist")
        with h5py.File(path, "r") as handle:
            if "action" not in handle:
                raise PolicyError(f"episode file {path} has no /action dataset")
            actions = handle["action"][()]
            seed = handle.attrs.get("seed")
            task = handle.attrs.get("task")
        task = task.decode() if isinstance(task, bytes) else task
        return cls(
            actions, seed=None if seed is None else int(seed), task=None if task is None else str(task)
        )

    def reset(self, num_envs: int) -> None:
        self.num_envs = int(num_envs)

    def act(self, observation: dict[str, Any]) -> np.ndarray:
        steps = np.minimum(np.asarray(observation["step"]), len(self.actions) - 1)
        return self.actions[steps]  # (N, 14)


def load_replay_policy(
    checkpoint_dir: Path, device: str | None = None, episode: str = "episode.hdf5"
) -> ReplayPolicy:
    """Loader of the built-in replay checkpoint: ``policy.json`` beside an episode file (``options.episode``)."""
    del device  # nothing to place on a device
    return ReplayPolicy.from_episode(Path(checkpoint_dir) / episode)


def write_policy_manifest(
    checkpoint_dir: str | Path,
    loader: str,
    *,
    task: str | None = None,
    image_size: tuple[int, int] | None = None,
    cameras: tuple[str, ...] | None = None,
    render_quality: str | None = None,
    options: dict | None = None,
) -> Path:
    """Writes ``checkpoint_dir/policy.json`` so ``eval-sim --checkpoint`` can load the policy.

    ``loader`` is ``"package.module:function"``; ``options`` must be JSON-serializable.
    """
    _split_loader(loader)
    if task is not None:
        get_task(task)
    if render_quality is not None:
        check_render_quality(render_quality)
    payload = {
        "format": _MANIFEST_FORMAT,
        "version": 1,
        "loader": loader,
        "task": task,
        "image_size": None if image_size is None else [int(v) for v in image_size],
        "cameras": None if cameras is None else list(cameras),
        "render_quality": render_quality,
        "options": dict(options or {}),
    }
    return write_json_atomic(Path(checkpoint_dir) / POLICY_MANIFEST, payload)


def read_policy_manifest(checkpoint_dir: str | Path) -> dict:
    """The validated ``policy.json`` of ``checkpoint_dir``."""
    path = Path(checkpoint_dir) / POLICY_MANIFEST
    if not Path(checkpoint_dir).is_dir():
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir} does not exist")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: a checkpoint evaluated by eval-sim names its loader in policy.json "
            '({"loader": "package.module:function", ...}); see write_policy_manifest()'
        )
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise PolicyError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _MANIFEST_FORMAT:
        raise PolicyError(f'{path}: expected a JSON object with "format": "{_MANIFEST_FORMAT}"')
    _split_loader(manifest.get("loader"), source=path)
    if not isinstance(manifest.get("options", {}) or {}, dict):
        raise PolicyError(f'{path}: "options" must be a JSON object of loader keyword arguments')
    return manifest


def _split_loader(loader, source: Path | None = None) -> tuple[str, str]:
    where = f"{source}: " if source else ""
    if not isinstance(loader, str) or loader.count(":") != 1 or not all(loader.split(":")):
        raise PolicyError(f'{where}"loader" must be "package.module:function", got {loader!r}')
    module, function = loader.split(":")
    return module, function


def load_policy(checkpoint_dir: str | Path, *, device: str | None = None) -> tuple[SimPolicy, dict]:
    """Loads the policy of a checkpoint that follows the ``policy.json`` convention: (policy, manifest)."""
    manifest = read_policy_manifest(checkpoint_dir)
    module_name, function_name = _split_loader(manifest["loader"])
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise PolicyError(
            f"the loader module {module_name!r} named in {Path(checkpoint_dir) / POLICY_MANIFEST} cannot be "
            f"imported ({error}); install the package that provides it"
        ) from error
    loader = getattr(module, function_name, None)
    if not callable(loader):
        raise PolicyError(f"{module_name} has no callable {function_name!r} (named in {POLICY_MANIFEST})")
    policy = loader(Path(checkpoint_dir), device=device, **(manifest.get("options") or {}))
    check_policy(policy)
    return policy, manifest
