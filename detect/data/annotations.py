"""The parsed ground truth of one split, in one table, whatever the source format.

Every reader (COCO JSON, VOC XML, YOLO txt) produces an :class:`Annotations`: one row per
image and one row per object, objects grouped by image in image order. Coordinates are
already converted to the library convention (``x1 y1 x2 y2``, continuous pixels, no +1);
the numbers as written in the file are kept in ``raw_boxes`` so that problem messages
can quote the file. Nothing here decodes an image.

The checks (:mod:`detect.data.checks`), the datasets (:mod:`detect.data.dataset`), the
doctor and the converters all work on this table, so that a format is parsed in exactly
one place and checked in exactly one place.
"""
from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass, field, fields, replace

import numpy as np

__all__ = ["Annotations", "ObjectTableBuilder", "to_coco_dict", "coco_from_dict", "relative_image_names", "restrict_to_images"]


@dataclass
class Annotations:
    """Images and objects of one split.

    Image rows (length I): ``file_paths`` (absolute), ``annotation_files`` (the file that
    describes the image, for messages), ``image_ids`` (the source's ids), ``heights`` /
    ``widths`` (from the annotation file; -1 when it gives none), ``image_valid`` (False
    when the annotation of the image could not be parsed; the reason is in ``problems``),
    ``mask_paths`` (VOC SegmentationClass PNGs, else None).

    Object rows (length M): ``object_image`` (row of the image), ``object_index`` (index
    of the annotation within its file: VOC ``<object>`` order, COCO order within the
    image, YOLO line), ``boxes`` float64 xyxy, ``labels`` int64 (1..K; 0 when the category is
    not in ``class_names``), ``raw_categories`` (the category as written, for messages),
    ``iscrowd``, ``difficult``, ``areas`` (COCO segment area, else box area), ``ann_ids``
    (COCO annotation ids, else -1; for messages and COCO masks), ``raw_boxes`` (as written,
    described by ``raw_box_format``).

    ``extra`` holds reader-specific data: ``coco_json`` (the parsed COCO file) and
    ``existing_files`` (a set holding every image path of the table that exists, from the
    reader's own folder listing, which :func:`~detect.data.checks.find_problems` reuses
    rather than list those folders again).

    ``size_offset`` is what the source adds to a box's extent: VOC boxes are inclusive
    pixel indices, so ``xmax == xmin`` (a single point) converts to width 1; the checks
    call a box zero-size when ``x2 - x1 - size_offset == 0``.
    """

    source: str
    location: str
    class_names: list[str]
    category_ids: list[int]
    file_paths: list[str]
    annotation_files: list[str]
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    image_valid: np.ndarray
    object_image: np.ndarray
    object_index: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    raw_categories: np.ndarray
    iscrowd: np.ndarray
    difficult: np.ndarray
    areas: np.ndarray
    ann_ids: np.ndarray
    raw_boxes: np.ndarray
    raw_box_format: str
    object_noun: str = "annotation"
    size_offset: float = 0.0
    mask_paths: list | None = None
    problems: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def num_images(self) -> int:
        return len(self.file_paths)

    @property
    def num_objects(self) -> int:
        return int(self.boxes.shape[0])

    def object_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """``starts, ends`` such that objects of image ``i`` are rows ``starts[i]:ends[i]``."""
        positions = np.arange(self.num_images + 1)
        bounds = np.searchsorted(self.object_image, positions, side="left")
        return bounds[:-1], bounds[1:]

    def select(self, keep_images: np.ndarray | None = None, keep_objects: np.ndarray | None = None) -> "Annotations":
        """A copy restricted to the given images (bool [I]) and objects (bool [M]).

        Objects of dropped images go with them; ``object_image`` is renumbered.
        """
        keep_images = np.ones(self.num_images, bool) if keep_images is None else np.asarray(keep_images, bool)
        keep_objects = np.ones(self.num_objects, bool) if keep_objects is None else np.asarray(keep_objects, bool)
        keep_objects = keep_objects & keep_images[self.object_image]
        new_row = np.cumsum(keep_images) - 1
        image_rows = np.flatnonzero(keep_images)
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _IMAGE_ARRAYS:
                changes[f.name] = value[keep_images]
            elif f.name in _IMAGE_LISTS:
                changes[f.name] = None if value is None else [value[i] for i in image_rows]
            elif f.name in _OBJECT_ARRAYS:
                changes[f.name] = value[keep_objects]
        changes["object_image"] = new_row[self.object_image[keep_objects]]
        return replace(self, **changes)


def relative_image_names(ann: Annotations) -> list[str]:
    """Each image's path relative to the reader's image folder (``extra["image_root"]``:
    COCO ``image_dir``, VOC ``JPEGImages``, YOLO ``image_dir``), with ``/`` separators:
    the names an explicit image list (a split's ``images``) is written in."""
    root = ann.extra.get("image_root")
    if root is None:
        return [os.path.basename(p) for p in ann.file_paths]
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in ann.file_paths]


def restrict_to_images(ann: Annotations, images) -> Annotations:
    """``ann`` restricted to ``images`` (names as :func:`relative_image_names` gives them),
    in the table's order; ``None`` keeps everything. A name the split does not hold raises
    :class:`~detect.data.checks.DatasetError` naming it (the list is stale: the folder
    changed since it was written)."""
    if images is None:
        return ann
    from detect.data.checks import DatasetError, Problem

    names = np.asarray(relative_image_names(ann), dtype=object)
    wanted = np.asarray([str(n).replace(os.sep, "/") for n in images], dtype=object)
    unknown = wanted[~np.isin(wanted, names)] if wanted.size else wanted
    if unknown.size:
        raise DatasetError(ann.location, [Problem("missing_image", ann.location, None, None,
                                                  f"listed image {n!r} is not in this split") for n in unknown[:20]],
                           hint="The split's `images` list names images the source does not hold (the folder changed "
                                "since the list was written): remove them, or re-run with --data PATH to list them anew.")
    return ann.select(keep_images=np.isin(names, wanted))


_IMAGE_ARRAYS = {"image_ids", "heights", "widths", "image_valid"}
_IMAGE_LISTS = {"file_paths", "annotation_files", "mask_paths"}
_OBJECT_ARRAYS = {
    "object_index", "boxes", "labels", "raw_categories", "iscrowd", "difficult", "areas",
    "ann_ids", "raw_boxes",
}


class ObjectTableBuilder:
    """Accumulates per-image parse results (lists of numbers) into the flat arrays.

    Readers that parse one file per image (VOC, YOLO) append per image; the arrays are
    built once at the end, so no per-object numpy work happens in the parsing loop.
    """

    def __init__(self):
        self.object_image: list[int] = []
        self.object_index: list[int] = []
        self.raw_boxes: list[tuple] = []
        self.raw_categories: list = []
        self.iscrowd: list[bool] = []
        self.difficult: list[bool] = []

    def add(self, image_row: int, index: int, raw_box, raw_category, *, iscrowd=False, difficult=False):
        self.object_image.append(image_row)
        self.object_index.append(index)
        self.raw_boxes.append(raw_box)
        self.raw_categories.append(raw_category)
        self.iscrowd.append(iscrowd)
        self.difficult.append(difficult)

    def arrays(self) -> dict:
        raw = np.asarray(self.raw_boxes, dtype=np.float64).reshape(-1, 4)
        categories = np.empty(len(self.raw_categories), dtype=object)
        categories[:] = self.raw_categories
        return dict(
            object_image=np.asarray(self.object_image, dtype=np.int64),
            object_index=np.asarray(self.object_index, dtype=np.int64),
            raw_boxes=raw,
            raw_categories=categories,
            iscrowd=np.asarray(self.iscrowd, dtype=bool),
            difficult=np.asarray(self.difficult, dtype=bool),
            ann_ids=np.full(len(self.object_image), -1, dtype=np.int64),
        )


def to_coco_dict(ann: Annotations, image_root=None) -> dict:
    """COCO ground truth (``images``, ``annotations``, ``categories``) in the source's image
    and category ids; annotations are numbered 1..M in table order.

    ``bbox`` is ``[x, y, w, h]`` of the continuous box; ``area`` is the source's segment
    area where it has one (COCO), else the box area. VOC ``difficult`` objects are written
    with ``iscrowd=1`` (and ``difficult=1``) so that COCOeval ignores detections matched to
    them, as the VOC protocol does; objects whose category is not in ``class_names`` are
    left out. ``file_name`` is the path relative to ``image_root`` (default: the base name).
    """
    keep = (ann.labels >= 1) & (ann.labels <= len(ann.class_names))
    label_to_cat = np.asarray([0, *ann.category_ids], dtype=np.int64)
    boxes = ann.boxes[keep]
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    image_ids = ann.image_ids[ann.object_image[keep]]
    category = label_to_cat[ann.labels[keep]]
    crowd = ann.iscrowd[keep] | ann.difficult[keep]
    difficult = ann.difficult[keep]
    # Annotation ids are always 1..M, whatever the source says: COCOeval records a match as
    # the ground truth's id and takes 0 for "unmatched" (a source id 0 would make its perfect
    # detection a false positive), and its index needs the ids unique. Evaluation never
    # needs the source's annotation ids.
    ann_ids = np.arange(1, int(keep.sum()) + 1)
    areas = ann.areas[keep]
    annotations = [
        {
            "id": int(i), "image_id": int(im), "category_id": int(c),
            "bbox": [float(v) for v in b], "area": float(a), "iscrowd": int(cr),
            **({"difficult": 1} if d else {}),
        }
        for i, im, c, b, a, cr, d in zip(
            ann_ids.tolist(), image_ids.tolist(), category.tolist(), xywh.tolist(), areas.tolist(),
            crowd.tolist(), difficult.tolist(),
        )
    ]
    def file_name(path: str) -> str:
        return os.path.basename(path) if image_root is None else os.path.relpath(path, image_root).replace(os.sep, "/")

    images = [
        {"id": int(i), "file_name": file_name(p), "height": int(h), "width": int(w)}
        for i, p, h, w in zip(ann.image_ids.tolist(), ann.file_paths, ann.heights.tolist(), ann.widths.tolist())
    ]
    categories = [{"id": int(c), "name": n} for c, n in zip(ann.category_ids, ann.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_from_dict(dataset: dict):
    """A pycocotools ``COCO`` object from an in-memory dict, without its progress prints."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
