"""Recall of a proposal set against the ground truth (how Fast R-CNN and the RPN paper compare
proposal methods).

``proposal_recall(proposals, ground_truth)`` -> ``dict`` with, for every IoU threshold ``t``
and proposal budget ``k``, ``"recall@{k}/iou{t}"``: the fraction of ground-truth boxes whose
best IoU with the first ``k`` proposals of their image is at least ``t`` (IoU from
``torchvision.ops.box_iou``; a ground-truth box of an image without proposals counts as
missed). Also ``"num_images"``, ``"num_gt"`` and ``"mean_proposals"`` (boxes per image).

Ground truth: a dataset (``get_ground_truth(i)`` for every index: crowd and VOC difficult
objects are left out, as the evaluators leave them out of recall) or a mapping
``image_id -> Tensor[G, 4]``. Both are in original image pixels, the coordinates of a proposal file.
Images of the ground truth that the proposal set lacks raise (naming the id and the file).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detect.proposals.files import ProposalSet

__all__ = ["proposal_recall", "format_recall_table", "DEFAULT_TOP_KS", "DEFAULT_IOUS"]

DEFAULT_TOP_KS = (100, 300, 1000, 2000)
DEFAULT_IOUS = (0.5, 0.7)


def _ground_truth(source) -> list[tuple[int, Tensor]]:
    if isinstance(source, Mapping):
        return [(int(i), torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4)) for i, b in source.items()]
    items = []
    for index in range(len(source)):
        gt = source.get_ground_truth(index)
        keep = torch.ones(len(gt["boxes"]), dtype=torch.bool)
        for flag in ("iscrowd", "difficult"):
            if flag in gt:
                keep &= ~torch.as_tensor(gt[flag], dtype=torch.bool)
        items.append((int(gt["image_id"]), gt["boxes"][keep].float()))
    return items


def proposal_recall(proposals: ProposalSet, ground_truth, *, top_ks: Sequence[int] = DEFAULT_TOP_KS,
                    iou_thresholds: Sequence[float] = DEFAULT_IOUS) -> dict:
    """See the module docstring."""
    top_ks = [int(k) for k in top_ks]
    thresholds = torch.tensor([float(t) for t in iou_thresholds])
    # best[k][g]: the best IoU of ground-truth box g with the first k proposals of its image.
    best = {k: [] for k in top_ks}
    items = _ground_truth(ground_truth)
    for image_id, gt in items:
        boxes = proposals.get(image_id)
        if len(gt) == 0:
            continue
        if len(boxes) == 0:
            for k in top_ks:
                best[k].append(torch.zeros(len(gt)))
            continue
        iou = box_iou(gt, boxes[: max(top_ks)])
        # Running maximum along the proposal axis: entry j is the best IoU among the first j + 1.
        running = iou.cummax(dim=1).values
        for k in top_ks:
            best[k].append(running[:, min(k, running.shape[1]) - 1])
    num_gt = sum(len(gt) for _, gt in items)
    result = {}
    for k in top_ks:
        overlaps = torch.cat(best[k]) if best[k] else torch.zeros(0)
        hits = (overlaps[:, None] >= thresholds[None]).sum(0) if len(overlaps) else torch.zeros(len(thresholds))
        for t, h in zip(iou_thresholds, hits.tolist()):
            result[f"recall@{k}/iou{float(t):g}"] = h / num_gt if num_gt else float("nan")
    counts = torch.tensor([len(proposals.get(image_id)) for image_id, _ in items], dtype=torch.float64)
    result.update(num_images=len(items), num_gt=int(num_gt),
                  mean_proposals=float(counts.mean()) if len(counts) else 0.0)
    return result


def format_recall_table(results: Mapping[str, Mapping], *, top_ks: Sequence[int] = DEFAULT_TOP_KS,
                        iou_thresholds: Sequence[float] = DEFAULT_IOUS) -> str:
    """A markdown table: one row per named result of :func:`proposal_recall`, one column per
    (IoU, budget)."""
    columns = [(t, k) for t in iou_thresholds for k in top_ks]
    header = "| proposals | boxes/img | " + " | ".join(f"R@{k} IoU{float(t):g}" for t, k in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 2)]
    for name, r in results.items():
        cells = " | ".join(f"{r[f'recall@{k}/iou{float(t):g}']:.3f}" for t, k in columns)
        lines.append(f"| {name} | {r['mean_proposals']:.0f} | {cells} |")
    return "\n".join(lines)
