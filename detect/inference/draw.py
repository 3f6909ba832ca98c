"""Drawing detections and label maps with OpenCV, one colour per class.

:func:`draw_detections` works on an ``[H, W, 3] uint8`` array in either channel order
(``color_order``) and returns an annotated copy; the input is never modified. Colours
come from :func:`class_color`, a fixed function of the label, so a class keeps its
colour across images, videos and runs. Line width and font size scale with the image.

:func:`draw_segmentation` blends a label map (``int64 [H, W]``: 0 background, 1..K,
255 ignore) over the image: every class pixel is mixed with its class colour
(``alpha``), background and ignored pixels are left as they are, and a legend in the
top-left corner names the classes present with their colours. Segmentation colours are
the Pascal VOC colour map (:func:`label_color`), the palette of the label PNGs that
``tools/infer.py`` writes, so an overlay and its PNG show a class in the same colour.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch

from detect.data.shapes import voc_palette
from detect.inference.sources import COLOR_ORDERS

#: RGB colour of label value v (the VOC colour map; 255, ignore, is its cream colour)
SEGMENTATION_PALETTE = voc_palette(256)


def class_color(label: int) -> tuple[int, int, int]:
    """A saturated RGB colour for ``label``: hues spaced by the golden ratio, so nearby
    labels get well separated colours."""
    hue = (int(label) * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _text_color(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (0, 0, 0) if luminance > 150 else (255, 255, 255)


def _numpy(value) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def draw_detections(
    image: np.ndarray,
    detections: dict,
    color_order: str = "RGB",
    class_names: list[str] | None = None,
    line_width: int | None = None,
    font_scale: float | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with the detections drawn on it.

    Args:
        image: ``[H, W, 3] uint8`` in ``color_order``.
        detections: ``boxes [M, 4]`` (xyxy pixels of this image), ``scores [M]``,
            ``labels [M]`` and, from a :class:`~detect.inference.Predictor`,
            ``class_names`` (one name per detection).
        class_names: names by label (``class_names[k - 1]``) when the detections do not
            carry their own; the label number is shown when neither is given.
        line_width, font_scale: defaults scale with the image size.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_detections needs an [H, W, 3] uint8 image, got {image.shape} {image.dtype}")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
    canvas = np.ascontiguousarray(image).copy()
    height, width = canvas.shape[:2]
    line_width = line_width or max(1, round((height + width) / 600))
    font_scale = font_scale or max(0.35, (height + width) / 2400)
    text_thickness = max(1, line_width // 2)
    boxes = _numpy(detections["boxes"]).reshape(-1, 4)
    scores = _numpy(detections["scores"]).reshape(-1)
    labels = _numpy(detections["labels"]).reshape(-1).astype(np.int64)
    names = detections.get("class_names")
    if names is None:
        names = [class_names[k - 1] if class_names and 1 <= k <= len(class_names) else str(k) for k in labels]
    corners = np.round(boxes).astype(np.int64)
    # Draw low scores first so that the confident boxes and their labels end on top.
    for i in np.argsort(scores, kind="stable"):
        x1, y1, x2, y2 = corners[i].tolist()
        rgb = class_color(labels[i])
        color = rgb if color_order == "RGB" else rgb[::-1]
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, line_width, cv2.LINE_AA)
        text = f"{names[i]} {scores[i]:.2f}"
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, text_thickness)
        # Label above the box, or inside it when the box touches the top edge.
        top = y1 - text_h - baseline - 2 if y1 - text_h - baseline - 2 >= 0 else y1
        left = min(max(x1, 0), max(width - text_w - 2, 0))
        cv2.rectangle(canvas, (left, top), (left + text_w + 2, top + text_h + baseline + 2), color, cv2.FILLED)
        text_rgb = _text_color(rgb)
        cv2.putText(
            canvas, text, (left + 1, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
            text_rgb if color_order == "RGB" else text_rgb[::-1], text_thickness, cv2.LINE_AA,
        )
    return canvas



def label_color(value: int) -> tuple[int, int, int]:
    """The RGB colour of label map value ``value`` (0..255): the Pascal VOC colour map."""
    return tuple(int(c) for c in SEGMENTATION_PALETTE[int(value)])


def draw_segmentation(
    image: np.ndarray,
    label_map,
    class_names: list[str] | None = None,
    color_order: str = "RGB",
    alpha: float = 0.5,
    legend: bool = True,
    font_scale: float | None = None,
) -> np.ndarray:
    """Return a copy of ``image`` with ``label_map`` blended over it and a legend.

    Args:
        image: ``[H, W, 3] uint8`` in ``color_order``.
        label_map: ``int [H, W]`` of the image's size: 0 background, 1..K, 255 ignore
            (both left undrawn).
        class_names: names by label value, background first (``class_names[v]``, as a
            segmentation Predictor returns them); the value is shown when not given.
        alpha: weight of the class colour in a labelled pixel.
        legend: draw a swatch and the name of every class present (in label order).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"draw_segmentation needs an [H, W, 3] uint8 image, got {image.shape} {image.dtype}")
    if color_order not in COLOR_ORDERS:
        raise ValueError(f"color_order must be 'RGB' or 'BGR', got {color_order!r}")
    labels = _numpy(label_map).astype(np.int64)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"label map of shape {labels.shape} for an image of {image.shape[:2]}; they must be equal")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label map values must lie in 0..255, got {labels.min()}..{labels.max()}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in 0..1, got {alpha}")
    palette = SEGMENTATION_PALETTE if color_order == "RGB" else SEGMENTATION_PALETTE[:, ::-1]
    drawn = (labels != 0) & (labels != 255)
    colours = palette[labels].astype(np.float32)
    blended = image.astype(np.float32) * (1.0 - alpha) + colours * alpha
    canvas = np.where(drawn[..., None], np.round(blended), image).astype(np.uint8)
    if legend:
        present = np.unique(labels[drawn]).tolist()
        _draw_legend(canvas, present, class_names, palette, font_scale)
    return canvas


def _draw_legend(canvas: np.ndarray, values: list[int], class_names, palette: np.ndarray, font_scale) -> None:
    """Swatches and names of ``values`` in a dark box at the top-left corner, in place."""
    if not values:
        return
    height, width = canvas.shape[:2]
    font_scale = font_scale or max(0.35, (height + width) / 2400)
    thickness = max(1, round(font_scale * 1.5))
    names = [class_names[v] if class_names and v < len(class_names) else str(v) for v in values]
    sizes = [cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness) for n in names]
    line = max(h + b for (_, h), b in sizes) + 4
    swatch = line - 4
    box_w = min(width, 6 + swatch + 4 + max(w for (w, _), _ in sizes) + 6)
    box_h = min(height, 4 + line * len(values))
    region = canvas[:box_h, :box_w]
    region[...] = (region.astype(np.float32) * 0.35).astype(np.uint8)  # darkened, still see-through
    for row, (value, name, ((_, text_h), baseline)) in enumerate(zip(values, names, sizes)):
        top = 4 + row * line
        colour = tuple(int(c) for c in palette[value])
        cv2.rectangle(canvas, (6, top), (6 + swatch, top + swatch), colour, cv2.FILLED)
        cv2.putText(canvas, name, (6 + swatch + 4, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
