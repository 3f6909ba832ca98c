"""The two-stage meta-architecture shared by Faster R-CNN and Fast R-CNN.

Contract
--------
``TwoStageDetector(transform, backbone, neck, proposal_generator, roi_heads, num_classes,
proposal_features, roi_features)`` is a :class:`~detect.modeling.base.Detector`:

1. ``transform`` (:class:`~detect.modeling.transform.ImageTransform`) normalises, resizes
   and pads the images and scales the target boxes;
2. ``backbone`` returns ``OrderedDict[cN]``; ``neck`` (or ``None``) maps it to the levels
   the heads read (FPN: ``pN``); both expose ``strides``;
3. ``proposal_generator(batch, features, strides, targets, training) -> (proposals, losses)``
   reads the levels named ``proposal_features``: the RPN, or for Fast R-CNN any module with
   that signature that supplies external proposals;
4. ``roi_heads(features, proposals, image_sizes, targets, training) -> (detections, losses)``
   reads the levels named ``roi_features``;
5. detections go back to input-image coordinates through ``transform.postprocess``.

``loss()`` passes ``training=True`` to both stages whatever the module mode (the validation
loss uses the training proposal counts and sampling; BatchNorm and dropout follow the
module mode); ``predict()`` passes ``training=False``.

``propose(images) -> (boxes, scores)``: the RPN's test-time proposals alone (post-NMS, best
first, at most ``rpn_post_nms_top_n_test`` per image) as ``list[Tensor[P, 4]]`` in the pixels
of the images as given, with their objectness probabilities ``list[Tensor[P]]`` (sigmoid);
eval-mode behaviour, no gradients, the module mode unchanged (what
``tools/make_proposals.py --method rpn`` writes).

:meth:`TwoStageDetector.optimize_for_inference` turns the model into a fast inference-only
model (see its docstring).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from detect.modeling.base import Detector, checked_score_thresh, validate_images
from detect.modeling.fast_inference import fold_sequential_norms_, fuse_conv_activations_
from detect.modeling.transform import ImageBatch, ImageTransform, scale_boxes


class TwoStageDetector(Detector):
    """Backbone, optional neck, proposal source and RoI heads (see the module docstring).

    Args:
        transform: the image transform.
        backbone: feature extractor with ``out_channels`` and ``strides`` dicts.
        neck: ``None`` or a module mapping backbone features to the head levels
            (with its own ``strides``).
        proposal_generator: the RPN (or an external-proposal source).
        roi_heads: :class:`~detect.modeling.roi_heads.RoIHeads`.
        num_classes: K foreground classes.
        proposal_features: names of the levels the proposal generator reads.
        roi_features: names of the levels the RoI heads pool from.
        channels_last: run convolutions in the NHWC layout, in training too (oneDNN's CPU
            kernels are faster in it: a R50-FPN training step took 0.73x the NCHW time here).
            Numbers change at float-rounding level only.
    """

    def __init__(
        self,
        transform: ImageTransform,
        backbone: nn.Module,
        neck: nn.Module | None,
        proposal_generator: nn.Module,
        roi_heads: nn.Module,
        num_classes: int,
        proposal_features: list[str],
        roi_features: list[str],
        channels_last: bool = False,
    ):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.neck = neck
        self.rpn = proposal_generator
        self.roi_heads = roi_heads
        self.num_classes = int(num_classes)
        self.proposal_features = list(proposal_features)
        self.roi_features = list(roi_features)
        strides = dict(neck.strides if neck is not None else backbone.strides)
        missing = [n for n in self.proposal_features + self.roi_features if n not in strides]
        if missing:
            raise ValueError(f"feature levels {missing} are not produced; available: {list(strides)}")
        self.feature_strides = strides
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.to(memory_format=torch.channels_last)
        self._inference_options: dict | None = None

    # ------------------------------------------------------------------ contract
    #: the class-specific predictor (cls_score and bbox_pred have K + 1 rows)
    class_specific_prefixes = ("roi_heads.box_predictor.",)

    @property
    def score_thresh(self) -> float:
        return self.roi_heads.score_thresh

    @score_thresh.setter
    def score_thresh(self, value: float) -> None:
        self.roi_heads.score_thresh = checked_score_thresh(value)

    # ------------------------------------------------------------------ stages
    def extract_features(self, batch: ImageBatch) -> "OrderedDict[str, Tensor]":
        features = self.backbone(batch.tensor)
        return self.neck(features) if self.neck is not None else features

    def _proposals(self, batch: ImageBatch, features, targets, training: bool, given):
        """``(proposals in network-input pixels, losses)`` of the proposal source: the RPN
        here; Fast R-CNN overrides it to use ``given`` proposals (input-image pixels) or the
        targets' ``"proposals"``."""
        return self.rpn(
            batch,
            [features[n] for n in self.proposal_features],
            [self.feature_strides[n] for n in self.proposal_features],
            targets,
            training=training,
        )

    def _run(self, images: list[Tensor], targets: list[dict] | None, training: bool, proposals=None):
        batch, targets = self.transform(images, targets, training=training and self.training)
        if self.channels_last or (self._inference_options is not None and self._inference_options["channels_last"]):
            batch.tensor = batch.tensor.contiguous(memory_format=torch.channels_last)
        features = self.extract_features(batch)
        proposals, proposal_losses = self._proposals(batch, features, targets, training, proposals)
        detections, detector_losses = self.roi_heads(
            [features[n] for n in self.roi_features], proposals, batch.image_sizes, targets, training=training
        )
        return batch, detections, {**proposal_losses, **detector_losses}

    def _compute_losses(self, images: list[Tensor], targets: list[dict]) -> dict[str, Tensor]:
        if self._inference_options is not None:
            raise RuntimeError(
                "this model was optimized for inference (norm layers folded into convolutions) and cannot "
                "compute losses; build or load a fresh model to train"
            )
        _, _, losses = self._run(images, targets, training=True)
        return losses

    def _compute_predictions(self, images: list[Tensor], proposals: list[Tensor] | None = None) -> list[dict[str, Tensor]]:
        options = self._inference_options
        if options is None:
            batch, detections, _ = self._run(images, None, training=False, proposals=proposals)
            return self.transform.postprocess(detections, batch)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=options["bf16"]):
            batch, detections, _ = self._run(images, None, training=False, proposals=proposals)
        # Inference tensors cannot be updated in place later (e.g. by an evaluator converting
        # box formats): hand out ordinary tensors; the copies are a few kilobytes.
        detections = [{k: v.clone() for k, v in d.items()} for d in detections]
        return self.transform.postprocess(detections, batch)

    # ------------------------------------------------------------------ proposals alone
    def propose(self, images: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """The RPN's test-time proposals and objectness (see the module docstring)."""
        validate_images(images)
        if not hasattr(self.rpn, "anchor_generator"):
            raise TypeError(f"{type(self).__name__} has no region proposal network to propose with")
        was_training = self.training
        if was_training:
            self.eval()
        try:
            with torch.no_grad():
                batch, _ = self.transform(list(images), None, training=False)
                features = self.extract_features(batch)
                boxes, scores = self.rpn.scored_proposals(
                    batch,
                    [features[n] for n in self.proposal_features],
                    [self.feature_strides[n] for n in self.proposal_features],
                )
        finally:
            if was_training:
                self.train()
        boxes = [scale_boxes(b, size, original) for b, size, original in
                 zip(boxes, batch.image_sizes, batch.original_sizes)]
        return boxes, scores

    # ------------------------------------------------------------------ fast path
    def optimize_for_inference(self, channels_last: bool = True, bf16: bool = False) -> "TwoStageDetector":
        """Make this model a fast, inference-only model, in place; returns ``self``.

        - every frozen or eval-mode BatchNorm of the backbone (and of a C4 box head) is folded
          into the convolution before it (``fuse_norm_()``), saving one pass over each map;
        - on CPU, convolutions followed by ReLU (and ResNet's residual addition) run as one
          oneDNN primitive (:mod:`detect.modeling.fast_inference`);
        - ``channels_last``: weights and the input batch use the NHWC layout, in which
          oneDNN's CPU convolutions are fastest and RoIAlign reads features without a copy;
        - predictions run under ``torch.inference_mode``;
        - ``bf16``: backbone, heads and pooling run under bfloat16 autocast (CPUs with
          AVX512-BF16 or AMX; see ``torch.cpu._is_avx512_bf16_supported()``); box decoding,
          NMS and outputs stay float32. This changes the numbers (about 3 significant
          digits). In fp32, folding and fusion keep the detections within the parity
          tolerance of the plain model (boxes 1e-3 px); channels-last convolutions sum in
          another order and move boxes by a few 1e-3 px, as they do torchvision's model.

        The model is put in eval mode, ``loss()`` raises afterwards, and its state dict no
        longer has the folded norm layers' keys: save weights before optimizing.
        """
        self.eval()
        for part in (self.backbone, self.roi_heads.box_head):
            if hasattr(part, "fuse_norm_"):
                part.fuse_norm_()
        fold_sequential_norms_(self)  # conv + norm blocks of an FPN or a conv box head
        on_cpu = all(p.device.type == "cpu" for p in self.parameters())
        if on_cpu and not bf16:
            fuse_conv_activations_(self)
        if channels_last:
            self.to(memory_format=torch.channels_last)
            pooler, head = self.roi_heads.pooler, self.roi_heads.box_head
            channels = {self.feature_strides[n]: self._feature_channels(n) for n in self.roi_features}
            if hasattr(head, "expect_channels_last_") and getattr(pooler, "pooler_type", None) == "roi_align" and len(set(channels.values())) == 1:
                # Our CPU RoIAlign returns channels-last rows: let fc6 read them without a copy.
                head.expect_channels_last_(next(iter(channels.values())), pooler.output_size[0])
        self._inference_options = {"channels_last": bool(channels_last), "bf16": bool(bf16)}
        return self

    def _feature_channels(self, name: str) -> int:
        source = self.neck if self.neck is not None else self.backbone
        return int(source.out_channels[name])
