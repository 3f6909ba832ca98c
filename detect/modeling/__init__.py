"""Detectors and their parts. Importing this package imports nothing heavy; use the modules:

- :mod:`~detect.modeling.base` -- the ``Detector`` interface; :mod:`~detect.modeling.registry`
  -- ``build_detector`` / ``list_detectors``.
- Two-stage detectors: :mod:`~detect.modeling.meta_arch.faster_rcnn` (``build_faster_rcnn``, the
  variants), :mod:`~detect.modeling.meta_arch.two_stage` (the meta-architecture and the CPU fast path),
  :mod:`~detect.modeling.weights` (checkpoints and torchvision's models).
- Parts, each with its contract in its docstring: :mod:`~detect.modeling.transform` (image
  transform), :mod:`~detect.modeling.anchors`, :mod:`~detect.modeling.box_coder`,
  :mod:`~detect.modeling.matcher`, :mod:`~detect.modeling.sampler`, :mod:`~detect.modeling.rpn`,
  :mod:`~detect.modeling.fpn`, :mod:`~detect.modeling.poolers` and
  :mod:`~detect.modeling.roi_ops` (RoI pooling), :mod:`~detect.modeling.box_heads`,
  :mod:`~detect.modeling.roi_heads`, :mod:`~detect.modeling.fast_inference`.
"""
