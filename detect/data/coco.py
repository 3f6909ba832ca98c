"""COCO-format detection datasets (instances JSON) on pycocotools.

- Categories are sorted by id and numbered ``1..K`` (label k <-> ``category_ids[k-1]``),
  or follow ``class_names`` when given: label k is the category named ``class_names[k-1]``,
  and annotations of other categories are ``unknown_category`` problems (drop them with
  ``check_policy="drop"`` to train on a subset of classes). A configured name the JSON
  does not define raises (``class_list_mismatch``).
- ``bbox`` ``[x, y, w, h]`` becomes ``[x, y, x + w, y + h]``; nothing else changes (COCO
  boxes are already continuous pixel coordinates).
- ``iscrowd`` objects never enter training targets; they stay in ``get_ground_truth`` and
  ``to_coco`` for evaluation.
- Images are ordered by id; any integer id (0 included) is kept as is.
- ``masks=True`` adds a semantic mask painted from the polygons / RLE: larger objects
  first so that smaller ones stay visible on top, crowd regions 255 (ignore).
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, coco_from_dict
from detect.data.checks import DatasetError, Problem, read_text, require_path
from detect.data.dataset import DetectionDataset

__all__ = ["CocoDetection", "parse_coco"]


def _load_json(ann_file: Path) -> dict:
    text = read_text(require_path(ann_file, "COCO annotation file", "ann_file", kind="file"), "COCO annotation file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{ann_file} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise ValueError(f"{ann_file} is not a COCO instances file: it has no 'images' list")
    data.setdefault("annotations", [])
    data.setdefault("categories", [])
    return data


def _as_id(value):
    """A COCO id as an int: ints as they are, numeric strings ("40") converted (some
    exporters write ids as strings); anything else is returned unchanged (so that the
    callers can name it)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return value


def _check_ids(location: str, entries: list, what: str) -> None:
    """Refuse ids that are not integers (after :func:`_as_id`), naming the entry."""
    bad = [e for e in entries if not isinstance(e["id"], int)]
    if bad:
        label = "file_name" if what == "image" else "name"
        problems = [Problem("malformed_annotation", location, None, None,
                            f"{what} {e.get(label)!r} has id {e['id']!r} (a {type(e['id']).__name__}); "
                            f"{what} ids must be integers") for e in bad[:20]]
        raise DatasetError(location, problems, hint=f"Give every {what} an integer id (numeric strings such as "
                                                    f"\"12\" are accepted) and use the same ids in the annotations.")


def parse_coco(image_dir, ann_file, class_names: list[str] | None = None) -> Annotations:
    """Parse a COCO instances JSON into an :class:`Annotations` table (no image decoded).

    Image and category ids (and the annotations' ``image_id`` / ``category_id``) that are
    numeric strings are read as ints; other non-integer ids raise :class:`DatasetError`
    naming the image's ``file_name`` (the category's ``name``)."""
    image_dir, ann_file = Path(image_dir), Path(ann_file)
    data = _load_json(ann_file)
    require_path(image_dir, "COCO image folder", "image_dir", kind="dir")
    location = str(ann_file)
    problems: list[Problem] = []
    data["images"] = [{**im, "id": _as_id(im.get("id"))} for im in data["images"]]
    data["categories"] = [{**c, "id": _as_id(c.get("id"))} for c in data["categories"]]
    for a in data["annotations"]:
        a["image_id"], a["category_id"] = _as_id(a.get("image_id")), _as_id(a.get("category_id"))
    _check_ids(location, data["images"], "image")
    _check_ids(location, data["categories"], "category")

    categories = sorted(data["categories"], key=lambda c: c["id"])
    if isinstance(class_names, str):
        if class_names != "derive":
            raise ValueError(f"class_names must be None, 'derive' or a list of names, got {class_names!r}")
        class_names = None  # the file's categories are the derived list
    if class_names is None:
        names = [str(c["name"]) for c in categories]
        category_ids = [int(c["id"]) for c in categories]
    else:
        by_name: dict[str, list[int]] = {}
        for c in categories:
            by_name.setdefault(str(c["name"]), []).append(int(c["id"]))
        missing = [n for n in class_names if n not in by_name]
        ambiguous = [n for n in class_names if len(by_name.get(n, [])) > 1]
        if missing or ambiguous:
            defined = [str(c["name"]) for c in categories]
            detail = (f"configured class names {missing} are not categories of the file" if missing
                      else f"class names {ambiguous} name several categories")
            raise DatasetError(location, [Problem("class_list_mismatch", location, None, None,
                                                  f"{detail}; the file defines {defined}")],
                               hint="Make class_names match the JSON's category names exactly (case and spaces "
                                    "count), or pass class_names=None to use every category.")
        names = list(class_names)
        category_ids = [by_name[n][0] for n in names]

    images = sorted(data["images"], key=lambda im: im["id"])
    image_ids = np.asarray([int(im["id"]) for im in images], dtype=np.int64)
    if np.unique(image_ids).size != image_ids.size:
        values, counts = np.unique(image_ids, return_counts=True)
        raise ValueError(f"{ann_file}: image ids {values[counts > 1][:10].tolist()} appear more than once in 'images'; "
                         "every image needs its own id")
    file_paths = [os.path.join(image_dir, im.get("file_name", "")) for im in images]
    heights = np.asarray([int(im.get("height") or -1) for im in images], dtype=np.int64)
    widths = np.asarray([int(im.get("width") or -1) for im in images], dtype=np.int64)

    # Objects: one pass over the JSON list, then numpy for everything else.
    raw = data["annotations"]
    row_of_id = {int(i): r for r, i in enumerate(image_ids.tolist())}
    image_row, raw_boxes, cats, crowd, areas, ann_ids, positions = [], [], [], [], [], [], []
    for position, a in enumerate(raw):
        bbox = a.get("bbox")
        row = row_of_id.get(a.get("image_id"))
        if row is None or not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            image_id = a.get("image_id")
            typed = "" if isinstance(image_id, int) else (
                f" (a {type(image_id).__name__}; image_id must be the integer id of an image in 'images')")
            reason = (f"image_id {image_id!r} is not in 'images'{typed}" if row is None
                      else f"bbox {bbox!r} is not a list of 4 numbers")
            problems.append(Problem("malformed_annotation", location, a.get("image_id") if row is None else int(image_ids[row]),
                                    position, f"{reason} (annotation id {a.get('id')})"))
            continue
        try:
            raw_boxes.append([float(v) for v in bbox])
        except (TypeError, ValueError):
            problems.append(Problem("malformed_annotation", location, int(image_ids[row]), position,
                                    f"bbox {bbox!r} is not numeric (annotation id {a.get('id')})"))
            continue
        image_row.append(row)
        cats.append(a.get("category_id"))
        crowd.append(bool(a.get("iscrowd", 0)))
        areas.append(a.get("area"))
        ann_ids.append(int(a.get("id", -1)))
        positions.append(position)
    image_row = np.asarray(image_row, dtype=np.int64)
    order = np.argsort(image_row, kind="stable")  # group by image, keep file order within an image
    image_row = image_row[order]
    raw_boxes = np.asarray(raw_boxes, dtype=np.float64).reshape(-1, 4)[order]
    raw_cats = np.empty(len(cats), dtype=object)
    raw_cats[:] = cats
    raw_cats = raw_cats[order]
    group_start = np.searchsorted(image_row, image_row, side="left")
    index_in_image = np.arange(image_row.size) - group_start

    boxes = raw_boxes.copy()
    boxes[:, 2:] += boxes[:, :2]
    labels = _labels_from_category_ids(raw_cats, category_ids)
    box_areas = raw_boxes[:, 2] * raw_boxes[:, 3]
    areas = np.asarray([np.nan if a is None else float(a) for a in areas], dtype=np.float64)[order] if areas else np.zeros(0)
    areas = np.where(np.isfinite(areas), areas, box_areas)

    return Annotations(
        source="coco", location=location, class_names=names, category_ids=category_ids,
        file_paths=file_paths, annotation_files=[location] * len(images), image_ids=image_ids,
        heights=heights, widths=widths, image_valid=np.ones(len(images), bool),
        object_image=image_row, object_index=index_in_image.astype(np.int64), boxes=boxes, labels=labels,
        raw_categories=raw_cats, iscrowd=np.asarray(crowd, bool)[order], difficult=np.zeros(image_row.size, bool),
        areas=areas, ann_ids=np.asarray(ann_ids, dtype=np.int64)[order], raw_boxes=raw_boxes,
        raw_box_format="bbox [x, y, w, h]", object_noun="annotation", problems=problems,
        extra={"coco_json": data, "image_root": str(image_dir)},
    )


def _labels_from_category_ids(raw_cats: np.ndarray, category_ids: list[int]) -> np.ndarray:
    """Vectorised lookup: label k where the id is ``category_ids[k-1]``, else 0."""
    ids = np.asarray([c if isinstance(c, (int, np.integer)) and not isinstance(c, bool) else -(2**62) for c in raw_cats],
                     dtype=np.int64)
    known = np.asarray(category_ids, dtype=np.int64)
    order = np.argsort(known)
    if known.size == 0:
        return np.zeros(ids.size, dtype=np.int64)
    pos = np.clip(np.searchsorted(known[order], ids), 0, known.size - 1)
    found = known[order][pos] == ids
    return np.where(found, order[pos] + 1, 0).astype(np.int64)


class CocoDetection(DetectionDataset):
    """A COCO instances file and its image folder.

    Args:
        image_dir: folder the JSON's ``file_name`` entries are relative to.
        ann_file: the instances JSON.
        transforms: see :class:`~detect.data.dataset.DetectionDataset`.
        class_names: ``None`` (every category, sorted by id) or the names to train on,
            in label order.
        check_policy, filter_empty, masks, tolerance, images: see
            :class:`~detect.data.dataset.DetectionDataset`.

    Example::

        ds = CocoDetection("coco/val2017", "coco/annotations/instances_val2017.json")
        image, target = ds[0]
        ds.label_to_category_id[target["labels"][0].item()]   # back to the COCO id
    """

    def __init__(self, image_dir, ann_file, transforms=None, *, class_names=None, check_policy="raise",
                 filter_empty=False, masks=False, tolerance=1.0, images=None):
        annotations = parse_coco(image_dir, ann_file, class_names)
        # The JSON is only needed to paint masks. Not keeping it spares memory that every
        # DataLoader worker would otherwise end up copying (refcount writes defeat fork's
        # copy-on-write); boxes live in a few numpy arrays instead.
        coco_json = annotations.extra.pop("coco_json")
        self._coco_json = coco_json if masks else None
        super().__init__(annotations, transforms=transforms, check_policy=check_policy, filter_empty=filter_empty,
                         use_difficult=False, masks=masks, tolerance=tolerance, images=images)
        self._source_coco = None
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)

    @property
    def coco(self):
        """The source file as a pycocotools ``COCO`` (segmentations included)."""
        if self._source_coco is None:
            self._source_coco = coco_from_dict(self._coco_json if self._coco_json is not None
                                               else _load_json(self.ann_file))
        return self._source_coco

    def load_mask(self, index: int, height: int, width: int) -> np.ndarray:
        from pycocotools import mask as mask_utils

        ann = self.annotations
        rows = slice(self._starts[index], self._ends[index])
        ids = ann.ann_ids[rows]
        if ids.size == 0:
            return np.zeros((height, width), dtype=np.uint8)
        coco = self.coco
        rles = []
        for ann_id in ids.tolist():
            segmentation = coco.anns[ann_id].get("segmentation")
            if not segmentation:  # no polygon: fall back to the box, the best region we have
                x1, y1, x2, y2 = ann.boxes[rows][len(rles)]
                segmentation = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            rles.append(_to_rle(segmentation, height, width))
        with warnings.catch_warnings():  # pycocotools' numpy-2 "copy keyword" deprecation noise
            warnings.simplefilter("ignore", DeprecationWarning)
            masks = mask_utils.decode(rles).astype(bool)  # [H, W, n]
        # Paint the largest first: the top-most object of a pixel is the last in this order.
        order = np.argsort(-ann.areas[rows], kind="stable")
        masks = masks[:, :, order]
        values = np.where(ann.iscrowd[rows], 255, ann.labels[rows])[order].astype(np.uint8)
        covered = masks.any(axis=2)
        top = masks.shape[2] - 1 - np.argmax(masks[:, :, ::-1], axis=2)
        return np.where(covered, values[top], 0).astype(np.uint8)


def _to_rle(segmentation, height: int, width: int):
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):  # polygons
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation.get("counts"), list):  # uncompressed RLE
        return mask_utils.frPyObjects(segmentation, height, width)
    rle = dict(segmentation)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return rle
