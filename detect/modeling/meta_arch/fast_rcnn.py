"""Fast R-CNN (Girshick, "Fast R-CNN", ICCV 2015) on every backbone family, with or without FPN.

``build_fast_rcnn`` is registered as ``"fast_rcnn"`` in :mod:`detect.modeling.registry`::

    model = build_detector("fast_rcnn", num_classes=20, backbone_weights="torchvision")  # the paper's VGG-16
    model = build_detector("fast_rcnn", backbone="resnet50", fpn=True, num_classes=3)
    model = build_detector("fast_rcnn", num_classes=3, proposal_generator="selective_search")

    losses = model(images, targets)              # every target carries "proposals" [P, 4]
    outputs = model.predict(images, proposals=proposals)   # or the model's own generator

The paper's facts
-----------------
- The whole image goes through the convolutional network once; each object proposal (about
  2000 per image from selective search, "fast" mode) is cut out of the last convolutional
  feature map by an *RoI pooling* layer: the RoI is divided into an H x W = 7 x 7 grid of
  sub-windows of about ``h/H x w/W`` and each is max-pooled (a one-level spatial pyramid
  pooling), which feeds the fully connected layers. VGG-16: conv5_3 (stride 16), its last
  max-pool replaced by RoI pooling; fc6 and fc7 (4096, ReLU, dropout 0.5) are initialised
  from the ImageNet classifier; its last FC layer and softmax are replaced by two sibling
  layers, a (K + 1)-way softmax and class-specific box regressors (4 K outputs), initialised
  from zero-mean Gaussians of std 0.01 and 0.001, biases 0 (here: :class:`FastRCNNPredictor`).
- Single scale: the shorter side 600 px, the longer at most 1000 px.
- Training: SGD on hierarchically sampled mini-batches of N = 2 images and R = 128 RoIs (64
  per image), 25 % of them foreground (proposals with IoU >= 0.5 with a ground-truth box,
  labelled with its class) and the rest background, from the proposals whose best IoU is in
  [0.1, 0.5) (the lower bound acts as a heuristic for hard example mining). Images are
  flipped horizontally with probability 0.5; no other augmentation. The ground-truth boxes
  are among the RoIs (as in the reference implementation).
- Multi-task loss ``L = L_cls(p, u) + lambda [u >= 1] L_loc(t^u, v)``, lambda = 1: cross
  entropy over the K + 1 classes, plus smooth L1 (quadratic below 1, ``box_loss_beta=1``)
  on the true class's box deltas of foreground RoIs; the regression targets are normalised
  to zero mean and unit variance, which the reference implementation does with fixed means 0
  and standard deviations (0.1, 0.1, 0.2, 0.2): the box coder weights (10, 10, 5, 5).
- Schedule (VOC): learning rate 0.001 for 30k mini-batch iterations, then 0.0001 for 10k;
  momentum 0.9, weight decay 0.0005. VGG-16 fine-tunes conv3_1 and up (conv1 and conv2
  fixed). (The paper's doubled learning rate for biases is not implemented here.)
- Test: the image and its ~2000 proposals in one pass; per class, the regressed boxes are
  scored by the softmax and suppressed by NMS independently per class (0.3 in the reference
  implementation), at most 100 detections per image, scores above 0.05.
- Truncated SVD (section 3.1): fc6 to its top 1024 and fc7 to its top 256 singular values,
  each as two layers without a non-linearity between them, cuts detection time by more than
  30 % for 0.3 points of mAP (66.9 -> 66.6 on VOC 2007): ``svd_ranks={"fc6": 1024, "fc7": 256}``
  (:mod:`detect.modeling.svd`; test time only, checkpoints stay full rank).
- VOC 2007 test mAP 66.9 (VGG-16, trained on 07 trainval), 70.0 with 07 + 12; 9.5 h of
  training against R-CNN's 84 h; 0.32 s per image at test time without the proposals (R-CNN
  47 s), 0.22 s with SVD.

Implementation
--------------
A :class:`FastRCNN` is the two-stage meta-architecture
(:class:`~detect.modeling.meta_arch.two_stage.TwoStageDetector`) without an RPN: the
backbone, the neck and the box branch are built exactly as Faster R-CNN's, by the same
:mod:`detect.modeling.box_branch` functions and the same option names (``backbone``,
``fpn``, ``backbone_*``, ``box_*``, ...), so any backbone (C4, FPN, VGG) works. Only the
sampling and loss defaults differ (the paper's: 64 RoIs per image, background from IoU
0.1, smooth L1 with beta 1, NMS 0.3, 600 / 1000 px).

Proposals are ``list[Tensor[P, 4]]`` xyxy in the pixels of the images as given, best
first; P = 0 is allowed (in training the ground-truth boxes still give RoIs; at test time
such an image has no detections). They are mapped into network-input pixels by the image
transform: target ``"proposals"`` with the boxes, ``predict(images, proposals=...)``
through ``ImageTransform.scale_proposals``. The first ``proposals_per_image_train`` /
``_test`` of each image are used (2000, the paper's count). Without proposals, ``predict``
runs the model's proposal generator (``proposal_generator="selective_search"``:
:class:`detect.proposals.selective_search.SelectiveSearch`, about a second per image on a
CPU), and without one it raises a one-line error saying how to give them.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch
from torch import Tensor, nn

from detect.errors import UserInputError
from detect.modeling.base import validate_proposals
from detect.modeling.box_branch import (
    backbone_defaults,
    backbone_family,
    build_box_branch,
    build_image_transform,
    build_trunk,
)
from detect.modeling.box_heads import VGGHead
from detect.modeling.meta_arch.two_stage import TwoStageDetector
from detect.modeling.svd import use_truncated_svd_
from detect.modeling.transform import ImageBatch, ImageTransform
from detect.modeling.weights import load_detector_weights
from detect.proposals.generators import build_proposal_generator, propose_on_the_fly

logger = logging.getLogger(__name__)

NO_PROPOSALS = (
    "Fast R-CNN classifies given proposals, and none were given: call "
    "predict(images, proposals=[Tensor[P, 4] per image]), give the dataset a proposal file "
    "(data.<split>.proposal_file=..., made by tools/make_proposals.py), or build the model with "
    "proposal_generator='selective_search' (model.proposal_generator=selective_search in a config)"
)


class FastRCNN(TwoStageDetector):
    """The two-stage detector on given proposals (see the module docstring).

    Args:
        transform, backbone, neck, roi_heads, num_classes, roi_features, channels_last: as
            :class:`~detect.modeling.meta_arch.two_stage.TwoStageDetector` (no RPN).
        proposal_generator: ``None`` or a callable ``generator(image Tensor[3, H, W]) ->
            Tensor[P, 4]`` (input-image pixels, best first) used when no proposals are given.
        proposals_per_image: ``{"train": int, "test": int}``: how many of each image's
            proposals (the first, i.e. the best) are used.
    """

    accepts_proposals = True

    def __init__(
        self,
        transform: ImageTransform,
        backbone: nn.Module,
        neck: nn.Module | None,
        roi_heads: nn.Module,
        num_classes: int,
        roi_features: list[str],
        proposal_generator=None,
        proposals_per_image: dict[str, int] | None = None,
        channels_last: bool = False,
    ):
        super().__init__(transform, backbone, neck, None, roi_heads, num_classes, [], roi_features,
                         channels_last=channels_last)
        self.proposal_generator = proposal_generator
        # On-the-fly proposals show a bar over the images: None = when stderr is a terminal.
        self.proposal_progress: bool | None = None
        counts = dict(proposals_per_image or {"train": 2000, "test": 2000})
        if set(counts) != {"train", "test"} or any(int(v) < 1 for v in counts.values()):
            raise ValueError(f"proposals_per_image must be {{'train': n, 'test': n}} with n >= 1, got {counts}")
        self.proposals_per_image = {k: int(v) for k, v in counts.items()}

    def extra_repr(self) -> str:
        generator = type(self.proposal_generator).__name__ if self.proposal_generator is not None else None
        return f"proposals_per_image={self.proposals_per_image}, proposal_generator={generator}"

    # ------------------------------------------------------------------ proposals
    def generate_proposals(self, images: list[Tensor]) -> list[Tensor]:
        """The model's proposal generator on each image (input-image pixels); raises the
        one-line "how to give proposals" error when the model has none."""
        if self.proposal_generator is None:
            raise UserInputError(NO_PROPOSALS)
        generated = propose_on_the_fly(self.proposal_generator, images, self.proposal_progress)
        return [torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4).to(image.device)
                for boxes, image in zip(generated, images)]

    def _proposals(self, batch: ImageBatch, features, targets, training: bool, given):
        if given is None:
            # loss(): the targets' proposals, which the transform scaled with the boxes
            proposals, limit = [t["proposals"] for t in targets], self.proposals_per_image["train"]
        else:
            proposals, limit = self.transform.scale_proposals(given, batch), self.proposals_per_image["test"]
        device = batch.tensor.device
        return [p[:limit].to(device=device, dtype=torch.float32) for p in proposals], {}

    # ------------------------------------------------------------------ Detector
    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        lacking = [i for i, t in enumerate(targets) if "proposals" not in t]
        if lacking:
            if self.proposal_generator is None:
                raise UserInputError(f"target {lacking[0]} has no 'proposals': {NO_PROPOSALS}")
            if not getattr(self, "_warned_generating", False):
                self._warned_generating = True
                logger.warning("training targets without 'proposals': computing them with %s on every step "
                               "(slow); precompute a proposal file with tools/make_proposals.py",
                               type(self.proposal_generator).__name__)
            generated = self.generate_proposals([images[i] for i in lacking])
            targets = list(targets)
            for i, boxes in zip(lacking, generated):
                targets[i] = {**targets[i], "proposals": boxes}
        validate_proposals([t["proposals"] for t in targets], len(images))
        return super()._compute_losses(images, targets)

    def _compute_predictions(self, images: list[Tensor], proposals: list[Tensor] | None = None) -> list[dict]:
        if proposals is None:
            proposals = self.generate_proposals(images)
        return super()._compute_predictions(images, proposals=proposals)


def _take_classifier_fc(body: nn.Module, head: VGGHead) -> None:
    """Move the backbone's ImageNet fc6/fc7 (``classifier_fc``) into the box head: the head
    then holds the only copy, so checkpoints carry them once (they are 120M parameters)."""
    layers = getattr(body, "classifier_fc", None)
    if layers is None:
        raise ValueError("the backbone has no ImageNet fc6/fc7 (classifier_fc) to initialise the box head from")
    for name in ("fc6", "fc7"):
        ours, theirs = getattr(head, name), layers[name]
        if ours.weight.shape != theirs.weight.shape:
            raise ValueError(f"box head {name} is {tuple(ours.weight.shape)} but the ImageNet {name} is "
                             f"{tuple(theirs.weight.shape)}; leave box_representation_size at 4096")
        setattr(head, name, theirs)
    if "classifier" in body._modules:
        del body.classifier  # registered there by classifier_fc=True; now owned by the head


def build_fast_rcnn(
    backbone="tv:vgg16",
    fpn: bool = False,
    num_classes: int | None = None,
    weights=None,
    backbone_weights=None,
    backbone_norm: str | None = None,
    backbone_frozen_stages: int | None = None,
    backbone_options: dict | None = None,
    fpn_channels: int = 256,
    fpn_norm: str | None = None,
    # transform
    min_size: int | Sequence[int] = 600,
    max_size: int = 1000,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
    # proposals
    proposal_generator: str | None = None,
    proposal_generator_options: dict | None = None,
    proposals_per_image_train: int = 2000,
    proposals_per_image_test: int = 2000,
    # box branch
    box_roi_pool: str | None = None,
    box_head: str = "2fc",
    box_head_from_classifier: bool | None = None,
    box_sampling_ratio: int = 2,
    box_representation_size: int | None = None,
    box_score_thresh: float = 0.05,
    box_nms_thresh: float = 0.3,
    box_detections_per_img: int = 100,
    box_fg_iou_thresh: float = 0.5,
    box_bg_iou_thresh: float = 0.5,
    box_bg_iou_low_thresh: float = 0.1,
    box_batch_size_per_image: int = 64,
    box_positive_fraction: float = 0.25,
    box_loss_beta: float = 1.0,
    bbox_reg_weights: Sequence[float] | None = None,
    svd_ranks: dict | None = None,
    channels_last: bool = False,
) -> FastRCNN:
    """Build a Fast R-CNN (see the module docstring).

    The backbone, FPN, transform and ``box_*`` options are those of
    :func:`~detect.modeling.meta_arch.faster_rcnn.build_faster_rcnn` (same meaning, the
    paper's defaults: ``tv:vgg16`` without FPN, RoI max pooling, 600 / 1000 px, 64 RoIs per
    image, background IoU in ``[box_bg_iou_low_thresh, box_bg_iou_thresh)`` = [0.1, 0.5),
    smooth L1 beta 1, NMS 0.3). Further:

    Args:
        proposal_generator: ``None`` (proposals are given) or ``"selective_search"``: the
            model computes proposals for images that come without them.
        proposal_generator_options: keyword options of the generator.
        proposals_per_image_train, proposals_per_image_test: the best proposals used per image.
        box_head_from_classifier: initialise VGG's fc6/fc7 from the backbone's ImageNet
            classifier (the paper). Default: when ``backbone_weights`` is given to a VGG
            backbone without FPN.
        svd_ranks: ``{"fc6": t6, "fc7": t7}``: test-time truncated SVD of the box head's FC
            layers (the paper: 1024 and 256); training and checkpoints are unchanged.
    """
    if num_classes is None or int(num_classes) < 1:
        raise ValueError(f"num_classes must be the number of foreground classes (>= 1), got {num_classes!r}")
    num_classes = int(num_classes)
    generator = build_proposal_generator(proposal_generator, proposal_generator_options)
    trained = weights is not None or backbone_weights is not None
    name = backbone if isinstance(backbone, str) else None
    family = backbone_family(name) if name else "object"
    vgg_paper = family == "vgg" and not fpn
    if box_head_from_classifier is None:
        box_head_from_classifier = vgg_paper and backbone_weights is not None
    if box_head_from_classifier and not vgg_paper:
        raise ValueError("box_head_from_classifier needs a VGG backbone without FPN (fc6/fc7 of its classifier)")
    options = backbone_defaults(family, trained, backbone_norm, backbone_frozen_stages, backbone_options)
    if box_head_from_classifier:
        options["classifier_fc"] = True
    trunk = build_trunk(backbone, fpn, backbone_weights, options, fpn_channels=fpn_channels, fpn_norm=fpn_norm)
    roi_heads = build_box_branch(
        trunk,
        num_classes,
        box_roi_pool=box_roi_pool,
        box_head=box_head,
        box_sampling_ratio=box_sampling_ratio,
        box_representation_size=box_representation_size,
        fg_iou_thresh=box_fg_iou_thresh,
        bg_iou_thresh=box_bg_iou_thresh,
        bg_iou_low_thresh=box_bg_iou_low_thresh,
        batch_size_per_image=box_batch_size_per_image,
        positive_fraction=box_positive_fraction,
        bbox_reg_weights=bbox_reg_weights,
        box_loss_beta=box_loss_beta,
        score_thresh=box_score_thresh,
        nms_thresh=box_nms_thresh,
        detections_per_img=box_detections_per_img,
    )
    if box_head_from_classifier:
        _take_classifier_fc(trunk.body, roi_heads.box_head)
    if svd_ranks:
        use_truncated_svd_(roi_heads.box_head, svd_ranks)

    model = FastRCNN(
        build_image_transform(trunk, min_size, max_size, image_mean, image_std),
        trunk.body,
        trunk.neck,
        roi_heads,
        num_classes,
        trunk.roi_features,
        proposal_generator=generator,
        proposals_per_image={"train": proposals_per_image_train, "test": proposals_per_image_test},
        channels_last=channels_last,
    )
    if weights is not None:
        load_detector_weights(model, weights)
    return model
