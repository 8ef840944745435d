"""WebDataset tar shards of action-video datasets and VACE-E episodes: written by
:func:`write_action_video_shards` / :func:`write_vace_e_shards` (``kinema-data shard``), checked by
:func:`validate_shards`, streamed by :class:`ShardedActionVideoDataset` / :class:`ShardedVaceEEpisodeDataset`.

A shard folder holds ``shard-000000.tar``, ``shard-000001.tar``, ... and ``index.json`` (samples per shard, each
sample's action steps, the source's statistics). One sample per row of the source's metadata CSV, keyed by its
position (``00000012``): ``video.mp4`` (the source file's bytes, not re-encoded; its own suffix), ``prompt.txt``,
``action.json`` (the row's (A, 2, 8) actions), ``meta.json`` (the row's other columns, the source path and the
sample's index), and ``<column>.<suffix>`` for each extra file column (VACE-E episodes: see :mod:`._vace_e`).
Any WebDataset reader can read them.
"""

from ._index import INDEX_NAME, ShardIndex, read_index
from ._read import ShardedActionVideoDataset
from ._vace_e import ShardedVaceEEpisodeDataset, write_vace_e_shards
from ._validate import validate_shards
from ._write import write_action_video_shards

__all__ = [
    "INDEX_NAME",
    "ShardIndex",
    "ShardedActionVideoDataset",
    "ShardedVaceEEpisodeDataset",
    "read_index",
    "validate_shards",
    "write_action_video_shards",
    "write_vace_e_shards",
]
