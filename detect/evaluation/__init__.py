"""Evaluators: COCO (pycocotools), Pascal VOC mAP, segmentation mIoU.

    from detect.evaluation import build_evaluator, format_metrics
    ev = build_evaluator("voc_area", dataset)    # "coco" | "voc07_11pt" | "voc_area" | "miou"
    ev.reset()
    for images, targets in loader:
        ev.process(targets, model.predict(images))   # outputs in original image coordinates
    metrics = ev.evaluate()                          # {"bbox/AP50": 0.87, "bbox/AP50-RBC": ..., ...}
    print(format_metrics(metrics))

The protocol, metric names and distributed behaviour are described in
:mod:`detect.evaluation.base`; each metric's exact definition is in its module.
"""
from __future__ import annotations

from detect.errors import UserInputError
from detect.evaluation.base import (
    DatasetEvaluator,
    format_metrics,
    gather_per_image,
    gather_to_main,
    is_per_class_metric,
    label_metrics,
)
from detect.evaluation.coco import COCOEvaluator, detections_to_coco_results, write_coco_results
from detect.evaluation.segmentation import SemSegEvaluator, confusion_matrix, segmentation_metrics
from detect.evaluation.voc import VOC_METRICS, VOCEvaluator, voc_ap, voc_evaluate

#: ``eval.metric`` name -> evaluator class (each states the ``metric_names`` it returns)
EVALUATORS = {"coco": COCOEvaluator, **{name: VOCEvaluator for name in VOC_METRICS}, "miou": SemSegEvaluator}
METRICS = tuple(EVALUATORS)

__all__ = [
    "METRICS",
    "COCOEvaluator",
    "DatasetEvaluator",
    "SemSegEvaluator",
    "VOCEvaluator",
    "build_evaluator",
    "confusion_matrix",
    "detections_to_coco_results",
    "format_metrics",
    "gather_per_image",
    "gather_to_main",
    "is_per_class_metric",
    "label_metrics",
    "describe_metrics",
    "EVALUATORS",
    "segmentation_metrics",
    "voc_ap",
    "voc_evaluate",
    "write_coco_results",
]


def build_evaluator(metric: str, dataset, results_path=None) -> DatasetEvaluator:
    """The evaluator named by a config's ``eval.metric`` for ``dataset``.

    - ``"coco"``: :class:`COCOEvaluator` on ``dataset.to_coco()`` with
      ``dataset.label_to_category_id``; ``results_path`` saves the COCO results JSON.
    - ``"voc07_11pt"`` / ``"voc_area"``: :class:`VOCEvaluator` on
      ``dataset.get_ground_truth``; ``results_path`` saves the detections as COCO JSON too.
    - ``"miou"``: :class:`SemSegEvaluator` over ``dataset.class_names``.
    """
    if metric == "coco":
        return COCOEvaluator.from_dataset(dataset, results_path=results_path)
    if metric in VOC_METRICS:
        return VOCEvaluator(dataset, use_07_metric=VOC_METRICS[metric], results_path=results_path)
    if metric == "miou":
        if results_path is not None:
            raise UserInputError(
                f"--save-results {results_path} writes box detections as COCO JSON; a segmentation model (the "
                "'miou' metric) has none: tools/infer.py --checkpoint CKPT --source IMAGES writes its label PNGs")
        return SemSegEvaluator(dataset.class_names)
    raise UserInputError(f"unknown evaluation metric {metric!r}; choose one of {', '.join(METRICS)} (eval.metric)")


def describe_metrics(prefix: str = "") -> str:
    """One line per ``eval.metric``: the keys its evaluator returns, from :data:`EVALUATORS`
    (``prefix`` e.g. ``"<split>/"`` as tools/eval.py labels them)."""
    return "\n".join(
        f"  {name}: " + ", ".join(prefix + key for key in cls.metric_names) for name, cls in EVALUATORS.items()
    )
