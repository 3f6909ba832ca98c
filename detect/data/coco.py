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
- ``masks=True`` adds a semantic mask painted from the polygons / RLE (an annotation
  without a segmentation is painted as its box). ``mask_style="detect"`` (default): larger
  objects first so that smaller ones stay visible on top, crowd regions 255 (ignore).
  ``mask_style="torchvision"`` (torchvision's references/segmentation
  ``ConvertCocoPolysToMask``): a pixel covered by one object gets its label (crowd objects
  included, with their category), a pixel covered by more than one object 255.
- ``category_ids``: train on a subset of the categories, e.g. ``"voc"``
  (:data:`COCO_VOC_CATEGORY_IDS`, torchvision's ``CAT_LIST``: the 20 Pascal VOC classes,
  named :data:`~detect.data.voc.VOC_CLASSES`): label k is ``category_ids[k-1]`` and the
  annotations of every other category are left out (not problems; the count is logged).
- ``min_labelled_area``: keep only images whose annotations (of the kept categories,
  crowd included) have a summed COCO ``area`` above it; torchvision's
  ``_coco_remove_images_without_annotations`` with 1000, which it applies to the train
  split only. The count of dropped images is logged.

torchvision's COCO-with-VOC-labels segmentation data is
``CocoDetection(..., masks=True, category_ids="voc", mask_style="torchvision",
min_labelled_area=1000)`` for train (without ``min_labelled_area`` for val).
"""
from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, coco_from_dict
from detect.data.checks import DatasetError, Problem, read_text, require_path
from detect.data.dataset import DetectionDataset
from detect.errors import UserInputError

__all__ = ["CocoDetection", "parse_coco", "coco_class_names", "COCO_VOC_CATEGORY_IDS", "MASK_STYLES"]

logger = logging.getLogger("detect.data")

# COCO category ids of the 20 Pascal VOC classes, in VOC's label order (aeroplane = 5,
# bicycle = 2, ...): torchvision's references/segmentation CAT_LIST without its leading 0.
COCO_VOC_CATEGORY_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
MASK_STYLES = ("detect", "torchvision")


def _load_json(ann_file: Path) -> dict:
    text = read_text(require_path(ann_file, "COCO annotation file", "ann_file", kind="file"), "COCO annotation file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{ann_file} is not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from exc
    if not isinstance(data, dict) or "images" not in data:
        raise UserInputError(f"{ann_file} is not a COCO instances file: it has no 'images' list")
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


def _resolve_category_ids(category_ids) -> list[int]:
    if isinstance(category_ids, str):
        if category_ids != "voc":
            raise UserInputError(f"category_ids is {category_ids!r}; expected 'voc' or a list of COCO category ids")
        return list(COCO_VOC_CATEGORY_IDS)
    ids = [_as_id(c) for c in category_ids]
    if not ids or not all(isinstance(c, int) for c in ids) or len(set(ids)) != len(ids):
        raise UserInputError(f"category_ids must be 'voc' or a non-empty list of distinct integer ids, got {category_ids!r}")
    return ids


def coco_class_names(categories: list, category_ids) -> list[str]:
    """The class names of ``category_ids`` (``"voc"``: :data:`~detect.data.voc.VOC_CLASSES`;
    a list: the names of those categories, in that order)."""
    if isinstance(category_ids, str) and category_ids == "voc":
        from detect.data.voc import VOC_CLASSES

        return list(VOC_CLASSES)
    name_of = {_as_id(c.get("id")): str(c.get("name")) for c in categories}
    return [name_of.get(c, f"category_{c}") for c in _resolve_category_ids(category_ids)]


def parse_coco(image_dir, ann_file, class_names: list[str] | None = None, *, category_ids=None) -> Annotations:
    """Parse a COCO instances JSON into an :class:`Annotations` table (no image decoded).

    Image and category ids (and the annotations' ``image_id`` / ``category_id``) that are
    numeric strings are read as ints; other non-integer ids raise :class:`DatasetError`
    naming the image's ``file_name`` (the category's ``name``). ``category_ids``: see the
    module docstring (with it, ``class_names`` only renames those categories)."""
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
            raise UserInputError(f"class_names must be None, 'derive' or a list of names, got {class_names!r}")
        class_names = None  # the file's categories are the derived list
    ignored = 0
    if category_ids is not None:
        selected = _resolve_category_ids(category_ids)
        defined = {int(c["id"]) for c in categories}
        missing = [c for c in selected if c not in defined]
        if missing:
            raise DatasetError(location, [Problem("class_list_mismatch", location, None, None,
                                                  f"category_ids {missing} are not categories of the file "
                                                  f"(it defines {sorted(defined)[:30]})")],
                               hint="category_ids='voc' needs the COCO 2017 category ids; give the ids of this file.")
        default_names = coco_class_names(categories, category_ids)
        if class_names is not None and len(class_names) != len(selected):
            raise UserInputError(f"class_names lists {len(class_names)} names for {len(selected)} category_ids; "
                             "give one name per id, or class_names=None")
        names = list(class_names) if class_names is not None else default_names
        category_ids = selected
        kept = set(selected)
        before = len(data["annotations"])
        # Other categories are not wanted, not wrong: they leave before any check sees them.
        data["annotations"] = [a for a in data["annotations"] if a.get("category_id") in kept]
        ignored = before - len(data["annotations"])
    elif class_names is None:
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
        raise UserInputError(f"{ann_file}: image ids {values[counts > 1][:10].tolist()} appear more than once in 'images'; "
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
        extra={"coco_json": data, "image_root": str(image_dir), "ignored_annotations": ignored},
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
            in label order (with ``category_ids``: one name per id).
        category_ids: ``None``, ``"voc"`` or a list of COCO category ids to keep (see the module docstring).
        mask_style: ``"detect"`` or ``"torchvision"`` (how ``masks=True`` paints overlaps and crowds).
        min_labelled_area: ``None``, or drop images whose summed annotation area is at most this.
        check_policy, filter_empty, masks, tolerance, images, proposal_file: see
            :class:`~detect.data.dataset.DetectionDataset`.

    Example::

        ds = CocoDetection("coco/val2017", "coco/annotations/instances_val2017.json")
        image, target = ds[0]
        ds.label_to_category_id[target["labels"][0].item()]   # back to the COCO id
    """

    def __init__(self, image_dir, ann_file, transforms=None, *, class_names=None, category_ids=None,
                 check_policy="raise", filter_empty=False, masks=False, mask_style="detect", min_labelled_area=None,
                 tolerance=1.0, images=None, proposal_file=None):
        if mask_style not in MASK_STYLES:
            raise UserInputError(f"mask_style is {mask_style!r}; expected one of {MASK_STYLES}")
        annotations = parse_coco(image_dir, ann_file, class_names, category_ids=category_ids)
        if annotations.extra["ignored_annotations"]:
            logger.info("%s: category_ids left out %d annotation(s) of other categories", annotations.location,
                        annotations.extra["ignored_annotations"])
        if min_labelled_area is not None:
            annotations = _drop_sparsely_labelled(annotations, float(min_labelled_area))
        self.mask_style = mask_style
        # The JSON is only needed to paint masks. Not keeping it spares memory that every
        # DataLoader worker would otherwise end up copying (refcount writes defeat fork's
        # copy-on-write); boxes live in a few numpy arrays instead.
        coco_json = annotations.extra.pop("coco_json")
        self._coco_json = coco_json if masks else None
        super().__init__(annotations, transforms=transforms, check_policy=check_policy, filter_empty=filter_empty,
                         use_difficult=False, masks=masks, tolerance=tolerance, images=images,
                         proposal_file=proposal_file)
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
        if self.mask_style == "torchvision":
            # One object: its label (crowd too); several: 255, whatever their labels.
            count = masks.sum(axis=2)
            first = np.argmax(masks, axis=2)
            labels = ann.labels[rows].astype(np.uint8)
            return np.where(count == 0, 0, np.where(count > 1, 255, labels[first])).astype(np.uint8)
        # Paint the largest first: the top-most object of a pixel is the last in this order.
        order = np.argsort(-ann.areas[rows], kind="stable")
        masks = masks[:, :, order]
        values = np.where(ann.iscrowd[rows], 255, ann.labels[rows])[order].astype(np.uint8)
        covered = masks.any(axis=2)
        top = masks.shape[2] - 1 - np.argmax(masks[:, :, ::-1], axis=2)
        return np.where(covered, values[top], 0).astype(np.uint8)


def _drop_sparsely_labelled(ann: Annotations, min_area: float) -> Annotations:
    """``ann`` without the images whose objects' summed area is at most ``min_area``
    (torchvision keeps ``sum(area) > 1000``)."""
    labelled = (ann.labels >= 1) & (ann.labels <= len(ann.class_names))
    total = np.bincount(ann.object_image, weights=np.where(labelled, ann.areas, 0.0), minlength=ann.num_images)
    keep = total > min_area
    if (~keep).any():
        logger.info("%s: min_labelled_area=%g dropped %d of %d image(s)", ann.location, min_area, int((~keep).sum()),
                    ann.num_images)
    return ann.select(keep_images=keep)


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
