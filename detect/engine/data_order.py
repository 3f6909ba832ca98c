"""A reproducible, resumable batch order per epoch.

:func:`iterate_epoch` is how the trainer walks a training DataLoader. For epoch ``e``:

1. ``set_epoch(e)`` is called on the loader (``detect.data``'s DetectionDataLoader reseeds
   its shuffling, worker seeds and augmentation from ``(seed, rank, e)``) and on any
   sampler that has it (DistributedSampler);
2. the epoch's batches of indices are listed once, indices only (no image is read), with
   the global torch RNG temporarily seeded from ``(seed, e)``, so that even a loader
   whose sampler draws from the global RNG (torch's RandomSampler without a generator)
   has an order that depends on ``(seed, e)`` alone and not on how much random state the
   model used before;
3. the first ``start_batch`` of them are dropped, and the loader loads the rest with
   its own workers, collate function and seeding. Creating the iterator does not touch
   the global RNG either, so the training RNG streams are the same whether an epoch
   starts fresh or resumes.

So resuming at batch ``k`` of epoch ``e`` loads exactly the batches that the uninterrupted
run loaded from ``k`` on. Augmentations drawn from the global RNGs in the main process
(``num_workers=0``) are restored with the RNG states of the checkpoint; augmentation seeded
per epoch and worker restarts from the epoch's seed, so within the resumed epoch it
matches the uninterrupted run only when the dataset seeds augmentation per sample.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

# Keeps epoch seeds of different runs apart while staying a plain int64 function of (seed, epoch).
_EPOCH_STRIDE = 1_000_003


def epoch_seed(seed: int, epoch: int) -> int:
    return (int(seed) * _EPOCH_STRIDE + int(epoch)) % (2**63 - 1)


class _EpochBatches(Sampler):
    """Lists ``inner``'s batches under a seeded global RNG and yields them from ``start``."""

    def __init__(self, inner, start: int, seed: int):
        self.inner, self.start, self.seed = inner, int(start), int(seed)

    def __iter__(self):
        # A generator: nothing runs until the first batch is asked for, like torch's samplers
        # (DataLoader iterators may create a sampler iterator and drop it unused).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            batches = [list(batch) for batch in self.inner]
        yield from batches[self.start:]

    def __len__(self):
        return max(len(self.inner) - self.start, 0)


def iterate_epoch(loader: DataLoader, epoch: int, seed: int, start_batch: int = 0) -> Iterator:
    """An iterator over ``loader``'s batches of ``epoch`` from batch ``start_batch`` on."""
    if loader.batch_sampler is None:
        raise ValueError("the training loader must batch (batch_size or batch_sampler); got batch_size=None")
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(epoch)
    for sampler in (loader.sampler, getattr(loader.batch_sampler, "sampler", None)):
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
    original = loader.batch_sampler
    # DataLoader forbids re-assigning batch_sampler after construction; the substitute is put
    # in place only while the iterator is created (it takes its sampler iterator then).
    object.__setattr__(loader, "batch_sampler", _EpochBatches(original, start_batch, epoch_seed(seed, epoch)))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(epoch_seed(seed, epoch) + 1)  # worker base seed of loaders without a generator
            return iter(loader)
    finally:
        object.__setattr__(loader, "batch_sampler", original)
