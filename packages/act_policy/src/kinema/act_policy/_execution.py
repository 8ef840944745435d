"""Turning action chunks into one action per step, for N environments at once (rows reset independently).

N rows (environments), C chunk steps, A action dims. Two modes:

- chunked: a row queries the model when it starts an episode or has executed ``n_action_steps`` actions of
  its chunk, then plays the chunk's next actions;
- temporal ensembling (ACT): every row queries every step; the action for step t averages the predictions
  for t of every chunk that covers it, with weight exp(-m * i) for the i-th oldest of them (i = 0 the oldest),
  kept online as running weighted sums.
"""

from __future__ import annotations

import numpy as np
import torch

from kinema.robot_data.lerobot import kinema_observation


def ensemble_weights(coeff: float, count: int) -> torch.Tensor:
    """exp(-coeff * i) for i = 0..count-1 (float64): i = 0 weights the oldest prediction."""
    return torch.exp(-coeff * torch.arange(count, dtype=torch.float64))


class TemporalEnsembler:
    """Online temporal ensembling over N rows.

    ``update(chunks, rows)`` adds the new chunks (R, C, A) of ``rows`` (R,) and returns their ensembled actions
    for the current step (R, A), then moves those rows one step forward. ``reset_rows(mask)`` forgets rows.
    """

    def __init__(self, coeff: float, chunk_size: int):
        if coeff < 0:
            raise ValueError(f"temporal_ensemble_coeff: expected >= 0, got {coeff}")
        self.coeff = float(coeff)
        self.chunk_size = int(chunk_size)
        self.sums = self.weights = self.counts = None

    def reset(self, num_rows: int, action_dim: int, device: torch.device | str = "cpu") -> None:
        c = self.chunk_size
        self.sums = torch.zeros(num_rows, c, action_dim, dtype=torch.float64, device=device)  # sum w * a
        self.weights = torch.zeros(num_rows, c, dtype=torch.float64, device=device)  # sum w
        self.counts = torch.zeros(num_rows, c, dtype=torch.long, device=device)  # predictions so far
        self.table = ensemble_weights(self.coeff, c + 1).to(device)

    def reset_rows(self, mask: torch.Tensor) -> None:
        self.sums[mask] = 0
        self.weights[mask] = 0
        self.counts[mask] = 0

    def update(self, chunks: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        counts = self.counts[rows]  # (R, C): how many earlier chunks already predicted each future step
        w = self.table[counts]  # (R, C): the new chunk is the counts-th oldest prediction there
        sums = self.sums[rows] + w.unsqueeze(-1) * chunks.to(torch.float64)
        weights = self.weights[rows] + w
        action = sums[:, 0] / weights[:, 0].unsqueeze(-1)  # (R, A)
        # one step forward: position j becomes j - 1; the new last position has no prediction yet
        self.sums[rows] = torch.cat([sums[:, 1:], torch.zeros_like(sums[:, :1])], dim=1)
        self.weights[rows] = torch.cat([weights[:, 1:], torch.zeros_like(weights[:, :1])], dim=1)
        self.counts[rows] = torch.cat([counts[:, 1:] + 1, torch.zeros_like(counts[:, :1])], dim=1)
        return action


class ChunkExecutor:
    """Per-row action chunks: chunked execution, or temporal ensembling when ``temporal_ensemble_coeff`` is set."""

    def __init__(self, chunk_size: int, n_action_steps: int, temporal_ensemble_coeff: float | None = None):
        if not 1 <= n_action_steps <= chunk_size:
            raise ValueError(f"n_action_steps: expected 1..{chunk_size} (chunk_size), got {n_action_steps}")
        self.chunk_size = chunk_size
        self.n_action_steps = n_action_steps
        self.ensembler = (
            None
            if temporal_ensemble_coeff is None
            else TemporalEnsembler(temporal_ensemble_coeff, chunk_size)
        )
        self.num_rows = 0

    def reset(self, num_rows: int, action_dim: int, device: torch.device | str = "cpu") -> None:
        self.num_rows = num_rows
        self.action_dim = action_dim
        self.chunks = torch.zeros(num_rows, self.chunk_size, action_dim, device=device)
        self.position = torch.full((num_rows,), self.n_action_steps, dtype=torch.long, device=device)
        self.last = torch.zeros(num_rows, action_dim, dtype=torch.float64, device=device)
        if self.ensembler is not None:
            self.ensembler.reset(num_rows, action_dim, device)

    def start_rows(self, mask: torch.Tensor) -> None:
        """Rows whose ``step`` is 0: forget their chunks (and ensembling history)."""
        self.position[mask] = self.n_action_steps
        if self.ensembler is not None:
            self.ensembler.reset_rows(mask)

    def needs_query(self) -> torch.Tensor:
        """(N,) bool: rows that need a new chunk before this step's action."""
        if self.ensembler is not None:
            return torch.ones(self.num_rows, dtype=torch.bool, device=self.position.device)
        return self.position >= self.n_action_steps

    def step(self, chunks: torch.Tensor | None, rows: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """This step's actions (N, A) float64. ``chunks`` (R, C, A) are the new chunks of ``rows`` (R,) (every
        row that needs one); rows not ``active`` keep their state and repeat their last action."""
        if self.ensembler is not None:
            take = rows[active[rows]]
            if take.numel():
                keep = active[rows]
                self.last[take] = self.ensembler.update(chunks[keep], take)
            return self.last.clone()
        if rows.numel():
            self.chunks[rows] = chunks.to(self.chunks.dtype)
            self.position[rows] = 0
        act = torch.nonzero(active).flatten()
        if act.numel():
            self.last[act] = self.chunks[act, self.position[act]].double()
            self.position[act] += 1
        return self.last.clone()


class ChunkedSimPolicy:
    """The SimPolicy side of a chunk-predicting policy: ``reset`` / ``act`` over N environments through
    ``self.executor`` (a :class:`ChunkExecutor`). Subclasses set ``executor``, ``model`` (with
    ``config.action_dim``), ``device`` and ``num_envs`` and implement ``predict_chunk(observation, rows)`` ->
    (R, C, A); ``query_rows`` is the hook for a policy that must query at a fixed shape.
    """

    def _inputs(self, observation: dict, rows: np.ndarray) -> dict:
        """The model batch of ``rows`` from a SimPolicy observation (numpy, see kinema.robot_data.sim):
        the configured cameras stacked (R, N, H, W, 3) uint8, qpos (R, D) and, when used, environment_state (R, E).
        LeRobot's names (``observation.state``, ``observation.images.<cam>``, ``observation.environment_state``) are
        accepted too, mapped as for LeRobot datasets."""
        observation = kinema_observation(observation)
        config = self.model.config
        images = observation.get("images")
        if not isinstance(images, dict):
            raise ValueError("observation['images']: expected {camera: (N, H, W, 3) uint8}")
        missing = [c for c in config.camera_names if c not in images]
        if missing:
            raise ValueError(
                f"observation['images']: missing camera(s) {missing} the model was trained on; has {sorted(images)}"
            )
        stacked = np.stack(
            [np.asarray(images[c])[rows] for c in config.camera_names], axis=1
        )  # (R, N, H, W, 3)
        if stacked.dtype != np.uint8:
            raise ValueError(f"observation['images']: expected uint8 images, got {stacked.dtype}")
        batch = {
            "image": torch.from_numpy(stacked).to(self.device, non_blocking=True),
            "qpos": self._vector(observation, "qpos", config.state_dim, rows),
        }
        if config.use_environment_state:
            batch["environment_state"] = self._vector(
                observation, "environment_state", config.environment_state_dim, rows
            )
        return batch

    def _vector(self, observation: dict, key: str, dim: int, rows: np.ndarray) -> torch.Tensor:
        if key not in observation:
            raise ValueError(f"observation[{key!r}]: missing; the model needs it ({dim} values per row)")
        values = np.asarray(observation[key], dtype=np.float32)
        if values.ndim != 2 or values.shape[1] != dim:
            raise ValueError(f"observation[{key!r}]: expected (N, {dim}), got {values.shape}")
        return torch.from_numpy(values[rows]).to(self.device, non_blocking=True)

    def query_rows(self, observation: dict, rows: torch.Tensor) -> torch.Tensor:
        """Chunks (R, C, A) for the environment ``rows`` (R,) that need one."""
        return self.predict_chunk(observation, rows.cpu().numpy())

    def reset(self, num_envs: int) -> None:
        self.num_envs = int(num_envs)
        self.executor.reset(self.num_envs, self.model.config.action_dim, self.device)

    def act(self, observation: dict) -> np.ndarray:
        """Actions (N, A) float64 for the batch; rows with ``step`` 0 start over, inactive rows are not queried.
        LeRobot's observation names are accepted (see :meth:`_inputs`)."""
        observation = kinema_observation(observation)
        steps = np.asarray(observation["step"])
        if steps.ndim != 1:
            raise ValueError(f"observation['step']: expected (N,), got {steps.shape}")
        if len(steps) != self.num_envs:
            self.reset(len(steps))
        active = np.asarray(observation.get("active", np.ones(len(steps), dtype=bool)), dtype=bool)
        device = self.executor.position.device
        self.executor.start_rows(torch.from_numpy(steps == 0).to(device))
        active_t = torch.from_numpy(active).to(device)
        rows = torch.nonzero(self.executor.needs_query() & active_t).flatten()
        chunks = self.query_rows(observation, rows) if rows.numel() else None
        return self.executor.step(chunks, rows, active_t).cpu().numpy()
