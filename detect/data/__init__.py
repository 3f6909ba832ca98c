"""Datasets, transforms, batching and checks (the data path).

::

    from detect.data import CocoDetection, VOCDetection, YoloDetection, make_shapes, collate
    from detect.data.build import build_dataset, build_dataloader
    from detect.data.image_io import read_image, to_tensor

Every dataset returns ``(Tensor[3, H, W] float 0..1 RGB, target)`` with ``boxes`` (xyxy,
continuous pixels of the returned image), ``labels`` (1..K), ``image_id`` and
``orig_size`` (and ``masks`` when asked); see docs/ABSTRACTIONS.md ("Dataset items").
Problems in the annotations are found when a dataset loads and handled by its
``check_policy`` ("raise" | "drop" | "clip"); ``tools/check_dataset.py`` reports them all.

Names are imported lazily so that ``import detect.data.image_io`` does not pull in
albumentations.
"""
from importlib import import_module

_EXPORTS = {
    "CocoDetection": "detect.data.coco",
    "VOCDetection": "detect.data.voc",
    "VOC_CLASSES": "detect.data.voc",
    "YoloDetection": "detect.data.yolo_labels",
    "DetectionDataset": "detect.data.dataset",
    "make_shapes": "detect.data.shapes",
    "collate": "detect.data.loader",
    "DetectionDataLoader": "detect.data.loader",
    "GroupedBatchSampler": "detect.data.samplers",
    "InferenceSampler": "detect.data.samplers",
    "build_transforms": "detect.data.transforms",
    "build_dataset": "detect.data.build",
    "build_dataloader": "detect.data.build",
    "read_image": "detect.data.image_io",
    "to_tensor": "detect.data.image_io",
    "ImageReadError": "detect.data.image_io",
    "DatasetError": "detect.data.checks",
    "DataPathError": "detect.data.checks",
    "detect_layout": "detect.data.sources",
    "derive_class_names": "detect.data.sources",
    "apply_data_path": "detect.data.sources",
    "Problem": "detect.data.checks",
    "MaskError": "detect.data.checks",
    "PennFudanDataset": "detect.data.pennfudan",
    "SBDSegmentation": "detect.data.sbd",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'detect.data' has no attribute {name!r}")


def __dir__():
    return __all__
