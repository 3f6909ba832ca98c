"""The feature trunk and the box branch that Faster R-CNN and Fast R-CNN build alike.

Contract
--------
Both families put RoI heads on a backbone (with or without an FPN); only the proposal source
differs (an RPN, or given proposals). This module builds the parts they share, per backbone
family, from plain-data options:

- :func:`backbone_family` names the family of a backbone name (``"resnet"``, ``"googlenet"``,
  ``"vgg"``, ``"other"``); :func:`backbone_defaults` fills in norm and freezing defaults
  (frozen BatchNorm and a frozen stem + first stage when starting from trained weights;
  VGG fine-tunes from conv3_1).
- :func:`build_trunk` -> :class:`Trunk`: the backbone, the optional FPN neck and the levels
  the proposal source and the RoI heads read. ``fpn=True``: c2.. (GoogLeNet c3..) -> FPN
  P-levels plus a max-pooled extra level that only the RPN reads. ``fpn=False``: one level,
  ``c4`` when the backbone has it, else its deepest; for ResNet and GoogLeNet (C4) the
  backbone's last stage is detached to become the box head (:class:`ConvStageHead`), and
  VGG-16 stops at conv5_3.
- :func:`build_box_branch` -> :class:`~detect.modeling.roi_heads.RoIHeads`: the pooler (7x7,
  14x14 for a C4 stage head; RoIAlign, or RoI max pooling by default on VGG), the box head
  (the C4 stage, VGG's fc6/fc7 with dropout, two FC layers, or torchvision v2's
  ``"4conv1fc"``) and the class-specific predictor, with the sampling, loss and
  post-processing options of ``RoIHeads``.
- :func:`build_image_transform`: the shorter-side transform, padded to the backbone's
  largest stride (at least 32 with an FPN).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from detect.modeling.box_heads import ConvFCHead, ConvStageHead, FastRCNNPredictor, TwoMLPHead, VGGHead
from detect.modeling.fpn import FPN
from detect.modeling.poolers import RoIPooler
from detect.modeling.roi_heads import RoIHeads
from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

BOX_HEADS = ("2fc", "4conv1fc")


def backbone_family(name: str) -> str:
    """``"resnet"`` (ResNet, deformable and SE-ResNet), ``"googlenet"``, ``"vgg"`` or ``"other"``."""
    lowered = name.lower()
    if lowered.startswith(("dcn_resnet", "resnet", "seresnet")):
        return "resnet"
    if lowered.startswith("googlenet"):
        return "googlenet"
    if lowered.startswith("tv:vgg"):
        return "vgg"
    return "other"


def backbone_defaults(family: str, trained: bool, norm, frozen_stages, extra: dict | None) -> dict:
    """Norm and freezing defaults as torchvision's detection builders: frozen BatchNorm and,
    when starting from trained weights, the stem + first stage frozen (``frozen_stages=1``,
    torchvision's ``trainable_backbone_layers=3``); the backbone's own defaults (trainable
    BatchNorm, nothing frozen) otherwise. VGG is the exception: its stem (the stride-2 group)
    is conv1 and conv2 and its first stage conv3, so ``frozen_stages=0`` freezes conv1-conv2
    and fine-tunes from conv3_1, as in the Fast and Faster R-CNN papers."""
    options = dict(extra or {})
    has_norm = not (family == "googlenet" and options.get("layout", "torchvision") == "paper")
    if norm is None and trained and has_norm:
        norm = "frozen_bn"
    if frozen_stages is None and trained:
        frozen_stages = 0 if family == "vgg" else 1
    if norm is not None:
        options["norm"] = norm
    if frozen_stages is not None:
        options["frozen_stages"] = frozen_stages
    return options


@dataclass
class Trunk:
    """A built backbone (and neck) and the levels the two stages read.

    ``stage_head`` is the C4 box head taken from the backbone (else ``None``); ``channels`` is
    the channel count of the RoI levels; ``strides`` the strides of every level produced.
    """

    family: str
    fpn: bool
    body: nn.Module
    neck: nn.Module | None
    stage_head: nn.Module | None
    proposal_features: list[str]
    roi_features: list[str]
    channels: int
    strides: dict = field(default_factory=dict)


def build_trunk(
    backbone,
    fpn: bool,
    backbone_weights=None,
    backbone_options: dict | None = None,
    fpn_channels: int = 256,
    fpn_norm: str | None = None,
) -> Trunk:
    """The backbone (a name for ``backbones.build_backbone`` or a built object), the neck and
    the levels, per family (see the module docstring). ``backbone_options`` are passed to
    ``build_backbone`` as they are (apply :func:`backbone_defaults` first)."""
    from backbones import build_backbone

    name = backbone if isinstance(backbone, str) else None
    family = backbone_family(name) if name else "object"
    options = dict(backbone_options or {})
    stage_head = None
    if name is None:
        body = backbone
        if backbone_weights is not None:
            body.load_weights(backbone_weights)
    elif not fpn and family in ("resnet", "googlenet"):
        # C4: the trunk is built (and its weights loaded) once up to c5; its c5 stage is then
        # detached to become the box head, frozen if frozen_stages covered it.
        body = build_backbone(name, weights=backbone_weights, **{**options, "out_features": ["c4", "c5"]})
        head_channels = body.out_channels["c5"]
        stage, stage_frozen = body.split_last_stage_()
        stage_head = ConvStageHead(stage, head_channels, frozen=stage_frozen)
    else:
        # VGG-16 without FPN stops at conv5_3 (c4, stride 16): its last max-pool is not needed.
        if family == "vgg" and not fpn:
            options["out_features"] = ["c4"]
        body = build_backbone(name, weights=backbone_weights, **options)

    names = list(body.out_channels)
    if fpn:
        fpn_inputs = [n for n in names if int(n[1:]) >= 2]
        if family == "googlenet":
            fpn_inputs = [n for n in fpn_inputs if int(n[1:]) >= 3]
        neck = FPN(
            {n: body.out_channels[n] for n in fpn_inputs},
            {n: body.strides[n] for n in fpn_inputs},
            out_channels=fpn_channels,
            extra_max_pool=True,
            norm=fpn_norm,
        )
        proposal_features = list(neck.out_names)
        roi_features = proposal_features[:-1]  # the max-pooled extra level feeds the RPN only
        return Trunk(family, True, body, neck, None, proposal_features, roi_features, fpn_channels, dict(neck.strides))
    level = "c4" if "c4" in names else names[-1]
    return Trunk(family, False, body, None, stage_head, [level], [level], int(body.out_channels[level]), dict(body.strides))


def build_box_branch(
    trunk: Trunk,
    num_classes: int,
    box_roi_pool: str | None = None,
    box_head: str = "2fc",
    box_sampling_ratio: int = 2,
    box_representation_size: int | None = None,
    box_pooled_size: int | None = None,
    **roi_heads_options,
) -> RoIHeads:
    """Pooler, box head and predictor for ``trunk`` (see the module docstring).

    Args:
        trunk: from :func:`build_trunk`.
        num_classes: K foreground classes (the predictor has K + 1 rows).
        box_roi_pool: ``"roi_align"`` or ``"roi_pool"``; ``None``: RoI max pooling on VGG
            without FPN (the papers), RoIAlign otherwise.
        box_head: ``"2fc"`` or ``"4conv1fc"`` (FPN and other heads; C4 and VGG have their own).
        box_sampling_ratio: RoIAlign sample points per bin side.
        box_representation_size: width of the FC head (1024; 4096 for VGG).
        box_pooled_size: side of the pooled grid (default 14 for a C4 stage head, else 7).
        roi_heads_options: keyword options of :class:`~detect.modeling.roi_heads.RoIHeads`
            (thresholds, sampling, box coder weights, post-processing).
    """
    if box_head not in BOX_HEADS:
        raise ValueError(f"box_head must be '2fc' or '4conv1fc', got {box_head!r}")
    vgg_paper = trunk.family == "vgg" and not trunk.fpn
    pooled_size = box_pooled_size or (14 if trunk.stage_head is not None else 7)
    pooler = RoIPooler(
        pooled_size,
        [trunk.strides[n] for n in trunk.roi_features],
        pooler_type=box_roi_pool or ("roi_pool" if vgg_paper else "roi_align"),
        sampling_ratio=box_sampling_ratio,
    )
    channels = trunk.channels
    if trunk.stage_head is not None:
        head = trunk.stage_head
    elif vgg_paper:
        head = VGGHead(channels * pooled_size**2, box_representation_size or 4096)
    elif box_head == "4conv1fc":
        head = ConvFCHead((channels, pooled_size, pooled_size), [256] * 4, [box_representation_size or 1024], norm="bn")
    else:
        head = TwoMLPHead(channels * pooled_size**2, box_representation_size or 1024)
    return RoIHeads(pooler, head, FastRCNNPredictor(head.out_channels, int(num_classes) + 1), **roi_heads_options)


def build_image_transform(
    trunk: Trunk,
    min_size: int | Sequence[int],
    max_size: int,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> ImageTransform:
    """Shorter-side resize, ImageNet normalisation by default, padding to the backbone's
    largest stride (at least 32 with an FPN, whose extra levels halve P5)."""
    # The RoI levels have the backbone's strides, so none exceeds its size_divisibility.
    divisibility = int(trunk.body.size_divisibility)
    return ImageTransform(
        min_size,
        max_size,
        image_mean if image_mean is not None else IMAGENET_MEAN,
        image_std if image_std is not None else IMAGENET_STD,
        size_divisibility=max(divisibility, 32) if trunk.fpn else divisibility,
    )
