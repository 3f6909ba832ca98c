"""The image transform every detector runs first: normalise, resize, pad into a batch.

Contract
--------
``ImageTransform(min_size, max_size, image_mean, image_std, size_divisibility, fixed_size=None)``

- ``transform(images, targets=None, training=False) -> (ImageBatch, targets)``: each image
  ``[3, H, W]`` (RGB, 0..1) is normalised ``(x - mean) / std`` and resized bilinearly, in
  one of two modes:

  - *shorter side* (the R-CNN family, FCN; ``fixed_size=None``): by
    ``scale = min(min_size / min(H, W), max_size / max(H, W))`` to
    ``(max(1, floor(H * scale)), max(1, floor(W * scale)))``; the aspect is kept.
    ``min_size`` may be a list: training picks one entry at random per image (torch RNG,
    multi-scale training); evaluation uses the last. An image of extreme aspect (10 x 3000
    px capped to ``max_size``) keeps at least one pixel per side: its short side may then
    fall below a feature stride, which the padding below absorbs;
  - *fixed warp* (YOLOv1's 448 x 448; ``fixed_size=(h, w)``): every image to exactly
    ``(h, w)``, the aspect not kept; ``min_size`` and ``max_size`` are not used.

  The batch is zero-padded at the bottom and right to a common size divisible by
  ``size_divisibility``. Target ``boxes`` and ``proposals`` are scaled with the image, per
  axis; target ``masks`` (int64 ``[H, W]``) are resized nearest-neighbour to the resized
  image's size (``pad_masks`` pads them into one ``[N, Hp, Wp]`` batch with 255 = ignore);
  the targets passed in are not modified.
- ``ImageBatch``: ``tensor [N, 3, Hp, Wp]``, ``image_sizes`` (the resized ``(h, w)`` of each
  image inside the padding) and ``original_sizes`` (the ``(H, W)`` given).
- ``transform.postprocess(detections, batch)`` maps boxes from network-input pixels back
  to the pixels of the images as given (per axis, so the warp is undone exactly).
- ``transform.scale_proposals(proposals, batch)`` maps given proposals (input-image pixels)
  into network-input pixels, as the target boxes are.
- ``transform.postprocess_sem_seg(logits, batch)``: ``[N, C, Hp, Wp]`` logits of the padded
  batch to one ``[C, H, W]`` per image at the size given (padding cut off, then bilinear).

In the shorter-side mode every step equals torchvision's ``GeneralizedRCNNTransform`` (same
operation order, so the same floats), which the parity tests check.

Tracing (ONNX / TorchScript export, :mod:`detect.export`): while ``torch.jit.is_tracing()``,
sizes are 0-dim tensors that the graph computes from the input's shape (:func:`image_size`),
never Python numbers, so an exported model follows the size of every new input: the resized
size is computed in float64 tensors (the same IEEE operations as the Python floats of eager
mode, so the same integers), the batch is padded with ``F.pad`` to a size computed in the
graph, ``image_sizes`` / ``original_sizes`` hold those tensors, and boxes are clipped by
:func:`clip_boxes` against them. Eager mode runs exactly the code and numbers it always did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, clip_boxes_to_image, nms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ImageBatch:
    """Padded network input and the sizes needed to map results back."""

    tensor: Tensor
    image_sizes: list[tuple[int, int]]
    original_sizes: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.image_sizes)

    @property
    def padded_size(self) -> tuple[int, int]:
        return image_size(self.tensor)


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` (also the ONNX exporter) records the model."""
    return torch.jit.is_tracing()


def image_size(image: Tensor) -> tuple:
    """``(h, w)`` of an image or batch: Python ints, or while tracing the 0-dim tensors the
    tracer gives for shapes (so that the recorded graph computes them from its input)."""
    height, width = image.shape[-2], image.shape[-1]
    if is_tracing():
        return height, width
    return int(height), int(width)


def clip_boxes(boxes: Tensor, size: Sequence) -> Tensor:
    """Boxes ``[..., 4k]`` xyxy clipped to an image of ``size`` ``(h, w)`` (ints, or 0-dim
    tensors while tracing). Equals ``torchvision.ops.clip_boxes_to_image``, whose tracing
    branch would record the size as a constant."""
    if not is_tracing():
        return clip_boxes_to_image(boxes, tuple(size))
    height, width = _float32(size[0]).to(boxes.dtype), _float32(size[1]).to(boxes.dtype)
    zero = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    boxes_x = torch.minimum(torch.maximum(boxes[..., 0::2], zero), width)
    boxes_y = torch.minimum(torch.maximum(boxes[..., 1::2], zero), height)
    return torch.stack((boxes_x, boxes_y), dim=-1).reshape(boxes.shape)


def traceable_batched_nms(boxes: Tensor, scores: Tensor, idxs: Tensor, iou_threshold: float) -> Tensor:
    """``torchvision.ops.batched_nms`` in eager mode; while tracing, its coordinate trick
    (one NMS over boxes offset per category) written so that an empty input needs no
    Python branch: the offset base is the largest coordinate or 0, and NMS of no boxes keeps none."""
    if not is_tracing():
        return batched_nms(boxes, scores, idxs, iou_threshold)
    max_coordinate = torch.cat((boxes.reshape(-1), boxes.new_zeros(1))).max()
    offsets = idxs.to(boxes) * (max_coordinate + 1)
    return nms(boxes + offsets[:, None], scores, iou_threshold)


def _traced_resized_size(height: Tensor, width: Tensor, min_size: float, max_size: float) -> tuple[Tensor, Tensor]:
    """:func:`resized_size` as graph operations on the traced sizes, in float64 like Python."""
    # 1-D tensors throughout: the ONNX exporter computes arithmetic on 0-dim values (sizes,
    # Python constants) in float32, where 128 / 110 * 110 floors to 127 instead of 128.
    sides = torch.stack((height, width)).to(torch.float64)
    min_size = torch.tensor([float(min_size)], dtype=torch.float64)
    max_size = torch.tensor([float(max_size)], dtype=torch.float64)
    scale = torch.minimum(min_size / sides.amin(dim=0, keepdim=True), max_size / sides.amax(dim=0, keepdim=True))
    new_sides = torch.floor(sides * scale).clamp(min=1).to(torch.int64)
    return new_sides[0], new_sides[1]


def resized_size(height: int, width: int, min_size: float, max_size: float) -> tuple[int, int]:
    """The ``(h, w)`` an image of ``(height, width)`` gets: shorter side ``min_size`` unless the
    longer side would exceed ``max_size``."""
    scale = min(min_size / min(height, width), max_size / max(height, width))
    # At least one pixel: a 10 x 3000 image capped to a small max_size would floor to 0.
    return max(1, int(math.floor(height * scale))), max(1, int(math.floor(width * scale)))


def resize_mask(mask: Tensor, size: Sequence[int]) -> Tensor:
    """An integer ``[H, W]`` label mask resized nearest-neighbour to ``size`` ``(h, w)``."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    # float32 holds 0..255 exactly; nearest neighbour never mixes labels
    resized = F.interpolate(mask[None, None].float(), size=tuple(int(v) for v in size), mode="nearest")
    return resized[0, 0].to(mask.dtype)


def _float32(value) -> Tensor:
    """A size (int, or 0-dim tensor while tracing) as a float32 scalar tensor."""
    if isinstance(value, Tensor):
        return value.to(torch.float32)
    return torch.tensor(value, dtype=torch.float32)


def scale_boxes(boxes: Tensor, from_size: Sequence[int], to_size: Sequence[int]) -> Tensor:
    """Boxes xyxy in an image of ``from_size`` ``(h, w)`` scaled into one of ``to_size``."""
    ratio_h = _float32(to_size[0]) / _float32(from_size[0])
    ratio_w = _float32(to_size[1]) / _float32(from_size[1])
    ratios = torch.stack((ratio_w, ratio_h, ratio_w, ratio_h)).to(boxes.device)
    return boxes * ratios


class ImageTransform(nn.Module):
    """Normalise, resize and batch images; map detections back (see the module docstring).

    Args:
        min_size: target length of the shorter side; a list enables multi-scale training.
        max_size: upper bound on the longer side after resizing.
        image_mean, image_std: per-channel normalisation of 0..1 RGB input.
        size_divisibility: the padded batch is a multiple of this (the backbone's largest stride).
        fixed_size: ``(h, w)`` to warp every image to (aspect not kept), instead of the
            shorter-side resize.
    """

    def __init__(
        self,
        min_size: int | Sequence[int] = 800,
        max_size: int = 1333,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 32,
        fixed_size: Sequence[int] | None = None,
    ):
        super().__init__()
        if fixed_size is not None:
            if len(fixed_size) != 2 or any(int(v) <= 0 for v in fixed_size):
                raise ValueError(f"fixed_size must be (height, width) with positive sides, got {fixed_size!r}")
            fixed_size = (int(fixed_size[0]), int(fixed_size[1]))
        self.fixed_size = fixed_size
        sizes = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        if not sizes or any(s <= 0 for s in sizes) or max_size <= 0:
            raise ValueError(f"min_size {min_size!r} and max_size {max_size!r} must be positive")
        if len(image_mean) != 3 or len(image_std) != 3:
            raise ValueError(f"image_mean and image_std need 3 values (RGB), got {image_mean!r}, {image_std!r}")
        self.min_size = sizes
        self.max_size = max_size
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.size_divisibility = int(size_divisibility)

    def extra_repr(self) -> str:
        size = f"fixed_size={self.fixed_size}" if self.fixed_size else f"min_size={self.min_size}, max_size={self.max_size}"
        return (
            f"{size}, mean={self.image_mean}, "
            f"std={self.image_std}, size_divisibility={self.size_divisibility}"
        )

    def normalize(self, image: Tensor) -> Tensor:
        mean = torch.as_tensor(self.image_mean, dtype=image.dtype, device=image.device)
        std = torch.as_tensor(self.image_std, dtype=image.dtype, device=image.device)
        return (image - mean[:, None, None]) / std[:, None, None]

    def _pick_min_size(self, training: bool) -> int:
        if training and len(self.min_size) > 1:
            return self.min_size[int(torch.randint(len(self.min_size), (1,)))]
        return self.min_size[-1]

    def resize(self, image: Tensor, min_size: int) -> Tensor:
        if is_tracing():
            # Always interpolate (bilinear at scale 1 is the identity), at a size the graph computes.
            size = self.fixed_size or _traced_resized_size(*image_size(image), min_size, self.max_size)
            return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
        height, width = image.shape[-2:]
        size = self.fixed_size or resized_size(height, width, min_size, self.max_size)
        if size == (height, width):
            return image  # bilinear at scale 1 is the identity, bit for bit
        return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]

    def pad_to_batch(self, images: list[Tensor]) -> Tensor:
        divisor = self.size_divisibility
        if is_tracing():
            return self._traced_pad_to_batch(images)
        max_h = max(int(img.shape[-2]) for img in images)
        max_w = max(int(img.shape[-1]) for img in images)
        max_h = int(math.ceil(max_h / divisor) * divisor)
        max_w = int(math.ceil(max_w / divisor) * divisor)
        batch = images[0].new_zeros((len(images), 3, max_h, max_w))
        for i, img in enumerate(images):
            batch[i, :, : img.shape[-2], : img.shape[-1]].copy_(img)
        return batch

    def _traced_pad_to_batch(self, images: list[Tensor]) -> Tensor:
        """:meth:`pad_to_batch` with the padded size computed in the graph (``F.pad``)."""
        sizes = torch.stack([torch.stack(image_size(img)) for img in images])
        divisor = max(self.size_divisibility, 1)
        padded = (sizes.max(dim=0).values + (divisor - 1)) // divisor * divisor
        return torch.stack([
            F.pad(img, (0, padded[1] - width, 0, padded[0] - height))
            for img, (height, width) in zip(images, (image_size(img) for img in images))
        ])

    def forward(
        self, images: list[Tensor], targets: list[dict] | None = None, training: bool = False
    ) -> tuple[ImageBatch, list[dict] | None]:
        original_sizes = [image_size(img) for img in images]
        resized = []
        new_targets = None if targets is None else []
        for i, image in enumerate(images):
            image = self.resize(self.normalize(image), self._pick_min_size(training))
            resized.append(image)
            if targets is not None:
                target = dict(targets[i])
                for key in ("boxes", "proposals"):
                    if key in target:
                        target[key] = scale_boxes(target[key], original_sizes[i], image.shape[-2:])
                if "masks" in target:
                    target["masks"] = resize_mask(target["masks"], image.shape[-2:])
                new_targets.append(target)
        image_sizes = [image_size(img) for img in resized]
        return ImageBatch(self.pad_to_batch(resized), image_sizes, original_sizes), new_targets

    @staticmethod
    def pad_masks(masks: list[Tensor], batch: ImageBatch, ignore_index: int = 255) -> Tensor:
        """Per-image ``[h, w]`` masks (already at the resized sizes) as one ``[N, Hp, Wp]``
        int64 batch; the padding is ``ignore_index`` so that no loss or metric sees it."""
        height, width = batch.padded_size
        out = masks[0].new_full((len(masks), height, width), ignore_index, dtype=torch.int64)
        for i, mask in enumerate(masks):
            out[i, : mask.shape[-2], : mask.shape[-1]].copy_(mask)
        return out

    def scale_proposals(self, proposals: list[Tensor], batch: ImageBatch) -> list[Tensor]:
        """Proposals in the pixels of the images as given -> network-input pixels."""
        return [scale_boxes(p, original, size)
                for p, size, original in zip(proposals, batch.image_sizes, batch.original_sizes)]

    @staticmethod
    def postprocess_sem_seg(logits: Tensor, batch: ImageBatch) -> list[Tensor]:
        """``[N, C, Hp, Wp]`` logits over the padded batch -> per image ``[C, H, W]`` at the
        size of the image as given: the padding is cut off, then a bilinear resize."""
        out = []
        for i, (size, original) in enumerate(zip(batch.image_sizes, batch.original_sizes)):
            image_logits = logits[i : i + 1, :, : size[0], : size[1]]
            if is_tracing() or tuple(size) != tuple(original):
                image_logits = F.interpolate(image_logits, size=original, mode="bilinear", align_corners=False)
            out.append(image_logits[0])
        return out

    def postprocess(self, detections: list[dict], batch: ImageBatch) -> list[dict]:
        """Boxes back into the coordinates of the images as given (new dicts, same tensors otherwise)."""
        out = []
        for det, size, original in zip(detections, batch.image_sizes, batch.original_sizes):
            det = dict(det)
            det["boxes"] = scale_boxes(det["boxes"], size, original)
            out.append(det)
        return out
