"""Shared fixtures for the Faster R-CNN tests: a small batch of shapes images in memory.

The images come from the built-in shapes generator (``detect.data.shapes.draw_shapes_image``,
deterministic in seed and index), drawn in memory so that no test touches the disk; boxes
are the tight continuous boxes ``(xmin, ymin, xmax + 1, ymax + 1)`` of each object's pixels.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

SHAPES_PARAMS = dict(
    seed=0,
    image_size=96,
    classes=("circle", "square", "triangle"),
    size_range=(0.3, 0.6),
    objects_per_image=(1, 3),
    empty_fraction=0.0,
    texture_strength=0.3,
    max_occlusion=0.3,
)


def shapes_batch(indices, **overrides):
    """``(images, targets)`` for the given image indices of the shapes generator."""
    from detect.data.shapes import draw_shapes_image

    params = {**SHAPES_PARAMS, **overrides}
    images, targets = [], []
    for index in indices:
        rgb, instances, classes = draw_shapes_image(index, params)
        boxes = []
        for j in range(1, len(classes) + 1):
            ys, xs = np.nonzero(instances == j)
            boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        images.append(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255)
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.from_numpy(classes).to(torch.int64),
            }
        )
    return images, targets


@pytest.fixture(scope="session")
def shapes_data():
    """Two 96x96 shapes images with 1-3 objects each, and their targets."""
    return shapes_batch([0, 1])


@pytest.fixture(scope="session")
def make_shapes_batch():
    """The :func:`shapes_batch` function, for tests that need other images."""
    return shapes_batch
