"""Semantic segmentation metrics from a confusion matrix (mIoU and accuracies).

:class:`SemSegEvaluator` follows the protocol of :mod:`detect.evaluation.base`:
targets carry ``masks`` (``int64 [H, W]``, 0 = background, 1..K classes, 255 = ignore)
and outputs carry ``sem_seg`` (logits ``[C, H, W]`` at the mask's size, or an already
decided label map ``[H, W]``, in ``0..C-1`` wherever the mask is not ignored),
with ``C = K + 1`` classes including background.

The confusion matrix ``M[true, predicted]`` over all non-ignored pixels gives, per class
``c``: ``IoU_c = M[c, c] / (sum_j M[c, j] + sum_i M[i, c] - M[c, c])`` and
``Acc_c = M[c, c] / sum_j M[c, j]``. Classes with an empty union (resp. no pixels) are
left out of the means, as in the usual (FCN, detectron2) definitions.

Metrics: ``sem_seg/mIoU``, ``sem_seg/fwIoU`` (weighted by ground-truth frequency),
``sem_seg/mAcc``, ``sem_seg/pAcc`` (pixel accuracy), ``sem_seg/IoU-<class>``.
After :meth:`SemSegEvaluator.evaluate` (rank 0) the evaluator keeps the summed matrix
(``last_confusion_matrix``, ``int64 [C, C]``, rows = true class, background first) and
``per_class_table`` (IoU and accuracy per class, in percent), which ``tools/eval.py``
prints and writes into its report (:mod:`detect.evaluation.plots`).

Under torch.distributed each rank keeps one small sparse matrix per image id, rank 0
gathers them and counts an image seen on two ranks (a padding sampler) once, as the
detection evaluators do; the metrics are then those of one process over every image.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from detect.evaluation.base import DatasetEvaluator, check_batch, format_table, gather_per_image, image_id_of

logger = logging.getLogger(__name__)


def confusion_matrix(truth: torch.Tensor, predicted: torch.Tensor, num_classes: int, ignore_index: int = 255):
    """``int64 [C, C]`` counts of (true, predicted) pairs, ``ignore_index`` pixels skipped."""
    valid = truth != ignore_index
    pairs = truth[valid].to(torch.int64) * num_classes + predicted[valid].to(torch.int64)
    return torch.bincount(pairs, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def segmentation_metrics(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    """IoU and accuracy per class plus their means from a confusion matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    truth = matrix.sum(axis=1)
    union = truth + matrix.sum(axis=0) - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan)
        accuracy = np.where(truth > 0, true_positive / truth, np.nan)
    total = truth.sum()
    frequency = truth / total if total > 0 else np.zeros_like(truth)
    present = union > 0
    return {
        "iou": iou,
        "accuracy": accuracy,
        "mIoU": float(np.nanmean(iou)) if present.any() else float("nan"),
        "fwIoU": float(np.sum(frequency[present] * iou[present])) if total > 0 else float("nan"),
        "mAcc": float(np.nanmean(accuracy)) if (truth > 0).any() else float("nan"),
        "pAcc": float(true_positive.sum() / total) if total > 0 else float("nan"),
    }


class SemSegEvaluator(DatasetEvaluator):
    #: the metric keys evaluate() returns (``<class>``: one per class); tools/eval.py --help lists them
    metric_names = ("sem_seg/mIoU", "sem_seg/fwIoU", "sem_seg/mAcc", "sem_seg/pAcc", "sem_seg/IoU-<class>")
    """mIoU of semantic segmentation.

    Args:
        class_names (list[str]): the K foreground classes; background is class 0.
        ignore_index (int): mask value excluded from every count (255).
    """

    def __init__(self, class_names, ignore_index: int = 255):
        self.class_names = ["background", *class_names]
        self.num_classes = len(self.class_names)
        self.ignore_index = ignore_index
        self.per_class_table = ""
        self.last_confusion_matrix: np.ndarray | None = None
        self.reset()

    def reset(self) -> None:
        # image_id -> its confusion matrix in sparse form (flat indices, counts): a few
        # entries per image, so images can be gathered across ranks and counted once.
        self._per_image: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def process(self, targets, outputs) -> None:
        check_batch(targets, outputs)
        for index, (target, output) in enumerate(zip(targets, outputs)):
            image_id = image_id_of(target, index)
            if "masks" not in target:
                raise ValueError(f"image {image_id}: segmentation targets need 'masks' (int64 [H, W])")
            truth = torch.as_tensor(target["masks"]).cpu()
            prediction = torch.as_tensor(output["sem_seg"]).detach()
            if prediction.dim() == 3:
                if prediction.shape[0] != self.num_classes:
                    raise ValueError(
                        f"image {image_id}: sem_seg has {prediction.shape[0]} channels, expected "
                        f"{self.num_classes} (background + {self.num_classes - 1} classes)"
                    )
                prediction = prediction.argmax(dim=0)  # on the model's device: moves H*W, not C*H*W
            prediction = prediction.cpu()
            if prediction.shape != truth.shape:
                raise ValueError(
                    f"image {image_id}: prediction of size {tuple(prediction.shape)} for a mask of size "
                    f"{tuple(truth.shape)}; outputs must be at the mask's (original image) size"
                )
            valid = truth != self.ignore_index
            bad = valid & ((truth < 0) | (truth >= self.num_classes))
            if bad.any():
                raise ValueError(
                    f"image {image_id}: mask value {int(truth[bad][0])} is neither a class in "
                    f"0..{self.num_classes - 1} nor the ignore value {self.ignore_index}"
                )
            outside = valid & ((prediction < 0) | (prediction >= self.num_classes))
            if outside.any():
                raise ValueError(
                    f"image {image_id}: predicted class {int(prediction[outside][0])} is outside "
                    f"0..{self.num_classes - 1} (background + {self.num_classes - 1} classes) at a pixel "
                    f"whose mask is not {self.ignore_index}; every counted pixel needs a class"
                )
            counts = confusion_matrix(truth, prediction, self.num_classes, self.ignore_index).reshape(-1)
            nonzero = counts.nonzero().squeeze(1)
            self._per_image[image_id] = (nonzero.numpy(), counts[nonzero].numpy())

    def evaluate(self) -> dict[str, float]:
        per_image = gather_per_image(self._per_image)
        if per_image is None:
            return {}
        if not per_image:
            raise RuntimeError("SemSegEvaluator.evaluate(): no images were processed; call process() first")
        matrix = np.zeros(self.num_classes * self.num_classes, dtype=np.int64)
        for index, counts in per_image.values():
            np.add.at(matrix, index, counts)
        matrix = matrix.reshape(self.num_classes, self.num_classes)
        self.last_confusion_matrix = matrix
        values = segmentation_metrics(matrix)
        metrics = {f"sem_seg/{name}": values[name] for name in ("mIoU", "fwIoU", "mAcc", "pAcc")}
        rows = []
        for name, iou, accuracy in zip(self.class_names, values["iou"], values["accuracy"]):
            if not np.isnan(iou):
                metrics[f"sem_seg/IoU-{name}"] = float(iou)
            rows.append((name, [float(iou), float(accuracy)]))
        self.per_class_table = format_table("class", ["IoU (%)", "Acc (%)"], rows)
        logger.info("segmentation mIoU %.4f\n%s", metrics["sem_seg/mIoU"], self.per_class_table)
        return metrics
