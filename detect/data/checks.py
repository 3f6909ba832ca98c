"""Load-time checks of annotations and the policies that act on what they find.

What is checked (all vectorised over the objects of a split; no image is decoded):

=====================  ===============================================================
kind                   meaning
=====================  ===============================================================
missing_image          the image file named by the annotations does not exist
bad_annotation_file    an annotation file cannot be parsed (the image is unusable)
malformed_annotation   one annotation cannot be parsed (wrong field count, not a number)
invalid_image_size     the annotation gives no usable image size
nonfinite_box          a coordinate is NaN or infinite
inverted_box           x2 < x1 or y2 < y1 (COCO: negative w or h)
zero_size_box          zero width or height in the source's convention
                       (COCO ``w == 0``; VOC ``xmax == xmin``, a single point)
out_of_image_box       more than ``tolerance`` pixels outside the image
unknown_category       the category (COCO id, VOC name) is not in the class list
label_out_of_range     a class index outside 0..K-1 (YOLO)
class_list_mismatch    a configured class name the annotations do not define (COCO)
empty_dataset          no image left after filtering
unreadable_image       (doctor / __getitem__) the file cannot be decoded
size_mismatch          (doctor / __getitem__) the decoded size differs from the annotation
mask_value_out_of_range (doctor / __getitem__) a semantic mask value above K other than 255
mask_size_mismatch     (doctor / __getitem__) a mask of another size than its image
unreadable_mask        (doctor / __getitem__) a mask file that cannot be read
mask_box_mismatch      (doctor, warning) an instance mask and its box disagree (PennFudan)
=====================  ===============================================================

A missing mask file is reported by the reader as ``missing_image`` ("segmentation mask
... does not exist"), so every policy treats the image as unusable.

Every :class:`Problem` names the file, the image id and the annotation index. Boxes
that stray outside the image by at most ``tolerance`` pixels (rounding in the source)
are clipped silently under every policy and only counted.

Policies (``check_policy``):

- ``"raise"``: any error raises :class:`DatasetError` listing the problems (the default:
  bad data is found at load time, not as a NaN loss hours later).
- ``"drop"``: offending objects are dropped; images whose file is missing or whose
  annotation file cannot be parsed are dropped. The counts are logged.
- ``"clip"``: like ``"drop"``, except that out-of-image boxes are clipped to the image
  (and dropped only if nothing is left of them).

A configured class list that the annotations do not define and an empty dataset raise
under every policy: there is nothing sensible to drop.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass

import numpy as np

from detect.data.annotations import Annotations
from detect.errors import UserInputError

__all__ = [
    "CHECK_POLICIES", "DatasetError", "Problem", "PROBLEM_TEXT", "find_problems", "apply_policy",
    "check_policy_name", "DataPathError", "read_text", "require_path", "MaskError", "mask_problems",
    "validate_mask", "check_mask_file",
]

logger = logging.getLogger("detect.data")

CHECK_POLICIES = ("raise", "drop", "clip")

PROBLEM_TEXT = {
    "missing_image": "image file missing",
    "unreadable_image": "image cannot be decoded",
    "size_mismatch": "decoded size differs from the annotation",
    "bad_annotation_file": "annotation file cannot be parsed",
    "malformed_annotation": "malformed annotation",
    "invalid_image_size": "no valid image size",
    "nonfinite_box": "non-finite box",
    "inverted_box": "inverted box",
    "zero_size_box": "zero-size box",
    "out_of_image_box": "box outside the image",
    "unknown_category": "unknown category",
    "label_out_of_range": "label out of range",
    "class_list_mismatch": "class list disagrees with the annotations",
    "unused_class": "class never used",
    "empty_dataset": "dataset empty",
    "missing_path": "path does not exist",
    "bad_encoding": "file is not UTF-8 text",
    "labels_not_found": "no label files found",
    "unknown_layout": "dataset layout not recognised",
    "mask_value_out_of_range": "mask value out of range",
    "mask_size_mismatch": "mask size differs from the image",
    "unreadable_mask": "mask file cannot be read",
    "mask_box_mismatch": "mask and box disagree",
}

# Problems that concern the whole image: under "drop"/"clip" the image goes.
IMAGE_KINDS = {"missing_image", "bad_annotation_file", "invalid_image_size", "unreadable_image", "size_mismatch"}


@dataclass(frozen=True)
class Problem:
    """One finding. ``annotation_index`` is the 0-based index of the annotation within its
    file (``None`` for image- and dataset-level problems); ``noun`` says what it indexes."""

    kind: str
    file: str
    image_id: int | None
    annotation_index: int | None
    detail: str
    severity: str = "error"  # "error" stops training under check_policy="raise"; "warning" never
    noun: str = "annotation"

    def __str__(self) -> str:
        where = [self.file]
        if self.image_id is not None:
            where.append(f"image id {self.image_id}")
        if self.annotation_index is not None:
            # YOLO lines are counted from 1 like an editor does; indices from 0.
            where.append(f"line {self.annotation_index + 1}" if self.noun == "line" else f"{self.noun} {self.annotation_index}")
        return f"{', '.join(where)}: {PROBLEM_TEXT.get(self.kind, self.kind)}: {self.detail}"


class DatasetError(ValueError):
    """Problems in a dataset that stop loading under the configured policy."""

    def __init__(self, location: str, problems: list[Problem], policy: str = "raise", hint: str | None = None):
        self.location = location
        self.problems = list(problems)
        counts = Counter(p.kind for p in self.problems)
        summary = ", ".join(f"{n} {PROBLEM_TEXT.get(k, k)}" for k, n in counts.most_common())
        shown = "\n".join(f"  {p}" for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        if hint is None:
            hint = (
                "Fix the annotations, or load with check_policy='drop' (drop those boxes and "
                "images) or 'clip' (clip out-of-image boxes to the image, drop the rest). "
                "`python tools/check_dataset.py` lists every problem."
            )
        super().__init__(
            f"{location}: {len(self.problems)} problem(s) stop loading (check_policy={policy!r}): "
            f"{summary}\n{shown}{more}\n{hint}"
        )


class DataPathError(DatasetError, FileNotFoundError):
    """A dataset root, annotation file or image folder that does not exist. Also a
    ``FileNotFoundError`` (what older callers catch); its message is one paragraph naming
    the path, the config key that gave it and how to point at the data."""

    def __init__(self, path, what: str, key: str | None = None, detail: str = ""):
        self.location = str(path)
        self.problems = [Problem("missing_path", str(path), None, None, f"{what} does not exist")]
        where = f" (config key {key})" if key else ""
        ValueError.__init__(
            self,
            f"{what} {path} does not exist{'; ' + detail if detail else ''}{where}. Point the config at the data: "
            f"`--data PATH` (any VOC / COCO / YOLO folder or file) or "
            f"`--set data.{key or 'root'}=...`; a run's data folder that moved needs the same.",
        )


class MaskError(UserInputError):
    """A semantic mask that cannot be a target (values above K other than 255, another size
    than its image, an unreadable file), found when an item loads. ``problem`` is the
    :class:`Problem` (file, image id); a :class:`~detect.errors.UserInputError`, so the
    tools print it as one line."""

    def __init__(self, problem: Problem, hint: str = ""):
        self.problem = problem
        super().__init__(f"{problem}" + (f". {hint}" if hint else ""))


_MASK_HINT = ("Masks hold 0 (background), 1..K (label k = class_names[k-1]) and 255 (ignore), at the size of "
              "their image; `python tools/check_dataset.py --decode` lists every such mask")


def mask_problems(mask: np.ndarray, num_classes: int, height: int, width: int, file: str, image_id) -> list[Problem]:
    """The problems of a semantic mask (``[H, W]`` integers) of an ``height x width`` image
    with ``num_classes`` foreground classes: ``mask_size_mismatch`` and
    ``mask_value_out_of_range`` (values above K other than 255, the first ten listed with
    their pixel counts). Empty when the mask is fine."""
    image_id = None if image_id is None else int(image_id)
    problems = []
    if tuple(mask.shape) != (int(height), int(width)):
        shape = "x".join(str(v) for v in mask.shape[::-1])
        problems.append(Problem("mask_size_mismatch", str(file), image_id, None,
                                f"mask is {shape} (w x h) but its image is {int(width)}x{int(height)}"))
    bad = (mask > num_classes) & (mask != 255)
    if bad.any():
        values, counts = np.unique(mask[bad], return_counts=True)
        shown = ", ".join(f"{int(v)} ({int(n)} px)" for v, n in zip(values[:10], counts[:10]))
        problems.append(Problem("mask_value_out_of_range", str(file), image_id, None,
                                f"values {shown}{', ...' if values.size > 10 else ''} are above K={num_classes} "
                                "and not 255 (ignore)"))
    return problems


def validate_mask(mask: np.ndarray, num_classes: int, height: int, width: int, file: str, image_id) -> None:
    """Raise :class:`MaskError` on the first problem :func:`mask_problems` finds."""
    problems = mask_problems(mask, num_classes, height, width, file, image_id)
    if problems:
        raise MaskError(problems[0], _MASK_HINT)


def check_mask_file(ann: Annotations, row: int, height: int, width: int) -> list[Problem]:
    """The problems of image ``row``'s mask file (``ann.mask_paths[row]``, read with the
    reader's ``ann.extra["read_mask"]``): unreadable, wrong size, values out of range. The
    doctor's check for readers whose masks are files (VOC, SBD); a reader may put its own
    ``ann.extra["mask_check"]`` with this signature in place of it (PennFudan)."""
    path = ann.mask_paths[row]
    try:
        mask = ann.extra["read_mask"](path, int(ann.image_ids[row]))
    except MaskError as exc:
        return [exc.problem]
    return mask_problems(mask, len(ann.class_names), height, width, path, ann.image_ids[row])


def require_path(path, what: str, key: str | None = None, *, kind: str = "any", detail: str = ""):
    """``path`` as a ``Path`` when it exists (``kind``: "dir", "file" or "any"), else
    :class:`DataPathError` naming it."""
    from pathlib import Path

    path = Path(path)
    ok = {"dir": path.is_dir, "file": path.is_file, "any": path.exists}[kind]()
    if not ok:
        raise DataPathError(path, what, key, detail)
    return path


def read_text(path, what: str = "file", *, image_id=None) -> str:
    """The text of ``path`` decoded as UTF-8 (a leading byte-order mark is accepted, as
    Notepad writes it). Invalid bytes raise :class:`DatasetError` naming the file, the
    byte offset and the bytes (a ``bad_encoding`` problem); a missing file raises
    :class:`DataPathError`."""
    try:
        data = open(path, "rb").read()
    except FileNotFoundError:
        raise DataPathError(path, what) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(str(path), [encoding_problem(path, exc, image_id)],
                           hint=f"Re-save {path} as UTF-8 (e.g. `iconv -f latin1 -t utf-8`); "
                                "annotation files are read as UTF-8 (with or without BOM).") from None


def encoding_problem(path, exc: UnicodeDecodeError, image_id=None) -> Problem:
    """A ``bad_encoding`` problem for a decode error (byte offset and the offending bytes)."""
    bad = exc.object[exc.start:exc.end]
    return Problem("bad_encoding", str(path), image_id, None,
                   f"byte {bad!r} at byte offset {exc.start} is not valid UTF-8 ({exc.reason}); re-save the file as UTF-8")


def check_policy_name(policy: str) -> str:
    if policy not in CHECK_POLICIES:
        raise ValueError(f"check_policy is {policy!r}; expected one of {CHECK_POLICIES}")
    return policy


@dataclass
class CheckResult:
    """Problems plus per-row flags, so policies act without re-checking."""

    problems: list[Problem]
    bad_objects: np.ndarray  # bool [M]: an error on this object
    out_of_image: np.ndarray  # bool [M]: the only error is being outside the image
    bad_images: np.ndarray  # bool [I]: an image-level error
    strays: np.ndarray  # bool [M]: outside by at most the tolerance (clipped silently)
    missing_images: np.ndarray  # bool [I]: the image file does not exist


def _format_numbers(values) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def find_problems(ann: Annotations, *, tolerance: float = 1.0, existing_files: set | None = None) -> CheckResult:
    """Check every image and object of ``ann`` (parse-time problems in ``ann.problems``
    are included). ``existing_files``: a set holding every image path that exists, to
    spare one ``stat`` per image; by default the reader's listing
    (``ann.extra["existing_files"]``), else each folder holding images is listed once."""
    problems = list(ann.problems)
    num_images = ann.num_images

    bad_images = ~ann.image_valid.copy()
    if existing_files is None:
        existing_files = ann.extra.get("existing_files")
    if existing_files is None:
        existing_files = list_existing_files(ann.file_paths)
    missing = np.fromiter((p not in existing_files for p in ann.file_paths), dtype=bool, count=num_images)
    bad_size = (ann.heights <= 0) | (ann.widths <= 0)
    for i in np.flatnonzero(missing):
        problems.append(Problem("missing_image", ann.annotation_files[i], int(ann.image_ids[i]), None,
                                f"{ann.file_paths[i]} does not exist"))
    for i in np.flatnonzero(bad_size & ~missing & ann.image_valid):
        problems.append(Problem("invalid_image_size", ann.annotation_files[i], int(ann.image_ids[i]), None,
                                f"width {ann.widths[i]}, height {ann.heights[i]}"))
    bad_images |= missing | bad_size

    boxes = ann.boxes
    width = ann.widths[ann.object_image].astype(np.float64)
    height = ann.heights[ann.object_image].astype(np.float64)
    finite = np.isfinite(boxes).all(axis=1)
    extent_w = boxes[:, 2] - boxes[:, 0] - ann.size_offset
    extent_h = boxes[:, 3] - boxes[:, 1] - ann.size_offset
    with np.errstate(invalid="ignore"):
        inverted = finite & ((extent_w < 0) | (extent_h < 0))
        zero = finite & ~inverted & ((extent_w == 0) | (extent_h == 0))
        outside = finite & ~inverted & ~zero & (
            (boxes[:, 0] < -tolerance) | (boxes[:, 1] < -tolerance)
            | (boxes[:, 2] > width + tolerance) | (boxes[:, 3] > height + tolerance)
        )
        strays = finite & ~inverted & ~zero & ~outside & (
            (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height)
        )
    num_classes = len(ann.class_names)
    unknown = ann.labels == 0
    out_of_range = (ann.labels < 0) | (ann.labels > num_classes)
    on_bad_image = bad_images[ann.object_image]

    object_kinds = (
        ("nonfinite_box", ~finite), ("inverted_box", inverted), ("zero_size_box", zero),
        ("out_of_image_box", outside), ("unknown_category", unknown), ("label_out_of_range", out_of_range),
    )
    for kind, flags in object_kinds:
        for m in np.flatnonzero(flags & ~on_bad_image):
            image_row = ann.object_image[m]
            if kind in ("unknown_category", "label_out_of_range"):
                detail = _category_detail(ann, kind, m, num_classes)
            else:
                detail = f"{ann.raw_box_format} = {_format_numbers(ann.raw_boxes[m])}"
                if kind == "out_of_image_box":
                    detail += f" in a {ann.widths[image_row]}x{ann.heights[image_row]} (w x h) image"
            if ann.ann_ids[m] >= 0:
                detail += f" (annotation id {ann.ann_ids[m]})"
            problems.append(Problem(kind, ann.annotation_files[image_row], int(ann.image_ids[image_row]),
                                    int(ann.object_index[m]), detail, noun=ann.object_noun))
    bad_objects = (~finite | inverted | zero | outside | unknown | out_of_range) & ~on_bad_image
    only_outside = outside & ~(unknown | out_of_range)
    return CheckResult(problems, bad_objects, only_outside, bad_images, strays, missing)


def _category_detail(ann: Annotations, kind: str, m: int, num_classes: int) -> str:
    raw = ann.raw_categories[m]
    if kind == "label_out_of_range":
        return f"class index {raw} but the dataset has {num_classes} classes (valid: 0..{num_classes - 1})"
    shown = ", ".join(ann.class_names[:8]) + (", ..." if num_classes > 8 else "")
    if ann.source == "coco":
        kind = "" if isinstance(raw, (int, np.integer)) and not isinstance(raw, bool) else (
            f" (a {type(raw).__name__}; category ids must be integers, as in 'categories')")
        return f"category_id {raw!r}{kind} is not among the classes' category ids {ann.category_ids[:8]}"
    return f"class name {raw!r} is not in the class list [{shown}]"


def list_existing_files(paths) -> set:
    """Absolute paths that exist, from one directory listing per folder."""
    import os

    existing = set()
    for folder in {os.path.dirname(p) for p in paths}:
        try:
            with os.scandir(folder) as entries:
                existing.update(os.path.join(folder, e.name) for e in entries)
        except OSError:
            continue
    return existing


def apply_policy(ann: Annotations, result: CheckResult, policy: str) -> tuple[Annotations, dict]:
    """Raise, drop or clip according to ``policy``; returns the cleaned table and counts.

    Boxes are clipped to the image afterwards in every case (that only moves the strays
    that are within the tolerance, and under "clip" the out-of-image ones).
    """
    check_policy_name(policy)
    errors = [p for p in result.problems if p.severity == "error"]
    if policy == "raise" and errors:
        raise DatasetError(ann.location, errors, policy, hint=_hint_for(ann, errors))
    drop_objects = result.bad_objects.copy()
    if policy == "clip":
        drop_objects &= ~result.out_of_image
    keep_images = ~result.bad_images
    cleaned = ann.select(keep_images=keep_images, keep_objects=~drop_objects)
    before_clip = cleaned.boxes
    clipped = clip_boxes(before_clip, cleaned.widths[cleaned.object_image], cleaned.heights[cleaned.object_image])
    moved = (clipped != before_clip).any(axis=1)
    # A box entirely outside the image clips to nothing: drop it rather than feed a degenerate box.
    degenerate = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
    cleaned.boxes = clipped
    if degenerate.any():
        cleaned = cleaned.select(keep_objects=~degenerate)
    counts = {
        "dropped_images": int((~keep_images).sum()),
        "dropped_objects": int((drop_objects & keep_images[ann.object_image]).sum() + degenerate.sum()),
        "clipped_out_of_image": int((result.out_of_image & ~drop_objects).sum()) if policy == "clip" else 0,
        "clipped_strays": int(result.strays.sum()),
        "moved_by_clipping": int(moved.sum()),
    }
    if errors:
        logger.warning(
            "%s: %d problem(s) handled by check_policy=%r: dropped %d image(s) and %d object(s), "
            "clipped %d out-of-image box(es); first: %s",
            ann.location, len(errors), policy, counts["dropped_images"], counts["dropped_objects"],
            counts["clipped_out_of_image"], errors[0],
        )
    warnings = [p for p in result.problems if p.severity == "warning"]
    if warnings:
        logger.warning("%s: %d warning(s): %s", ann.location, len(warnings), "; ".join(map(str, warnings[:3]))
                       + ("; ..." if len(warnings) > 3 else ""))
    return cleaned, counts


def clip_boxes(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Clip ``[M, 4]`` xyxy boxes to per-box image sizes."""
    upper = np.stack([widths, heights, widths, heights], axis=1).astype(boxes.dtype)
    return np.clip(boxes, 0.0, upper)


def _hint_for(ann: Annotations, errors: list[Problem]) -> str | None:
    if ann.source != "voc" or not any(p.kind == "unknown_category" for p in errors):
        return None
    unknown = Counter(str(name) for name in ann.raw_categories[ann.labels == 0])
    names = ", ".join(f"{n!r} ({c} objects)" for n, c in unknown.most_common(10))
    return (
        f"The annotations use class names {names} that are not in the class list "
        f"{ann.class_names[:8]}{'...' if len(ann.class_names) > 8 else ''}. Pass class_names=[...] "
        "with every class of the dataset (label k is class_names[k-1]), or class_names='derive' "
        "to take the sorted names found in the annotations; or check_policy='drop' to train on "
        "the listed classes only."
    )
