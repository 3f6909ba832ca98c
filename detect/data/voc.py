"""Pascal VOC-layout detection datasets (XML parsed with the standard library).

Layout under ``root`` (e.g. ``VOCdevkit/VOC2007``)::

    JPEGImages/<id>.jpg                 images (else the XML's <filename>)
    Annotations/<id>.xml                one per image
    ImageSets/Main/<split>.txt          image ids of a split
    ImageSets/Segmentation/<split>.txt  ids with masks (used when masks=True)
    SegmentationClass/<id>.png          palette PNG: index k = label k, 255 = ignore

- VOC boxes are 1-based inclusive pixel indices: ``xmin=1, xmax=10`` covers pixels 1..10,
  i.e. the continuous span 0..10. So ``(x1, y1, x2, y2) = (xmin - 1, ymin - 1, xmax, ymax)``
  (``1 1 10 10`` -> ``0 0 10 10``). A box with ``xmax == xmin`` marks a single point and is
  reported as ``zero_size_box``.
- ``difficult`` objects are kept for evaluation (``get_ground_truth``, ``to_coco``) and
  left out of training targets unless ``use_difficult=True``.
- Classes: ``class_names=None`` means the 20 VOC classes (label k = ``VOC_CLASSES[k-1]``);
  a list is used as given; ``"derive"`` takes the sorted names found in this split's
  annotations (the data loader derives validation classes from the train split, see
  :func:`detect.data.build.build_dataset`). Names the list lacks are
  ``unknown_category`` problems. Category ids are the labels (label k <-> k).
- Image ids are positions in the split file (0, 1, ...).
- With ``masks=True`` an image whose ``SegmentationClass`` PNG is missing is reported
  (``missing_image``) by :func:`parse_voc`, so the doctor sees it as training does.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, ObjectTableBuilder
from detect.data.checks import DataPathError, Problem, list_existing_files, read_text, require_path
from detect.data.dataset import DetectionDataset
from detect.data.image_io import ImageReadError, read_image_size, read_index_png

__all__ = ["VOC_CLASSES", "VOCDetection", "parse_voc", "derive_voc_class_names", "read_split_ids", "read_voc_mask"]

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def read_split_ids(root, split: str, task: str = "Main") -> tuple[list[str], Path]:
    """Image ids listed in ``root/ImageSets/<task>/<split>.txt`` and that file's path.
    A missing root or split file raises :class:`~detect.data.checks.DataPathError`
    (a ``FileNotFoundError``) naming it and the splits that do exist."""
    root = require_path(root, "VOC root (the folder holding Annotations, JPEGImages, ImageSets)", "root", kind="dir")
    split_file = root / "ImageSets" / task / f"{split}.txt"
    if not split_file.is_file():
        folder = split_file.parent
        available = sorted(p.stem for p in folder.glob("*.txt")) if folder.is_dir() else []
        raise DataPathError(split_file, "VOC split file", "split",
                            f"splits there: {available}" if available else f"there is no {folder}")
    ids = [line.split()[0] for line in read_text(split_file, "VOC split file").splitlines() if line.strip()]
    return ids, split_file


def _text(node, tag: str, default=None):
    child = node.find(tag)
    return default if child is None or child.text is None else child.text.strip()


def _parse_xml(xml_path: Path):
    """``(filename, width, height, objects)``; objects are dicts or error strings."""
    root = ET.parse(xml_path).getroot()
    size = root.find("size")
    try:
        width = int(float(_text(size, "width", -1))) if size is not None else -1
        height = int(float(_text(size, "height", -1))) if size is not None else -1
    except ValueError:
        width = height = -1
    objects = []
    for obj in root.iter("object"):
        name = _text(obj, "name")
        box = obj.find("bndbox")
        if name is None or box is None:
            objects.append(f"<object> without {'<name>' if name is None else '<bndbox>'}")
            continue
        try:
            coords = tuple(float(_text(box, tag)) for tag in ("xmin", "ymin", "xmax", "ymax"))
            difficult = bool(int(float(_text(obj, "difficult", 0) or 0)))
        except (TypeError, ValueError):
            values = {tag: _text(box, tag) for tag in ("xmin", "ymin", "xmax", "ymax")}
            objects.append(f"bndbox {values} is not four numbers")
            continue
        objects.append({"name": name, "box": coords, "difficult": difficult})
    return _text(root, "filename"), width, height, objects


def _resolve_class_names(class_names, found_names) -> list[str]:
    if class_names is None:
        return list(VOC_CLASSES)
    if isinstance(class_names, str):
        if class_names != "derive":
            raise ValueError(f"class_names must be None, 'derive' or a list of names, got {class_names!r}")
        return sorted(set(found_names))
    names = [str(n) for n in class_names]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"class_names lists {duplicates} more than once")
    return names


def parse_voc(root, split: str, class_names=None, *, masks: bool = False) -> Annotations:
    """Parse a VOC split into an :class:`Annotations` table (XML only, no decoding)."""
    root = Path(root)
    ids, split_file = read_split_ids(root, split, "Segmentation" if masks else "Main")
    image_folder = root / "JPEGImages"
    existing = list_existing_files([str(image_folder / "x")])
    problems: list[Problem] = []
    builder = ObjectTableBuilder()
    file_paths, xml_files, heights, widths, valid = [], [], [], [], []
    for row, image_name in enumerate(ids):
        xml_path = root / "Annotations" / f"{image_name}.xml"
        xml_files.append(str(xml_path))
        default_path = str(image_folder / f"{image_name}.jpg")
        try:
            filename, width, height, objects = _parse_xml(xml_path)
        except (OSError, ET.ParseError) as exc:
            problems.append(Problem("bad_annotation_file", str(xml_path), row, None, str(exc)))
            file_paths.append(default_path)
            heights.append(-1), widths.append(-1), valid.append(False)
            continue
        path = default_path
        if path not in existing and filename and str(image_folder / filename) in existing:
            path = str(image_folder / filename)
        if (width <= 0 or height <= 0) and path in existing:
            try:  # some tools write <size> 0 0; the header gives the truth cheaply
                height, width = read_image_size(path, row)
            except ImageReadError:
                pass
        file_paths.append(path)
        heights.append(height), widths.append(width), valid.append(True)
        for index, obj in enumerate(objects):
            if isinstance(obj, str):
                problems.append(Problem("malformed_annotation", str(xml_path), row, index, obj, noun="object"))
                continue
            builder.add(row, index, obj["box"], obj["name"], difficult=obj["difficult"])

    valid = np.asarray(valid, bool)
    mask_paths = None
    if masks:  # one listing of SegmentationClass, as for JPEGImages
        mask_folder = root / "SegmentationClass"
        mask_paths = [str(mask_folder / f"{image_name}.png") for image_name in ids]
        existing_masks = list_existing_files([str(mask_folder / "x")])
        missing = np.fromiter((p not in existing_masks for p in mask_paths), dtype=bool, count=len(ids))
        problems.extend(Problem("missing_image", xml_files[i], i, None, f"segmentation mask {mask_paths[i]} does not exist")
                        for i in np.flatnonzero(missing).tolist())
        valid &= ~missing

    table = builder.arrays()
    names = _resolve_class_names(class_names, table["raw_categories"].tolist())
    label_of = {n: k + 1 for k, n in enumerate(names)}
    labels = np.asarray([label_of.get(n, 0) for n in table["raw_categories"].tolist()], dtype=np.int64)
    raw = table["raw_boxes"]
    boxes = raw - np.array([1.0, 1.0, 0.0, 0.0])  # 1-based inclusive -> 0-based continuous
    problems.extend(_unused_class_warnings(names, labels, str(split_file)))
    return Annotations(
        source="voc", location=str(split_file), class_names=names, category_ids=list(range(1, len(names) + 1)),
        file_paths=file_paths, annotation_files=xml_files, image_ids=np.arange(len(ids), dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64), widths=np.asarray(widths, dtype=np.int64),
        image_valid=valid, boxes=boxes, labels=labels,
        areas=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        raw_box_format="bndbox (xmin, ymin, xmax, ymax)", object_noun="object", size_offset=1.0,
        mask_paths=mask_paths, problems=problems,
        # Every image path is in JPEGImages, whose listing the checks can reuse.
        extra={"existing_files": existing, "image_root": str(image_folder),
               **({"read_mask": read_voc_mask} if masks else {})}, **table,
    )


def _unused_class_warnings(names, labels, location) -> list[Problem]:
    counts = np.bincount(labels[labels > 0], minlength=len(names) + 1)[1:]
    return [
        Problem("unused_class", location, None, None, f"class {name!r} (label {k + 1}) has no object in this split",
                severity="warning")
        for k, name in enumerate(names) if counts[k] == 0
    ]


def derive_voc_class_names(root, split: str) -> list[str]:
    """Sorted class names found in a split's XML files (what ``class_names="derive"`` uses).
    Reads the XML only (no folder listing, no image header): files that cannot be parsed
    are skipped here and reported by the checks when the split loads."""
    ids, _ = read_split_ids(root, split)
    names = set()
    for image_name in ids:
        try:
            objects = _parse_xml(Path(root) / "Annotations" / f"{image_name}.xml")[3]
        except (OSError, ET.ParseError):
            continue
        names.update(obj["name"] for obj in objects if isinstance(obj, dict))
    return sorted(names)


class VOCDetection(DetectionDataset):
    """A Pascal VOC-layout split.

    Args:
        root: the folder holding ``JPEGImages``, ``Annotations``, ``ImageSets``
            (e.g. ``VOCdevkit/VOC2007``).
        split: name of ``ImageSets/Main/<split>.txt`` (``ImageSets/Segmentation`` with masks).
        transforms: see :class:`~detect.data.dataset.DetectionDataset`.
        class_names: ``None`` (the 20 VOC classes), a list, or ``"derive"``.
        use_difficult: put ``difficult`` objects into training targets.
        masks: add ``SegmentationClass`` masks (palette index = label, 255 = ignore).
        check_policy, filter_empty, tolerance, images: see :class:`~detect.data.dataset.DetectionDataset`.

    Example::

        ds = VOCDetection("../shared/data/BCCD", "train", class_names=["RBC", "WBC", "Platelets"],
                          check_policy="drop")
    """

    def __init__(self, root, split="train", transforms=None, *, class_names=None, use_difficult=False,
                 check_policy="raise", filter_empty=False, masks=False, tolerance=1.0, images=None,
                 proposal_file=None):
        annotations = parse_voc(root, split, class_names, masks=masks)
        super().__init__(annotations, images=images, transforms=transforms, check_policy=check_policy, filter_empty=filter_empty,
                         use_difficult=use_difficult, masks=masks, tolerance=tolerance, proposal_file=proposal_file)
        self.root = Path(root)
        self.split = split

    def load_mask(self, index: int, height: int, width: int) -> np.ndarray:
        return read_voc_mask(self.annotations.mask_paths[index], int(self.annotations.image_ids[index]))


def read_voc_mask(path, image_id=None) -> np.ndarray:
    """A ``SegmentationClass`` PNG as ``uint8 [H, W]`` class indices (palette index = label,
    255 = ignore). A file that cannot be read, or is neither palette nor grayscale, raises
    :class:`~detect.data.checks.MaskError` naming it and the image id."""
    return read_index_png(path, image_id, "segmentation mask",
                          "VOC masks are palette ('P') or grayscale PNGs of class indices")
