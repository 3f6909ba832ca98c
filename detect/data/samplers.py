"""Batch samplers: aspect-ratio grouping for training, exact sharding for evaluation.

:class:`GroupedBatchSampler` wraps any index sampler (``RandomSampler``,
``DistributedSampler``, ...) and forms batches of images of the same orientation
(``w >= h`` or not), so that padding a batch to a common size wastes little. It yields
exactly ``ceil(len(sampler) / batch_size)`` batches (``floor`` with ``drop_last``), every
index once: full single-orientation batches as they fill up, then the leftovers of both
groups. Every rank of a DistributedSampler therefore yields the same number of batches,
which DDP needs.

:class:`InferenceSampler` splits ``range(size)`` into contiguous per-rank shards without
DistributedSampler's padding duplicates, so that distributed evaluation sees every image
exactly once.
"""
from __future__ import annotations

import math

import numpy as np
from torch.utils.data import Sampler

__all__ = ["GroupedBatchSampler", "InferenceSampler", "aspect_ratio_group_ids"]


def aspect_ratio_group_ids(dataset) -> np.ndarray:
    """``int64 [N]``: 0 where ``w >= h`` (landscape or square), 1 where ``w < h``; read from
    the annotations (``dataset.image_sizes`` or ``get_image_info``), never by decoding."""
    sizes = getattr(dataset, "image_sizes", None)
    if sizes is not None:
        sizes = np.asarray(sizes)
        heights, widths = sizes[:, 0], sizes[:, 1]
    else:
        infos = [dataset.get_image_info(i) for i in range(len(dataset))]
        heights = np.asarray([info["height"] for info in infos])
        widths = np.asarray([info["width"] for info in infos])
    return (widths < heights).astype(np.int64)


class GroupedBatchSampler(Sampler[list[int]]):
    """Batches of indices from ``sampler`` that share a group id.

    Args:
        sampler: yields dataset indices (its order is kept within each group).
        group_ids: group of every dataset index (e.g. :func:`aspect_ratio_group_ids`).
        batch_size: indices per batch.
        drop_last: drop the final incomplete batch.
    """

    def __init__(self, sampler, group_ids, batch_size: int, drop_last: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.drop_last = bool(drop_last)

    def __iter__(self):
        buffers: dict[int, list[int]] = {}
        group_ids = self.group_ids
        for index in self.sampler:
            buffer = buffers.setdefault(int(group_ids[index]), [])
            buffer.append(int(index))
            if len(buffer) == self.batch_size:
                yield buffer
                buffers[int(group_ids[index])] = []
        leftovers = [i for group in sorted(buffers) for i in buffers[group]]
        for start in range(0, len(leftovers), self.batch_size):
            batch = leftovers[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        count = len(self.sampler)
        return count // self.batch_size if self.drop_last else math.ceil(count / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)


class InferenceSampler(Sampler[int]):
    """Contiguous shard ``rank`` of ``range(size)`` split over ``world_size`` ranks; shard
    sizes differ by at most one and together cover every index exactly once."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        bounds = np.linspace(0, size, world_size + 1).round().astype(np.int64)
        self.start, self.stop = int(bounds[rank]), int(bounds[rank + 1])

    def __iter__(self):
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return self.stop - self.start
