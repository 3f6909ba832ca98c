"""Batching (``collate``) and the data loader with deterministic, resumable seeding.

``collate(batch) -> (list[Tensor[3, H, W]], list[target dict])``: images of different
sizes stay a list; the model pads them itself.

Seeding: what is random in the data path is a function of ``(seed, rank, epoch)``, so an
interrupted run resumed at epoch ``e`` sees the order and, with workers, the
augmentations of an uninterrupted one.

- Order: the index sampler is a ``DistributedSampler`` (one replica when not
  distributed), whose permutation of epoch ``e`` is seeded with ``seed + e``; the loader
  calls its ``set_epoch`` at every iteration.
- Augmentation: each item's transforms are seeded from torch's RNG of the process that
  loads it (:class:`~detect.data.dataset.DetectionDataset`). DataLoader seeds worker ``w``
  with ``base + w`` where ``base`` comes from the loader's generator, which is reseeded
  with ``SeedSequence([seed, rank, epoch])`` at every iteration; :func:`seed_worker` also
  seeds Python's and numpy's generators from it for user transforms. With
  ``num_workers=0`` items draw from the global torch RNG, which the trainer seeds and
  checkpoints.

The epoch is the one given to :meth:`DetectionDataLoader.set_epoch`; without calls, each
new iteration counts one epoch on from the last (0, 1, 2, ...). Persistent workers would
keep their first-epoch seeds, so they are off unless asked for.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from detect.data.samplers import GroupedBatchSampler, InferenceSampler, aspect_ratio_group_ids

__all__ = ["collate", "DetectionDataLoader", "seed_worker", "epoch_seed"]


def collate(batch):
    """``[(image, target), ...] -> (list[image], list[target])``."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def epoch_seed(seed: int, rank: int, epoch: int) -> int:
    """A well-mixed 63-bit seed from the configuration seed, the rank and the epoch."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(rank), int(epoch)]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python's and numpy's global generators in a loader worker
    from its torch seed (distinct per worker), so that no two workers draw the same numbers."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _rank_and_world(distributed: bool) -> tuple[int, int]:
    if not distributed:
        return 0, 1
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("build_dataloader(distributed=True) needs torch.distributed initialised first "
                           "(detect.engine sets it up; or call torch.distributed.init_process_group)")
    return dist.get_rank(), dist.get_world_size()


class DetectionDataLoader(DataLoader):
    """A DataLoader of ``(list[image], list[target])`` batches; see the module docstring.

    Args:
        dataset: any map-style dataset of ``(image, target)``.
        batch_size: images per batch (per rank when distributed).
        train: shuffle (seeded by ``seed`` and the epoch) and group by aspect ratio; else
            keep the dataset order (sharded without duplicates when distributed).
        num_workers: loader processes.
        seed: the configuration seed.
        distributed: shard over the ranks of the initialised process group.
        aspect_ratio_grouping: batches of one orientation (train only).
        drop_last: drop the last incomplete batch (train only).
        **kwargs: passed to ``torch.utils.data.DataLoader`` (e.g. ``prefetch_factor``).
    """

    def __init__(self, dataset, *, batch_size: int, train: bool, num_workers: int = 0, seed: int = 0,
                 distributed: bool = False, aspect_ratio_grouping: bool = True, drop_last: bool = False,
                 pin_memory: bool = False, **kwargs):
        rank, world_size = _rank_and_world(distributed)
        if train:
            sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed)
            if aspect_ratio_grouping:
                batch_sampler = GroupedBatchSampler(sampler, aspect_ratio_group_ids(dataset), batch_size, drop_last)
            else:
                batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        else:
            sampler = InferenceSampler(len(dataset), rank, world_size) if distributed else SequentialSampler(dataset)
            batch_sampler = BatchSampler(sampler, batch_size, drop_last=False)
        kwargs.setdefault("persistent_workers", False)
        super().__init__(
            dataset, batch_sampler=batch_sampler, num_workers=num_workers, collate_fn=kwargs.pop("collate_fn", collate),
            worker_init_fn=kwargs.pop("worker_init_fn", seed_worker), generator=torch.Generator(),
            pin_memory=pin_memory, **kwargs,
        )
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.train = bool(train)
        self.epoch = -1
        self._next_epoch = 0
        self._index_sampler_with_epoch = sampler

    def set_epoch(self, epoch: int) -> None:
        """Make the next iteration epoch ``epoch`` (order and worker seeds)."""
        self._next_epoch = int(epoch)

    def __iter__(self):
        epoch = self._next_epoch
        self.epoch, self._next_epoch = epoch, epoch + 1
        if hasattr(self._index_sampler_with_epoch, "set_epoch"):
            self._index_sampler_with_epoch.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, self.rank, epoch))
        return super().__iter__()
