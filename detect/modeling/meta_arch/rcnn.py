"""R-CNN (Girshick, Donahue, Darrell, Malik, "Rich feature hierarchies for accurate object
detection and semantic segmentation", CVPR 2014): warped proposal crops -> CNN -> per-class SVMs.

The paper's facts this family implements
----------------------------------------
- ~2000 selective-search proposals per image ("fast" mode), given (``predict(images,
  proposals=...)``, the dataset's ``proposal_file=``) or computed on the fly
  (``proposal_generator="selective_search"``, slow).
- Each proposal is dilated by p = 16 pixels of context *at the warped scale* and warped
  anisotropically to the CNN's input size, the region outside the image filled with the mean
  (Appendix A, "warp" with context padding): :mod:`detect.modeling.crops`. The paper's Caffe
  AlexNet takes 227 x 227; torchvision's classifiers were trained at 224, so ``crop_size``
  defaults to **224** (``context_pad=16`` warped pixels); the AlexNet VOC recipe sets 227
  (torchvision's AlexNet gives the same 6 x 6 pool5 at 224 and 227). Crops are cut from the
  ImageNet-normalised image, where the mean is 0, so the fill is 0 there.
- The CNN: AlexNet (``backbone="tv:alexnet"``: conv1..pool5, then fc6/fc7 with dropout, in
  torchvision's ``classifier.1`` / ``classifier.4`` layout so its ImageNet weights load), VGG-16
  (``tv:vgg16``, the paper's later 66.0 mAP row), or any backbone of the table (global
  average pooling of its last feature map, then ``fc_dims`` new fully connected layers, none
  by default: the pooled feature is the "fc7" feature).
- Stage 1, fine-tuning (``model(images, targets)`` in training mode, run by the engine's
  Trainer): a new (K + 1)-way classifier ``cls_score`` replaces the ImageNet one; proposals
  (and the ground-truth boxes) with IoU >= 0.5 with a ground-truth box take its class, the
  rest are background; each mini-batch holds 128 crops, 32 foreground + 96 background
  (fewer foreground when the images lack them, then filled with background), drawn
  uniformly over the batch's images (one ``BalancedPositiveNegativeSampler`` call over them
  all, as the paper's 128-window batches); SGD lr 0.001 with the new layer at 10x
  (``new_layer_lr_mult``: its gradient is multiplied, which for SGD is the same step; not
  for Adam); random horizontal mirroring of each crop.
- Stage 2: one linear SVM per class on the fc7 features (``svm_feature="fc7"``; ``"pool5"``
  on request) scaled to a mean norm of 20, positives the ground-truth boxes only, negatives
  proposals with IoU < 0.3, hard-negative mining (:mod:`detect.modeling.linear_svm`).
- Stage 3: class-specific bounding-box regression on **pool5** features, ridge lambda 1000,
  trained on proposals with IoU > 0.6 with their best ground-truth box, targets
  ``(dx, dy, log dw, log dh)`` (``BoxCoder`` with unit weights) (Appendix C; 54.2 -> 58.5 mAP
  on VOC 2010 in the paper).
- Test: crops -> CNN -> SVM scores of every proposal for every class, class-specific box
  regression, greedy NMS per class at IoU 0.3, the best ``detections_per_img``.
  The paper: 13 s/image on a GPU, 53 s on a CPU (Table / Sec. 2.2).

Scores: the outputs' ``scores`` are ``sigmoid(svm margin)`` so that they lie in 0..1 as the
contract says (monotone, so rankings and mAP are the SVMs'); margin 0 is 0.5,
``default_predict_score_thresh``. Before stage 2 has run (``svms.trained`` is False, e.g.
while fine-tuning is validated) the fine-tuned softmax probabilities are used instead.
``box_regression=False`` (or the regressor not trained yet) returns the proposal boxes.

Bad proposals: non-finite boxes are dropped, boxes are clipped to the image and those
thinner than ``min_proposal_size`` (1 px) after clipping are dropped, at training and test
time; an image without any (valid) proposal gets no detections (and, in training, only its
ground-truth boxes as foreground crops). A proposal tensor of the wrong shape or dtype is
an error naming the image (``validate_proposals``).

Multi-stage training: ``training_stages`` names the stages :mod:`detect.engine.stages`
runs in order (``tools/train.py CONFIG``); the SVMs and the regressor are buffers of
``svms`` and ``bbox_regressor`` (state-dict tensors).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, remove_small_boxes

from detect.errors import UserInputError
from detect.modeling.base import Detector
from detect.modeling.box_coder import BoxCoder
from detect.modeling.crops import valid_proposals, warp_crops
from detect.modeling.linear_svm import BoxRegressor, LinearSVMs
from detect.modeling.matcher import Matcher
from detect.modeling.sampler import BalancedPositiveNegativeSampler
from detect.modeling.transform import IMAGENET_MEAN, IMAGENET_STD, clip_boxes, traceable_batched_nms
from detect.proposals.generators import build_proposal_generator, propose_on_the_fly

#: torchvision classifier families whose own fc6/fc7 the CNN keeps: (pool5 grid, layer order).
#: AlexNet's classifier is Dropout, fc6, ReLU, Dropout, fc7, ReLU, fc8; VGG's fc6, ReLU, Dropout, ...
_CLASSIFIER_LAYOUTS = {"alexnet": ((6, 6), "dropout_first"), "vgg": ((7, 7), "dropout_last")}


def _family(backbone: str) -> str | None:
    name = backbone.removeprefix("tv:")
    for family in _CLASSIFIER_LAYOUTS:
        if name.startswith(family):
            return family
    return None


def classifier_fc(in_features: int, dims: Sequence[int], layout: str, dropout: float,
                  linears: Sequence[nn.Linear] | None = None) -> nn.Sequential:
    """fc6, fc7, ... with ReLU and dropout, in torchvision's order for ``layout`` (AlexNet:
    dropout first; VGG: dropout last); ``linears`` (the ImageNet fc6 / fc7 of the backbone's
    ``classifier_fc``) are used as they are, else new layers of ``dims`` are made."""
    layers: list[nn.Module] = []
    width = in_features
    for i, dim in enumerate(dims):
        linear = linears[i] if linears is not None else nn.Linear(width, dim)
        if layout == "dropout_first":
            layers += [nn.Dropout(dropout), linear, nn.ReLU(inplace=True)]
        else:
            layers += [linear, nn.ReLU(inplace=True), nn.Dropout(dropout)]
        width = dim
    return nn.Sequential(*layers)


class CropCNN(nn.Module):
    """The crop classifier's trunk: ``crops [N, 3, S, S] -> (pool5 [N, D5], feature [N, D])``.

    ``body`` is a backbone of the table; its last feature map is pooled (``pool``: a fixed
    grid for AlexNet/VGG, 1 x 1 global average otherwise) and flattened into pool5, and
    ``fc`` (possibly empty) turns pool5 into the feature the SVMs see (fc7).
    """

    def __init__(self, body: nn.Module, pool_size: tuple[int, int], fc: nn.Sequential, pool5_dim: int,
                 feature_dim: int):
        super().__init__()
        self.body = body
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.fc = fc
        self.pool5_dim = int(pool5_dim)
        self.feature_dim = int(feature_dim)
        self.feature_name = list(body.out_channels)[-1]

    def forward(self, crops: Tensor) -> tuple[Tensor, Tensor]:
        features = self.body(crops)[self.feature_name]
        pool5 = torch.flatten(self.pool(features), 1)
        return pool5, self.fc(pool5) if len(self.fc) else pool5


class RCNN(Detector):
    """R-CNN: see the module docstring for the paper's facts and the contract."""

    accepts_proposals = True
    training_stages = ("finetune", "features", "svm", "bbox_reg")
    class_specific_prefixes = ("cls_score.", "svms.", "bbox_regressor.")
    default_predict_score_thresh = 0.5

    def __init__(self, cnn: CropCNN, num_classes: int, *, crop_size: int = 224, context_pad: float = 16.0,
                 crop_sampling_ratio: int = 1, image_mean: Sequence[float] = IMAGENET_MEAN,
                 image_std: Sequence[float] = IMAGENET_STD, svm_feature: str = "fc7",
                 fg_iou_thresh: float = 0.5, batch_size_per_batch: int = 128, positive_fraction: float = 0.25,
                 mirror: bool = True, new_layer_lr_mult: float = 10.0, score_thresh: float = 0.05,
                 nms_thresh: float = 0.3, detections_per_img: int = 100, box_regression: bool = True,
                 min_proposal_size: float = 1.0, crop_batch_size: int = 256, proposal_generator=None):
        super().__init__()
        if svm_feature not in ("fc7", "pool5"):
            raise UserInputError(f"svm_feature={svm_feature!r}: expected 'fc7' or 'pool5'")
        self.cnn = cnn
        self.num_classes = int(num_classes)
        self.crop_size = int(crop_size)
        self.context_pad = float(context_pad)
        self.crop_sampling_ratio = int(crop_sampling_ratio)
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32)[:, None, None], persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32)[:, None, None], persistent=False)
        self.svm_feature = svm_feature
        svm_dim = cnn.feature_dim if svm_feature == "fc7" else cnn.pool5_dim
        self.cls_score = nn.Linear(cnn.feature_dim, self.num_classes + 1)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.zeros_(self.cls_score.bias)
        if new_layer_lr_mult != 1.0:
            for param in self.cls_score.parameters():
                param.register_hook(lambda grad, mult=float(new_layer_lr_mult): grad * mult)
        self.new_layer_lr_mult = float(new_layer_lr_mult)
        self.svms = LinearSVMs(self.num_classes, svm_dim)
        self.bbox_regressor = BoxRegressor(self.num_classes, cnn.pool5_dim)
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, fg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_batch, positive_fraction)
        self.mirror = bool(mirror)
        self.score_thresh = score_thresh
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)
        self.box_regression = bool(box_regression)
        self.min_proposal_size = float(min_proposal_size)
        self.crop_batch_size = int(crop_batch_size)
        self.proposal_generator = proposal_generator
        # On-the-fly proposals show a bar over the images: None = when stderr is a terminal.
        self.proposal_progress: bool | None = None

    def extra_repr(self) -> str:
        return (f"crop_size={self.crop_size}, context_pad={self.context_pad}, svm_feature={self.svm_feature}, "
                f"nms_thresh={self.nms_thresh}, box_regression={self.box_regression}")

    # ------------------------------------------------------------------ parts
    def normalize(self, image: Tensor) -> Tensor:
        return (image - self.image_mean) / self.image_std

    def crops(self, image: Tensor, boxes: Tensor) -> Tensor:
        """Warped crops with context of ``boxes`` in the (raw, 0..1) ``image``."""
        return warp_crops(self.normalize(image), boxes, self.crop_size, self.context_pad, self.crop_sampling_ratio)

    def clean_proposals(self, proposals: Tensor, image: Tensor) -> Tensor:
        return valid_proposals(proposals.to(image.device, torch.float32), image.shape[-2:], self.min_proposal_size)[0]

    def proposals_for(self, images: list[Tensor], proposals: list[Tensor] | None) -> list[Tensor]:
        if proposals is None:
            if self.proposal_generator is None:
                raise UserInputError(
                    "R-CNN needs region proposals: pass predict(images, proposals=[Tensor[P, 4], ...]), give the "
                    "dataset a proposal_file (tools/make_proposals.py), or build the model with "
                    "proposal_generator='selective_search' (slow)")
            proposals = propose_on_the_fly(self.proposal_generator, images, self.proposal_progress)
        return [self.clean_proposals(p, image) for p, image in zip(proposals, images)]

    @torch.no_grad()
    def extract_features(self, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """``(pool5 [P, D5], fc7 [P, D])`` of ``boxes`` in ``image``, ``crop_batch_size`` crops at a time."""
        pool5s, feats = [], []
        for start in range(0, boxes.shape[0], self.crop_batch_size):
            pool5, feat = self.cnn(self.crops(image, boxes[start:start + self.crop_batch_size]))
            pool5s.append(pool5)
            feats.append(feat)
        if not pool5s:
            return image.new_zeros((0, self.cnn.pool5_dim)), image.new_zeros((0, self.cnn.feature_dim))
        return torch.cat(pool5s), torch.cat(feats)

    def svm_input(self, pool5: Tensor, feature: Tensor) -> Tensor:
        return feature if self.svm_feature == "fc7" else pool5

    # ------------------------------------------------------------------ stage 1: fine-tuning
    def finetune_labels(self, boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Tensor:
        """Class of each box: its best ground truth's at IoU >= 0.5, else 0 (background)."""
        if gt_boxes.shape[0] == 0:
            return torch.zeros(boxes.shape[0], dtype=torch.int64, device=boxes.device)
        matches = self.matcher(box_iou(gt_boxes, boxes))
        return torch.where(matches >= 0, gt_labels[matches.clamp(min=0)], torch.zeros_like(matches))

    def sample_finetune_batch(self, images: list[Tensor], targets: list[dict]) -> tuple[list[Tensor], Tensor]:
        """Per image the sampled boxes, and the labels of all of them in order: 128 crops per
        batch, at most 25% foreground, drawn over the batch's images together."""
        candidates, labels = [], []
        for image, target in zip(images, targets):
            proposals = target.get("proposals")
            if proposals is None:
                proposals = self.proposals_for([image], None)[0]
            else:
                proposals = self.clean_proposals(proposals, image)
            boxes = torch.cat((target["boxes"].to(proposals), proposals))
            candidates.append(boxes)
            labels.append(self.finetune_labels(boxes, target["boxes"].to(boxes), target["labels"].to(boxes.device)))
        counts = [b.shape[0] for b in candidates]
        positive, negative = self.sampler([torch.cat(labels)])
        chosen = (positive[0] | negative[0]).split(counts)
        return [b[c] for b, c in zip(candidates, chosen)], torch.cat([lab[c] for lab, c in zip(labels, chosen)])

    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        boxes, labels = self.sample_finetune_batch(images, targets)
        crops = torch.cat([self.crops(image, b) for image, b in zip(images, boxes)])
        if crops.shape[0] == 0:  # no ground truth and no proposal anywhere in the batch
            return {"loss_cls": sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)}
        if self.mirror:
            flip = torch.rand(crops.shape[0], device=crops.device) < 0.5
            crops = torch.where(flip[:, None, None, None], crops.flip(-1), crops)
        _, feature = self.cnn(crops)
        return {"loss_cls": F.cross_entropy(self.cls_score(feature), labels)}

    # ------------------------------------------------------------------ inference
    def score_and_regress(self, pool5: Tensor, feature: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """``(scores [P, K] in 0..1, boxes [P, K, 4])`` for proposals ``boxes`` [P, 4]."""
        if bool(self.svms.trained):
            scores = torch.sigmoid(self.svms(self.svm_input(pool5, feature)))
        else:
            scores = F.softmax(self.cls_score(feature), dim=1)[:, 1:]
        if self.box_regression and bool(self.bbox_regressor.trained):
            refined = self.box_coder.decode(self.bbox_regressor(pool5), boxes)
        else:
            refined = boxes[:, None, :].expand(-1, self.num_classes, -1)
        return scores, refined

    def select_detections(self, scores: Tensor, boxes: Tensor, image_size) -> dict[str, Tensor]:
        """Threshold, per-class NMS and top-k of ``scores [P, K]`` / ``boxes [P, K, 4]``."""
        boxes = clip_boxes(boxes, tuple(image_size)).reshape(-1, 4)
        labels = torch.arange(1, self.num_classes + 1, device=scores.device).expand(scores.shape[0], -1).reshape(-1)
        scores = scores.reshape(-1)
        keep = torch.where(scores > self.score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = remove_small_boxes(boxes, min_size=1e-2)
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = traceable_batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
        return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}

    def _compute_predictions(self, images: list[Tensor], proposals: list[Tensor] | None = None) -> list[dict]:
        results = []
        for image, boxes in zip(images, self.proposals_for(images, proposals)):
            pool5, feature = self.extract_features(image, boxes)
            scores, refined = self.score_and_regress(pool5, feature, boxes)
            results.append(self.select_detections(scores.float(), refined.float(), image.shape[-2:]))
        return results


def build_crop_cnn(backbone: str = "tv:alexnet", backbone_weights=None, fc_dims: Sequence[int] | None = None,
                   dropout: float = 0.5, frozen_stages: int = -1, norm: str = "bn") -> CropCNN:
    """The CNN of :class:`RCNN`: ``backbone`` of the table up to its last feature map; for
    AlexNet and VGG their own ImageNet fc6 / fc7 (the backbone's ``classifier_fc``, loaded with
    ``backbone_weights``) unless ``fc_dims`` says otherwise; for any other backbone global
    average pooling and ``fc_dims`` new layers (default none)."""
    from backbones import build_backbone

    family = _family(backbone)
    probe = build_backbone(backbone, weights=None, norm=norm)
    last = list(probe.out_channels)[-1]
    channels = probe.out_channels[last]
    del probe
    own_fc = family is not None and fc_dims is None
    options = {"classifier_fc": True} if own_fc else {}
    body = build_backbone(backbone, weights=backbone_weights, frozen_stages=frozen_stages, norm=norm,
                          out_features=[last], **options)
    linears = None
    if own_fc:
        taken = body.pop_classifier_fc()  # fc6 / fc7 with the weights' values; off the backbone
        linears = [taken["fc6"], taken["fc7"]]
    if family is not None:
        pool_size, layout = _CLASSIFIER_LAYOUTS[family]
        dims = (4096, 4096) if fc_dims is None else tuple(fc_dims)
    else:
        pool_size, layout = (1, 1), "dropout_last"
        dims = () if fc_dims is None else tuple(fc_dims)
    pool5_dim = channels * pool_size[0] * pool_size[1]
    fc = classifier_fc(pool5_dim, dims, layout, dropout, linears)
    return CropCNN(body, pool_size, fc, pool5_dim, dims[-1] if dims else pool5_dim)


def build_rcnn(num_classes: int, backbone: str = "tv:alexnet", backbone_weights=None, fc_dims=None,
               dropout: float = 0.5, frozen_stages: int = -1, norm: str = "bn", crop_size: int = 224,
               context_pad: float = 16.0, proposal_generator: str | None = None,
               proposal_generator_options: dict | None = None, stage_options: dict | None = None, **options) -> RCNN:
    """Build R-CNN (see the module docstring).

    Args:
        num_classes: K foreground classes.
        backbone: ``"tv:alexnet"`` (the paper), ``"tv:vgg16"``, or any name of the backbone table.
        backbone_weights: None, ``"torchvision"`` (ImageNet; for AlexNet / VGG also fc6 / fc7)
            or a path.
        fc_dims: fully connected layers after pool5 (AlexNet / VGG: (4096, 4096); others: none).
        crop_size, context_pad: the warp (224 and 16 warped pixels by default; the paper 227 / 16).
        proposal_generator: None (proposals given) or ``"selective_search"`` (on the fly, with
            ``proposal_generator_options`` for :class:`detect.proposals.selective_search.SelectiveSearch`).
        stage_options: options of the training stages (``detect.engine.stages.DEFAULT_STAGE_OPTIONS``:
            ``svm``, ``bbox_reg``, ``features``), kept as ``model.stage_options`` (plain data).
        **options: :class:`RCNN` keywords (``svm_feature``, ``score_thresh``, ``nms_thresh``,
            ``detections_per_img``, ``box_regression``, ``batch_size_per_batch``,
            ``positive_fraction``, ``new_layer_lr_mult``, ``mirror``, ``crop_batch_size``, ...).
    """
    if num_classes is None or int(num_classes) < 1:
        raise UserInputError(f"R-CNN needs num_classes >= 1 foreground classes, got {num_classes}")
    cnn = build_crop_cnn(backbone, backbone_weights, fc_dims, dropout, frozen_stages, norm)
    generator = build_proposal_generator(proposal_generator, proposal_generator_options)
    model = RCNN(cnn, int(num_classes), crop_size=crop_size, context_pad=context_pad,
                 proposal_generator=generator, **options)
    if not isinstance(stage_options or {}, dict) or not all(isinstance(v, dict) for v in (stage_options or {}).values()):
        raise UserInputError(f"model.stage_options must map a stage name to a dict of its options, e.g. "
                             f"{{'svm': {{'C': 0.001}}}}; got {stage_options!r}")
    model.stage_options = {k: dict(v) for k, v in (stage_options or {}).items()}
    return model


build_rcnn.training_stages = RCNN.training_stages  # read by detect.engine.stages without building a model
