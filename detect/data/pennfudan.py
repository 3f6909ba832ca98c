"""The Penn-Fudan pedestrian set (Wang, Shi, Song, Shen, ACCV 2007): boxes and masks of people.

Layout under ``root`` (the release as unpacked, e.g. ``../shared/data/PennFudanPed``)::

    PNGImages/<stem>.png          RGB images (sizes vary)
    PedMasks/<stem>_mask.png      8-bit instance masks: 0 background, k = object k of the annotation
    Annotation/<stem>.txt         "PASCAL Annotation Version 1.00" text: image size and one
                                  "Bounding box for object k ..." line per person

- One class, ``person`` (the files say ``PASpersonWalking`` or ``PASpersonStanding``);
  ``class_names`` may only be ``None``, ``"derive"`` or ``["person"]``.
- Boxes are 1-based inclusive pixel indices, as in VOC: ``(Xmin, Ymin) - (Xmax, Ymax)``
  becomes ``(Xmin - 1, Ymin - 1, Xmax, Ymax)`` continuous (``size_offset`` 1).
- ``masks=True``: the semantic mask is ``instance id > 0`` -> 1 (person), else 0.
- There is no official split. Images are sorted by name; ``split="val"`` is
  :func:`detect.data.sources.seeded_val_split` of that list (``val_fraction``,
  ``split_seed``), ``"train"`` the rest, ``"all"`` every image. Image ids are positions in
  the sorted list of *all* images, so the two splits never share an id.
- An image without its annotation file is ``bad_annotation_file``; without its mask file
  ``missing_image`` ("segmentation mask ... does not exist"; the masks are always listed,
  so the doctor checks them). The doctor also compares each instance's mask extent with
  its box (``mask_box_mismatch`` warnings beyond :data:`BOX_MASK_TOLERANCE` pixels; in the
  release two boxes are 3 and 6 pixels looser than their masks) and the instance ids with
  the number of boxes.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, ObjectTableBuilder
from detect.data.checks import MaskError, Problem, list_existing_files, mask_problems, read_text, require_path
from detect.data.dataset import DetectionDataset
from detect.data.image_io import is_image_file, read_index_png

__all__ = ["PennFudanDataset", "parse_pennfudan", "read_pennfudan_instances", "read_pennfudan_mask",
           "is_pennfudan_root", "PENNFUDAN_CLASSES", "BOX_MASK_TOLERANCE", "PENNFUDAN_SPLITS"]

PENNFUDAN_CLASSES = ("person",)
PENNFUDAN_SPLITS = ("train", "val", "all")
BOX_MASK_TOLERANCE = 2.0  # pixels a box may differ from its instance mask's extent before the doctor warns

_SIZE = re.compile(r"Image size \(X x Y x C\)\s*:\s*(\d+)\s*x\s*(\d+)")
_BOX = re.compile(r'Bounding box for object (\d+) "([^"]*)"[^:]*:\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*-\s*'
                  r'\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)')
_COUNT = re.compile(r"Objects with ground truth\s*:\s*(\d+)")


def is_pennfudan_root(folder) -> bool:
    folder = Path(folder)
    return (folder / "PNGImages").is_dir() and (folder / "PedMasks").is_dir()


def _parse_annotation(text: str):
    """``(width, height, objects, listed count)``; objects are ``(k, name, box)`` in file order."""
    size = _SIZE.search(text)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (-1, -1)
    objects = [(int(m.group(1)), m.group(2), tuple(float(m.group(i)) for i in range(3, 7))) for m in _BOX.finditer(text)]
    count = _COUNT.search(text)
    return width, height, objects, int(count.group(1)) if count else None


def _split_names(names: list[str], split: str, val_fraction: float, split_seed: int) -> list[str]:
    if split not in PENNFUDAN_SPLITS:
        raise ValueError(f"PennFudan split is {split!r}; expected one of {PENNFUDAN_SPLITS} (there is no official "
                         "split: 'val' is a seeded val_fraction of the images, 'train' the rest)")
    if split == "all":
        return names
    from detect.data.sources import seeded_val_split

    train, val = seeded_val_split(names, fraction=val_fraction, seed=split_seed)
    return train if split == "train" else val


def parse_pennfudan(root, split: str = "train", class_names=None, *, val_fraction: float = 0.2,
                    split_seed: int = 0) -> Annotations:
    """Parse a PennFudan folder (annotation text only, no decoding) into an :class:`Annotations`."""
    root = require_path(root, "PennFudan root (the folder holding PNGImages, PedMasks, Annotation)", "root", kind="dir")
    image_folder = require_path(root / "PNGImages", "PennFudan image folder", "root", kind="dir")
    if class_names not in (None, "derive") and list(class_names) != list(PENNFUDAN_CLASSES):
        raise ValueError(f"PennFudan has one class, ['person']; class_names={class_names!r} cannot be used "
                         "(pass None or ['person'])")
    all_names = sorted(p.name for p in image_folder.iterdir() if is_image_file(p))
    image_id_of = {n: i for i, n in enumerate(all_names)}
    names = _split_names(all_names, split, val_fraction, split_seed) if all_names else []
    existing = list_existing_files([str(image_folder / "x")])
    existing_masks = list_existing_files([str(root / "PedMasks" / "x")])
    builder = ObjectTableBuilder()
    problems: list[Problem] = []
    file_paths, ann_files, mask_paths, heights, widths, valid, image_ids = [], [], [], [], [], [], []
    for row, name in enumerate(names):
        stem = Path(name).stem
        image_id = image_id_of[name]
        ann_file = root / "Annotation" / f"{stem}.txt"
        mask_file = str(root / "PedMasks" / f"{stem}_mask.png")
        file_paths.append(str(image_folder / name)), ann_files.append(str(ann_file)), mask_paths.append(mask_file)
        image_ids.append(image_id)
        try:
            width, height, objects, listed = _parse_annotation(read_text(ann_file, "PennFudan annotation", image_id=image_id))
        except (OSError, ValueError) as exc:  # missing file (DataPathError) or not UTF-8 (DatasetError)
            problems.append(Problem("bad_annotation_file", str(ann_file), image_id, None, str(exc).split("\n")[0]))
            heights.append(-1), widths.append(-1), valid.append(False)
            continue
        ok = mask_file in existing_masks
        if not ok:
            problems.append(Problem("missing_image", str(ann_file), image_id, None,
                                    f"segmentation mask {mask_file} does not exist"))
        heights.append(height), widths.append(width), valid.append(ok)
        if listed is not None and listed != len(objects):
            problems.append(Problem("malformed_annotation", str(ann_file), image_id, None,
                                    f"'Objects with ground truth : {listed}' but {len(objects)} 'Bounding box' lines parse"))
        for index, (_, raw_name, box) in enumerate(objects):
            builder.add(row, index, box, raw_name)
    table = builder.arrays()
    raw_names = table["raw_categories"].tolist()
    # Every pedestrian label of the release (PASpersonWalking, PASpersonStanding) is a person.
    labels = np.asarray([1 if str(n).lower().startswith(("pasperson", "person")) else 0 for n in raw_names], dtype=np.int64)
    boxes = table["raw_boxes"] - np.array([1.0, 1.0, 0.0, 0.0])  # 1-based inclusive -> continuous
    return Annotations(
        source="pennfudan", location=str(root), class_names=list(PENNFUDAN_CLASSES), category_ids=[1],
        file_paths=file_paths, annotation_files=ann_files, image_ids=np.asarray(image_ids, dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64), widths=np.asarray(widths, dtype=np.int64),
        image_valid=np.asarray(valid, dtype=bool), boxes=boxes, labels=labels,
        areas=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        raw_box_format="Bounding box (Xmin, Ymin) - (Xmax, Ymax)", object_noun="object", size_offset=1.0,
        mask_paths=mask_paths, problems=problems,
        extra={"existing_files": existing, "image_root": str(image_folder), "read_mask": read_pennfudan_mask,
               "mask_check": pennfudan_mask_check},
        **table,
    )


def read_pennfudan_instances(path, image_id=None) -> np.ndarray:
    """A ``PedMasks`` PNG as ``uint8 [H, W]`` instance ids (0 background); an unreadable
    file raises :class:`~detect.data.checks.MaskError` naming it and the image id."""
    # the masks are 8-bit grayscale (some copies palette): the values are the ids
    return read_index_png(path, image_id, "instance mask", "PennFudan masks are 8-bit grayscale PNGs of instance ids")


def read_pennfudan_mask(path, image_id=None) -> np.ndarray:
    """The semantic mask ``uint8 [H, W]``: 1 where the instance id is above 0 (person), else 0."""
    return (read_pennfudan_instances(path, image_id) > 0).astype(np.uint8)


def _instance_extents(instances: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """``(boxes float64 [count, 4] continuous xyxy of each id 1..count, present bool [count])``."""
    ys, xs = np.nonzero(instances)
    ids = instances[ys, xs].astype(np.int64)
    inside = ids <= count
    ys, xs, ids = ys[inside], xs[inside], ids[inside] - 1
    big = np.iinfo(np.int64).max
    x1, y1 = np.full(count, big), np.full(count, big)
    x2, y2 = np.full(count, -1), np.full(count, -1)
    np.minimum.at(x1, ids, xs), np.minimum.at(y1, ids, ys)
    np.maximum.at(x2, ids, xs), np.maximum.at(y2, ids, ys)
    present = x2 >= 0
    return np.stack([x1, y1, x2 + 1, y2 + 1], axis=1).astype(np.float64), present


def pennfudan_mask_check(ann: Annotations, row: int, height: int, width: int) -> list[Problem]:
    """The doctor's check of image ``row``'s instance mask: readable, the image's size,
    instance ids 1..N for the N boxes of the annotation, and each box within
    :data:`BOX_MASK_TOLERANCE` pixels of its instance's extent (warnings)."""
    path, image_id = ann.mask_paths[row], int(ann.image_ids[row])
    try:
        instances = read_pennfudan_instances(path, image_id)
    except MaskError as exc:
        return [exc.problem]
    problems = mask_problems(instances > 0, 1, height, width, path, image_id)
    if problems:
        return problems
    starts, ends = ann.object_ranges()
    rows = slice(starts[row], ends[row])
    count = ends[row] - starts[row]
    found = np.unique(instances[instances > 0])
    if not np.array_equal(found, np.arange(1, count + 1)):
        problems.append(Problem("mask_box_mismatch", path, image_id, None,
                                f"instance ids {found.tolist()[:12]} but the annotation lists {count} object(s) "
                                f"(ids 1..{count} expected)", severity="warning"))
    extents, present = _instance_extents(instances, count)
    diff = np.abs(extents - ann.boxes[rows]).max(axis=1) if count else np.zeros(0)
    for k in np.flatnonzero(present & (diff > BOX_MASK_TOLERANCE)).tolist():
        problems.append(Problem(
            "mask_box_mismatch", ann.annotation_files[row], image_id, int(ann.object_index[starts[row] + k]),
            f"box {ann.boxes[starts[row] + k].tolist()} vs mask extent {extents[k].tolist()} of instance {k + 1} "
            f"(continuous xyxy; {diff[k]:g} px apart)", severity="warning", noun="object"))
    return problems


class PennFudanDataset(DetectionDataset):
    """A split of the Penn-Fudan pedestrian set (see the module docstring).

    Args:
        root: the folder holding ``PNGImages``, ``PedMasks`` and ``Annotation``.
        split: ``"train"``, ``"val"`` (a seeded ``val_fraction`` of the images) or ``"all"``.
        val_fraction, split_seed: the seeded split (:func:`detect.data.sources.seeded_val_split`).
        masks: add the semantic ``masks`` target (person = 1).
        class_names: ``None``, ``"derive"`` or ``["person"]``.
        check_policy, filter_empty, tolerance, images, proposal_file: see
            :class:`~detect.data.dataset.DetectionDataset`.

    Example::

        ds = PennFudanDataset("../shared/data/PennFudanPed", "train", masks=True)
        image, target = ds[0]   # target["masks"]: 0 background, 1 person
    """

    def __init__(self, root, split="train", transforms=None, *, val_fraction=0.2, split_seed=0, masks=False,
                 class_names=None, check_policy="raise", filter_empty=False, tolerance=1.0, images=None,
                 proposal_file=None):
        annotations = parse_pennfudan(root, split, class_names, val_fraction=val_fraction, split_seed=split_seed)
        super().__init__(annotations, transforms=transforms, check_policy=check_policy, filter_empty=filter_empty,
                         masks=masks, tolerance=tolerance, images=images, proposal_file=proposal_file)
        self.root = Path(root)
        self.split = split

    def load_mask(self, index: int, height: int, width: int) -> np.ndarray:
        return read_pennfudan_mask(self.annotations.mask_paths[index], int(self.annotations.image_ids[index]))
