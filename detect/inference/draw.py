"""Drawing detections with OpenCV: boxes, class names and scores, one colour per class.

:func:`draw_detections` works on an ``[H, W, 3] uint8`` array in either channel order
(``color_order``) and returns an annotated copy; the input is never modified. Colours
come from :func:`class_color`, a fixed function of the label, so a class keeps its
colour across images, videos and runs. Line width and font size scale with the image.
"""
from __future__ import annotations

import colorsys

import cv2
import numpy as np
import torch

from detect.inference.sources import COLOR_ORDERS


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

