"""Fast R-CNN RoI heads: pool proposals, classify them, refine their boxes.

Contract
--------
``RoIHeads(pooler, box_head, box_predictor, ...)`` called as
``heads(features, proposals, image_sizes, targets=None, training=False) -> (detections, losses)``
with ``features`` the list of maps the pooler reads and ``proposals`` one ``[P_i, 4]`` tensor
per image (network-input pixels).

- ``training=True``: the ground-truth boxes are appended to the proposals; proposals with
  IoU >= ``fg_iou_thresh`` take their best ground truth's label, those in
  ``[bg_iou_low_thresh, bg_iou_thresh)`` are background, the rest ignored
  (``bg_iou_low_thresh`` is 0 for Faster R-CNN, 0.1 for Fast R-CNN; in an image without
  objects every proposal is background); ``batch_size_per_image`` are sampled
  with at most ``positive_fraction`` foreground. Returns ``detections = []`` and
  ``loss_classifier`` (cross-entropy over the sampled RoIs) and ``loss_box_reg`` (smooth
  L1, beta ``box_loss_beta`` = 1/9 (Fast R-CNN paper: 1), on the ground-truth class's
  deltas of the foreground RoIs, summed and divided by the number of sampled RoIs: exactly
  0 when no image has objects).
- ``training=False``: per image ``{"boxes" [M, 4], "scores" [M], "labels" int64 [M]}`` in
  network-input pixels: softmax scores, class-specific boxes decoded (weights
  ``bbox_reg_weights``) and clipped, background dropped, scores <= ``score_thresh`` and
  boxes under 0.01 px dropped, NMS per class at ``nms_thresh`` (``batched_nms``), the
  ``detections_per_img`` best kept, sorted by score.

Everything equals torchvision's ``RoIHeads`` for boxes; ``training`` is passed explicitly
so that a validation loss uses the training sampling in eval mode.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_iou, remove_small_boxes

from detect.modeling.box_coder import BoxCoder
from detect.modeling.matcher import Matcher
from detect.modeling.sampler import BalancedPositiveNegativeSampler
from detect.modeling.transform import clip_boxes, traceable_batched_nms


class RoIHeads(nn.Module):
    """Box branch of Fast/Faster R-CNN (see the module docstring).

    Args:
        pooler: a :class:`~detect.modeling.poolers.RoIPooler`.
        box_head: pooled features -> ``[R, D]``.
        box_predictor: ``[R, D]`` -> (logits ``[R, K + 1]``, deltas ``[R, 4 (K + 1)]``).
        fg_iou_thresh, bg_iou_thresh: proposal labelling thresholds (0.5 / 0.5).
        bg_iou_low_thresh: background needs at least this IoU with some ground truth (0;
            the Fast R-CNN paper's 0.1); lower ones are ignored.
        batch_size_per_image, positive_fraction: RoI sampling (512 / 0.25).
        bbox_reg_weights: box coder weights (10, 10, 5, 5).
        box_loss_beta: the smooth L1 transition point (1/9; the Fast R-CNN paper's 1).
        score_thresh, nms_thresh, detections_per_img: inference post-processing.
    """

    def __init__(
        self,
        pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: nn.Module,
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        bbox_reg_weights: Sequence[float] | None = None,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
        bg_iou_low_thresh: float = 0.0,
        box_loss_beta: float = 1 / 9,
    ):
        super().__init__()
        if not 0.0 <= bg_iou_low_thresh <= bg_iou_thresh:
            raise ValueError(f"bg_iou_low_thresh ({bg_iou_low_thresh}) must lie in 0..bg_iou_thresh ({bg_iou_thresh})")
        self.bg_iou_low_thresh = float(bg_iou_low_thresh)
        self.box_loss_beta = float(box_loss_beta)
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.box_coder = BoxCoder(bbox_reg_weights if bbox_reg_weights is not None else (10.0, 10.0, 5.0, 5.0))
        self.score_thresh = float(score_thresh)
        self.nms_thresh = float(nms_thresh)
        self.detections_per_img = int(detections_per_img)

    def extra_repr(self) -> str:
        return (
            f"{self.matcher}, {self.sampler}, {self.box_coder}, score_thresh={self.score_thresh}, "
            f"nms_thresh={self.nms_thresh}, detections_per_img={self.detections_per_img}"
        )

    def forward(
        self,
        features: list[Tensor],
        proposals: list[Tensor],
        image_sizes: list[tuple[int, int]],
        targets: list[dict] | None = None,
        training: bool = False,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if training:
            if targets is None:
                raise ValueError("the RoI heads need targets to compute their training losses")
            proposals, labels, regression_targets = self.select_training_samples(proposals, targets)
        logits, deltas = self.predict_boxes(features, proposals)
        if training:
            return [], self.losses(logits, deltas, labels, regression_targets)
        return self.postprocess(logits, deltas, proposals, image_sizes), {}

    def predict_boxes(self, features: list[Tensor], proposals: list[Tensor]) -> tuple[Tensor, Tensor]:
        pooled = self.pooler(features, proposals)
        return self.box_predictor(self.box_head(pooled))

    @torch.no_grad()
    def select_training_samples(
        self, proposals: list[Tensor], targets: list[dict]
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Sampled proposals per image, their labels ``[S]`` and regression targets ``[S, 4]``
        (rows of background RoIs are zero and unused)."""
        labels = []
        matched_boxes = []
        proposals = [torch.cat((p, t["boxes"].to(p.dtype))) for p, t in zip(proposals, targets)]
        for image_proposals, target in zip(proposals, targets):
            gt_boxes, gt_labels = target["boxes"].to(image_proposals.dtype), target["labels"]
            quality = box_iou(gt_boxes, image_proposals)
            matches = self.matcher(quality)
            if gt_boxes.shape[0] == 0:
                image_labels = torch.zeros_like(matches)
                image_matched = torch.zeros_like(image_proposals)
            else:
                image_labels = gt_labels[matches.clamp(min=0)]
                image_labels[matches == Matcher.BELOW_LOW_THRESHOLD] = 0
                image_labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
                if self.bg_iou_low_thresh > 0 and image_proposals.shape[0] > 0:
                    image_labels[quality.max(dim=0).values < self.bg_iou_low_thresh] = -1
                image_matched = gt_boxes[matches.clamp(min=0)]
            labels.append(image_labels)
            matched_boxes.append(image_matched)

        positive, negative = self.sampler(labels)
        sampled_proposals, sampled_labels, sampled_matched = [], [], []
        for i, (pos, neg) in enumerate(zip(positive, negative)):
            keep = torch.where(pos | neg)[0]
            sampled_proposals.append(proposals[i][keep])
            sampled_labels.append(labels[i][keep])
            sampled_matched.append(matched_boxes[i][keep])
        all_proposals = torch.cat(sampled_proposals)
        all_labels = torch.cat(sampled_labels)
        regression_targets = torch.zeros_like(all_proposals)
        foreground = torch.where(all_labels > 0)[0]
        regression_targets[foreground] = self.box_coder.encode(
            torch.cat(sampled_matched)[foreground], all_proposals[foreground]
        )
        return sampled_proposals, all_labels, regression_targets

    def losses(self, logits: Tensor, deltas: Tensor, labels: Tensor, regression_targets: Tensor) -> dict[str, Tensor]:
        logits, deltas = logits.float(), deltas.float()
        if labels.numel() == 0:  # no RoI at all in the batch (no proposals, no objects)
            zero = logits.sum() * 0.0 + deltas.sum() * 0.0
            return {"loss_classifier": zero, "loss_box_reg": zero.clone()}
        classification_loss = F.cross_entropy(logits, labels)
        foreground = torch.where(labels > 0)[0]
        deltas = deltas.reshape(deltas.shape[0], -1, 4)
        box_loss = F.smooth_l1_loss(
            deltas[foreground, labels[foreground]], regression_targets[foreground], beta=self.box_loss_beta,
            reduction="sum",
        ) / max(labels.numel(), 1)
        return {"loss_classifier": classification_loss, "loss_box_reg": box_loss}

    @torch.no_grad()
    def postprocess(
        self, logits: Tensor, deltas: Tensor, proposals: list[Tensor], image_sizes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        logits, deltas = logits.float(), deltas.float()
        num_classes = logits.shape[-1]
        boxes = self.box_coder.decode(deltas, torch.cat(proposals))
        scores = F.softmax(logits, -1)
        counts = [p.shape[0] for p in proposals]
        labels = torch.arange(num_classes, device=logits.device)
        results = []
        # One image (an exported model) needs no split, whose sizes a trace would freeze.
        per_image = zip([boxes], [scores]) if len(proposals) == 1 else zip(boxes.split(counts), scores.split(counts))
        for (image_boxes, image_scores), size in zip(per_image, image_sizes):
            image_boxes = clip_boxes(image_boxes, size)[:, 1:].reshape(-1, 4)
            image_labels = labels[1:].expand(image_scores.shape[0], -1).reshape(-1)
            image_scores = image_scores[:, 1:].reshape(-1)
            keep = torch.where(image_scores > self.score_thresh)[0]
            image_boxes, image_scores, image_labels = image_boxes[keep], image_scores[keep], image_labels[keep]
            keep = remove_small_boxes(image_boxes, min_size=1e-2)
            image_boxes, image_scores, image_labels = image_boxes[keep], image_scores[keep], image_labels[keep]
            keep = traceable_batched_nms(image_boxes, image_scores, image_labels, self.nms_thresh)[: self.detections_per_img]
            results.append({"boxes": image_boxes[keep], "scores": image_scores[keep], "labels": image_labels[keep]})
        return results
