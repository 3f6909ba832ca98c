"""Small models and checkpoints for the export tests (seconds each on two cores)."""
from __future__ import annotations

import torch

from detect import build_detector

CLASS_NAMES = ["circle", "square", "triangle"]
SMALL_FASTER_RCNN = dict(
    name="faster_rcnn", backbone="resnet18", fpn=True, num_classes=3, min_size=128, max_size=192,
    rpn_pre_nms_top_n_test=200, rpn_post_nms_top_n_test=100,
)
SMALL_FAST_RCNN = dict(name="fast_rcnn", backbone="resnet18", fpn=True, num_classes=3, min_size=128, max_size=192)
SMALL_FCN = dict(name="fcn", backbone="resnet18", variant="16s", num_classes=3, min_size=128, max_size=192)
SMALL_RCNN = dict(name="rcnn", backbone="resnet18", num_classes=3, crop_size=32, context_pad=2)
SMALL_YOLOV1 = dict(name="yolov1", backbone="resnet18", head="conv", input_size=(128, 128), grid_size=4, num_classes=3)
TRACE_SIZE = (96, 128)
CHECK_SIZES = ((80, 120), (130, 100))


def build(config: dict, seed: int = 0):
    """A seeded model whose scores are spread like a trained model's: the predictors' weights
    are drawn with std 0.05 instead of 0.01. With the init's near-equal objectness and class
    scores, rounding noise of 1e-6 (ONNX Runtime's resize and convolutions sum in another
    order) reorders the RPN's top-k and changes which proposals survive; a trained model's
    scores are far apart."""
    torch.manual_seed(seed)
    options = dict(config)
    model = build_detector(options.pop("name"), **options).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("rpn.head.cls_logits.", "rpn.head.bbox_pred.", "roi_heads.box_predictor.")) and parameter.dim() > 1:
                parameter.normal_(std=0.05 if "cls" in name else 0.01)
            elif parameter.dim() > 1 and not parameter.any():  # FCN's zero-initialised score layers
                parameter.normal_(std=0.01)
    return model


def save_small_checkpoint(path, config: dict, seed: int = 0):
    """A checkpoint of the demo's kind (config, class names, colour order) through the engine's writer."""
    from detect.engine.checkpoint import save_checkpoint

    model = build(config, seed)
    return save_checkpoint(path, {
        "model": model.state_dict(), "config": {"model": dict(config), "data": {"class_names": CLASS_NAMES}},
        "class_names": CLASS_NAMES, "color_order": "RGB", "box_format": "xyxy",
    })


def load_tool(name: str):
    """``tools/<name>.py``'s ``main`` (tools is not a package)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "tools" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"export_test_tool_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main
