"""The interface every detector and segmenter implements.

Every family states the contract of ../shared/DESIGN.md ("five families, one contract"),
which the tools, the Predictor and the engine use instead of reaching into a family:

- ``task``: ``"detection"`` or ``"semantic_segmentation"``;
- ``num_classes``: K foreground classes (background is internal);
- ``score_thresh``: a settable float; ``predict`` drops detections scoring below it;
  ``default_predict_score_thresh`` is what the Predictor and ``tools/infer.py`` use when
  the user gives none (``None``: the model's own ``score_thresh``);
- ``default_metric``: the evaluator ``tools/train.py`` / ``tools/eval.py`` run unless the
  config names one (``detect.evaluation.build_evaluator``), ``default_best_metric`` the key
  of its results that picks the best checkpoint;
- ``class_specific_prefixes``: the state-dict key prefixes whose shapes depend on K;
  ``--weights`` re-initialises them (and says so) when the class count changes;
- ``validate_targets(targets, images)``: the per-task check ``loss`` runs on entry
  (detection targets here; :class:`SemanticSegmenter` checks ``masks``);
- ``accepts_proposals``: whether ``predict(images, proposals=...)`` and the training
  targets' ``"proposals"`` are used (R-CNN, Fast R-CNN); other families refuse them.

A subclass implements two methods:

- ``_compute_losses(images, targets) -> dict[str, Tensor]``: scalar losses.
- ``_compute_predictions(images) -> list[dict]``: per image ``boxes`` float32 [M, 4]
  (xyxy, coordinates of the input image as given), ``scores`` float32 [M],
  ``labels`` int64 [M] in 1..K (segmenters return ``sem_seg`` float [K+1, H, W] logits at
  the input size instead). A family with ``accepts_proposals`` implements
  ``_compute_predictions(images, proposals=None)`` (``list[Tensor[P, 4]]`` or ``None``:
  its own proposal generator).

and this base class supplies the public API of ../shared/DESIGN.md:

- ``model(images, targets)`` in training mode returns the losses, ``model(images)``
  in eval mode returns the predictions;
- ``model.loss(images, targets)`` and ``model.predict(images)`` work in either mode.
  ``loss`` in eval mode keeps BatchNorm in eval (a validation loss); ``predict`` in
  training mode runs the inference path (test-time proposal counts, post-processing)
  with the module temporarily in eval mode and without gradients, and restores the
  mode afterwards, so neither changes any state.

Inputs are validated on entry by :func:`validate_images`, :func:`validate_targets` (or
:func:`validate_mask_targets`) and :func:`validate_proposals`.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detect.errors import UserInputError


def validate_images(images) -> None:
    """Images must be a non-empty list/tuple of float ``Tensor[3, H, W]``."""
    if isinstance(images, Tensor):
        raise TypeError(
            "images must be a list of Tensor[3, H, W] (sizes may differ), not a single "
            f"tensor of shape {tuple(images.shape)}; pass list(batch) for a stacked batch"
        )
    if not isinstance(images, (list, tuple)) or len(images) == 0:
        raise TypeError(f"images must be a non-empty list of Tensor[3, H, W], got {type(images).__name__}")
    for i, image in enumerate(images):
        if not isinstance(image, Tensor):
            raise TypeError(f"image {i}: expected a Tensor[3, H, W], got {type(image).__name__}")
        if image.dim() != 3 or image.shape[0] != 3:
            raise UserInputError(f"image {i}: expected shape [3, H, W] (RGB, channels first), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise UserInputError(
                f"image {i}: expected a float tensor with values in 0..1, got {image.dtype}; "
                "divide uint8 images by 255"
            )
        if image.shape[1] == 0 or image.shape[2] == 0:
            raise UserInputError(f"image {i}: empty image of shape {tuple(image.shape)}")


def validate_targets(targets, num_images: int, num_classes: int) -> None:
    """Check detection targets and raise ``UserInputError`` (a ``ValueError``) naming the image and box index.

    Each target is a dict with ``boxes`` float [N, 4] (x1, y1, x2, y2 with x2 > x1 and
    y2 > y1, finite) and ``labels`` int64 [N] in 1..num_classes. N = 0 is valid.
    Types and shapes are checked first, image by image; the values are then checked on whole
    tensors with one host read for the batch, and only when that finds a problem are the
    images and boxes looked at one by one to name the first bad one.
    """
    if targets is None:
        raise UserInputError("targets are required to compute losses: list of dicts with 'boxes' and 'labels'")
    if not isinstance(targets, (list, tuple)) or len(targets) != num_images:
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise UserInputError(f"expected a list of {num_images} target dicts (one per image), got {got}")
    problems = []  # per non-empty image: (index, bad box mask, bad label mask)
    for i, target in enumerate(targets):
        if not isinstance(target, dict) or "boxes" not in target or "labels" not in target:
            raise UserInputError(f"target {i}: expected a dict with 'boxes' [N, 4] and 'labels' [N]")
        boxes, labels = target["boxes"], target["labels"]
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
            shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
            raise UserInputError(f"target {i}: boxes must be a Tensor [N, 4] (x1, y1, x2, y2), got {shape}")
        if not boxes.is_floating_point():
            raise UserInputError(f"target {i}: boxes must be floating point, got {boxes.dtype}")
        if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != boxes.shape[0]:
            shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
            raise UserInputError(f"target {i}: labels must be a Tensor [{boxes.shape[0]}] matching boxes, got {shape}")
        if labels.dtype != torch.int64:
            raise UserInputError(f"target {i}: labels must be int64, got {labels.dtype}")
        if boxes.shape[0] == 0:
            continue
        valid = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        problems.append((i, ~valid, (labels < 1) | (labels > num_classes)))
    if not problems:
        return
    device = problems[0][1].device
    any_bad = torch.stack([mask.any().to(device) for _, *masks in problems for mask in masks])
    if not bool(any_bad.any()):
        return  # the one host read of a valid batch
    for i, bad_box, bad_label in problems:
        boxes, labels = targets[i]["boxes"], targets[i]["labels"]
        if bool(bad_box.any()):
            j = int(bad_box.nonzero()[0, 0])
            finite = bool(torch.isfinite(boxes[j]).all())
            what = "non-finite" if not finite else "degenerate (needs x2 > x1 and y2 > y1)"
            raise UserInputError(
                f"target {i}, box {j}: {what} box {boxes[j].tolist()}; boxes are x1, y1, x2, y2 in "
                "pixels; drop or fix it in the dataset (tools/check_dataset.py lists such boxes)"
            )
        if bool(bad_label.any()):
            j = int(bad_label.nonzero()[0, 0])
            raise UserInputError(
                f"target {i}, box {j}: label {int(labels[j])} is outside 1..{num_classes}; labels are "
                f"1..K for K={num_classes} foreground classes, 0 is background and is never a target"
            )


def validate_mask_targets(targets, images, num_classes: int) -> None:
    """Check segmentation targets: ``masks`` int64 ``[H, W]`` of image i's size, values in
    ``0..num_classes`` or 255 (ignore). Raises ``UserInputError`` naming the image and value."""
    if targets is None:
        raise UserInputError("targets are required to compute losses: list of dicts with 'masks' int64 [H, W]")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        got = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise UserInputError(f"expected a list of {len(images)} target dicts (one per image), got {got}")
    bad_values = []
    for i, (target, image) in enumerate(zip(targets, images)):
        mask = target.get("masks") if isinstance(target, dict) else None
        if not isinstance(mask, Tensor):
            raise UserInputError(f"target {i}: expected a dict with 'masks' int64 [H, W] (0 background, "
                                 f"1..{num_classes}, 255 ignore); build the dataset with masks=True")
        if mask.dim() != 2 or tuple(mask.shape) != tuple(image.shape[-2:]):
            raise UserInputError(f"target {i}: mask of shape {tuple(mask.shape)} does not match its image "
                                 f"{tuple(image.shape[-2:])}; masks are [H, W] at the image's size")
        if mask.dtype != torch.int64:
            raise UserInputError(f"target {i}: masks must be int64, got {mask.dtype}")
        bad_values.append(((mask > num_classes) & (mask != 255)) | (mask < 0))
    flags = torch.stack([bad.any() for bad in bad_values])
    if not bool(flags.any()):
        return  # one host read for a valid batch
    i = int(flags.nonzero()[0, 0])
    values = torch.unique(targets[i]["masks"][bad_values[i]])[:5].tolist()
    raise UserInputError(
        f"target {i}: mask values {values} are outside 0..{num_classes} and not 255; masks hold 0 for "
        f"background, 1..K for K={num_classes} classes and 255 for ignored pixels"
    )


def validate_proposals(proposals, num_images: int) -> None:
    """``proposals``: a list of ``num_images`` float ``Tensor[P, 4]`` (xyxy; P = 0 allowed)."""
    if not isinstance(proposals, (list, tuple)) or len(proposals) != num_images:
        got = len(proposals) if isinstance(proposals, (list, tuple)) else type(proposals).__name__
        raise UserInputError(f"proposals must be a list of {num_images} Tensor[P, 4] (one per image), got {got}")
    for i, boxes in enumerate(proposals):
        if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
            shape = f"{tuple(boxes.shape)} {boxes.dtype}" if isinstance(boxes, Tensor) else type(boxes).__name__
            raise UserInputError(f"proposals of image {i}: expected a float Tensor [P, 4] (x1, y1, x2, y2), got {shape}")


def checked_score_thresh(value) -> float:
    """``value`` as a float in 0..1, or ``ValueError``."""
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise UserInputError(f"score_thresh must lie in 0..1, got {value}")
    return value


class Detector(nn.Module):
    """Base class: mode dispatch, input validation, ``loss``/``predict`` in either mode, and
    the attributes every family states (see the module docstring)."""

    task: str = "detection"
    num_classes: int
    default_metric: str = "voc_area"
    default_best_metric: str = "bbox/AP50"
    default_predict_score_thresh: float | None = None
    class_specific_prefixes: tuple[str, ...] = ()
    accepts_proposals: bool = False

    # A plain float by default (``self.score_thresh = 0.05`` in a constructor); a family
    # whose post-processing lives in a sub-module overrides the property to delegate.
    @property
    def score_thresh(self) -> float:
        if "_score_thresh" not in self.__dict__:
            raise NotImplementedError(f"{type(self).__name__} does not state its score_thresh")
        return self.__dict__["_score_thresh"]

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        self.__dict__["_score_thresh"] = checked_score_thresh(value)

    def train(self, mode: bool = True):
        # optimize_for_inference() (which sets _inference_options) folds norms and drops
        # training-only parts: such a model must never train again
        if mode and self.__dict__.get("_inference_options") is not None:
            raise RuntimeError("this model was optimized for inference and cannot be put in training mode")
        return super().train(mode)

    def validate_targets(self, targets, images: list[Tensor]) -> None:
        """The per-task check of training targets (detection: boxes and labels)."""
        validate_targets(targets, len(images), self.num_classes)

    def forward(self, images, targets=None):
        if self.training:
            return self.loss(images, targets)
        return self.predict(images)

    def loss(self, images, targets) -> dict[str, Tensor]:
        validate_images(images)
        self.validate_targets(targets, images)
        return self._compute_losses(list(images), list(targets))

    def predict(self, images, proposals=None) -> list[dict[str, Tensor]]:
        validate_images(images)
        kwargs = {}
        if proposals is not None:
            if not self.accepts_proposals:
                raise UserInputError(f"{type(self).__name__} makes its own proposals (or has none); "
                                     "predict(images, proposals=...) is for R-CNN and Fast R-CNN")
            validate_proposals(proposals, len(images))
            kwargs["proposals"] = list(proposals)
        was_training = self.training
        if was_training:
            self.eval()
        try:
            with torch.no_grad():
                return self._compute_predictions(list(images), **kwargs)
        finally:
            if was_training:
                self.train()

    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        raise NotImplementedError

    def _compute_predictions(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        raise NotImplementedError


class SemanticSegmenter(Detector):
    """Base of the segmentation family (FCN): ``masks`` targets, ``sem_seg`` outputs.

    ``score_thresh`` does not apply (every pixel gets a class): reading it gives ``None``
    and setting it raises. Evaluated by mIoU (``detect.evaluation.SemSegEvaluator``)."""

    task = "semantic_segmentation"
    default_metric = "miou"
    default_best_metric = "sem_seg/mIoU"

    @property
    def score_thresh(self):
        return None

    @score_thresh.setter
    def score_thresh(self, value) -> None:
        if value is not None:
            raise UserInputError(f"{type(self).__name__} labels every pixel; it has no score threshold "
                                 f"(got score_thresh={value})")

    def validate_targets(self, targets, images: list[Tensor]) -> None:
        validate_mask_targets(targets, images, self.num_classes)
