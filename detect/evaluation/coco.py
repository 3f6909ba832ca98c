"""COCO box metrics through pycocotools, for any dataset that can describe itself as COCO.

:class:`COCOEvaluator` follows the protocol of :mod:`detect.evaluation.base`. It needs
the ground truth as a ``pycocotools.coco.COCO`` object (``dataset.to_coco()``, in the
source's own image and category ids) and the dataset's ``label_to_category_id`` mapping,
so results are written back in the source's ids and can be submitted or re-scored by any
COCO tool.

Metrics (fractions in 0..1, ``nan`` where pycocotools reports -1):

- ``bbox/AP`` (IoU 0.50:0.95), ``bbox/AP50``, ``bbox/AP75``, ``bbox/APs``, ``bbox/APm``,
  ``bbox/APl``, ``bbox/AR1``, ``bbox/AR10``, ``bbox/AR100``, ``bbox/ARs``, ``bbox/ARm``,
  ``bbox/ARl``: the twelve numbers of ``COCOeval.summarize()``, in that order.
- ``bbox/AP-<class>`` and ``bbox/AP50-<class>``: per category, area "all", 100 detections.

The numbers are exactly those of a direct pycocotools run on the same detections and
the images that were processed (``params.imgIds`` is the set of processed image ids, so
evaluating a subset of a dataset does not count the unseen images as misses).
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from detect.evaluation.base import (
    DatasetEvaluator,
    as_numpy,
    check_batch,
    format_table,
    gather_per_image,
    image_id_of,
    nan_if_negative,
)
from detect.filesystem import atomic_write

logger = logging.getLogger(__name__)

SUMMARY_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def label_lookup(label_to_category_id: dict[int, int]) -> np.ndarray:
    """An array ``lookup[label] = category_id`` (-1 for labels without a category)."""
    lookup = np.full(max(label_to_category_id) + 1, -1, dtype=np.int64)
    lookup[np.fromiter(label_to_category_id.keys(), dtype=np.int64)] = np.fromiter(
        label_to_category_id.values(), dtype=np.int64
    )
    return lookup


def detections_to_coco_results(
    image_id: int, boxes, scores, labels, label_to_category_id: dict[int, int] | np.ndarray
) -> list[dict]:
    """COCO result dicts (``image_id, category_id, bbox [x, y, w, h], score``) for one image.

    ``boxes`` are xyxy in original image pixels and ``labels`` contiguous ``1..K``;
    an unknown label is a ``ValueError`` naming the image id.
    """
    lookup = label_lookup(label_to_category_id) if isinstance(label_to_category_id, dict) else label_to_category_id
    boxes = as_numpy(boxes, np.float64).reshape(-1, 4)
    scores = as_numpy(scores, np.float64).reshape(-1)
    labels = as_numpy(labels, np.int64).reshape(-1)
    if len(labels) == 0:
        return []
    unknown = (labels < 0) | (labels >= len(lookup))
    unknown[~unknown] = lookup[labels[~unknown]] < 0
    if unknown.any():
        raise ValueError(
            f"image {image_id}: detection label {int(labels[unknown][0])} has no category id; labels are "
            f"1..K and the dataset maps {sorted(int(k) for k in np.nonzero(lookup >= 0)[0])} to categories"
        )
    category_ids = lookup[labels]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return [
        {"image_id": int(image_id), "category_id": int(c), "bbox": b, "score": float(s)}
        for c, b, s in zip(category_ids.tolist(), xywh.tolist(), scores.tolist())
    ]


def write_coco_results(path: str | os.PathLike, results: list[dict]) -> Path:
    """Write COCO-format results JSON atomically (:func:`detect.filesystem.atomic_write`).

    The file is what the COCO evaluation server and ``COCO.loadRes`` accept: a list of
    ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``.
    """
    path = Path(path)
    try:
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(results, f)
    except OSError as error:
        raise OSError(f"cannot write COCO results to {path}: {error}; choose a writable path") from error
    return path


def _empty_results(coco_gt):
    """A results COCO with no detections (``loadRes`` cannot take an empty list)."""
    from detect.data.annotations import coco_from_dict

    return coco_from_dict({
        "images": list(coco_gt.dataset["images"]),
        "categories": copy.deepcopy(coco_gt.dataset["categories"]),
        "annotations": [],
    })


class COCOEvaluator(DatasetEvaluator):
    #: the metric keys evaluate() returns (``<class>``: one per class); tools/eval.py --help lists them
    metric_names = tuple(f"bbox/{name}" for name in SUMMARY_NAMES) + ("bbox/AP-<class>", "bbox/AP50-<class>")
    """COCO box AP/AR of detections against a pycocotools ground truth.

    Args:
        coco_gt (pycocotools.coco.COCO): ground truth in the source's ids, crowd regions
            included (``iscrowd=1`` boxes are ignored regions, as in pycocotools).
        label_to_category_id (dict[int, int]): contiguous label ``k`` -> category id.
        class_names (list[str], optional): label ``k`` is ``class_names[k - 1]``; names
            the per-class metrics (default: the ground truth's category names).
        results_path (str, optional): where :meth:`evaluate` writes the COCO-format
            results JSON (``--save-results``); nothing is written when ``None``.
    """

    def __init__(self, coco_gt, label_to_category_id: dict[int, int], class_names=None, results_path=None):
        self.coco_gt = coco_gt
        self.label_to_category_id = {int(k): int(v) for k, v in label_to_category_id.items()}
        self._lookup = label_lookup(self.label_to_category_id)
        known = set(coco_gt.getCatIds())
        missing = sorted(set(self.label_to_category_id.values()) - known)
        if missing:
            raise ValueError(
                f"label_to_category_id maps labels to category ids {missing} that the ground truth "
                f"does not define (it has {sorted(known)})"
            )
        if class_names is None:
            class_names = [coco_gt.cats[self.label_to_category_id[k]]["name"] for k in sorted(self.label_to_category_id)]
        self.class_names = list(class_names)
        self.results_path = results_path
        self.summary_text = ""
        self.per_class_table = ""
        self.reset()

    @classmethod
    def from_dataset(cls, dataset, results_path=None) -> "COCOEvaluator":
        return cls(dataset.to_coco(), dataset.label_to_category_id, dataset.class_names, results_path)

    def reset(self) -> None:
        # image_id -> (boxes xyxy float64 [M, 4], scores [M], labels [M]); numpy keeps the
        # gather cheap and frees the model's tensors.
        self._predictions: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def process(self, targets, outputs) -> None:
        check_batch(targets, outputs)
        for index, (target, output) in enumerate(zip(targets, outputs)):
            image_id = image_id_of(target, index)
            self._predictions[image_id] = (
                as_numpy(output["boxes"], np.float64).reshape(-1, 4),
                as_numpy(output["scores"], np.float64).reshape(-1),
                as_numpy(output["labels"], np.int64).reshape(-1),
            )

    def results(self, predictions=None) -> list[dict]:
        """The processed detections as COCO result dicts, sorted by image id."""
        predictions = self._predictions if predictions is None else predictions
        results = []
        for image_id in sorted(predictions):
            results.extend(detections_to_coco_results(image_id, *predictions[image_id], self._lookup))
        return results

    def evaluate(self) -> dict[str, float]:
        from pycocotools.cocoeval import COCOeval

        predictions = gather_per_image(self._predictions)
        if predictions is None:
            return {}
        if not predictions:
            raise RuntimeError("COCOEvaluator.evaluate(): no images were processed; call process() first")
        unknown = sorted(set(predictions) - set(self.coco_gt.getImgIds()))
        if unknown:
            raise ValueError(
                f"image ids {unknown[:10]} are not in the COCO ground truth; targets must carry the "
                "dataset's own image_id (dataset.image_ids[i])"
            )
        results = self.results(predictions)
        if self.results_path is not None:
            logger.info("COCO results written to %s", write_coco_results(self.results_path, results))
        if not results:
            logger.warning("COCOEvaluator: no detections on %d images; every AP is 0", len(predictions))

        with contextlib.redirect_stdout(io.StringIO()) as captured:
            # loadRes adds fields to the dicts it is given: hand it copies.
            coco_dt = self.coco_gt.loadRes([dict(r) for r in results]) if results else _empty_results(self.coco_gt)
            coco_eval = COCOeval(self.coco_gt, coco_dt, "bbox")
            coco_eval.params.imgIds = sorted(predictions)
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        # Keep summarize()'s table, not the progress chatter around it.
        self.summary_text = "\n".join(
            line for line in captured.getvalue().splitlines() if line.lstrip().startswith("Average")
        )
        self.coco_eval = coco_eval

        metrics = {f"bbox/{name}": nan_if_negative(value) for name, value in zip(SUMMARY_NAMES, coco_eval.stats)}
        metrics.update(self._per_class(coco_eval))
        logger.info("COCO bbox metrics:\n%s\n%s", self.summary_text.rstrip(), self.per_class_table)
        return metrics

    def _per_class(self, coco_eval) -> dict[str, float]:
        # precision: [IoU thresholds, recall points, categories, area ranges, max dets];
        # area "all" is index 0 and the largest maxDets the last, as in summarize().
        precision = coco_eval.eval["precision"][:, :, :, 0, -1]
        category_index = {c: i for i, c in enumerate(coco_eval.params.catIds)}
        iou_50 = int(np.argmin(np.abs(coco_eval.params.iouThrs - 0.5)))
        metrics, rows = {}, []
        for label in sorted(self.label_to_category_id):
            k = category_index[self.label_to_category_id[label]]
            values = []
            for p in (precision[:, :, k], precision[iou_50, :, k]):
                valid = p[p > -1]
                values.append(float(valid.mean()) if valid.size else float("nan"))
            name = self.class_names[label - 1]
            metrics[f"bbox/AP-{name}"], metrics[f"bbox/AP50-{name}"] = values
            rows.append((name, values))
        self.per_class_table = format_table("class", ["AP", "AP50"], rows)
        return metrics
