"""Convert VOC and YOLO-txt annotations to a COCO instances JSON.

The source is parsed by the dataset readers and checked by the load-time checks, so a
converted file holds exactly the boxes a :class:`~detect.data.voc.VOCDetection` or
:class:`~detect.data.yolo_labels.YoloDetection` would train on (``check_policy`` decides what
happens to bad annotations; the default raises and lists them). Boxes are written as
COCO ``[x, y, w, h]`` of the continuous box (VOC ``1 1 10 10`` -> ``[0, 0, 10, 10]``),
categories get ids 1..K in class-list order, images get the reader's index-based ids,
and ``file_name`` is relative to the image folder (VOC: ``JPEGImages``). VOC difficult
objects are written with ``iscrowd=1`` and ``difficult=1`` (ignored by COCOeval, kept
out of training by CocoDetection, as VOCDetection does by default).

Reading the result back::

    CocoDetection(image_dir, out_file)   # same boxes, labels and class names
"""
from __future__ import annotations

import json
from pathlib import Path

from detect.data.annotations import Annotations, to_coco_dict
from detect.data.checks import apply_policy, find_problems

__all__ = ["convert_split", "voc_to_coco", "yolo_to_coco", "write_coco"]


def write_coco(ann: Annotations, out_file, image_root, check_policy: str = "raise") -> dict:
    """Check ``ann`` under ``check_policy`` and write it as COCO JSON; returns counts."""
    cleaned, counts = apply_policy(ann, find_problems(ann), check_policy)
    coco = to_coco_dict(cleaned, image_root=image_root)
    coco["info"] = {"description": f"converted from {ann.source}: {ann.location}"}
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".tmp")
    tmp.write_text(json.dumps(coco, separators=(",", ":")))
    tmp.replace(out_file)
    return {"images": len(coco["images"]), "annotations": len(coco["annotations"]),
            "categories": len(coco["categories"]), **counts}


def convert_split(data_cfg: dict, split: str, out_file, *, check_policy: str | None = None) -> dict:
    """Split ``split`` of a config's ``data`` section (any format, e.g. from
    :func:`detect.data.sources.detect_layout`) -> COCO JSON, parsed by
    :func:`detect.data.build.parse_split` with the class names every tool derives
    (:func:`detect.data.sources.derive_class_names`); file names are relative to the
    reader's image folder. ``check_policy``: default the config's."""
    from detect.data.build import parse_split, resolve_split

    spec = resolve_split(data_cfg, split)
    if spec.class_names is None:  # COCO: the reader derives them; say so explicitly in the output too
        from detect.data.sources import derive_class_names

        spec.class_names = derive_class_names(data_cfg)
    ann = parse_split(spec)
    return write_coco(ann, out_file, ann.extra.get("image_root"), check_policy or spec.check_policy)


def _voc_config(root, split: str, class_names) -> dict:
    """A VOC data config holding ``split`` and the train split (when it exists), so that
    derived class names come from the train split as they do for training."""
    data = {"format": "voc", "root": str(root), "class_names": class_names, split: {"split": split}}
    if split != "train" and (Path(root) / "ImageSets" / "Main" / "train.txt").is_file():
        data = {"format": "voc", "root": str(root), "class_names": class_names, "train": {"split": "train"},
                split: {"split": split}}
    return data


def voc_to_coco(root, split: str, out_file, *, class_names=None, check_policy: str = "raise") -> dict:
    """``root/ImageSets/Main/<split>.txt`` -> COCO JSON (image folder: ``root/JPEGImages``).
    ``class_names=None``: :func:`~detect.data.sources.derive_class_names` (the train
    split's object names, sorted)."""
    return convert_split(_voc_config(root, split, class_names), split, out_file, check_policy=check_policy)


def yolo_to_coco(image_dir, out_file, *, class_names=None, label_dir=None, check_policy: str = "raise") -> dict:
    """A YOLO-txt folder (or image list) -> COCO JSON (file names relative to the image folder).
    ``class_names=None``: ``data.yaml`` / ``classes.txt`` near the data, else ``class_0..``."""
    source = {"image_dir": str(image_dir), **({"label_dir": str(label_dir)} if label_dir is not None else {})}
    data = {"format": "yolo", "class_names": class_names, "train": source}
    return convert_split(data, "train", out_file, check_policy=check_policy)
