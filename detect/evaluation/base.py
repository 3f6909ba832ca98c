"""The evaluator protocol and the pieces every evaluator shares.

Protocol (docs/ABSTRACTIONS.md, "Evaluators")::

    ev.reset()
    ev.process(targets, outputs)   # one call per batch
    metrics = ev.evaluate()        # dict[str, float]

- ``targets`` is the batch's list of target dicts; each carries ``image_id`` (the
  source's own id, an ``int`` or a 0-d tensor). Segmentation targets also carry
  ``masks``.
- ``outputs`` is the model's list of output dicts for the same images, in the
  coordinates of the *original* image (the caller undoes any resizing done by the data
  transforms; the model itself already undoes its own).
- ``evaluate()`` under ``torch.distributed`` gathers every rank's processed results
  (``all_gather_object``) and computes on rank 0, which returns the full metrics; the
  other ranks return ``{}``. Every rank must call it. An image processed on two ranks
  (a padding ``DistributedSampler`` repeats images to even out the shards) counts once.

Metric keys are ``"<task>/<name>"``: ``bbox/AP``, ``bbox/AP50``, ``sem_seg/mIoU``, ...;
per-class values are ``"<task>/<name>-<class name>"`` (:func:`is_per_class_metric` tells
them apart: metric names have no ``-``, class names may). Values are fractions in 0..1
(not percentages); a metric that is undefined on the data (COCO's ``-1``, e.g. APs when
there are no small objects) is ``nan``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from detect.distributed import all_gather_object, get_rank


class DatasetEvaluator:
    """Base class: accumulate per-batch results, then compute metrics once."""

    def reset(self) -> None:
        raise NotImplementedError

    def process(self, targets: list[dict], outputs: list[dict]) -> None:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        raise NotImplementedError


def gather_to_main(local: Any) -> list[Any] | None:
    """Every rank's ``local`` object, in rank order, on rank 0; ``None`` on other ranks.

    Without an initialised process group this is ``[local]``. Uses the engine's
    ``all_gather_object`` (gloo and NCCL alike); objects are pickled, so keep them to
    numpy arrays and plain data.
    """
    gathered = all_gather_object(local)
    return gathered if get_rank() == 0 else None


def gather_per_image(local: dict[int, Any]) -> dict[int, Any] | None:
    """Every rank's ``{image_id: result}`` merged on rank 0; ``None`` on other ranks.

    An image processed on several ranks (a padding ``DistributedSampler`` repeats images
    to even out the shards) counts once, with the result of the lowest rank.
    """
    gathered = gather_to_main(local)
    if gathered is None:
        return None
    merged: dict[int, Any] = {}
    for part in gathered:
        for image_id, result in part.items():
            merged.setdefault(image_id, result)
    return merged


def as_numpy(value, dtype) -> np.ndarray:
    """A tensor (any device) or array-like as a numpy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def is_per_class_metric(key: str) -> bool:
    """Whether a metric key is a per-class value (``"bbox/AP50-car"``) rather than a summary
    (``"bbox/AP50"``, ``"val/loss_cls"``): its name after the task has a ``-``."""
    return "-" in key.split("/", 1)[-1]


def image_id_of(target: dict, index: int) -> int:
    """The ``image_id`` of a target as a Python int, with an error naming the index."""
    if not isinstance(target, dict) or "image_id" not in target:
        raise ValueError(
            f"target {index}: evaluators need 'image_id' in every target (the dataset's own id); "
            "pass the targets the dataset returned alongside the model outputs"
        )
    image_id = target["image_id"]
    if isinstance(image_id, torch.Tensor):
        if image_id.numel() != 1:
            raise ValueError(f"target {index}: image_id must be a single id, got shape {tuple(image_id.shape)}")
        image_id = image_id.item()
    return int(image_id)


def check_batch(targets, outputs) -> None:
    if not isinstance(targets, (list, tuple)) or not isinstance(outputs, (list, tuple)):
        raise TypeError("process(targets, outputs) takes two lists (one dict per image)")
    if len(targets) != len(outputs):
        raise ValueError(f"process() got {len(targets)} targets but {len(outputs)} outputs; they must pair up")


def format_table(title: str, columns: list[str], rows: list[tuple[str, list[float]]]) -> str:
    """A markdown table of per-class values (``nan`` shown as ``-``), in percent."""
    lines = [f"| {title} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows:
        cells = ["-" if math.isnan(v) else f"{100 * v:.1f}" for v in values]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def nan_if_negative(value: float) -> float:
    """pycocotools reports an undefined metric as -1; we report ``nan``."""
    value = float(value)
    return float("nan") if value < 0 else value


def label_metrics(metrics: dict[str, float], split: str) -> dict[str, float]:
    """The metrics named by the split they were computed on: ``bbox/AP50`` ->
    ``test/bbox/AP50``; the validation loop's ``val/loss`` and ``val/<term>`` ->
    ``test/loss``, ``test/<term>`` (``val`` there means "not training", not the split)."""
    labelled = {}
    for key, value in metrics.items():
        name = key[len("val/"):] if key.startswith("val/") else key
        labelled[f"{split}/{name}"] = value
    return labelled


def format_metrics(metrics: dict[str, float]) -> str:
    """Render a metrics dict: the summary values on one line each, then one table of the
    per-class values (keys ``"<task>/<name>-<class>"``) with a column per metric name."""
    summary = [f"{key}: {value:.4f}" for key, value in metrics.items() if not is_per_class_metric(key)]
    columns: list[str] = []
    per_class: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if not is_per_class_metric(key):
            continue
        metric, class_name = key.split("/", 1)[-1].split("-", 1)
        if metric not in columns:
            columns.append(metric)
        per_class.setdefault(class_name, {})[metric] = value
    text = "\n".join(summary)
    if per_class:
        rows = [(name, [values.get(c, float("nan")) for c in columns]) for name, values in per_class.items()]
        text += "\n" + format_table("class", [f"{c} (%)" for c in columns], rows)
    return text
