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
per-class values are ``"<task>/<name>-<class name>"``. Values are fractions in 0..1
(not percentages); a metric that is undefined on the data (COCO's ``-1``, e.g. APs when
there are no small objects) is ``nan``.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from detect.engine.distributed import all_gather_object, get_rank


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


def format_metrics(metrics: dict[str, float]) -> str:
    """Render a metrics dict: the summary values on one line each, then one table of the
    per-class values (keys ``"<task>/<name>-<class>"``) with a column per metric name."""
    summary = [f"{key}: {value:.4f}" for key, value in metrics.items() if "-" not in key.split("/", 1)[-1]]
    columns: list[str] = []
    per_class: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name = key.split("/", 1)[-1]
        if "-" not in name:
            continue
        metric, class_name = name.split("-", 1)
        if metric not in columns:
            columns.append(metric)
        per_class.setdefault(class_name, {})[metric] = value
    text = "\n".join(summary)
    if per_class:
        rows = [(name, [values.get(c, float("nan")) for c in columns]) for name, values in per_class.items()]
        text += "\n" + format_table("class", [f"{c} (%)" for c in columns], rows)
    return text
