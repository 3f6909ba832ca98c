"""Augmentation on albumentations, with boxes, labels and masks kept consistent.

A :class:`DetectionTransform` is called on numpy data before it becomes tensors::

    image, boxes, labels, mask = transform(image, boxes, labels, mask)
    # image uint8 [H, W, 3] RGB; boxes float32 [N, 4] xyxy continuous pixels; labels int64 [N];
    # mask uint8 [H, W] (0 background, 1..K, 255 ignore) or None

Boxes go through albumentations as ``pascal_voc`` (which *is* our xyxy continuous
convention: no +1) with ``labels`` as the label field; the datasets clip boxes that stray
outside the image by rounding before they get here. After the transform, boxes
narrower or shorter than ``min_box_size`` pixels (degenerate, e.g. squeezed by the scale
jitter) and boxes less than ``min_visibility`` visible after a crop are dropped together
with their labels.

Presets (``build_transforms(name)`` or ``build_transforms(dict(name=..., **options))``):

``"eval"``
    Nothing: geometry is unchanged, so detections come back in the image's coordinates
    (the model resizes inside). Returns ``None``; datasets skip the call entirely.
``"train"``
    Horizontal flip (``flip=0.5``); scale jitter of the *content* within the frame
    (``scale=(0.75, 1.25)``, an affine zoom about the centre: below 1 the image shrinks
    inside a ``fill``-coloured border, above 1 it is cropped), optional ``translate``
    (fraction of the side); colour jitter like torchvision's ColorJitter
    (``brightness=0.2, contrast=0.2, saturation=0.2, hue=0.0``).
``"yolo"``
    YOLOv1 (Redmon et al. 2016, section 2.2): random scaling and translation of up to 20%
    of the image size (``scale=(0.8, 1.2)``, ``translate=0.2``) and exposure and saturation
    scaled in HSV by a random factor up to 1.5 (``exposure=1.5``, ``saturation=1.5``: a
    factor in [1/1.5, 1.5]); plus the horizontal flip of darknet's data loader (``flip=0.5``).

Segmentation presets (torchvision's ``references/segmentation`` recipe; boxes, when the
dataset has any, stay consistent through the same ``bbox_params``: resized, flipped and
cropped with the image, and dropped with their labels when less than ``min_visibility`` of
them is left inside the crop):

``"seg_train"``
    Random resize of the *shorter* side to an integer drawn uniformly in
    ``[int(scale[0] * base_size), int(scale[1] * base_size)]`` (torchvision's
    ``RandomResize(260, 1040)`` for ``base_size=520, scale=(0.5, 2.0)``; the longer side
    becomes ``int(size * long / short)`` as torchvision's ``resize`` computes it), image
    bilinear (area when shrinking), mask nearest (pixel centres); horizontal flip
    (``flip=0.5``); padding at the right and bottom to at least ``crop_size`` (image
    ``fill=0``, mask 255) and a random ``crop_size`` square crop (``crop_size=480``).
    ``base_size=None`` draws the size as ``round(f * shorter side)`` with ``f`` uniform in
    ``scale`` (for sets of small images); ``crop_size=None`` skips padding and cropping.
    Colour jitter as in "train" (off by default: torchvision's recipe has none).
``"seg_eval"``
    Shorter side resized to ``base_size`` (520), the mask with it (nearest), so metrics are
    computed at that size, as torchvision's evaluation does. ``base_size=None`` is "eval".
``"seg_shapes"``
    The small CPU preset for the shapes set: "seg_train" with ``base_size=None,
    scale=(0.75, 1.25), crop_size=128`` and colour jitter 0.2.

Masks, when given, follow the geometry (nearest-neighbour) and the border introduced by
the affine or the padding is ``255`` (ignore) in the mask.

Randomness comes from the albumentations ``Compose``'s own generator (not numpy's global
one); :meth:`DetectionTransform.set_seed` reseeds it. Datasets reseed it for every item
from torch's RNG (:class:`detect.data.dataset.DetectionDataset`), so augmentation follows
``torch.manual_seed`` and DataLoader's per-worker seeds.
"""
from __future__ import annotations

from typing import Any, Callable

import albumentations as A
import cv2
import numpy as np

__all__ = ["DetectionTransform", "HSVScale", "ShorterSideResize", "build_transforms", "PRESETS"]

PRESETS = ("train", "eval", "yolo", "seg_train", "seg_eval", "seg_shapes")

_TRAIN_DEFAULTS = dict(
    flip=0.5, scale=(0.75, 1.25), translate=0.0, brightness=0.2, contrast=0.2, saturation=0.2,
    hue=0.0, color_p=1.0, fill=114, min_visibility=0.2, min_box_size=1.0,
)
_YOLO_DEFAULTS = dict(
    flip=0.5, scale=(0.8, 1.2), translate=0.2, exposure=1.5, saturation=1.5, fill=114,
    min_visibility=0.2, min_box_size=1.0,
)
_SEG_TRAIN_DEFAULTS = dict(
    base_size=520, scale=(0.5, 2.0), crop_size=480, flip=0.5, fill=0, brightness=0.0, contrast=0.0,
    saturation=0.0, hue=0.0, color_p=1.0, min_visibility=0.2, min_box_size=1.0,
)
_SEG_SHAPES_DEFAULTS = {**_SEG_TRAIN_DEFAULTS, "base_size": None, "scale": (0.75, 1.25), "crop_size": 128,
                        "brightness": 0.2, "contrast": 0.2, "saturation": 0.2}
_SEG_EVAL_DEFAULTS = dict(base_size=520, min_visibility=0.0, min_box_size=1.0)


class DetectionTransform:
    """Wraps an ``albumentations.Compose`` built with ``BboxParams(format="pascal_voc",
    label_fields=["labels"])`` into the ``(image, boxes, labels, mask)`` signature."""

    def __init__(self, compose, name: str = "custom", min_box_size: float = 1.0):
        self.compose = compose
        self.name = name
        self.min_box_size = float(min_box_size)

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, mask: np.ndarray | None = None):
        data = {"image": image, "bboxes": np.asarray(boxes, np.float32).reshape(-1, 4), "labels": np.asarray(labels, np.int64)}
        if mask is not None:
            data["mask"] = mask
        out = self.compose(**data)
        boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
        labels = np.asarray(out["labels"], dtype=np.int64).reshape(-1)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= self.min_box_size) & ((boxes[:, 3] - boxes[:, 1]) >= self.min_box_size)
        return out["image"], boxes[keep], labels[keep], out.get("mask")

    def set_seed(self, seed: int | None) -> None:
        self.compose.set_random_seed(seed)

    def __repr__(self) -> str:
        return f"DetectionTransform({self.name!r}, {self.compose!r})"


def _hsv_scale_image(image: np.ndarray, saturation: float, exposure: float) -> np.ndarray:
    # One LUT per channel: hue unchanged, S and V multiplied and clipped.
    hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV)
    ramp = np.arange(256, dtype=np.float32)
    lut = np.stack([
        ramp,
        np.clip(ramp * saturation + 0.5, 0, 255),
        np.clip(ramp * exposure + 0.5, 0, 255),
    ], axis=1).astype(np.uint8)
    hsv = cv2.LUT(hsv, lut.reshape(256, 1, 3))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


class HSVScale(A.ImageOnlyTransform):
    """Multiply HSV saturation and value (exposure) by random factors in ``[1/max, max]``
    (YOLOv1's "up to a factor of 1.5"), log-uniform so that brighter and darker are
    equally likely."""

    def __init__(self, saturation: float = 1.5, exposure: float = 1.5, p: float = 1.0):
        super().__init__(p=p)
        if saturation < 1 or exposure < 1:
            raise ValueError(f"HSVScale factors must be >= 1, got saturation={saturation}, exposure={exposure}")
        self.saturation = float(saturation)
        self.exposure = float(exposure)

    def get_params(self) -> dict[str, float]:
        def factor(limit: float) -> float:
            return float(np.exp(self.py_random.uniform(-np.log(limit), np.log(limit))))

        return {"saturation_factor": factor(self.saturation), "exposure_factor": factor(self.exposure)}

    def apply(self, img: np.ndarray, saturation_factor: float = 1.0, exposure_factor: float = 1.0, **params: Any):
        return _hsv_scale_image(img, saturation_factor, exposure_factor)

    def get_transform_init_args_names(self):
        return ("saturation", "exposure")


def shorter_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """``(h, w)`` with the shorter side ``size`` and the longer ``int(size * long / short)``:
    torchvision's ``resize(img, size)`` rule (truncation, not rounding)."""
    if width <= height:
        return int(size * height / width), int(size)
    return int(size), int(size * width / height)


class ShorterSideResize(A.DualTransform):
    """Resize so that the shorter side is a size drawn per call: an integer uniform in
    ``sizes = (low, high)`` (``relative=False``, torchvision's ``RandomResize``), or
    ``round(f * shorter side)`` with ``f`` uniform in ``sizes`` (``relative=True``).
    The image is resized bilinearly (area when shrinking, which stands in for
    torchvision's antialiasing), the mask nearest-neighbour at pixel centres
    (``INTER_NEAREST_EXACT``: the label of the source pixel under each output pixel's
    centre, so the mask stays on the image's pixel grid). Boxes are handled by
    albumentations (normalised coordinates do not change under a resize)."""

    def __init__(self, sizes, relative: bool = False, p: float = 1.0):
        super().__init__(p=p)
        low, high = (sizes, sizes) if isinstance(sizes, (int, float)) else sizes
        if not 0 < low <= high:
            raise ValueError(f"ShorterSideResize sizes must be 0 < low <= high, got {sizes}")
        self.sizes = (float(low), float(high)) if relative else (int(low), int(high))
        self.relative = bool(relative)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        height, width = params["shape"][:2]
        if self.relative:
            size = max(1, int(round(self.py_random.uniform(*self.sizes) * min(height, width))))
        else:
            size = self.py_random.randint(*self.sizes)
        return {"out_size": shorter_side_size(height, width, size)}

    def apply(self, img: np.ndarray, out_size=(1, 1), **params: Any) -> np.ndarray:
        height, width = out_size
        shrink = height * width < img.shape[0] * img.shape[1]
        return cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, out_size=(1, 1), **params: Any) -> np.ndarray:
        height, width = out_size
        return cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST_EXACT)

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes  # normalised coordinates: unchanged by a resize

    def get_transform_init_args_names(self):
        return ("sizes", "relative")


def _as_range(value, name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    low, high = value
    if not 0 < low <= high:
        raise ValueError(f"{name} must be a (low, high) range with 0 < low <= high, got {value}")
    return (float(low), float(high))


def _bbox_params(min_visibility: float):
    return A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=min_visibility, clip=True)


def _affine(scale, translate: float, fill):
    return A.Affine(
        scale=_as_range(scale, "scale"), translate_percent=(-float(translate), float(translate)),
        keep_ratio=True, rotate=0.0, shear=0.0, interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST, border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=255,
        p=1.0,
    )


def _train_preset(options: dict):
    o = {**_TRAIN_DEFAULTS, **options}
    ops = []
    if o["flip"] > 0:
        ops.append(A.HorizontalFlip(p=o["flip"]))
    if tuple(_as_range(o["scale"], "scale")) != (1.0, 1.0) or o["translate"] > 0:
        ops.append(_affine(o["scale"], o["translate"], o["fill"]))
    if any(o[k] > 0 for k in ("brightness", "contrast", "saturation", "hue")) and o["color_p"] > 0:
        ops.append(A.ColorJitter(brightness=o["brightness"], contrast=o["contrast"], saturation=o["saturation"],
                                 hue=o["hue"], p=o["color_p"]))
    return ops, o


def _yolo_preset(options: dict):
    o = {**_YOLO_DEFAULTS, **options}
    ops = []
    if o["flip"] > 0:
        ops.append(A.HorizontalFlip(p=o["flip"]))
    ops.append(_affine(o["scale"], o["translate"], o["fill"]))
    if o["exposure"] > 1 or o["saturation"] > 1:
        ops.append(HSVScale(saturation=o["saturation"], exposure=o["exposure"], p=1.0))
    return ops, o


def _seg_resize(base_size, scale):
    low, high = _as_range(scale, "scale")
    if base_size is None:
        return ShorterSideResize((low, high), relative=True)
    return ShorterSideResize((int(low * base_size), int(high * base_size)))


def _seg_train_preset(options: dict, defaults: dict = _SEG_TRAIN_DEFAULTS):
    o = {**defaults, **options}
    ops = [_seg_resize(o["base_size"], o["scale"])]
    if o["flip"] > 0:
        ops.append(A.HorizontalFlip(p=o["flip"]))
    if o["crop_size"] is not None:
        crop = int(o["crop_size"])
        # torchvision pads at the right and bottom only (pad_if_smaller), image fill, mask 255.
        ops.append(A.PadIfNeeded(min_height=crop, min_width=crop, position="top_left", border_mode=cv2.BORDER_CONSTANT,
                                 fill=o["fill"], fill_mask=255))
        ops.append(A.RandomCrop(crop, crop))
    if any(o[k] > 0 for k in ("brightness", "contrast", "saturation", "hue")) and o["color_p"] > 0:
        ops.append(A.ColorJitter(brightness=o["brightness"], contrast=o["contrast"], saturation=o["saturation"],
                                 hue=o["hue"], p=o["color_p"]))
    return ops, o


def _seg_shapes_preset(options: dict):
    return _seg_train_preset(options, _SEG_SHAPES_DEFAULTS)


def _seg_eval_preset(options: dict):
    o = {**_SEG_EVAL_DEFAULTS, **options}
    return [ShorterSideResize((int(o["base_size"]), int(o["base_size"])))], o


_PRESET_BUILDERS = {"train": (_train_preset, _TRAIN_DEFAULTS), "yolo": (_yolo_preset, _YOLO_DEFAULTS),
                    "seg_train": (_seg_train_preset, _SEG_TRAIN_DEFAULTS),
                    "seg_shapes": (_seg_shapes_preset, _SEG_SHAPES_DEFAULTS),
                    "seg_eval": (_seg_eval_preset, _SEG_EVAL_DEFAULTS)}


def build_transforms(spec: str | dict | Callable | None, *, seed: int | None = None):
    """A :class:`DetectionTransform` for a preset name or ``dict(name=..., **options)``;
    ``None`` for ``"eval"``/``None``. An ``albumentations.Compose`` is wrapped (it must
    have ``bbox_params`` with a ``labels`` label field); any other callable with the
    ``(image, boxes, labels, mask)`` signature is returned as is. Masks need no option:
    when a dataset passes one, it follows the geometry."""
    if spec is None or isinstance(spec, DetectionTransform):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, dict):
        options = dict(spec)
        name = options.pop("name", None)
        if name in (None, "eval", "none"):
            if options:
                raise ValueError(f"the 'eval' preset takes no options (it never changes the image), got {sorted(options)}")
            return None
        if name == "seg_eval" and options.get("base_size", 520) is None and set(options) <= set(_SEG_EVAL_DEFAULTS):
            return None  # no resize: geometry unchanged, like "eval"
        if name not in _PRESET_BUILDERS:
            raise ValueError(f"unknown transforms preset {name!r}; expected one of {PRESETS} or a dict(name=..., **options)")
        builder, defaults = _PRESET_BUILDERS[name]
        unknown = set(options) - set(defaults)
        if unknown:
            raise ValueError(f"transforms preset {name!r} has no options {sorted(unknown)}; it takes {sorted(defaults)}")
        ops, resolved = builder(options)
        compose = A.Compose(ops, bbox_params=_bbox_params(resolved["min_visibility"]), seed=seed)
        return DetectionTransform(compose, name=name, min_box_size=resolved["min_box_size"])
    if isinstance(spec, A.Compose):
        params = spec.processors.get("bboxes")
        if params is None or "labels" not in (params.params.label_fields or []):
            raise ValueError("wrap an albumentations.Compose built with "
                             "bbox_params=A.BboxParams(format='pascal_voc', label_fields=['labels'])")
        if params.params.format != "pascal_voc":
            raise ValueError(f"the Compose's bbox format is {params.params.format!r}; "
                             "detect uses 'pascal_voc' (xyxy pixels)")
        return DetectionTransform(spec)
    if callable(spec):
        return spec
    raise TypeError("transforms must be a preset name, a dict, an albumentations.Compose or a callable, "
                    f"got {type(spec).__name__}")
