"""Balanced sampling of positive and negative training examples per image.

Contract
--------
``BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction, generator=None)``
called on a list (one per image) of ``int64 [N_i]`` labels where ``-1`` = ignore,
``0`` = negative and ``>= 1`` = positive returns two lists of ``bool [N_i]`` masks
``(positive, negative)``. Per image it draws at most
``int(batch_size_per_image * positive_fraction)`` positives uniformly without replacement,
then fills the batch with negatives (fewer when an image lacks them).

Randomness comes from ``generator`` when given, else from the global torch RNG. The draws
are one ``torch.randperm`` over the positives and then one over the negatives, image by
image, which is exactly torchvision's order: seeding the global RNG identically before a
training step of either implementation selects the same examples (the parity tests use it).
"""
from __future__ import annotations

import torch
from torch import Tensor


class BalancedPositiveNegativeSampler:
    """Sample a fixed-size, class-balanced subset of labelled examples per image.

    Args:
        batch_size_per_image: examples kept per image (positives + negatives).
        positive_fraction: upper bound on the share of positives in the sample.
        generator: optional ``torch.Generator`` for reproducible draws.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float, generator: torch.Generator | None = None):
        if batch_size_per_image < 1:
            raise ValueError(f"batch_size_per_image must be >= 1, got {batch_size_per_image}")
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.generator = generator

    def __repr__(self) -> str:
        return (
            f"BalancedPositiveNegativeSampler(batch_size_per_image={self.batch_size_per_image}, "
            f"positive_fraction={self.positive_fraction})"
        )

    def _choose(self, candidates: Tensor, count: int, like: Tensor) -> Tensor:
        """A boolean mask shaped as ``like`` with ``count`` of the ``candidates`` indices set, at random."""
        permutation = torch.randperm(candidates.numel(), device=like.device, generator=self.generator)
        chosen = torch.zeros_like(like, dtype=torch.bool)
        chosen[candidates[permutation[:count]]] = True
        return chosen

    def __call__(self, labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        positives, negatives = [], []
        max_positive = int(self.batch_size_per_image * self.positive_fraction)
        for labels_per_image in labels:
            # The sample sizes depend on how many candidates exist. torch.where learns that
            # count (one device sync on GPU): once for the positives, once for the negatives,
            # and the counts are the lengths of the index tensors, with no further host read.
            positive = torch.where(labels_per_image >= 1)[0]
            negative = torch.where(labels_per_image == 0)[0]
            num_positive = min(positive.numel(), max_positive)
            num_negative = min(negative.numel(), self.batch_size_per_image - num_positive)
            positives.append(self._choose(positive, num_positive, labels_per_image))
            negatives.append(self._choose(negative, num_negative, labels_per_image))
        return positives, negatives
