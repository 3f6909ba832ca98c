"""One module per detector family (detectron2's name for this layer), the paper's facts in
each module's docstring:

- :mod:`~detect.modeling.meta_arch.two_stage` -- the two-stage meta-architecture (backbone,
  optional neck, proposal source, RoI heads) shared by Faster R-CNN and Fast R-CNN;
- :mod:`~detect.modeling.meta_arch.faster_rcnn` -- Faster R-CNN (``build_faster_rcnn``);
- :mod:`~detect.modeling.meta_arch.fast_rcnn` -- Fast R-CNN on given proposals (``build_fast_rcnn``);
- :mod:`~detect.modeling.meta_arch.rcnn` -- R-CNN: warped crops, SVMs, box regression, trained
  in stages by :mod:`detect.engine.stages` (``build_rcnn``);
- :mod:`~detect.modeling.meta_arch.yolov1` -- YOLOv1 (``build_yolov1``);
- :mod:`~detect.modeling.meta_arch.fcn` -- FCN semantic segmentation (``build_fcn``).

The parts the families share (image transform, anchors, box coding, matching, sampling,
RPN, RoI pooling and heads, FPN, losses) live one level up in :mod:`detect.modeling`.
"""
