"""Convert VOC and YOLO-txt annotations to a COCO instances JSON.

The source is parsed by the dataset readers and checked by the load-time checks, so a
converted file holds exactly the boxes a :class:`~detect.data.voc.VOCDetection` or
:class:`~detect.data.yolo.YoloDetection` would train on (``check_policy`` decides what
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

__all__ = ["voc_to_coco", "yolo_to_coco", "write_coco"]


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


def voc_to_coco(root, split: str, out_file, *, class_names=None, check_policy: str = "raise") -> dict:
    """``root/ImageSets/Main/<split>.txt`` -> COCO JSON (image folder: ``root/JPEGImages``)."""
    from detect.data.voc import parse_voc

    return write_coco(parse_voc(root, split, class_names), out_file, Path(root) / "JPEGImages", check_policy)


def yolo_to_coco(image_dir, out_file, *, class_names=None, label_dir=None, check_policy: str = "raise") -> dict:
    """A YOLO-txt folder (or image list) -> COCO JSON (file names relative to the image folder)."""
    from detect.data.yolo import parse_yolo

    image_dir = Path(image_dir)
    image_root = image_dir.parent if image_dir.is_file() else image_dir
    return write_coco(parse_yolo(image_dir, class_names, label_dir), out_file, image_root, check_policy)
