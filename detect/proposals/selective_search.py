"""Selective search (Uijlings et al., IJCV 2013) in R-CNN's "fast" mode, on OpenCV contrib.

R-CNN (Girshick et al. 2014, ``selective_search_boxes.m``, ``fast_mode = true``) runs the
hierarchical grouping of Uijlings et al. on

- two colour spaces: HSV and Lab;
- Felzenszwalb-Huttenlocher initial segmentations with ``k = 50`` and ``100``, ``min_size = k``,
  ``sigma = 0.8``;
- two similarity strategies: colour + texture + size + fill, and texture + size + fill;

that is 2 x 2 x 2 = 8 hierarchies, whose regions' boxes are pooled, filtered to at least
20 px wide *and* high, and de-duplicated; about 2000 boxes per PASCAL image.
OpenCV's ``switchToSelectiveSearchFast`` is *not* this set-up (it uses three ``k`` values
and the segmenter's default ``min_size`` of 100), so :class:`SelectiveSearch` configures
``cv2.ximgproc.segmentation`` explicitly with the parameters above.

Colour: the library's images are RGB; OpenCV's HSV and Lab conversions are applied with the
``RGB2*`` codes (what OpenCV's own modes do to a BGR image with ``BGR2*``), so no channel
swap is needed and none is done.

"Best first" (what the order means): OpenCV's order. Inside each hierarchy every region gets
``rank = U(0, 1) * level`` (``level`` 1 for the initial segments, ``max(children) + 1`` for a
merge), all regions of all hierarchies are sorted by ascending rank and the first occurrence of
each box is kept. This is the paper's pseudo-random ranking (hierarchy position times a random
number), except that OpenCV counts levels from the leaves where the paper counts from the top
of the hierarchy, so small regions tend to come first (OpenCV's source says it inverts the
paper on purpose). OpenCV draws the random numbers from the C library's ``rand()``; we seed it
(``srand(seed)``) right before every image so the boxes and their order are a function of the
image and ``seed`` alone (whichever worker process computes it, whatever it computed before).
The 20 px filter and ``max_proposals`` keep that order.

Boxes: OpenCV returns integer ``(x, y, w, h)`` covering pixels ``x .. x + w - 1``; in the
library's continuous convention that is ``(x, y, x + w, y + h)``. ``im_width`` (R-CNN's
``selective_search_boxes(im, fast_mode, im_width)``) optionally runs the search on a copy
resized to that width and scales the boxes back.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np
import torch
from torch import Tensor

from detect.errors import UserInputError
from detect.proposals.opencv_check import require_selective_search

__all__ = ["SelectiveSearch", "selective_search"]

_STRATEGIES = {
    "color+texture+size+fill": ("Color", "Texture", "Size", "Fill"),
    "texture+size+fill": ("Texture", "Size", "Fill"),
    "color": ("Color",), "texture": ("Texture",), "size": ("Size",), "fill": ("Fill",),
}
_COLOR_SPACES = {"hsv": "COLOR_RGB2HSV", "lab": "COLOR_RGB2Lab", "rgb": None}

# rand() is process-wide state; one image at a time per process may seed and consume it.
_RAND_LOCK = threading.Lock()


def _libc_srand():
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX C library
        return None


_SRAND = _libc_srand()


def _as_uint8_rgb(image) -> np.ndarray:
    """``[H, W, 3] uint8`` RGB from a ``Tensor[3, H, W]`` float 0..1 or a ``[H, W, 3]`` uint8 array."""
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise UserInputError(f"selective search takes an RGB Tensor[3, H, W], got shape {tuple(image.shape)}")
        if image.is_floating_point():
            image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        elif image.dtype != torch.uint8:
            raise UserInputError(f"selective search takes a float (0..1) or uint8 tensor, got {image.dtype}")
        return np.ascontiguousarray(image.permute(1, 2, 0).cpu().numpy())
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise UserInputError("selective search takes an RGB uint8 array [H, W, 3] or a Tensor[3, H, W], got "
                             f"{array.dtype} array of shape {array.shape}")
    return np.ascontiguousarray(array)


class SelectiveSearch:
    """A proposal generator: ``generator(image) -> float32 Tensor[P, 4]`` xyxy in the image's pixels.

    Args (defaults: R-CNN's fast mode, see the module docstring):
        color_spaces: names from ``"hsv"``, ``"lab"``, ``"rgb"``.
        ks: Felzenszwalb-Huttenlocher thresholds ``k``; ``min_size`` is ``k`` (as R-CNN).
        sigma: the segmenter's Gaussian smoothing.
        strategies: similarity strategies (``"color+texture+size+fill"``, ``"texture+size+fill"``,
            or single ``"color"`` / ``"texture"`` / ``"size"`` / ``"fill"``).
        min_box_size: boxes narrower or shorter than this many pixels are dropped.
        max_proposals: keep at most this many (the first, i.e. best, ones); ``None``: all.
        im_width: run on a copy resized to this width (R-CNN's ``im_width``); ``None``: as given.
        seed: seeds OpenCV's ``rand()`` before every image (reproducible order).

    ``params`` is the plain-data description written into proposal files.
    """

    progress_name = "selective search"  # the bar of detect.proposals.generators.propose_on_the_fly

    def __init__(self, color_spaces=("hsv", "lab"), ks=(50, 100), sigma: float = 0.8,
                 strategies=("color+texture+size+fill", "texture+size+fill"), min_box_size: float = 20,
                 max_proposals: int | None = None, im_width: int | None = None, seed: int = 1):
        unknown = [c for c in color_spaces if c not in _COLOR_SPACES]
        if unknown or not color_spaces:
            raise UserInputError(f"unknown selective-search colour space(s) {unknown}; choose from {sorted(_COLOR_SPACES)}")
        unknown = [s for s in strategies if s not in _STRATEGIES]
        if unknown or not strategies:
            raise UserInputError(f"unknown selective-search strateg(ies) {unknown}; choose from {sorted(_STRATEGIES)}")
        if not ks or any(float(k) <= 0 for k in ks):
            raise UserInputError(f"selective-search ks must be positive numbers, got {list(ks)}")
        if max_proposals is not None and int(max_proposals) < 0:
            raise UserInputError(f"max_proposals must be >= 0 or None, got {max_proposals}")
        self.color_spaces = tuple(color_spaces)
        self.ks = tuple(int(k) for k in ks)
        self.sigma = float(sigma)
        self.strategies = tuple(strategies)
        self.min_box_size = float(min_box_size)
        self.max_proposals = None if max_proposals is None else int(max_proposals)
        self.im_width = None if im_width is None else int(im_width)
        self.seed = int(seed)
        self._segmentation = require_selective_search()

    def __getstate__(self) -> dict:
        # The cv2 module is not picklable; a worker process looks it up again.
        return {k: v for k, v in self.__dict__.items() if k != "_segmentation"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._segmentation = require_selective_search()

    @property
    def params(self) -> dict:
        return {"mode": "rcnn_fast", "color_spaces": list(self.color_spaces), "ks": list(self.ks),
                "min_sizes": list(self.ks), "sigma": self.sigma, "strategies": list(self.strategies),
                "min_box_size": self.min_box_size, "max_proposals": self.max_proposals,
                "im_width": self.im_width, "seed": self.seed, "order": "opencv_rank"}

    def _search(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        seg = self._segmentation
        ss = seg.createSelectiveSearchSegmentation()
        for space in self.color_spaces:
            code = _COLOR_SPACES[space]
            ss.addImage(rgb if code is None else cv2.cvtColor(rgb, getattr(cv2, code)))
        for k in self.ks:
            ss.addGraphSegmentation(seg.createGraphSegmentation(self.sigma, float(k), k))
        for name in self.strategies:
            parts = [getattr(seg, f"createSelectiveSearchSegmentationStrategy{p}")() for p in _STRATEGIES[name]]
            ss.addStrategy(parts[0] if len(parts) == 1 else seg.createSelectiveSearchSegmentationStrategyMultiple(*parts))
        with _RAND_LOCK:
            if _SRAND is not None:
                _SRAND(ctypes.c_uint(self.seed))
            rects = ss.process()
        return np.asarray(rects, dtype=np.float32).reshape(-1, 4)

    def __call__(self, image) -> Tensor:
        rgb = _as_uint8_rgb(image)
        height, width = rgb.shape[:2]
        scale = 1.0
        if self.im_width is not None and width != self.im_width:
            import cv2

            scale = width / self.im_width
            resized_height = max(1, int(round(height / scale)))
            rgb = cv2.resize(rgb, (self.im_width, resized_height), interpolation=cv2.INTER_LINEAR)
        xywh = self._search(rgb)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1) * np.float32(scale)
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        boxes = boxes[keep]
        if scale != 1.0:
            # Different boxes of the small copy can round to the same box after scaling back.
            _, first = np.unique(boxes, axis=0, return_index=True)
            boxes = boxes[np.sort(first)]
        if self.max_proposals is not None:
            boxes = boxes[: self.max_proposals]
        return torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).reshape(-1, 4)

    def propose(self, images, progress: bool | None = False) -> list[Tensor]:
        """One ``Tensor[P, 4]`` per image of ``images`` (a list of ``Tensor[3, H, W]``).

        ``progress``: a tqdm bar over the images on stderr (``True``), none (``False``), or
        one only when stderr is a terminal (``None``, what the models use on the fly).
        """
        from detect.proposals.generators import propose_on_the_fly

        return propose_on_the_fly(self, images, progress)

    def __repr__(self) -> str:
        return f"SelectiveSearch({', '.join(f'{k}={v!r}' for k, v in self.params.items() if k != 'mode')})"


def selective_search(image, **options) -> Tensor:
    """``SelectiveSearch(**options)(image)``: boxes of one image."""
    return SelectiveSearch(**options)(image)
