"""A tiny stand-in semantic segmenter and helpers for the segmentation tool tests.

``ColourSegmenter`` is a 1x1 convolution from RGB to ``K + 1`` logits. Built with
``colour_init=True`` its logits are exactly ``[threshold, R, G, B, 0, ...]`` per pixel
(class ``k`` for ``k = 1..3`` reads channel ``k - 1``), so its label map is known by hand:
the brightest channel's class where that channel exceeds ``threshold``, else background.
It trains like any segmenter (per-pixel cross entropy ignoring 255), which is all the
engine tests need. The real family (``fcn``) replaces it where it is registered
(:func:`segmenter_for_tests`).
"""
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

import detect
from detect.modeling.base import SemanticSegmenter
from detect.modeling.registry import list_detectors, register_detector

NAME = "test_colour_segmenter"
CLASS_NAMES = ["red", "green", "blue"]


class ColourSegmenter(SemanticSegmenter):
    class_specific_prefixes = ("classifier.",)

    def __init__(self, num_classes=3, threshold=0.5, colour_init=True):
        super().__init__()
        self.num_classes = int(num_classes)
        self.classifier = nn.Conv2d(3, self.num_classes + 1, 1)
        if colour_init:
            with torch.no_grad():
                self.classifier.weight.zero_()
                self.classifier.bias.zero_()
                self.classifier.bias[0] = threshold
                for k in range(1, min(self.num_classes, 3) + 1):
                    self.classifier.weight[k, k - 1] = 1.0

    def _logits(self, image):
        return self.classifier(image[None])[0]

    def _compute_predictions(self, images):
        return [{"sem_seg": self._logits(image)} for image in images]

    def _compute_losses(self, images, targets):
        losses = [F.cross_entropy(self._logits(image)[None], target["masks"][None], ignore_index=255)
                  for image, target in zip(images, targets)]
        return {"loss_sem_seg": torch.stack(losses).mean()}


def register():
    if NAME not in list_detectors():
        register_detector(NAME, ColourSegmenter)


def expected_label_map(rgb: np.ndarray, threshold=0.5) -> np.ndarray:
    """The label map ``ColourSegmenter(colour_init=True)`` gives an ``[H, W, 3] uint8`` RGB image."""
    values = np.concatenate([np.full(rgb.shape[:2] + (1,), threshold, np.float32), rgb.astype(np.float32) / 255],
                            axis=2)
    return values.argmax(axis=2).astype(np.int64)


def make_regions_image(height=40, width=60):
    """RGB uint8 with a red, a green, a blue and a dark (background) quarter."""
    image = np.full((height, width, 3), 30, np.uint8)
    image[: height // 2, : width // 2, 0] = 220
    image[: height // 2, width // 2:, 1] = 220
    image[height // 2:, : width // 2, 2] = 220
    return image


def checkpoint_payload(model, class_names, model_config):
    return {
        "format_version": 1,
        "library_version": detect.__version__,
        "model": model.state_dict(),
        "optimizer": None, "scheduler": None, "scaler": None, "ema": None,
        "epoch": 1, "iteration": 10, "rng": {},
        "config": {"model": dict(model_config)},
        "class_names": list(class_names),
        "color_order": "RGB",
        "box_format": "xyxy",
        "metrics": {},
    }


def save_segmenter_checkpoint(path, threshold=0.5):
    """A deployable checkpoint of ``ColourSegmenter`` written by the engine's checkpoint code."""
    from detect.engine.checkpoint import save_checkpoint

    register()
    model = ColourSegmenter(threshold=threshold)
    config = {"name": NAME, "num_classes": 3, "threshold": threshold}
    return save_checkpoint(path, checkpoint_payload(model, CLASS_NAMES, config))
