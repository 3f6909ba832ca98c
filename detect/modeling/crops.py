"""Warped proposal crops with context: the input of R-CNN's CNN (Girshick et al. 2014, Appendix A).

Contract
--------
``context_boxes(boxes, crop_size, context_pad) -> Tensor[P, 4]``: each box dilated so that,
once the dilated box is warped to ``crop_size x crop_size``, the original box fills the
central ``(crop_size - 2 * context_pad)`` pixels and exactly ``context_pad`` warped pixels of
context surround it on every side (the paper's "warp with p = 16" at 227 px). The dilation is
per axis: ``dx = context_pad * w / (crop_size - 2 * context_pad)`` (likewise ``dy``), so the
warp stays anisotropic.

``warp_crops(image, boxes, crop_size, context_pad=0, sampling_ratio=1) -> Tensor[P, 3, S, S]``:
``image`` is one **normalised** image ``[3, H, W]`` (``(x - mean) / std``, so the mean colour
is 0) and ``boxes`` ``[P, 4]`` xyxy in its pixels. One ``torchvision.ops.roi_align`` call
(``aligned=True``) cuts every dilated box out of the image itself and resamples it to
``S x S``: output pixel ``(i, j)`` of crop ``k`` is the bilinear sample of the image at the
continuous point ``(x1' + (j + 0.5) * w' / S, y1' + (i + 0.5) * h' / S)`` of the dilated box
``(x1', y1', w', h')`` (``sampling_ratio=1``: one sample per output pixel, a plain bilinear
warp; larger values average ``r x r`` samples, an anti-aliased shrink).
Where the dilated box leaves the image the crop holds 0, the normalised mean: the paper's
mean fill. (roi_align reads a point within one pixel outside the border as the border pixel
and anything further out as 0; so does :func:`bilinear_sample`, the reference the tests use.)

There is no Python loop over boxes; callers chunk large proposal sets (``P x 3 x S x S``
floats) to bound memory. Boxes are not validated here (see :func:`valid_proposals`).

``valid_proposals(boxes, image_size, min_size=1.0)``: clip to the image and drop boxes that
are non-finite or thinner than ``min_size`` pixels after clipping (R-CNN's documented
handling of degenerate proposals); returns ``(kept_boxes, kept_index)``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchvision.ops import clip_boxes_to_image, roi_align


def context_boxes(boxes: Tensor, crop_size: int, context_pad: float) -> Tensor:
    """Boxes dilated by ``context_pad`` pixels of the warped ``crop_size`` crop (see the module docstring)."""
    if not 0 <= 2 * context_pad < crop_size:
        raise ValueError(f"context_pad={context_pad} must be >= 0 and leave room in a {crop_size} px crop")
    if context_pad == 0:
        return boxes
    ratio = context_pad / (crop_size - 2 * context_pad)
    half = torch.stack((boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), dim=1) * ratio  # [P, 2]
    return boxes + torch.cat((-half, half), dim=1)


def warp_crops(image: Tensor, boxes: Tensor, crop_size: int, context_pad: float = 0.0,
               sampling_ratio: int = 1) -> Tensor:
    """Every box of ``image`` (normalised, mean 0) with its context, warped to ``crop_size``."""
    if boxes.numel() == 0:
        return image.new_zeros((0, image.shape[0], crop_size, crop_size))
    regions = context_boxes(boxes.to(image.dtype), crop_size, context_pad)
    rois = torch.cat((regions.new_zeros((regions.shape[0], 1)), regions), dim=1)
    return roi_align(image[None], rois, output_size=(crop_size, crop_size), spatial_scale=1.0,
                     sampling_ratio=int(sampling_ratio), aligned=True)


def bilinear_sample(image: Tensor, x: Tensor, y: Tensor) -> Tensor:
    """Reference bilinear sampling of ``image`` ``[C, H, W]`` at continuous points ``x, y``
    (any equal shape; pixel ``k`` covers ``[k, k + 1)``, its centre at ``k + 0.5``), with
    roi_align's border rule: a point more than one pixel outside the image reads 0, one within
    a pixel of the border is clamped onto it. Returns ``[C, *x.shape]``."""
    height, width = image.shape[-2:]
    u, v = x - 0.5, y - 0.5  # pixel-index coordinates
    outside = (v < -1) | (v > height) | (u < -1) | (u > width)
    v, u = v.clamp(min=0), u.clamp(min=0)
    v0, u0 = v.floor().long(), u.floor().long()
    v0_at_edge, u0_at_edge = v0 >= height - 1, u0 >= width - 1
    v0 = torch.where(v0_at_edge, height - 1, v0)
    u0 = torch.where(u0_at_edge, width - 1, u0)
    v1 = torch.where(v0_at_edge, height - 1, v0 + 1)
    u1 = torch.where(u0_at_edge, width - 1, u0 + 1)
    v = torch.where(v0_at_edge, v0.to(v.dtype), v)
    u = torch.where(u0_at_edge, u0.to(u.dtype), u)
    lv, lu = v - v0, u - u0
    hv, hu = 1 - lv, 1 - lu
    values = (hv * hu * image[:, v0, u0] + hv * lu * image[:, v0, u1]
              + lv * hu * image[:, v1, u0] + lv * lu * image[:, v1, u1])
    return torch.where(outside, torch.zeros_like(values), values)


def valid_proposals(boxes: Tensor, image_size: Sequence[int], min_size: float = 1.0) -> tuple[Tensor, Tensor]:
    """Proposals clipped to the image ``(H, W)``, without non-finite boxes and boxes thinner than
    ``min_size`` px after clipping; returns ``(boxes [P', 4], index [P'] into the input)``."""
    finite = torch.isfinite(boxes).all(dim=1)
    clipped = clip_boxes_to_image(torch.where(finite[:, None], boxes, torch.zeros_like(boxes)), tuple(image_size))
    keep = finite & ((clipped[:, 2] - clipped[:, 0]) >= min_size) & ((clipped[:, 3] - clipped[:, 1]) >= min_size)
    index = torch.where(keep)[0]
    return clipped[index], index
