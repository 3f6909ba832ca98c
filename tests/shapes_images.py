"""Shapes images drawn in memory for tests on real models: boxes, labels and the semantic
mask of each image (``detect.data.shapes.draw_shapes_image``, deterministic in seed
and index; no disk)."""
from __future__ import annotations

import numpy as np
import torch

from detect.data.shapes import draw_shapes_image

PARAMS = dict(seed=0, image_size=96, classes=("circle", "square", "triangle"), size_range=(0.3, 0.6),
              objects_per_image=(1, 3), empty_fraction=0.0, texture_strength=0.3, max_occlusion=0.3)


def shapes_batch(indices, masks: bool = False, **overrides):
    """``(images, targets)``; targets hold ``boxes`` (tight continuous boxes ``(xmin, ymin,
    xmax + 1, ymax + 1)`` of each object's pixels), ``labels`` and, with ``masks``, ``masks``
    (0 background, 1..K)."""
    params = {**PARAMS, **overrides}
    images, targets = [], []
    for index in indices:
        rgb, instances, classes = draw_shapes_image(index, params)
        boxes = []
        for j in range(1, len(classes) + 1):
            ys, xs = np.nonzero(instances == j)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        lookup = np.concatenate([[0], classes]).astype(np.int64)
        images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
        target = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                  "labels": torch.from_numpy(classes).to(torch.int64)}
        if masks:
            target["masks"] = torch.from_numpy(lookup[instances])
        targets.append(target)
    return images, targets
