"""Backbones: feature extractors with one contract (see ../shared/DESIGN.md).

    from backbones import build_backbone, list_backbones
    bb = build_backbone("resnet50", weights=None)
    feats = bb(images)        # OrderedDict[str, Tensor] named cN, stride 2**N
    bb.out_channels, bb.strides, bb.size_divisibility

Families: GoogLeNet (``layout="paper" | "torchvision"``), ResNet 18-152, deformable ResNet
50/101 (``dcn_version=1 | 2``), YOLOv1's Darknet trunks (``yolov1_darknet``,
``fast_yolo_darknet``), SE-ResNet 50/101 (``seresnet50``, ``seresnet101``; timm-compatible),
Xception (``xception``; timm ``legacy_xception``-compatible) and ``tv:<name>`` for any
torchvision classifier. Shared options: ``norm="bn" | "frozen_bn" | "gn"``,
``frozen_stages``, ``out_features``. ``weights=None | "torchvision" | path``. Classifiers with
torchvision-compatible state dicts: :class:`ResNetClassifier`, :class:`GoogLeNetClassifier`;
with timm-compatible ones: :class:`SEResNetClassifier`, :class:`XceptionClassifier`.
``backbones.summary`` tabulates every backbone.
"""
from backbones.base import Backbone, ShapeSpec
from backbones.darknet import Darknet, DarknetClassifier
from backbones.dcn_resnet import DeformableConv2d, DeformableResNet
from backbones.googlenet import GoogLeNet, GoogLeNetClassifier, GoogLeNetOutputs, googlenet_loss
from backbones.norm import FrozenBatchNorm2d
from backbones.registry import BACKBONES, build_backbone, list_backbones, register_backbone
from backbones.resnet import ResNet, ResNetClassifier
from backbones.senet import SEBlock, SEResNet, SEResNetClassifier
from backbones.xception import Xception, XceptionClassifier
from backbones.weights import WeightsError, WeightsFileNotFoundError

__all__ = [
    "Backbone", "ShapeSpec", "build_backbone", "list_backbones", "register_backbone", "BACKBONES",
    "ResNet", "ResNetClassifier", "DeformableResNet", "DeformableConv2d", "GoogLeNet",
    "GoogLeNetClassifier", "GoogLeNetOutputs", "googlenet_loss", "FrozenBatchNorm2d", "Darknet",
    "DarknetClassifier", "SEBlock", "SEResNet", "SEResNetClassifier", "Xception", "XceptionClassifier",
    "WeightsError", "WeightsFileNotFoundError",
]
