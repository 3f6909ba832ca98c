"""Shared fixtures for the detector tests: a small batch of shapes images in memory
(:func:`shapes_images.shapes_batch`: the built-in generator's images drawn without touching
the disk; boxes are the tight continuous boxes ``(xmin, ymin, xmax + 1, ymax + 1)`` of each
object's pixels)."""
from __future__ import annotations

import pytest

from shapes_images import shapes_batch


@pytest.fixture(scope="session")
def shapes_data():
    """Two 96x96 shapes images with 1-3 objects each, and their targets."""
    return shapes_batch([0, 1])


@pytest.fixture(scope="session")
def make_shapes_batch():
    """The :func:`shapes_batch` function, for tests that need other images."""
    return shapes_batch
