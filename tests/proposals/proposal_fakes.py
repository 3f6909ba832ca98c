"""Picklable stand-in generators for the make-proposals tests (importable by spawned workers)."""
import os
from pathlib import Path

import torch


class MeanBoxes:
    """Deterministic boxes from the image content, one line per call appended to ``log``
    (``<pid> <image mean>``) so a test sees which images were computed, in any process."""

    params = {"kind": "mean"}

    def __init__(self, log, fail_after=None):
        self.log = str(log)
        self.fail_after = fail_after
        self.calls = 0

    def __call__(self, image):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # a Ctrl+C in the middle of the split
        self.calls += 1
        mean = float(image.mean())
        with open(self.log, "a") as f:
            f.write(f"{os.getpid()} {mean:.6f}\n")
        h, w = image.shape[-2:]
        boxes = torch.tensor([[0.0, 0.0, w * mean, h * mean], [1.0, 2.0, w / 2, h / 2]])
        return boxes, torch.tensor([mean, 0.5])


def computed(log) -> list[str]:
    path = Path(log)
    return [line.split()[1] for line in path.read_text().splitlines()] if path.exists() else []
