"""Matching predictions (anchors, proposals) to ground-truth boxes by a quality matrix.

Contract
--------
``Matcher(high_threshold, low_threshold, allow_low_quality_matches)`` called on a quality
matrix ``[M, N]`` (M ground-truth boxes, N predictions; usually IoU) returns ``int64 [N]``:

- ``j >= 0``: prediction matched to ground truth ``j`` (best quality >= ``high_threshold``);
- ``Matcher.BELOW_LOW_THRESHOLD`` (-1): best quality < ``low_threshold`` (background);
- ``Matcher.BETWEEN_THRESHOLDS`` (-2): in between (ignored by the losses).

With ``allow_low_quality_matches`` every ground-truth box also claims the predictions that
overlap it most (ties included), even below ``high_threshold``, so that no object is left
without a positive anchor (the RPN rule of the Faster R-CNN paper). With ``M = 0`` (an
image without objects) every prediction is background. Ties between ground-truth boxes
resolve to the lowest index, as ``Tensor.max`` does; the result equals torchvision's Matcher.
"""
from __future__ import annotations

import torch
from torch import Tensor


class Matcher:
    """Assign each prediction to at most one ground-truth box (see the module docstring).

    Args:
        high_threshold: quality at or above which a prediction is a match (foreground).
        low_threshold: quality below which a prediction is background; values in
            ``[low_threshold, high_threshold)`` are marked ``BETWEEN_THRESHOLDS``.
        allow_low_quality_matches: also match each ground-truth box to its best
            predictions whatever their quality.
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(
                f"matcher low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})"
            )
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __repr__(self) -> str:
        return (
            f"Matcher(high_threshold={self.high_threshold}, low_threshold={self.low_threshold}, "
            f"allow_low_quality_matches={self.allow_low_quality_matches})"
        )

    def __call__(self, quality: Tensor) -> Tensor:
        num_gt, num_pred = quality.shape
        if num_gt == 0:
            return torch.full((num_pred,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=quality.device)
        if num_pred == 0:
            return torch.empty((0,), dtype=torch.int64, device=quality.device)

        best_quality, matches = quality.max(dim=0)
        best_gt_for_pred = matches.clone() if self.allow_low_quality_matches else None
        matches[best_quality < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(best_quality >= self.low_threshold) & (best_quality < self.high_threshold)] = self.BETWEEN_THRESHOLDS

        if best_gt_for_pred is not None:
            # Each ground truth keeps its best predictions (all ties); such a prediction is
            # matched to the ground truth it overlaps most, as in the unthresholded argmax.
            best_for_gt = quality.max(dim=1, keepdim=True).values
            is_best = (quality == best_for_gt).any(dim=0)
            matches = torch.where(is_best, best_gt_for_pred, matches)
        return matches
