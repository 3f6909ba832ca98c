"""RoI pooling over one or several feature levels.

Contract
--------
``RoIPooler(output_size, strides, pooler_type="roi_align", sampling_ratio=2, aligned=False)``
called as ``pooler(features, boxes) -> Tensor[R, C, P, P]`` where ``features`` is a list of
``[N, C, H_l, W_l]`` maps with the given ``strides`` and ``boxes`` a list (one per image) of
``[R_i, 4]`` xyxy boxes in network-input pixels; rows come out image by image in the order
given.

- ``pooler_type="roi_align"`` (default; Mask R-CNN's bilinear RoIAlign) or ``"roi_pool"``
  (the Fast/Faster R-CNN papers' max pooling over quantised bins), from torchvision.ops;
  on CPU RoIAlign runs through :func:`detect.modeling.roi_ops.roi_align`, which computes the
  same numbers several times faster, forward and backward.
- With several levels each box goes to level ``floor(4 + log2(sqrt(area) / 224))``
  (FPN paper, eq. 1; canonical 224 px box on stride 16), clamped to the available levels,
  exactly as torchvision's ``MultiScaleRoIAlign`` / ``LevelMapper``; the spatial scale of
  level ``l`` is ``1 / strides[l]``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops import roi_pool as tv_roi_pool

from detect.modeling import roi_ops

POOLER_TYPES = ("roi_align", "roi_pool")


def boxes_to_rois(boxes: list[Tensor]) -> Tensor:
    """``[R, 5]`` rows ``(image index, x1, y1, x2, y2)`` from per-image box lists."""
    concat = torch.cat(boxes, dim=0)
    if torch.jit.is_tracing():  # box counts are graph values there, not constants
        image_index = torch.cat([torch.full_like(b[:, 0], i) for i, b in enumerate(boxes)])
    else:
        image_index = torch.repeat_interleave(
            torch.arange(len(boxes), device=concat.device, dtype=concat.dtype),
            torch.tensor([b.shape[0] for b in boxes], device=concat.device),
        )
    return torch.cat([image_index[:, None], concat], dim=1)


class LevelMapper:
    """FPN level of each box: ``floor(canonical_level + log2(sqrt(area) / canonical_scale) + eps)``
    clamped to ``[k_min, k_max]``, returned as an index from 0 (= ``k_min``)."""

    def __init__(self, k_min: int, k_max: int, canonical_scale: float = 224, canonical_level: int = 4, eps: float = 1e-6):
        self.k_min, self.k_max = k_min, k_max
        self.canonical_scale, self.canonical_level, self.eps = canonical_scale, canonical_level, eps

    def __call__(self, boxes: Tensor) -> Tensor:
        side = torch.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
        levels = torch.floor(
            self.canonical_level + torch.log2(side / self.canonical_scale) + torch.tensor(self.eps, dtype=side.dtype)
        )
        return (torch.clamp(levels, min=self.k_min, max=self.k_max).to(torch.int64) - self.k_min)


class RoIPooler(nn.Module):
    """Fixed-size features for boxes from one or several levels (see the module docstring).

    Args:
        output_size: side P of the pooled ``P x P`` grid.
        strides: stride of each feature level that is pooled, in order (powers of two for
            more than one level).
        pooler_type: ``"roi_align"`` or ``"roi_pool"``.
        sampling_ratio: RoIAlign sample points per bin side (``<= 0``: adaptive).
        aligned: RoIAlign's half-pixel correction (False: torchvision's Faster R-CNN).
        canonical_scale, canonical_level: the FPN level-assignment rule.
    """

    def __init__(
        self,
        output_size: int,
        strides: Sequence[int],
        pooler_type: str = "roi_align",
        sampling_ratio: int = 2,
        aligned: bool = False,
        canonical_scale: float = 224,
        canonical_level: int = 4,
    ):
        super().__init__()
        if pooler_type not in POOLER_TYPES:
            raise ValueError(f"unknown box_roi_pool {pooler_type!r}; choose one of {', '.join(POOLER_TYPES)}")
        self.output_size = (int(output_size), int(output_size))
        self.strides = [int(s) for s in strides]
        self.pooler_type = pooler_type
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)
        self.mapper = None
        if len(self.strides) > 1:
            levels = [math.log2(s) for s in self.strides]
            if any(l != int(l) for l in levels) or levels != list(range(int(levels[0]), int(levels[0]) + len(levels))):
                raise ValueError(f"multi-level pooling needs consecutive power-of-two strides, got {self.strides}")
            self.mapper = LevelMapper(int(levels[0]), int(levels[-1]), canonical_scale, canonical_level)

    def extra_repr(self) -> str:
        return (
            f"type={self.pooler_type}, output_size={self.output_size}, strides={self.strides}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        # While tracing (export) torchvision's op, which exports as ONNX RoiAlign, is recorded.
        if self.pooler_type == "roi_align" and feature.device.type == "cpu" and self.sampling_ratio > 0 and not torch.jit.is_tracing():
            return roi_ops.roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)
        rois = rois.to(feature.dtype)  # torchvision's kernels want matching dtypes (bf16 inference)
        if self.pooler_type == "roi_pool":
            return tv_roi_pool(feature, rois, self.output_size, scale)
        return tv_roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def forward(self, features: list[Tensor], boxes: list[Tensor]) -> Tensor:
        if len(features) != len(self.strides):
            raise ValueError(f"pooler expects {len(self.strides)} feature levels, got {len(features)}")
        rois = boxes_to_rois(boxes)
        if self.mapper is None:
            return self._pool(features[0], rois, 1.0 / self.strides[0])

        levels = self.mapper(rois[:, 1:])
        result = None
        for level, (feature, stride) in enumerate(zip(features, self.strides)):
            index = torch.where(levels == level)[0]
            pooled = self._pool(feature, rois[index], 1.0 / stride)
            if result is None:
                # Every RoI belongs to exactly one level, so every row gets written. Keep the
                # layout of the pooling op (channels-last for our RoIAlign): one copy per level.
                channels_last = pooled.dim() == 4 and not pooled.is_contiguous() and pooled.is_contiguous(
                    memory_format=torch.channels_last
                )
                result = torch.empty(
                    (rois.shape[0],) + tuple(pooled.shape[1:]),
                    dtype=pooled.dtype,
                    device=pooled.device,
                    memory_format=torch.channels_last if channels_last else torch.contiguous_format,
                )
            result.index_copy_(0, index, pooled)
        return result
