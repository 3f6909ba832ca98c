"""Pascal VOC mean average precision, as the official devkit computes it.

Two metrics, one matching rule:

- ``voc07_11pt``: the VOC2007 11-point interpolated AP (precision at recall
  0, 0.1, ..., 1, each the best precision at that recall or above, averaged).
- ``voc_area``: the VOC2010+ all-point AP, the area under the precision envelope.

Matching follows ``VOCevaldet.m``: a class's detections over all images are taken in
order of decreasing score (a stable sort, like MATLAB's ``sort``); each is compared with
every ground-truth box of its class in its image, and the box with the highest IoU (the
first one on ties) decides:

- IoU >= threshold, box not difficult, box not yet claimed: true positive (box claimed);
- IoU >= threshold, box not difficult, box already claimed: false positive (duplicate);
- IoU >= threshold, box difficult: ignored, neither true nor false positive;
- otherwise: false positive.

Difficult boxes are not counted in the number of positives. Because the best-IoU box is
chosen whether or not it is claimed, "first detection in score order per ground-truth
box" is exactly the sequential rule, which lets the matching run on whole arrays.

Coordinates are the library's continuous pixels: the readers turn VOC's 1-based
inclusive ``xmin..xmax`` into ``xmin - 1 .. xmax``, so the plain IoU here equals the
devkit's ``+1`` IoU on the original integers. The 11 recall thresholds are exactly
``k / 10`` (the devkit's ``0:0.1:1`` and numpy's ``arange`` differ from that by one ulp
at some points, which flips ``recall >= t`` when a recall is exactly k/10).

Classes without any non-difficult ground truth in the evaluated images have no AP; they
are left out of the mean and of the metrics (and named in a warning).
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.evaluation.base import DatasetEvaluator, as_numpy, check_batch, format_table, gather_per_image, image_id_of
from detect.evaluation.coco import detections_to_coco_results, write_coco_results

logger = logging.getLogger(__name__)

VOC_METRICS = {"voc07_11pt": True, "voc_area": False}  # name -> use the 11-point rule


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool) -> float:
    """Average precision from recall and precision in detection order (devkit ``VOCap``)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07_metric:
        thresholds = np.arange(11) / 10.0
        reached = recall[None, :] >= thresholds[:, None]  # [11, D]
        best = np.where(reached, precision[None, :], -np.inf).max(axis=1, initial=-np.inf)
        return float(np.where(np.isfinite(best), best, 0.0).sum() / 11.0)
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]  # precision envelope, non-increasing
    change = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
    return float(np.sum((mrec[change] - mrec[change - 1]) * mpre[change]))


def match_detections(detections: list[dict], ground_truths: list[dict]) -> dict[str, np.ndarray]:
    """Best same-class ground-truth box of every detection, over a list of images.

    ``detections[i]`` has ``boxes [D, 4]``, ``scores [D]``, ``labels [D]``;
    ``ground_truths[i]`` has ``boxes [G, 4]``, ``labels [G]`` and optionally
    ``difficult [G]`` (bool). Returns flat arrays over all detections: ``scores``,
    ``labels``, ``iou`` (best IoU, -1 when the image has no box of that class), ``gt``
    (a ground-truth index unique over all images, -1 when none) and ``difficult``.
    The loop is over images; inside an image everything is one IoU matrix.
    """
    scores, labels, ious, gts, difficult = [], [], [], [], []
    gt_offset = 0
    for det, gt in zip(detections, ground_truths):
        det_labels = as_numpy(det["labels"], np.int64).reshape(-1)
        gt_boxes = torch.as_tensor(as_numpy(gt["boxes"], np.float64).reshape(-1, 4))
        gt_labels = as_numpy(gt["labels"], np.int64).reshape(-1)
        gt_difficult = as_numpy(gt.get("difficult", np.zeros(len(gt_labels))), bool).reshape(-1)
        if len(det_labels):
            det_boxes = torch.as_tensor(as_numpy(det["boxes"], np.float64).reshape(-1, 4))
            if len(gt_labels):
                iou = box_iou(det_boxes, gt_boxes).numpy()
                iou[det_labels[:, None] != gt_labels[None, :]] = -1.0
                best = iou.argmax(axis=1)  # first maximum on ties, as the devkit's strict '>'
                best_iou = iou[np.arange(len(best)), best]
                has_gt = best_iou >= 0
                gts.append(np.where(has_gt, best + gt_offset, -1))
                ious.append(np.where(has_gt, best_iou, -1.0))
                difficult.append(has_gt & gt_difficult[best])
            else:
                gts.append(np.full(len(det_labels), -1))
                ious.append(np.full(len(det_labels), -1.0))
                difficult.append(np.zeros(len(det_labels), dtype=bool))
            scores.append(as_numpy(det["scores"], np.float64).reshape(-1))
            labels.append(det_labels)
        gt_offset += len(gt_labels)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return {
        "scores": cat(scores, np.float64),
        "labels": cat(labels, np.int64),
        "iou": cat(ious, np.float64),
        "gt": cat(gts, np.int64),
        "difficult": cat(difficult, bool),
    }


def true_false_positives(matches: dict[str, np.ndarray], iou_threshold: float):
    """``(tp, fp)`` 0/1 arrays in decreasing score order for one class's detections.

    Detections matched to a difficult box are dropped (neither TP nor FP).
    """
    order = np.argsort(-matches["scores"], kind="stable")
    hit = matches["iou"][order] >= iou_threshold
    difficult = matches["difficult"][order]
    gt = matches["gt"][order]
    candidate = hit & ~difficult
    tp = np.zeros(len(order), dtype=bool)
    candidate_index = np.nonzero(candidate)[0]
    _, first = np.unique(gt[candidate_index], return_index=True)  # first claim of each box
    tp[candidate_index[first]] = True
    keep = ~(hit & difficult)
    fp = ~tp
    return tp[keep].astype(np.float64), fp[keep].astype(np.float64)


def voc_pr_curves(
    detections: list[dict],
    ground_truths: list[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> dict[int, dict[str, np.ndarray]]:
    """Per-class precision-recall points in decreasing score order, by label ``1..K``.

    ``curves[k]`` holds ``recall``, ``precision`` and ``scores`` (``float64 [D_k]``, one
    point per counted detection of class k, after the module docstring's rules) and
    ``positives`` (the number of non-difficult ground-truth boxes). A class without
    ground truth is left out; one with ground truth but no detection has empty arrays.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truths)} ground truths")
    matches = match_detections(detections, ground_truths)
    gt_labels = np.concatenate([as_numpy(g["labels"], np.int64).reshape(-1) for g in ground_truths] or [np.zeros(0)])
    gt_difficult = np.concatenate(
        [as_numpy(g.get("difficult", np.zeros(len(g["labels"]))), bool).reshape(-1) for g in ground_truths]
        or [np.zeros(0, dtype=bool)]
    )
    positives = np.bincount(gt_labels[~gt_difficult].astype(np.int64), minlength=num_classes + 1)
    curves = {}
    for label in range(1, num_classes + 1):
        if positives[label] == 0:
            continue
        mine = {k: v[matches["labels"] == label] for k, v in matches.items()}
        tp, fp = true_false_positives(mine, iou_threshold)
        order = np.argsort(-mine["scores"], kind="stable")  # the order true_false_positives uses
        counted = ~((mine["iou"] >= iou_threshold) & mine["difficult"])[order]
        scores = mine["scores"][order][counted]
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        curves[label] = {
            "recall": tp / positives[label],
            "precision": tp / (tp + fp),
            "scores": scores,
            "positives": int(positives[label]),
        }
    return curves


def voc_evaluate(
    detections: list[dict],
    ground_truths: list[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    use_07_metric: bool = False,
) -> np.ndarray:
    """Per-class AP, ``float64 [num_classes]`` for labels ``1..K``; ``nan`` for a class
    without non-difficult ground truth. See the module docstring for the rules."""
    return ap_from_curves(voc_pr_curves(detections, ground_truths, num_classes, iou_threshold), num_classes,
                          use_07_metric)


def ap_from_curves(curves: dict[int, dict[str, np.ndarray]], num_classes: int, use_07_metric: bool) -> np.ndarray:
    """Per-class AP ``[num_classes]`` from :func:`voc_pr_curves` (``nan`` where a class has no curve)."""
    ap = np.full(num_classes, np.nan)
    for label, curve in curves.items():
        ap[label - 1] = voc_ap(curve["recall"], curve["precision"], use_07_metric) if len(curve["recall"]) else 0.0
    return ap


class VOCEvaluator(DatasetEvaluator):
    """Pascal VOC mAP (``voc07_11pt`` or ``voc_area``) of box detections.

    Ground truth comes from ``dataset.get_ground_truth(i)`` (original image coordinates,
    with ``difficult`` flags; a COCO-style dataset's ``iscrowd`` boxes are treated as
    difficult, i.e. ignored) for the processed images only, found through
    ``dataset.image_ids``.

    Args:
        dataset: exposes ``class_names``, ``image_ids`` and ``get_ground_truth(i)``.
        use_07_metric (bool): 11-point AP (VOC2007) instead of the all-point area.
        iou_threshold (float): minimum IoU of a true positive (devkit: 0.5, inclusive).
        results_path (str, optional): also write the detections as COCO-format results
            JSON, in the dataset's ``label_to_category_id`` ids (label k -> k without one).

    Metrics: ``bbox/AP50`` (mean over classes with ground truth) and
    ``bbox/AP50-<class>``; the key follows the threshold (``bbox/AP75`` at 0.75).

    After :meth:`evaluate` (on rank 0) the evaluator keeps what it evaluated, for
    :func:`detect.evaluation.plots.write_evaluation_report`: ``last_detections`` and
    ``last_ground_truths`` (one dict per image, sorted by image id, original image
    coordinates, ``difficult`` flags) and ``last_curves`` (:func:`voc_pr_curves`).
    """

    #: the metric keys evaluate() returns at the default IoU 0.5 (``<class>``: one per class)
    metric_names = ("bbox/AP50", "bbox/AP50-<class>")

    def __init__(self, dataset, use_07_metric: bool = False, iou_threshold: float = 0.5, results_path=None):
        self.dataset = dataset
        self.results_path = results_path
        self.class_names = list(dataset.class_names)
        self.use_07_metric = use_07_metric
        self.iou_threshold = float(iou_threshold)
        self.metric_name = f"bbox/AP{round(100 * self.iou_threshold)}"
        self.per_class_table = ""
        self.reset()

    def reset(self) -> None:
        self._predictions: dict[int, dict[str, np.ndarray]] = {}
        self.last_detections: list[dict] | None = None
        self.last_ground_truths: list[dict] | None = None
        self.last_curves: dict[int, dict[str, np.ndarray]] | None = None

    def process(self, targets, outputs) -> None:
        check_batch(targets, outputs)
        num_classes = len(self.class_names)
        for index, (target, output) in enumerate(zip(targets, outputs)):
            image_id = image_id_of(target, index)
            labels = as_numpy(output["labels"], np.int64).reshape(-1)
            bad = (labels < 1) | (labels > num_classes)
            if bad.any():
                raise ValueError(
                    f"image {image_id}: detection label {int(labels[bad][0])} is outside 1..{num_classes} "
                    f"(labels are 1..K for the dataset's {num_classes} classes; 0 is background)"
                )
            self._predictions[image_id] = {
                "boxes": as_numpy(output["boxes"], np.float64).reshape(-1, 4),
                "scores": as_numpy(output["scores"], np.float64).reshape(-1),
                "labels": labels,
            }

    def _ground_truth(self, image_ids: list[int]) -> list[dict]:
        index_of = {int(image_id): i for i, image_id in enumerate(self.dataset.image_ids)}
        unknown = [i for i in image_ids if i not in index_of]
        if unknown:
            raise ValueError(
                f"image ids {unknown[:10]} are not in the dataset; targets must carry the dataset's "
                "own image_id (dataset.image_ids[i])"
            )
        ground_truths = []
        for image_id in image_ids:
            gt = self.dataset.get_ground_truth(index_of[image_id])
            labels = as_numpy(gt["labels"], np.int64).reshape(-1)
            ignored = np.zeros(len(labels), bool)
            for flag in ("difficult", "iscrowd"):
                if gt.get(flag) is not None:
                    ignored |= as_numpy(gt[flag], bool).reshape(-1)
            ground_truths.append(
                {"boxes": as_numpy(gt["boxes"], np.float64).reshape(-1, 4), "labels": labels, "difficult": ignored}
            )
        return ground_truths

    def evaluate(self) -> dict[str, float]:
        predictions = gather_per_image(self._predictions)
        if predictions is None:
            return {}
        if not predictions:
            raise RuntimeError("VOCEvaluator.evaluate(): no images were processed; call process() first")
        image_ids = sorted(predictions)
        if self.results_path is not None:
            mapping = getattr(self.dataset, "label_to_category_id", None) or {
                k: k for k in range(1, len(self.class_names) + 1)
            }
            results = []
            for image_id in image_ids:
                p = predictions[image_id]
                results.extend(detections_to_coco_results(image_id, p["boxes"], p["scores"], p["labels"], mapping))
            logger.info("detections written to %s", write_coco_results(self.results_path, results))
        self.last_detections = [predictions[i] for i in image_ids]
        self.last_ground_truths = self._ground_truth(image_ids)
        self.last_curves = voc_pr_curves(
            self.last_detections, self.last_ground_truths, len(self.class_names), self.iou_threshold
        )
        ap = ap_from_curves(self.last_curves, len(self.class_names), self.use_07_metric)
        missing = [name for name, value in zip(self.class_names, ap) if np.isnan(value)]
        if missing:
            logger.warning("VOC AP: no ground truth for %s in the evaluated images; left out of the mean", missing)
        metrics = {self.metric_name: float(np.nanmean(ap)) if len(missing) < len(ap) else float("nan")}
        rows = []
        for name, value in zip(self.class_names, ap):
            if not np.isnan(value):
                metrics[f"{self.metric_name}-{name}"] = float(value)
            rows.append((name, [float(value)]))
        rule = "VOC07 11-point" if self.use_07_metric else "VOC all-point"
        self.per_class_table = format_table("class", [f"AP{round(100 * self.iou_threshold)} ({rule})"], rows)
        logger.info("VOC mAP %.4f\n%s", metrics[self.metric_name], self.per_class_table)
        return metrics
