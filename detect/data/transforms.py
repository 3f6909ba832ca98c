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

Masks, when given, follow the geometry (nearest-neighbour) and the border introduced by
the affine is ``255`` (ignore) in the mask.

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

__all__ = ["DetectionTransform", "HSVScale", "build_transforms", "PRESETS"]

PRESETS = ("train", "eval", "yolo")

_TRAIN_DEFAULTS = dict(
    flip=0.5, scale=(0.75, 1.25), translate=0.0, brightness=0.2, contrast=0.2, saturation=0.2,
    hue=0.0, color_p=1.0, fill=114, min_visibility=0.2, min_box_size=1.0,
)
_YOLO_DEFAULTS = dict(
    flip=0.5, scale=(0.8, 1.2), translate=0.2, exposure=1.5, saturation=1.5, fill=114,
    min_visibility=0.2, min_box_size=1.0,
)


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


_PRESET_BUILDERS = {"train": (_train_preset, _TRAIN_DEFAULTS), "yolo": (_yolo_preset, _YOLO_DEFAULTS)}


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
