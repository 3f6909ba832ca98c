"""The flat name -> builder table of backbones, and ``build_backbone`` / ``list_backbones``.

Contract: ``build_backbone(name, weights=None | "torchvision" | path | state_dict, **options)``
builds the backbone registered as ``name`` (or ``tv:<torchvision classifier>``) with
``options`` and, when ``weights`` is given, loads them (see backbones.weights). An unknown
name raises ``KeyError`` listing the available names.
"""
from __future__ import annotations

import os
from collections.abc import Callable

from backbones.base import Backbone
from backbones.darknet import fast_yolo_darknet, yolov1_darknet
from backbones.dcn_resnet import dcn_resnet50, dcn_resnet101
from backbones.googlenet import googlenet
from backbones.resnet import resnet18, resnet34, resnet50, resnet101, resnet152
from backbones.senet import seresnet50, seresnet101
from backbones.xception import xception

TORCHVISION_PREFIX = "tv:"

BACKBONES: dict[str, Callable[..., Backbone]] = {
    "googlenet": googlenet,
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
    "dcn_resnet50": dcn_resnet50,
    "dcn_resnet101": dcn_resnet101,
    "seresnet50": seresnet50,
    "seresnet101": seresnet101,
    "xception": xception,
    "yolov1_darknet": yolov1_darknet,
    "fast_yolo_darknet": fast_yolo_darknet,
}


class UnknownBackboneError(KeyError, ValueError):
    """An unknown backbone name (a KeyError and a ValueError, so either ``except`` works)."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0])


def list_backbones() -> list[str]:
    """Names ``build_backbone`` accepts: ours, then ``"tv:<name>"`` standing for any
    torchvision classification model (``backbones.torchvision_models.torchvision_classifiers()``
    lists them)."""
    return [*BACKBONES, f"{TORCHVISION_PREFIX}<name>"]


def register_backbone(name: str, builder: Callable[..., Backbone]) -> None:
    """Add ``builder`` under ``name`` (for user-defined backbones); names are unique."""
    if name in BACKBONES or name.startswith(TORCHVISION_PREFIX):
        raise ValueError(f"backbone name {name!r} is taken or reserved")
    BACKBONES[name] = builder


def build_backbone(name: str, weights: str | os.PathLike | dict | None = None,
                   **options) -> Backbone:
    """Build the backbone ``name`` with ``options`` and load ``weights``.

    Args:
        name: a name from :func:`list_backbones`, or ``"tv:<torchvision classifier>"``.
        weights: None (random initialisation), ``"torchvision"`` (torchvision's DEFAULT
            ImageNet weights for this architecture, fetched through its weights API), a path
            to a state-dict file, or a state dict.
        **options: the family's options (``norm``, ``frozen_stages``, ``out_features``,
            ``layout`` for GoogLeNet, ``dcn_version`` for the deformable ResNet, ...).
    """
    if not isinstance(name, str):
        raise TypeError(f"backbone name must be a string, got {type(name).__name__}")
    if name.startswith(TORCHVISION_PREFIX):
        from backbones.torchvision_models import TorchvisionBackbone

        model = TorchvisionBackbone(name[len(TORCHVISION_PREFIX):], **options)
    elif name in BACKBONES:
        model = BACKBONES[name](**options)
    else:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; available: {', '.join(list_backbones())} "
            f"(tv:<name> takes any torchvision classifier, e.g. tv:vgg16)")
    if weights is not None:
        model.load_weights(weights)
    return model
