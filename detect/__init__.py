"""detect: classic object detectors on PyTorch with pluggable backbones.

Public entry points::

    from detect import build_detector, list_detectors, Predictor
    model = build_detector("faster_rcnn", backbone="resnet50", fpn=True, num_classes=3)

Contracts shared by every part (tensor and box conventions, labels, interfaces,
configs, checkpoints) are described in ../shared/DESIGN.md and docs/ABSTRACTIONS.md.
"""
__version__ = "0.1.0"

from detect.modeling.registry import build_detector, list_detectors  # noqa: E402

__all__ = ["__version__", "build_detector", "list_detectors", "Predictor"]


def __getattr__(name):
    # The Predictor pulls in OpenCV and the data stack; import it only when asked for.
    if name == "Predictor":
        from detect.inference.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'detect' has no attribute {name!r}")
