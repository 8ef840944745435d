"""Streaming samples from WebDataset shards, split across processes and DataLoader workers, with an
epoch length known in advance and an exact resume position.

Order of one epoch, all of it a function of (``seed``, epoch, rank, worker) and the index alone:
1. the shards are permuted by (seed, epoch) when ``shuffle_shards``; process ``rank`` of ``world_size`` takes every
   ``world_size``-th shard from ``rank`` on, and DataLoader worker ``w`` of ``W`` every ``W``-th of those;
2. each sample expands into its windows (one for ``window="first"`` / ``"random"``, several for ``"all"``), and
   a worker passes them through a shuffle buffer of ``shuffle_buffer`` items (raw bytes: nothing is decoded yet);
3. the DataLoader takes ``loader_batch_size`` items from each of its ``loader_workers`` in turn (its in-order
   round robin); each worker leaves out its ragged tail (fewer items than a batch), so every batch is whole, and
   every process stops after the same number of items, the smallest process's share, so that no process waits at
   a collective for another that has run out;
4. ``set_epoch(epoch, position)`` skips the first ``position`` items of the process's stream (their bytes are
   read, nothing is decoded): the position a checkpoint recorded, so a resumed run continues with exactly the next
   item.
"""

from __future__ import annotations

import itertools
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from webdataset.shardlists import expand_urls

from .._errors import RobotDataError, RobotDataWarning
from ._index import INDEX_NAME, read_index


def _round_robin(counts: list[int], total: int, unit: int) -> tuple[list[int], int]:
    """A DataLoader's in-order round robin over workers with ``counts`` items each, taking ``unit`` items (one
    batch) per turn and passing over workers that have run out: (items each worker gave among the first
    ``total``, the worker whose turn is next)."""
    taken, left, turn = [0] * len(counts), total, 0
    while left > 0 and any(t < c for t, c in zip(taken, counts, strict=True)):
        if taken[turn] < counts[turn]:
            take = min(unit, counts[turn] - taken[turn], left)
            taken[turn] += take
            left -= take
        turn = (turn + 1) % len(counts)
    return taken, turn


class ShardStream(torch.utils.data.IterableDataset, ABC):
    """What the sharded datasets share: the plan of an epoch over the shards, the reading and the resume.
    A subclass sets ``self.config`` (with ``seed`` and ``strict``) and gives ``_entry_items(entry)`` (items per
    sample of a shard's index entry) and ``_decode(raw, window)`` (one item from a raw sample)."""

    def __init__(
        self,
        shards: str | os.PathLike,
        *,
        index: str | os.PathLike | None = None,
        shuffle_shards: bool = True,
        shuffle_buffer: int = 0,
        loader_batch_size: int = 1,
        loader_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        **options,
    ):
        urls, index_path = self._resolve(shards, index)
        self.index = read_index(index_path)
        by_name = {shard["name"]: shard for shard in self.index.shards}
        self.shards = []
        for url in urls:
            name = url.rstrip("/ -").split("/")[-1].split()[-1] if url.startswith("pipe:") else Path(url).name
            if name not in by_name:
                raise RobotDataError(index_path, "shards", f"{url}: {name} is not in the index")
            self.shards.append((url, by_name[name]))
        if not isinstance(shuffle_buffer, int) or shuffle_buffer < 0:
            raise ValueError(f"shuffle_buffer: expected an integer >= 0, got {shuffle_buffer!r}")
        if not isinstance(loader_batch_size, int) or loader_batch_size < 1:
            raise ValueError(f"loader_batch_size: expected an integer >= 1, got {loader_batch_size!r}")
        if not isinstance(loader_workers, int) or loader_workers < 0:
            raise ValueError(f"loader_workers: expected an integer >= 0, got {loader_workers!r}")
        self.shuffle_shards, self.shuffle_buffer = shuffle_shards, shuffle_buffer
        self.unit, self.workers = loader_batch_size, max(1, loader_workers)
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start_position = 0, 0
        self._configure(index_path, options)

    @abstractmethod
    def _configure(self, index_path: Path | str, options: dict) -> None:
        """Sets ``self.config`` from the reader's own ``options``."""

    @staticmethod
    def _resolve(shards, index) -> tuple[list[str], Path | str]:
        text = os.fspath(shards)
        if Path(text).is_dir():
            folder = Path(text)
            names = [shard["name"] for shard in read_index(index or folder).shards]
            return [str(folder / name) for name in names], Path(index or folder)
        urls = expand_urls(text)
        if index is None:
            if text.startswith("pipe:") or "://" in text:
                raise ValueError(
                    f"index: give a local copy of the shards' {INDEX_NAME} for remote shards ({text})"
                )
            index = Path(urls[0]).parent
        return urls, index

    @abstractmethod
    def _entry_items(self, entry: dict) -> list[int]:
        """Items (windows) of each sample of a shard's index entry."""

    @abstractmethod
    def _decode(self, raw: dict, window: int) -> dict:
        """One item from a raw sample (its members' bytes) and its window number."""

    def _rank_world(self) -> tuple[int, int]:
        if self.rank is not None or self.world_size is not None:
            rank, world = self.rank or 0, self.world_size or 1
        elif torch.distributed.is_available() and torch.distributed.is_initialized():
            rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
            # kept: a DataLoader worker (a copy of this object in another process) may not see the group
            self.rank, self.world_size = rank, world
        else:
            rank, world = 0, 1
        if not 0 <= rank < world:
            raise ValueError(f"rank: expected 0 <= rank < world_size={world}, got {rank}")
        return rank, world

    def _epoch_shards(self) -> list[tuple[str, dict]]:
        order = np.arange(len(self.shards))
        if self.shuffle_shards:
            order = np.random.default_rng([self.config.seed, self.epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order]

    def _worker_counts(self, shards: list[tuple[str, dict]], rank: int, world: int) -> tuple[list, list[int]]:
        """(shards of each worker role of process ``rank``, items each role yields: whole batches only)."""
        roles = [shards[rank::world][w :: self.workers] for w in range(self.workers)]
        counts = [sum(sum(self._entry_items(e)) for _, e in ws) for ws in roles]
        return roles, [c // self.unit * self.unit for c in counts]

    def _epoch_length(self, shards: list[tuple[str, dict]], world: int) -> int:
        """Items every process yields this epoch: the smallest process's share of ``shards``."""
        return min(sum(self._worker_counts(shards, r, world)[1]) for r in range(world))

    def _plan(self) -> tuple[list[list[tuple[str, dict]]], list[int], list[int], int]:
        """(shards of each worker role of this process, items each role yields this epoch, items each role has
        given before ``start_position``, the role whose turn is next there)."""
        rank, world = self._rank_world()
        shards = self._epoch_shards()
        length = self._epoch_length(shards, world)
        role_shards, counts = self._worker_counts(shards, rank, world)
        end_takes, _ = _round_robin(counts, length, self.unit)
        skips, next_turn = _round_robin(counts, min(self.start_position, length), self.unit)
        return role_shards, end_takes, skips, next_turn

    def __len__(self) -> int:
        _, world = self._rank_world()
        return max(0, self._epoch_length(self._epoch_shards(), world) - self.start_position)

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        """The epoch the shard order, the shuffle buffer and ``window="random"`` depend on, and the item of this
        process's stream to start from (a checkpoint's position when resuming; 0 for every later epoch)."""
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise ValueError(f"epoch: expected an integer >= 0, got {epoch!r}")
        if not isinstance(position, int) or isinstance(position, bool) or position < 0:
            raise ValueError(f"position: expected an integer >= 0, got {position!r}")
        self.epoch, self.start_position = epoch, position
        self._rank_world()  # resolved here, in the main process, before workers copy the dataset

    # --- reading ----------------------------------------------------------------------------------------------
    def _raw_items(self, shards: list[tuple[str, dict]]) -> Iterator[tuple[dict, int]]:
        """(raw sample, window number) of every window of ``shards``, in order; a damaged shard raises or, in
        lenient mode, yields ``None`` samples for its unread windows (so the item count stays what it was)."""
        for url, entry in shards:
            expected = self._entry_items(entry)
            done = 0
            try:
                source = wds.tarfile_samples([{"url": url}])
                for sample in source:
                    if done >= len(expected):
                        break
                    for window in range(expected[done]):
                        yield sample, window
                    done += 1
            except Exception as error:  # tar, I/O and pipe errors alike
                if self.config.strict:
                    raise RobotDataError(url, None, f"damaged shard after {done} samples: {error}") from error
                warnings.warn(
                    f"{type(self).__name__}: {url} is damaged after {done} samples ({error}); its other "
                    "samples are replaced by earlier ones (lenient mode)",
                    RobotDataWarning,
                    stacklevel=2,
                )
            for missing in expected[done:]:
                for window in range(missing):
                    yield None, window

    def _shuffled(self, items: Iterator, rank: int, worker: int) -> Iterator:
        if self.shuffle_buffer <= 1:
            yield from items
            return
        generator = np.random.default_rng([self.config.seed, self.epoch, rank, worker])
        buffer = []
        for item in items:
            buffer.append(item)
            if len(buffer) >= self.shuffle_buffer:
                yield buffer.pop(int(generator.integers(len(buffer))))
        while buffer:
            yield buffer.pop(int(generator.integers(len(buffer))))

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != self.workers:
            raise ValueError(
                f"loader_workers: the dataset plans its epochs for {self.workers} DataLoader worker(s) (0 counts as "
                f"1), the DataLoader has {workers}: give the DataLoader's num_workers as loader_workers"
            )
        rank, _ = self._rank_world()
        role_shards, takes, skips, next_turn = self._plan()
        # a resumed loader asks worker 0 first: it plays the role whose turn was next, and the others follow
        role = (worker + next_turn) % workers
        items = self._shuffled(self._raw_items(role_shards[role]), rank, role)
        last_good = None
        for raw, window in itertools.islice(items, skips[role], takes[role]):
            sample = None
            if raw is not None:
                try:
                    sample = self._decode(raw, window)
                except (RobotDataError, OSError, ValueError) as error:
                    if self.config.strict:
                        raise
                    warnings.warn(
                        f"{type(self).__name__}: {raw.get('__url__')} sample {raw.get('__key__')} failed to "
                        f"decode and is replaced by an earlier one (lenient mode): {error}",
                        RobotDataWarning,
                        stacklevel=2,
                    )
            if sample is None:
                if last_good is None:
                    continue  # nothing to stand in yet: this worker yields one item fewer
                sample = last_good
            last_good = sample
            yield sample


def scratch_dir() -> str | None:
    """Decoding reads files: /dev/shm keeps them in memory where there is one."""
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
