"""A tiny stand-in detector and helpers for the inference tests.

``ChannelMeanDetector`` returns three fixed boxes (fractions of the image size), one per
class, scored by the mean of the R, G and B channel respectively times a learnable
``scale``. Equal pixels give equal detections, a swapped channel order swaps the scores,
and a checkpoint with ``scale = 0.5`` halves them, which lets the tests see whether
inputs were converted and weights loaded.
"""
import cv2
import numpy as np
import torch
from torch import nn

import detect
from detect.modeling.base import Detector
from detect.modeling.registry import list_detectors, register_detector

NAME = "test_channel_mean"
CLASS_NAMES = ["red", "green", "blue"]
BOX_FRACTIONS = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.3, 0.2, 0.9, 0.8], [0.0, 0.5, 0.4, 1.0]])


class ChannelMeanDetector(Detector):
    def __init__(self, num_classes=3, box_score_thresh=0.0):
        super().__init__()
        self.num_classes = num_classes
        self.score_thresh = box_score_thresh  # the contract's settable threshold
        self.scale = nn.Parameter(torch.ones(()))

    def _compute_predictions(self, images):
        outputs = []
        for image in images:
            height, width = image.shape[-2:]
            scores = image.mean(dim=(1, 2)) * self.scale
            keep = scores >= self.score_thresh
            boxes = BOX_FRACTIONS.to(image) * torch.tensor([width, height, width, height]).to(image)
            outputs.append({"boxes": boxes[keep], "scores": scores[keep],
                            "labels": torch.arange(1, 4, device=image.device)[keep]})
        return outputs

    def _compute_losses(self, images, targets):
        return {"loss": (self.scale - 1) ** 2}


def register():
    if NAME not in list_detectors():
        register_detector(NAME, ChannelMeanDetector)


def make_image(height=48, width=64, seed=0):
    """RGB uint8 with distinct channel means (R ~ .7, G ~ .4, B ~ .15) and some texture."""
    rng = np.random.default_rng(seed)
    base = np.array([180, 100, 40], dtype=np.int16)
    noise = rng.integers(-30, 31, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_png(path, rgb):
    assert cv2.imwrite(str(path), rgb[..., ::-1])  # test fixture: OpenCV writes BGR
    return path


def write_video(path, num_frames=12, fps=7.0, size=(64, 48), fourcc="mp4v"):
    """A short video whose frames change colour over time; returns the written RGB frames."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    frames = []
    for i in range(num_frames):
        rgb = make_image(size[1], size[0], seed=i)
        rgb[..., 2] = np.uint8(20 * i % 255)
        writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        frames.append(rgb)
    writer.release()
    return frames


def save_stand_in_checkpoint(path, scale=0.5, box_score_thresh=0.05):
    from detect.engine.checkpoint import save_checkpoint

    register()
    model = ChannelMeanDetector(box_score_thresh=box_score_thresh)
    with torch.no_grad():
        model.scale.fill_(scale)
    payload = {
        "format_version": 1,
        "library_version": detect.__version__,
        "model": model.state_dict(),
        "optimizer": None, "scheduler": None, "scaler": None, "ema": None,
        "epoch": 1, "iteration": 10, "rng": {},
        "config": {"model": {"name": NAME, "num_classes": 3, "box_score_thresh": box_score_thresh}},
        "class_names": CLASS_NAMES,
        "color_order": "RGB",
        "box_format": "xyxy",
        "metrics": {},
    }
    return save_checkpoint(path, payload)
