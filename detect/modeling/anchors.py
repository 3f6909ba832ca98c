"""Anchor boxes: a fixed set of reference boxes at every position of every feature level.

Contract
--------
``AnchorGenerator(sizes, aspect_ratios)``: ``sizes[l]`` and ``aspect_ratios[l]`` list the
anchor sizes (square-root of the area, pixels of the network input) and height / width
ratios of level ``l``; level ``l`` gets ``len(sizes[l]) * len(aspect_ratios[l])`` anchors
per position. The paper's single-level set-up is ``sizes=((128, 256, 512),)``,
``aspect_ratios=((0.5, 1.0, 2.0),)``; FPN uses one size per level,
``((32,), (64,), (128,), (256,), (512,))``, with the same three ratios on every level.

``generator(grid_sizes, strides, device, dtype) -> list[Tensor[H_l * W_l * A_l, 4]]``:
anchors xyxy in input pixels, one tensor per level, ordered position-major (row, column)
then anchor (ratio-major, then size) -- the order of the RPN head's outputs after
``permute(0, 2, 3, 1)``. A cell anchor is centred on ``(0, 0)`` and rounded to whole pixels,
and the anchor of position ``(i, j)`` is shifted by ``(j * stride, i * stride)``: exactly
torchvision's ``AnchorGenerator``. Anchors depend only on the grid, so they are cached per
(grid sizes, strides, device, dtype); every image of a batch shares them. While tracing
(export), grid sizes are 0-dim tensors of the graph, so the anchors are computed in it and
not cached.

Strides: ``stride_mode="feature"`` (default) uses each level's true stride (the backbone's
or neck's). ``stride_mode="torchvision"`` reproduces torchvision, which derives the stride
as ``padded_image_size // grid_size``: the same value except where the grid was rounded
up, i.e. FPN's P6 when P5 has an odd size (a 800x1088 input gives P6 a vertical stride of
61 instead of 64). Models trained by torchvision, such as its COCO weights, need that mode.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


def _as_levels(values, name: str) -> tuple[tuple[float, ...], ...]:
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise ValueError(f"anchor {name} must be a non-empty list (one entry per feature level), got {values!r}")
    if not isinstance(values[0], (list, tuple)):
        # A flat list means one value per level (sizes) - the FPN convention.
        values = [(v,) for v in values]
    return tuple(tuple(float(v) for v in level) for level in values)


def cell_anchors(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """Anchors ``[len(ratios) * len(sizes), 4]`` centred on the origin, rounded to pixels."""
    scales = torch.as_tensor(sizes, dtype=torch.float32)
    ratios = torch.as_tensor(aspect_ratios, dtype=torch.float32)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (h_ratios[:, None] * scales[None, :]).view(-1)
    return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()


class AnchorGenerator(nn.Module):
    """Anchors for a list of feature levels (see the module docstring).

    Args:
        sizes: per level, the anchor sizes in input pixels; a flat list gives one size per level.
        aspect_ratios: per level, the height / width ratios; a flat list is used on every level.
        stride_mode: ``"feature"`` or ``"torchvision"`` (see the module docstring).
    """

    STRIDE_MODES = ("feature", "torchvision")

    def __init__(
        self,
        sizes: Sequence = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence = ((0.5, 1.0, 2.0),),
        stride_mode: str = "feature",
    ):
        super().__init__()
        if stride_mode not in self.STRIDE_MODES:
            raise ValueError(f"anchor stride_mode must be one of {self.STRIDE_MODES}, got {stride_mode!r}")
        self.stride_mode = stride_mode
        self.sizes = _as_levels(sizes, "sizes")
        if not isinstance(aspect_ratios, (list, tuple)) or len(aspect_ratios) == 0:
            raise ValueError(f"anchor aspect_ratios must be a non-empty list, got {aspect_ratios!r}")
        if isinstance(aspect_ratios[0], (list, tuple)):
            ratios = tuple(tuple(float(r) for r in level) for level in aspect_ratios)
        else:  # one flat list: the same ratios on every level
            ratios = (tuple(float(r) for r in aspect_ratios),)
        if len(ratios) == 1:
            ratios = ratios * len(self.sizes)
        if len(ratios) != len(self.sizes):
            raise ValueError(
                f"anchor aspect_ratios give {len(ratios)} levels but sizes give {len(self.sizes)}; "
                "give one list per level or a single list for all levels"
            )
        self.aspect_ratios = ratios
        self._cell_anchors = [cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]
        self._cache: dict[tuple, list[Tensor]] = {}

    @property
    def num_levels(self) -> int:
        return len(self.sizes)

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}, aspect_ratios={self.aspect_ratios}, stride_mode={self.stride_mode!r}"

    def grid_anchors(self, grid_size: tuple[int, int], stride: tuple[int, int], level: int, device, dtype) -> Tensor:
        grid_h, grid_w = grid_size
        stride_h, stride_w = stride
        shifts_x = torch.arange(grid_w, dtype=torch.int32, device=device) * stride_w
        shifts_y = torch.arange(grid_h, dtype=torch.int32, device=device) * stride_h
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        base = self._cell_anchors[level].to(device=device, dtype=dtype)
        return (shifts.view(-1, 1, 4) + base.view(1, -1, 4)).reshape(-1, 4)

    def forward(
        self,
        grid_sizes: Sequence[tuple[int, int]],
        strides: Sequence[tuple[int, int]],
        device=None,
        dtype: torch.dtype = torch.float32,
        image_size: tuple[int, int] | None = None,
    ) -> list[Tensor]:
        """Anchors per level for feature grids ``(h, w)`` with ``(stride_y, stride_x)``;
        ``image_size`` (the padded input ``(H, W)``) is needed by ``stride_mode="torchvision"``."""
        if self.stride_mode == "torchvision":
            if image_size is None:
                raise ValueError("stride_mode='torchvision' derives strides from the padded image size; pass image_size")
            strides = [(image_size[0] // g[0], image_size[1] // g[1]) for g in grid_sizes]
        if len(grid_sizes) != self.num_levels or len(strides) != self.num_levels:
            raise ValueError(
                f"anchor generator has {self.num_levels} levels (sizes {self.sizes}) but got "
                f"{len(grid_sizes)} feature maps; give one size list per feature level"
            )
        if torch.jit.is_tracing():
            return [
                self.grid_anchors(tuple(g), tuple(s), level, device, dtype)
                for level, (g, s) in enumerate(zip(grid_sizes, strides))
            ]
        key = (tuple(map(tuple, grid_sizes)), tuple(map(tuple, strides)), str(device), dtype)
        anchors = self._cache.get(key)
        if anchors is None:
            anchors = [
                self.grid_anchors(tuple(g), tuple(s), level, device, dtype)
                for level, (g, s) in enumerate(zip(grid_sizes, strides))
            ]
            if len(self._cache) >= 16:  # input sizes vary in training: keep the cache small
                self._cache.clear()
            self._cache[key] = anchors
        return anchors
