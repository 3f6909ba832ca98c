"""Faster R-CNN (Ren et al., 2015) on every backbone family, with or without FPN.

``build_faster_rcnn`` is registered as ``"faster_rcnn"`` in :mod:`detect.modeling.registry`::

    model = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=3)
    model = build_detector("faster_rcnn", backbone="resnet50", num_classes=90,
                           weights="fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")  # torchvision's COCO model
    model = build_detector("faster_rcnn", backbone="resnet50", num_classes=90,
                           weights="fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth")  # its v2 (46.7 AP)

Variants (chosen by the backbone family and ``fpn``):

============================  =========================================================
``resnet*`` / ``dcn_resnet*``  ``fpn=True``: c2-c5 -> FPN P2-P6 (P6 = max-pool of P5, RPN only),
                               one anchor size per level (32..512) x 3 ratios, multi-scale
                               7x7 RoIAlign on P2-P5, two-FC head (1024): torchvision's
                               ``fasterrcnn_resnet50_fpn`` exactly; with ``fpn_norm="bn"``,
                               ``rpn_conv_depth=2``, ``box_head="4conv1fc"`` its ``_v2``.
                               ``fpn=False`` (C4): RPN on c4 with 5 sizes (32..512) x 3 ratios,
                               14x14 RoIAlign on c4, ResNet's ``layer4`` + average pool as
                               the box head (R50-C4 of detectron2).
``googlenet``                  ``fpn=True``: c3-c5 -> P3-P6, anchors 64..512, RoIAlign on P3-P5,
                               two-FC head. ``fpn=False``: c4 (inception 4e) single level,
                               14x14 RoIAlign, the inception-5 block + average pool as head.
``tv:vgg16``                   the paper's set-up: conv5_3 (stride 16), 3 scales (128, 256, 512)
                               x 3 ratios, 7x7 RoI *max* pooling, fc6/fc7 4096 with dropout.
any other backbone             ``fpn=True``: FPN over all its outputs; ``fpn=False``: its stride-16
                               output (else its deepest), 7x7 RoIAlign, two-FC head.
============================  =========================================================

Every option is plain data (numbers, strings, lists) so that ``config["model"]`` rebuilds
the model; the names follow torchvision's ``FasterRCNN``. ``weights`` loads our checkpoint,
a state dict, or torchvision's ``fasterrcnn_resnet50_fpn`` state dict (converted; see
:mod:`detect.modeling.weights`).
"""
from __future__ import annotations

from typing import Sequence

from detect.modeling.anchors import AnchorGenerator
from detect.modeling.box_branch import (
    backbone_defaults,
    backbone_family,
    build_box_branch,
    build_image_transform,
    build_trunk,
)
from detect.modeling.rpn import RegionProposalNetwork, RPNHead
from detect.modeling.meta_arch.two_stage import TwoStageDetector
from detect.modeling.weights import (
    TORCHVISION_ARCHITECTURES,
    load_detector_weights,
    read_detector_weights,
    torchvision_faster_rcnn_version,
)

DEFAULT_ASPECT_RATIOS = (0.5, 1.0, 2.0)
SINGLE_LEVEL_SIZES = (32, 64, 128, 256, 512)
PAPER_SIZES = (128, 256, 512)


def build_faster_rcnn(
    backbone="resnet50",
    fpn: bool = True,
    num_classes: int | None = None,
    weights=None,
    backbone_weights=None,
    backbone_norm: str | None = None,
    backbone_frozen_stages: int | None = None,
    backbone_options: dict | None = None,
    fpn_channels: int = 256,
    fpn_norm: str | None = None,
    # transform
    min_size: int | Sequence[int] = 800,
    max_size: int = 1333,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    # RPN
    rpn_anchor_sizes: Sequence | None = None,
    rpn_aspect_ratios: Sequence | None = None,
    rpn_anchor_generator: AnchorGenerator | None = None,
    rpn_anchor_stride_mode: str | None = None,
    rpn_conv_depth: int | None = None,
    rpn_pre_nms_top_n_train: int = 2000,
    rpn_pre_nms_top_n_test: int = 1000,
    rpn_post_nms_top_n_train: int = 2000,
    rpn_post_nms_top_n_test: int = 1000,
    rpn_nms_thresh: float = 0.7,
    rpn_fg_iou_thresh: float = 0.7,
    rpn_bg_iou_thresh: float = 0.3,
    rpn_batch_size_per_image: int = 256,
    rpn_positive_fraction: float = 0.5,
    rpn_score_thresh: float = 0.0,
    # box branch
    box_roi_pool: str | None = None,
    box_head: str | None = None,
    box_sampling_ratio: int = 2,
    box_representation_size: int | None = None,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.5,
    box_detections_per_img: int = 100,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_batch_size_per_image: int = 512,
    box_positive_fraction: float = 0.25,
    bbox_reg_weights: Sequence[float] | None = None,
    channels_last: bool = False,
) -> TwoStageDetector:
    """Build a Faster R-CNN (see the module docstring for the variants).

    Args:
        backbone: a backbone name for ``backbones.build_backbone`` (``"resnet50"``,
            ``"dcn_resnet50"``, ``"googlenet"``, ``"tv:vgg16"``, ...) or a built backbone
            object (``out_channels``/``strides`` dicts, ``size_divisibility``).
        fpn: put an FPN neck on the backbone.
        num_classes: K foreground classes (background is added internally).
        weights: ``None`` or the path (or state dict) of a whole detector: our checkpoint or
            state dict, or torchvision's ``fasterrcnn_resnet50_fpn`` state dict. A different
            class count re-initialises the class-specific predictor (and logs it).
        backbone_weights: ``None``, ``"torchvision"`` or a path, for the backbone alone.
        backbone_norm, backbone_frozen_stages: backbone options; by default frozen BN and a
            frozen stem + first stage when ``weights`` or ``backbone_weights`` is given
            (torchvision's ``trainable_backbone_layers=3``; for VGG conv1-conv2, as in the
            paper), trainable BN and nothing frozen otherwise. In the C4 variants
            ``backbone_frozen_stages=4`` also freezes the c5 stage that is the box head.
        backbone_options: further keyword options for ``build_backbone`` (e.g. ``layout``).
        fpn_channels: channels of the FPN levels.
        fpn_norm: ``None`` (default), ``"bn"`` or ``"frozen_bn"`` after each FPN convolution.
        min_size, max_size, image_mean, image_std: the image transform.
        rpn_anchor_sizes, rpn_aspect_ratios: anchors per level (see
            :class:`~detect.modeling.anchors.AnchorGenerator`); defaults depend on the variant.
        rpn_anchor_generator: an ``AnchorGenerator`` object instead (library use only: it is
            not plain data, so a config cannot hold it).
        rpn_anchor_stride_mode: ``"feature"`` (true strides) or ``"torchvision"`` (strides
            derived from the padded size, as torchvision; differs on P6 when P5 is odd).
            Default: ``"torchvision"`` when ``weights`` is a torchvision state dict, so that
            torchvision's models give torchvision's numbers, else ``"feature"``.
        rpn_conv_depth: 3x3 convolutions in the RPN head (default 1).
        rpn_*: RPN proposal counts, NMS, matching and sampling (torchvision's names).
        box_roi_pool: ``"roi_align"`` (default) or ``"roi_pool"`` (default for ``tv:vgg16``).
        box_head: for FPN models, ``"2fc"`` (default, two FC layers) or ``"4conv1fc"`` (four
            3x3 conv + BatchNorm, one FC: torchvision's v2). ``None`` picks ``"2fc"``, or the
            architecture of a torchvision v2 state dict given as ``weights`` (the same holds
            for ``fpn_norm`` and ``rpn_conv_depth``).
        box_sampling_ratio: RoIAlign sample points per bin side.
        box_representation_size: width of the FC box head (1024; 4096 for VGG).
        box_*, bbox_reg_weights: RoI sampling, post-processing and box coding.
        channels_last: NHWC convolutions in training and inference (faster on CPU; numbers
            change at float-rounding level, so the torchvision parity tests keep it off).
    """
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (>= 1), got {num_classes!r}")
    num_classes = int(num_classes)
    trained = weights is not None or backbone_weights is not None
    weights_state, weights_source = (None, None) if weights is None else read_detector_weights(weights)
    tv_version = None if weights_state is None else torchvision_faster_rcnn_version(weights_state)
    architecture = TORCHVISION_ARCHITECTURES[tv_version or 1]
    rpn_conv_depth = architecture["rpn_conv_depth"] if rpn_conv_depth is None else rpn_conv_depth
    fpn_norm = architecture["fpn_norm"] if fpn_norm is None else fpn_norm
    box_head = architecture["box_head"] if box_head is None else box_head
    if box_head not in ("2fc", "4conv1fc"):
        raise ValueError(f"box_head must be '2fc' or '4conv1fc', got {box_head!r}")
    if rpn_anchor_stride_mode is None:
        rpn_anchor_stride_mode = "torchvision" if tv_version is not None else "feature"

    name = backbone if isinstance(backbone, str) else None
    family = backbone_family(name) if name else "object"
    trunk = build_trunk(
        backbone,
        fpn,
        backbone_weights,
        backbone_defaults(family, trained, backbone_norm, backbone_frozen_stages, backbone_options),
        fpn_channels=fpn_channels,
        fpn_norm=fpn_norm,
    )
    proposal_features = trunk.proposal_features
    if fpn:
        default_sizes = tuple((8 * trunk.strides[n],) for n in proposal_features)
    else:
        default_sizes = (PAPER_SIZES,) if family == "vgg" else (SINGLE_LEVEL_SIZES,)

    anchor_generator = rpn_anchor_generator or AnchorGenerator(
        rpn_anchor_sizes if rpn_anchor_sizes is not None else default_sizes,
        rpn_aspect_ratios if rpn_aspect_ratios is not None else DEFAULT_ASPECT_RATIOS,
        stride_mode=rpn_anchor_stride_mode,
    )
    if anchor_generator.num_levels != len(proposal_features):
        raise ValueError(
            f"rpn_anchor_sizes give {anchor_generator.num_levels} levels but the RPN reads "
            f"{len(proposal_features)} ({proposal_features}); give one size list per level"
        )
    num_anchors = set(anchor_generator.num_anchors_per_location())
    if len(num_anchors) != 1:
        raise ValueError(f"every level needs the same number of anchors per position (shared RPN head), got {num_anchors}")
    rpn = RegionProposalNetwork(
        anchor_generator,
        RPNHead(trunk.channels, num_anchors.pop(), conv_depth=rpn_conv_depth),
        fg_iou_thresh=rpn_fg_iou_thresh,
        bg_iou_thresh=rpn_bg_iou_thresh,
        batch_size_per_image=rpn_batch_size_per_image,
        positive_fraction=rpn_positive_fraction,
        pre_nms_top_n={"train": rpn_pre_nms_top_n_train, "test": rpn_pre_nms_top_n_test},
        post_nms_top_n={"train": rpn_post_nms_top_n_train, "test": rpn_post_nms_top_n_test},
        nms_thresh=rpn_nms_thresh,
        score_thresh=rpn_score_thresh,
    )

    roi_heads = build_box_branch(
        trunk,
        num_classes,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_sampling_ratio=box_sampling_ratio,
        box_representation_size=box_representation_size,
        fg_iou_thresh=box_fg_iou_thresh,
        bg_iou_thresh=box_bg_iou_thresh,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=bbox_reg_weights,
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
    )
    transform = build_image_transform(trunk, min_size, max_size, image_mean, image_std)
    model = TwoStageDetector(
        transform, trunk.body, trunk.neck, rpn, roi_heads, num_classes, proposal_features, trunk.roi_features,
        channels_last=channels_last,
    )
    if weights_state is not None:
        load_detector_weights(model, weights_state, where=weights_source)
    return model
