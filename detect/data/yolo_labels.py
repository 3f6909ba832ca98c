"""YOLO-txt detection datasets (one ``.txt`` per image, normalised ``cx cy w h``).

Layout (the ultralytics / darknet convention)::

    <dataset>/images/<split>/<name>.jpg
    <dataset>/labels/<split>/<name>.txt     "class cx cy w h" per line, all in 0..1 of the image

- The label file of an image is found by replacing the last ``images`` folder of its
  absolute path with ``labels``, else beside the image (or under ``label_dir`` when given,
  at the image's path relative to ``image_dir``, or to the list's folder for a list). No
  label file means no objects (a background image), as in YOLO; no label file for (almost)
  any image is a path mistake and raises (see :func:`parse_yolo`).
- ``image_dir`` is a folder (its image files, sorted, recursively) or a ``.txt`` file
  listing image paths (relative to the list's folder). Paths are made absolute first, so a
  relative ``image_dir`` / ``label_dir`` finds the same files as an absolute one.
- Class index ``c`` (0-based) becomes label ``c + 1``; an index outside ``0..K-1`` is a
  ``label_out_of_range`` problem. Category ids are the labels (label k <-> k).
- A line with more than five numbers (an odd count from seven on) is a segmentation
  polygon ``c x1 y1 x2 y2 ...``; its box is the polygon's extent.
- The files carry no image size, so each image's header is read (no decoding) at load.
- Image ids are positions in the image list (0, 1, ...).
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, ObjectTableBuilder
from detect.data.checks import DatasetError, Problem, encoding_problem, list_existing_files, read_text, require_path
from detect.data.dataset import DetectionDataset
from detect.data.image_io import ImageReadError, is_image_file, read_image_size

__all__ = ["YoloDetection", "parse_yolo", "list_images", "label_path_for", "label_path_candidates", "read_class_names"]


def _absolute(path) -> Path:
    """``path`` made absolute and normalised without following symbolic links (so that a
    linked image still maps to its label file by its own path)."""
    return Path(os.path.abspath(path))


def list_images(image_dir) -> list[Path]:
    """Absolute image paths: the folder's image files (recursively, sorted), or the entries
    of a ``.txt`` list, relative ones taken from the list's folder."""
    image_dir = _absolute(image_dir)
    if image_dir.is_file():
        base = image_dir.parent
        return [_absolute(base / line.strip()) for line in read_text(image_dir, "YOLO image list").splitlines()
                if line.strip()]
    require_path(image_dir, "YOLO image folder", "image_dir", kind="dir")
    return sorted(p for p in image_dir.rglob("*") if is_image_file(p) and p.is_file())


def label_path_candidates(image_path: Path, image_dir: Path, label_dir: Path | None) -> list[Path]:
    """Where the label file of ``image_path`` may be, in the order searched.

    With ``label_dir``: only there, at the image's path relative to ``image_dir`` (the
    folder, or the list's folder; both absolute, as :func:`list_images` gives them).
    Otherwise ultralytics' rule first (the last ``images`` folder of the path replaced by
    ``labels``), then darknet's older layout (the ``.txt`` beside the image), so that an
    image folder with another name (``data/pics/a.jpg`` + ``data/pics/a.txt``) finds its labels."""
    if label_dir is not None:
        try:
            relative = image_path.relative_to(image_dir)
        except ValueError:
            relative = Path(image_path.name)
        return [(label_dir / relative).with_suffix(".txt")]
    parts = list(image_path.parts)
    candidates = []
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            candidates.append(Path(*parts).with_suffix(".txt"))
            break
    return candidates + [image_path.with_suffix(".txt")]


def label_path_for(image_path: Path, image_dir: Path, label_dir: Path | None, existing: set | None = None) -> Path:
    """The label file of ``image_path``: the first of :func:`label_path_candidates` that
    exists (``existing``: a set of existing paths, else each is ``stat``-ed), else the first
    candidate (the file that would be read: none there means a background image)."""
    candidates = label_path_candidates(image_path, image_dir, label_dir)
    for candidate in candidates:
        if (str(candidate) in existing) if existing is not None else candidate.is_file():
            return candidate
    return candidates[0]


# A folder where (almost) no image has a label file is a path mistake, not a background set:
# at least one label file must exist, and at least 10% of them once there are 10 images.
MIN_LABELLED_FRACTION = 0.1
MIN_IMAGES_FOR_FRACTION = 10


def read_class_names(path) -> list[str]:
    """Class names from a ``classes.txt`` (one per line) or a ``data.yaml`` (``names:``)."""
    path = Path(path)
    if path.suffix in (".yaml", ".yml"):
        import yaml

        names = yaml.safe_load(read_text(path, "YOLO data.yaml"))["names"]
        return [names[k] for k in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    return [line.strip() for line in read_text(path, "YOLO class list").splitlines() if line.strip()]


def _parse_line(line: str):
    """``(class_index, (cx, cy, w, h))`` or an error string."""
    fields = line.split()
    if len(fields) != 5 and not (len(fields) >= 7 and len(fields) % 2 == 1):
        return f"{len(fields)} fields in {line.strip()!r}; expected 'class cx cy w h'"
    try:
        values = [float(v) for v in fields[1:]]
        klass = float(fields[0])
    except ValueError:
        return f"{line.strip()!r} is not numbers"
    if not math.isfinite(klass) or klass != int(klass):
        return f"class index {fields[0]!r} is not an integer"
    if len(values) == 4:
        return int(klass), tuple(values)
    xs, ys = values[0::2], values[1::2]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return int(klass), ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def parse_yolo(image_dir, class_names, label_dir=None) -> Annotations:
    """Parse a YOLO-txt split into an :class:`Annotations` table (image headers only).

    A missing label file is a background image. When no image has one (or fewer than
    :data:`MIN_LABELLED_FRACTION` of them, from :data:`MIN_IMAGES_FOR_FRACTION` images
    on) the labels are somewhere else: :class:`DatasetError` (``labels_not_found``)
    names the folders searched. A label file that is not UTF-8 makes its image unusable
    (``bad_encoding``, naming the byte offset)."""
    image_dir = _absolute(image_dir)
    label_dir = None if label_dir is None else _absolute(label_dir)
    if class_names == "derive":
        raise ValueError("YOLO labels hold class indices only, so class names cannot be derived from them: pass "
                         "class_names=[...] (index c is class_names[c]) or a path to classes.txt / data.yaml")
    if class_names is None or isinstance(class_names, (str, os.PathLike)):
        class_names = read_class_names(class_names if class_names is not None else _find_class_file(image_dir, label_dir))
    names = [str(n) for n in class_names]
    images = list_images(image_dir)
    listed = image_dir.is_file()  # a .txt list of images (which may name missing files)
    base = image_dir.parent if listed else image_dir
    problems: list[Problem] = []
    builder = ObjectTableBuilder()
    file_paths, label_files, heights, widths, valid = [], [], [], [], []
    # One listing per candidate folder instead of a stat per image and candidate.
    candidates = [label_path_candidates(p, base, label_dir) for p in images]
    existing_labels = list_existing_files([str(c) for cs in candidates for c in cs])
    found_labels = 0
    for row, image_path in enumerate(images):
        label_path = label_path_for(image_path, base, label_dir, existing_labels)
        file_paths.append(str(image_path))
        label_files.append(str(label_path))
        try:
            height, width = read_image_size(image_path, row)
        except ImageReadError as exc:
            # A missing file is a missing_image problem of the checks, which look for every
            # image file; only a file that is there but unreadable is reported here.
            if image_path.exists():
                problems.append(Problem("unreadable_image", str(label_path), row, None, str(exc)))
            heights.append(-1), widths.append(-1), valid.append(False)
            continue
        heights.append(height), widths.append(width), valid.append(True)
        if str(label_path) not in existing_labels:
            continue
        found_labels += 1
        try:
            text = label_path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            problems.append(encoding_problem(label_path, exc, row))
            valid[-1] = False
            continue
        for index, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            parsed = _parse_line(line)
            if isinstance(parsed, str):
                problems.append(Problem("malformed_annotation", str(label_path), row, index, parsed, noun="line"))
                continue
            builder.add(row, index, parsed[1], parsed[0])
    _check_labels_found(image_dir, candidates, int(np.sum(np.asarray(heights) > 0)), found_labels)
    table = builder.arrays()
    # Class indices were read as floats, so float64 holds them exactly; clipping to -1..K
    # keeps any index (1e30 too) representable, and out of range when it was.
    klass = np.clip(np.asarray(table["raw_categories"].tolist(), dtype=np.float64).reshape(-1), -1, len(names))
    # A negative index is out of range too: keep it negative so the checks say so.
    labels = np.where(klass >= 0, klass + 1, -1).astype(np.int64)
    cxcywh = table["raw_boxes"]
    size = np.stack([np.asarray(widths), np.asarray(heights)], axis=1)[table["object_image"]].astype(np.float64)
    scale = np.concatenate([size, size], axis=1)
    boxes = np.concatenate([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], axis=1) * scale
    location = str(image_dir)
    return Annotations(
        source="yolo", location=location, class_names=names, category_ids=list(range(1, len(names) + 1)),
        file_paths=file_paths, annotation_files=label_files, image_ids=np.arange(len(images), dtype=np.int64),
        heights=np.asarray(heights, dtype=np.int64), widths=np.asarray(widths, dtype=np.int64),
        image_valid=np.asarray(valid, bool), boxes=boxes, labels=labels,
        areas=(boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        raw_box_format="cx cy w h (normalised)", object_noun="line", problems=problems,
        # Files found by walking the folder exist: the checks need not list it again.
        extra={"image_root": str(base), **({} if listed else {"existing_files": set(file_paths)})}, **table,
    )


def _check_labels_found(image_dir: Path, candidates: list[list[Path]], num_readable: int, found: int) -> None:
    """Raise when (almost) no image has a label file (see :func:`parse_yolo`)."""
    if num_readable == 0 or (found > 0 and (num_readable < MIN_IMAGES_FOR_FRACTION
                                            or found >= MIN_LABELLED_FRACTION * num_readable)):
        return
    folders = list(dict.fromkeys(str(c.parent) for cs in candidates for c in cs))
    shown = ", ".join(folders[:6]) + (f", ... ({len(folders)} folders)" if len(folders) > 6 else "")
    location = str(image_dir)
    raise DatasetError(location, [Problem(
        "labels_not_found", location, None, None,
        f"{found} of {num_readable} images have a label file; searched {shown}")],
        hint="A YOLO label file sits at the image's path with the last 'images' folder replaced by 'labels' "
             "(data/images/train/a.jpg -> data/labels/train/a.txt) or beside the image (a.jpg -> a.txt); "
             "move the labels there or name their folder with label_dir (--label-dir). A few images "
             "without a label file are background images; (almost) all of them is a wrong path.")


def _find_class_file(image_dir: Path, label_dir: Path | None) -> Path:
    candidates = []
    for folder in filter(None, [label_dir, image_dir if image_dir.is_dir() else image_dir.parent]):
        for up in [folder, *list(folder.parents)[:2]]:
            candidates += [up / "classes.txt", up / "data.yaml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ValueError(
        f"YOLO labels hold class indices only: pass class_names=[...] (index c is class_names[c]) or a path "
        f"to classes.txt / data.yaml; none was found near {image_dir}"
    )


class YoloDetection(DetectionDataset):
    """A YOLO-txt dataset (normalised ``class cx cy w h`` per line).

    Args:
        image_dir: folder of images (searched recursively) or a ``.txt`` list of image paths.
        transforms: see :class:`~detect.data.dataset.DetectionDataset`.
        class_names: list of names (index c is ``class_names[c]``), a path to ``classes.txt``
            or ``data.yaml``, or ``None`` to look for one of those beside the data.
        label_dir: folder of label files mirroring ``image_dir``; default: ``images`` ->
            ``labels`` in each image path.
        check_policy, filter_empty, tolerance, images: see :class:`~detect.data.dataset.DetectionDataset`.
    """

    def __init__(self, image_dir, transforms=None, *, class_names=None, label_dir=None, check_policy="raise",
                 filter_empty=False, masks=False, tolerance=1.0, images=None, proposal_file=None):
        if masks:
            raise ValueError("YOLO-txt labels have no segmentation masks; use a COCO or VOC source for masks=True")
        annotations = parse_yolo(image_dir, class_names, label_dir)
        super().__init__(annotations, transforms=transforms, check_policy=check_policy, filter_empty=filter_empty,
                         tolerance=tolerance, images=images, proposal_file=proposal_file)
        self.image_dir = Path(image_dir)
