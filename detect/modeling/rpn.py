"""Region Proposal Network (Ren et al., 2015): objectness and box deltas for every anchor.

Contract
--------
``RPNHead(in_channels, num_anchors, conv_depth=1)`` maps a list of feature maps
``[N, C, H_l, W_l]`` to ``(objectness, deltas)``: lists of ``[N, A, H_l, W_l]`` logits and
``[N, 4 * A, H_l, W_l]`` box deltas (shared 3x3 conv + ReLU, then two 1x1 convs). Parameter
names equal torchvision's ``RPNHead`` (``conv.0.0``, ``cls_logits``, ``bbox_pred``).

``RegionProposalNetwork(anchor_generator, head, ...)`` called as
``rpn(batch, features, strides, targets=None, training=False) -> (proposals, losses)``:

- ``proposals``: one ``float32 [P_i, 4]`` tensor per image, xyxy in network-input pixels,
  detached, sorted by objectness, at most ``post_nms_top_n`` each. Selection: on every
  level the ``pre_nms_top_n`` highest-scoring anchors of each image are decoded (box coder
  weights 1, 1, 1, 1), clipped to the image, boxes smaller than ``min_size`` and scores
  below ``score_thresh`` dropped, NMS at ``nms_thresh`` per level, best ``post_nms_top_n``
  kept across levels. ``training`` picks the ``train`` or ``test`` counts.
- ``losses`` (only when ``training``): ``loss_objectness`` (binary cross-entropy over the
  sampled anchors) and ``loss_rpn_box_reg`` (smooth L1, beta 1/9, summed over sampled
  positives and divided by the number of sampled anchors). An anchor is positive at IoU
  >= ``fg_iou_thresh`` with a ground-truth box or as that box's best anchor, negative below
  ``bg_iou_thresh``; ``batch_size_per_image`` anchors are sampled with at most
  ``positive_fraction`` positives. Images without objects give only negatives, so their
  box loss is exactly 0.

``training`` is an argument, not ``self.training``, so that a validation loss in eval mode
uses the training counts and sampling. Under tracing (export) the per-level top-k count,
the grid sizes and the clipping size are graph values, so the exported RPN follows the input
size. The computation equals torchvision's
``RegionProposalNetwork``; it decodes only the anchors that survive the per-level top-k
(torchvision decodes all of them), which gives the same boxes at a fraction of the cost.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation, box_iou, remove_small_boxes

from detect.modeling.anchors import AnchorGenerator
from detect.modeling.box_coder import BoxCoder
from detect.modeling.matcher import Matcher
from detect.modeling.sampler import BalancedPositiveNegativeSampler
from detect.modeling.transform import ImageBatch, clip_boxes, image_size, is_tracing, traceable_batched_nms


class RPNHead(nn.Module):
    """Shared 3x3 conv(s) + ReLU, then 1x1 objectness and 1x1 box-delta convolutions.

    Args:
        in_channels: channels of every input level (they must agree).
        num_anchors: anchors per position, A.
        conv_depth: number of 3x3 conv + ReLU layers before the predictions.
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            *[Conv2dNormActivation(in_channels, in_channels, kernel_size=3, norm_layer=None) for _ in range(conv_depth)]
        )
        self.cls_logits = nn.Conv2d(in_channels, num_anchors, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, features: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        objectness, deltas = [], []
        for feature in features:
            hidden = self.conv(feature)
            objectness.append(self.cls_logits(hidden))
            deltas.append(self.bbox_pred(hidden))
        return objectness, deltas


def _flatten_predictions(objectness: list[Tensor], deltas: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
    """Per level ``[N, H*W*A]`` logits and ``[N, H*W*A, 4]`` deltas in anchor order."""
    flat_objectness, flat_deltas = [], []
    for logits, box in zip(objectness, deltas):
        n, a, h, w = logits.shape
        flat_objectness.append(logits.permute(0, 2, 3, 1).reshape(n, -1))
        flat_deltas.append(box.view(n, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, 4))
    return flat_objectness, flat_deltas


class RegionProposalNetwork(nn.Module):
    """Proposals and RPN losses from multi-level features (see the module docstring).

    Args:
        anchor_generator: the anchors, one set of sizes per feature level.
        head: predicts objectness ``[N, A, H, W]`` and deltas ``[N, 4A, H, W]`` per level.
        fg_iou_thresh, bg_iou_thresh: anchor labelling thresholds (0.7 / 0.3).
        batch_size_per_image, positive_fraction: anchor sampling for the losses (256 / 0.5).
        pre_nms_top_n, post_nms_top_n: ``{"train": int, "test": int}`` proposal counts
            (per level before NMS, per image after NMS).
        nms_thresh: IoU threshold of the per-level NMS (0.7).
        score_thresh: drop proposals whose objectness probability is below it.
        min_size: drop proposals narrower or shorter than it (pixels).
    """

    def __init__(
        self,
        anchor_generator: AnchorGenerator,
        head: nn.Module,
        fg_iou_thresh: float = 0.7,
        bg_iou_thresh: float = 0.3,
        batch_size_per_image: int = 256,
        positive_fraction: float = 0.5,
        pre_nms_top_n: dict[str, int] | None = None,
        post_nms_top_n: dict[str, int] | None = None,
        nms_thresh: float = 0.7,
        score_thresh: float = 0.0,
        min_size: float = 1e-3,
    ):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = dict(pre_nms_top_n or {"train": 2000, "test": 1000})
        self.post_nms_top_n = dict(post_nms_top_n or {"train": 2000, "test": 1000})
        self.nms_thresh = float(nms_thresh)
        self.score_thresh = float(score_thresh)
        self.min_size = float(min_size)

    def extra_repr(self) -> str:
        return (
            f"pre_nms_top_n={self.pre_nms_top_n}, post_nms_top_n={self.post_nms_top_n}, "
            f"nms_thresh={self.nms_thresh}, score_thresh={self.score_thresh}, {self.matcher}, {self.sampler}"
        )

    def forward(
        self,
        batch: ImageBatch,
        features: list[Tensor],
        strides: list[int],
        targets: list[dict] | None = None,
        training: bool = False,
    ) -> tuple[list[Tensor], dict[str, Tensor]]:
        objectness, deltas, anchors = self._predict(features, strides, batch)
        proposals = self.select_proposals(objectness, deltas, anchors, batch.image_sizes, training)
        losses: dict[str, Tensor] = {}
        if training:
            if targets is None:
                raise ValueError("the RPN needs targets to compute its training losses")
            losses = self.losses(torch.cat(objectness, 1), torch.cat(deltas, 1), torch.cat(anchors), targets)
        return proposals, losses

    def _predict(self, features: list[Tensor], strides: list[int], batch: ImageBatch):
        """Flattened per-level objectness logits, deltas and the anchors they refer to."""
        objectness, deltas = self.head(features)
        grid_sizes = [image_size(f) for f in features]
        anchors = self.anchor_generator(
            grid_sizes, [(s, s) for s in strides], features[0].device, torch.float32, batch.padded_size
        )
        objectness, deltas = _flatten_predictions(objectness, deltas)
        return objectness, deltas, anchors

    def scored_proposals(self, batch: ImageBatch, features: list[Tensor], strides: list[int]):
        """The test-time proposals (network-input pixels, best first) and their objectness
        probabilities: ``(list[Tensor[P, 4]], list[Tensor[P]])`` (``TwoStageDetector.propose``)."""
        objectness, deltas, anchors = self._predict(features, strides, batch)
        return self.select_proposals(objectness, deltas, anchors, batch.image_sizes, training=False, with_scores=True)

    @torch.no_grad()
    def select_proposals(
        self,
        objectness: list[Tensor],
        deltas: list[Tensor],
        anchors: list[Tensor],
        image_sizes: list[tuple[int, int]],
        training: bool,
        with_scores: bool = False,
    ):
        """Per image: top ``pre_nms_top_n`` per level, decode, clip, drop small and low-scoring
        boxes, NMS per level, keep ``post_nms_top_n``. Returns the boxes (and, with
        ``with_scores``, a second list of their objectness probabilities)."""
        mode = "train" if training else "test"
        pre_nms_top_n, post_nms_top_n = self.pre_nms_top_n[mode], self.post_nms_top_n[mode]
        num_images = objectness[0].shape[0]
        batch_index = torch.arange(num_images, device=objectness[0].device)[:, None]

        scores, boxes, levels = [], [], []
        for level, (logits, box_deltas, level_anchors) in enumerate(zip(objectness, deltas, anchors)):
            if is_tracing():  # the anchor count is a graph value: so is k
                k = logits.shape[1].clamp(max=pre_nms_top_n)
            else:
                k = min(pre_nms_top_n, logits.shape[1])
            top_logits, top_index = logits.float().topk(k, dim=1)
            top_deltas = box_deltas[batch_index, top_index].float()
            decoded = self.box_coder.decode(top_deltas.reshape(-1, 4), level_anchors[top_index.reshape(-1)])
            scores.append(top_logits)
            boxes.append(decoded.view(num_images, -1, 4))
            levels.append(torch.full_like(top_index[0], level))
        scores = torch.sigmoid(torch.cat(scores, dim=1))
        boxes = torch.cat(boxes, dim=1)
        levels = torch.cat(levels)

        proposals, proposal_scores = [], []
        for image_boxes, image_scores, size in zip(boxes, scores, image_sizes):
            image_boxes = clip_boxes(image_boxes, size)
            keep = remove_small_boxes(image_boxes, self.min_size)
            image_boxes, image_scores, image_levels = image_boxes[keep], image_scores[keep], levels[keep]
            if self.score_thresh > 0:
                keep = torch.where(image_scores >= self.score_thresh)[0]
                image_boxes, image_scores, image_levels = image_boxes[keep], image_scores[keep], image_levels[keep]
            keep = traceable_batched_nms(image_boxes, image_scores, image_levels, self.nms_thresh)[:post_nms_top_n]
            proposals.append(image_boxes[keep])
            proposal_scores.append(image_scores[keep])
        return (proposals, proposal_scores) if with_scores else proposals

    def losses(self, objectness: Tensor, deltas: Tensor, anchors: Tensor, targets: list[dict]) -> dict[str, Tensor]:
        """``objectness [N, A]`` logits and ``deltas [N, A, 4]`` over all levels, ``anchors [A, 4]``."""
        num_anchors = anchors.shape[0]
        labels, matched_gt = [], []
        gt_offset = 0
        for target in targets:
            gt_boxes = target["boxes"]
            matches = self.matcher(box_iou(gt_boxes, anchors))
            image_labels = (matches >= 0).to(torch.int64)
            image_labels[matches == Matcher.BETWEEN_THRESHOLDS] = -1
            labels.append(image_labels)
            matched_gt.append(matches.clamp(min=0) + gt_offset)
            gt_offset += gt_boxes.shape[0]
        positive, negative = self.sampler(labels)
        positive_index = torch.where(torch.cat(positive))[0]
        negative_index = torch.where(torch.cat(negative))[0]
        sampled_index = torch.cat([positive_index, negative_index])

        all_gt = torch.cat([t["boxes"] for t in targets]).to(deltas.dtype)
        positive_gt = all_gt[torch.cat(matched_gt)[positive_index]]
        regression_targets = self.box_coder.encode(positive_gt, anchors[positive_index % num_anchors])
        flat_deltas = deltas.reshape(-1, 4)
        box_loss = F.smooth_l1_loss(
            flat_deltas[positive_index], regression_targets, beta=1 / 9, reduction="sum"
        ) / max(sampled_index.numel(), 1)

        flat_labels = torch.cat(labels).to(objectness.dtype)
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.reshape(-1)[sampled_index], flat_labels[sampled_index]
        )
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
