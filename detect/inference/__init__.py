"""Inference: the Predictor, input sources (image, folder, glob, video, webcam), drawing.

::

    from detect.inference import Predictor, run_inference, draw_detections
    predictor = Predictor.from_checkpoint("runs/demo/best.pth", device="cpu")
    dets = predictor("image.jpg")               # boxes, scores, labels, class_names
    # a segmentation checkpoint (FCN): sem_seg logits, label_map [H, W], class_names (background first)
    run_inference(predictor, "clip.mp4", "runs/infer")

See :mod:`detect.inference.predictor` (inputs and outputs),
:mod:`detect.inference.sources` (source specs, video reading and writing) and
:mod:`detect.inference.run` (what ``tools/infer.py`` writes).
"""
from detect.inference.draw import class_color, draw_detections, draw_segmentation, label_color
from detect.inference.predictor import Predictor, detections_to_json
from detect.inference.run import InferenceResult, run_inference
from detect.inference.sources import OutputError, SourceError, open_sources, write_label_png

__all__ = [
    "InferenceResult",
    "OutputError",
    "Predictor",
    "SourceError",
    "class_color",
    "detections_to_json",
    "draw_detections",
    "draw_segmentation",
    "label_color",
    "open_sources",
    "run_inference",
    "write_label_png",
]
