"""What people look at after an evaluation: a confusion matrix and precision-recall curves.

::

    ev = build_evaluator("voc_area", dataset); ...; metrics = ev.evaluate()
    written = write_evaluation_report(ev, "runs/exp/eval_test", split="test", metrics=metrics)
    # {"confusion_matrix": .../test_confusion_matrix.png, "pr_curves": .../test_pr_curves.png,
    #  "metrics": .../test_metrics.json}

Definitions (those of ultralytics, so its users read the plots as they expect):

- :func:`detection_confusion_matrix` is ``int64 [K + 1, K + 1]``: **rows are the
  predicted class, columns the true class**, index ``k - 1`` for label ``k`` and index
  ``K`` for *background*. Detections scoring below ``score_threshold`` (0.25) are
  dropped; in each image every (ground truth, detection) pair with IoU >=
  ``iou_threshold`` (0.5) is a candidate, whatever the classes; each detection keeps its
  highest-IoU box, then each box its highest-IoU detection (ultralytics' rule), so every
  detection and every ground-truth box is matched at most once.
  A matched pair counts at ``[predicted, true]`` (off the diagonal: a class confusion),
  an unmatched ground-truth box at ``[background, true]`` (missed), an unmatched detection
  at ``[predicted, background]`` (false alarm). Ignored boxes (VOC ``difficult``, COCO
  crowd) are not counted, nor are the detections matched to them.
- The precision-recall curves are the evaluator's own (:func:`detect.evaluation.voc.voc_pr_curves`,
  the points its AP is computed from), one per class with its AP in the legend; the JSON
  stores each as the interpolated precision (the best precision at that recall or above,
  0 past the last point) at the 101 recalls ``0, 0.01, ..., 1``.

- Segmentation (:class:`~detect.evaluation.SemSegEvaluator`): the pixel confusion matrix
  the metrics came from, drawn with the same layout (rows predicted, columns true,
  background last) and stored in the JSON as the evaluator keeps it (rows true,
  columns predicted, background first, as in the FCN and detectron2 code), with the
  per-class IoU and accuracy.

Plots use matplotlib with the Agg backend (no display needed).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torchvision.ops import box_iou

from detect.distributed import get_rank
from detect.evaluation.base import as_numpy, label_metrics
from detect.evaluation.voc import ap_from_curves
from detect.filesystem import atomic_write

logger = logging.getLogger(__name__)

RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def _greedy_pairs(iou: np.ndarray, iou_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """``(gt_index, det_index)`` of the greedy one-to-one matching by decreasing IoU."""
    gi, di = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[gi, di], kind="stable")
    gi, di = gi[order], di[order]
    # Taken in decreasing IoU, a pair is kept when neither side was taken by an earlier pair.
    # Two passes of "first occurrence" (detections, then ground truth) are the ultralytics rule.
    _, first = np.unique(di, return_index=True)
    keep = np.sort(first)
    gi, di = gi[keep], di[keep]
    _, first = np.unique(gi, return_index=True)
    keep = np.sort(first)
    return gi[keep], di[keep]


def detection_confusion_matrix(
    detections: Sequence[dict],
    ground_truths: Sequence[dict],
    num_classes: int,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.25,
) -> np.ndarray:
    """The ``[K + 1, K + 1]`` confusion matrix of the module docstring.

    ``detections[i]``: ``boxes [D, 4]``, ``scores [D]``, ``labels [D]`` in ``1..K``;
    ``ground_truths[i]``: ``boxes [G, 4]``, ``labels [G]``, optionally ``difficult [G]``.
    """
    if len(detections) != len(ground_truths):
        raise ValueError(f"{len(detections)} detection lists for {len(ground_truths)} ground truths")
    K = int(num_classes)
    matrix = np.zeros((K + 1, K + 1), dtype=np.int64)
    for det, gt in zip(detections, ground_truths):
        scores = as_numpy(det["scores"], np.float64).reshape(-1)
        keep = scores >= score_threshold
        d_boxes = as_numpy(det["boxes"], np.float64).reshape(-1, 4)[keep]
        d_labels = as_numpy(det["labels"], np.int64).reshape(-1)[keep]
        g_boxes = as_numpy(gt["boxes"], np.float64).reshape(-1, 4)
        g_labels = as_numpy(gt["labels"], np.int64).reshape(-1)
        ignored = as_numpy(gt.get("difficult", np.zeros(len(g_labels))), bool).reshape(-1)
        gi = di = np.zeros(0, dtype=np.int64)
        if len(d_labels) and len(g_labels):
            iou = box_iou(torch.as_tensor(g_boxes), torch.as_tensor(d_boxes)).numpy()
            gi, di = _greedy_pairs(iou, iou_threshold)
        counted = ~ignored[gi]
        np.add.at(matrix, (d_labels[di[counted]] - 1, g_labels[gi[counted]] - 1), 1)
        missed = np.ones(len(g_labels), bool)
        missed[gi] = False
        missed &= ~ignored
        np.add.at(matrix, (K, g_labels[missed] - 1), 1)
        unmatched = np.ones(len(d_labels), bool)
        unmatched[di] = False  # matched to a counted box, or to an ignored one (not counted)
        np.add.at(matrix, (d_labels[unmatched] - 1, K), 1)
    return matrix


def interpolated_precision(recall: np.ndarray, precision: np.ndarray, points: np.ndarray = RECALL_POINTS) -> np.ndarray:
    """Best precision at recall >= each of ``points`` (0 where the curve never gets there)."""
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if len(recall) == 0:
        return np.zeros(len(points))
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, points, side="left")  # recall is non-decreasing
    return np.where(index < len(recall), envelope[np.minimum(index, len(recall) - 1)], 0.0)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path, title: str = "") -> Path:
    """Draw the matrix (counts, colour by column-normalised fraction) as a PNG at ``path``."""
    plt = _pyplot()
    names = list(class_names) + ["background"]
    columns = matrix.sum(axis=0, keepdims=True)
    fraction = np.divide(matrix, columns, out=np.zeros(matrix.shape, dtype=np.float64), where=columns > 0)
    size = max(4.0, 0.6 * len(names) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    if len(names) <= 30:
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                ax.text(col, row, str(int(count)), ha="center", va="center",
                        color="white" if fraction[row, col] > 0.5 else "black", fontsize=8)
    ax.set_title(title or "confusion matrix")
    return _save(fig, path)


def plot_pr_curves(curves: dict[int, dict], class_names: Sequence[str], ap: np.ndarray, path, title: str = "") -> Path:
    """One precision-recall line per class (AP in the legend) and their mean, as a PNG."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 5.5))
    interpolated = []
    for label, curve in sorted(curves.items()):
        ax.plot(curve["recall"], curve["precision"], linewidth=1,
                label=f"{class_names[label - 1]} {ap[label - 1]:.3f}")
        interpolated.append(interpolated_precision(curve["recall"], curve["precision"]))
    if interpolated:
        ax.plot(RECALL_POINTS, np.mean(interpolated, axis=0), color="blue", linewidth=3,
                label=f"all classes {np.nanmean(ap):.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, title="AP")
    ax.set_title(title or "precision-recall")
    return _save(fig, path)


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    _pyplot().close(fig)
    return path


def supports_report(evaluator) -> bool:
    """Whether ``evaluator`` kept what a report needs (a detection evaluator after evaluate())."""
    return getattr(evaluator, "last_detections", None) is not None and getattr(evaluator, "last_curves", None) is not None


def evaluation_report(evaluator, iou_threshold: float = 0.5, score_threshold: float = 0.25) -> dict:
    """The numbers of the plots, as plain data: ``confusion_matrix`` (``matrix`` rows =
    predicted, columns = true, ``names`` with background last, the thresholds) and
    ``pr_curves`` (per class: ``ap``, ``positives``, ``recall`` = the 101 recall points,
    ``precision`` interpolated at them)."""
    if not supports_report(evaluator):
        raise ValueError(f"{type(evaluator).__name__} keeps no detections to report; run evaluate() first "
                         "(the plots need a box evaluator such as VOCEvaluator)")
    names = list(evaluator.class_names)
    matrix = detection_confusion_matrix(evaluator.last_detections, evaluator.last_ground_truths, len(names),
                                        iou_threshold, score_threshold)
    ap = ap_from_curves(evaluator.last_curves, len(names), getattr(evaluator, "use_07_metric", False))
    pr = {}
    for label, curve in sorted(evaluator.last_curves.items()):
        pr[names[label - 1]] = {
            "ap": float(ap[label - 1]),
            "positives": int(curve["positives"]),
            "recall": RECALL_POINTS.round(2).tolist(),
            "precision": interpolated_precision(curve["recall"], curve["precision"]).round(6).tolist(),
        }
    return {
        "confusion_matrix": {"names": names + ["background"], "rows": "predicted", "columns": "true",
                             "iou_threshold": float(iou_threshold), "score_threshold": float(score_threshold),
                             "matrix": matrix.tolist()},
        "pr_curves": pr,
        "_ap": ap,
        "_matrix": matrix,
    }


def segmentation_report(evaluator) -> dict:
    """The pixel confusion matrix of a :class:`SemSegEvaluator` after ``evaluate()`` as plain
    data: ``{"names" (background first), "rows": "true", "columns": "predicted", "matrix",
    "iou", "accuracy"}`` (per class; ``None`` where undefined)."""
    from detect.evaluation.segmentation import segmentation_metrics

    matrix = getattr(evaluator, "last_confusion_matrix", None)
    if matrix is None:
        raise ValueError(f"{type(evaluator).__name__} holds no confusion matrix; run evaluate() first")
    values = segmentation_metrics(matrix)
    undefined_as_none = lambda array: [None if np.isnan(v) else float(v) for v in array]  # noqa: E731
    return {"names": list(evaluator.class_names), "rows": "true", "columns": "predicted",
            "matrix": np.asarray(matrix).tolist(), "iou": undefined_as_none(values["iou"]),
            "accuracy": undefined_as_none(values["accuracy"])}


def write_evaluation_report(evaluator, out_dir, split: str = "val", metrics: dict | None = None,
                            iou_threshold: float = 0.5, score_threshold: float = 0.25) -> dict[str, Path]:
    """Write into ``out_dir`` and return ``{name: path}``:

    - ``metrics``: ``<split>_metrics.json`` = ``{"split", "metrics": {"<split>/bbox/AP50": ...}}``
      plus, for a box evaluator, ``"confusion_matrix"`` and ``"pr_curves"``
      (:func:`evaluation_report`);
    - for a box evaluator that kept its detections (:func:`supports_report`, e.g. VOC):
      ``confusion_matrix`` (``<split>_confusion_matrix.png``) and ``pr_curves``
      (``<split>_pr_curves.png``);
    - for a segmentation evaluator: ``"confusion_matrix"`` (:func:`segmentation_report`) in
      the JSON and ``confusion_matrix`` (``<split>_confusion_matrix.png``, pixel counts).

    Rank 0 only: other ranks (and ``evaluator=None`` without metrics) write nothing, ``{}``.
    """
    if get_rank() != 0 or (evaluator is None and not metrics):
        return {}
    out_dir = Path(out_dir)
    payload = {"split": split, "metrics": label_metrics(metrics or {}, split)}
    written: dict[str, Path] = {}
    if supports_report(evaluator):
        report = evaluation_report(evaluator, iou_threshold, score_threshold)
        ap, matrix = report.pop("_ap"), report.pop("_matrix")
        payload.update(report)
        names = list(evaluator.class_names)
        written["confusion_matrix"] = plot_confusion_matrix(
            matrix, names, out_dir / f"{split}_confusion_matrix.png",
            f"{split}: confusion matrix (IoU >= {iou_threshold:g}, score >= {score_threshold:g})")
        written["pr_curves"] = plot_pr_curves(
            evaluator.last_curves, names, ap, out_dir / f"{split}_pr_curves.png",
            f"{split}: precision-recall (IoU >= {evaluator.iou_threshold:g})")
    elif getattr(evaluator, "last_confusion_matrix", None) is not None:
        payload["confusion_matrix"] = segmentation_report(evaluator)
        # The detection plot's layout: rows predicted, columns true, background last.
        matrix = np.roll(np.asarray(evaluator.last_confusion_matrix).T, -1, axis=(0, 1))
        written["confusion_matrix"] = plot_confusion_matrix(
            matrix, list(evaluator.class_names)[1:], out_dir / f"{split}_confusion_matrix.png",
            f"{split}: pixel confusion matrix")
    path = out_dir / f"{split}_metrics.json"
    with atomic_write(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1)
    written["metrics"] = path
    logger.info("%s evaluation report: %s", split, ", ".join(str(p) for p in written.values()))
    return written
