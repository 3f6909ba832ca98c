"""The dataset doctor: everything wrong with a dataset, in one report, before training.

``diagnose(data_cfg, splits, decode=None)`` parses each split exactly as training would
(same readers, same checks, see :mod:`detect.data.checks`), optionally decodes every
image, and returns a :class:`DoctorReport` whose ``format()`` prints, per split:

- counts: images, boxes, crowd / difficult boxes, images without boxes, missing and
  corrupt (undecodable) images;
- a class histogram (boxes per class, and names the class list lacks);
- image sizes (min / median / max width and height, from the annotations or headers) and,
  when images are decoded, the grayscale ones (count and the first few files: they are
  replicated to three channels, which a colour-trained model may not expect);
- box-size statistics (width, height, sqrt(area) percentiles; COCO small / medium /
  large counts);
- every problem, naming file, image id and annotation index;
- when images are decoded and the split has masks (VOC ``masks=True``, PennFudan, SBD):
  each mask file checked against its decoded image (``unreadable_mask``,
  ``mask_size_mismatch``, ``mask_value_out_of_range``: values above K other than 255;
  PennFudan also ``mask_box_mismatch`` warnings where an instance's mask and box differ
  by more than 2 pixels or the instance ids disagree with the boxes); missing mask files
  are reported at load time like missing images;

and a verdict: ``stops_training`` is true when a problem would stop training under the
split's ``check_policy`` (any error under "raise"; under "drop"/"clip" only what no
policy handles: an image that decoding finds undecodable or of another size than
annotated (training would stop at that item; an image whose header cannot be read at
load time is dropped like a missing one), a class list the annotations do not define, an
empty split). ``tools/check_dataset.py`` exits non-zero then.

Decoding every image is the doctor's job, not the dataset's (load-time checks stay cheap):
by default it decodes when a split has at most ``DECODE_BY_DEFAULT_UP_TO`` images.
"""
from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from detect.data.annotations import Annotations
from detect.data.checks import PROBLEM_TEXT, DatasetError, Problem, check_mask_file, find_problems
from detect.data.dataset import read_annotated_image
from detect.data.image_io import GRAYSCALE_MODES, ImageReadError, read_image_header

__all__ = ["diagnose", "diagnose_annotations", "source_config", "config_source", "DoctorReport", "SplitReport", "DECODE_BY_DEFAULT_UP_TO"]

DECODE_BY_DEFAULT_UP_TO = 5000

# Problems that stop training whatever the policy: nothing at load time drops them. The
# problems found by decoding (SplitReport.unhandled) stop it too; load-time ones of the
# same kinds (a YOLO image whose header cannot be read) are dropped by the policy.
_ALWAYS_FATAL = {"class_list_mismatch", "empty_dataset"}


@dataclass
class SplitReport:
    name: str
    location: str
    check_policy: str
    class_names: list[str]
    counts: dict
    class_histogram: dict
    box_stats: dict
    problems: list[Problem]
    decoded: bool
    unhandled: list[Problem] = field(default_factory=list)  # found by decoding: no policy drops them
    image_stats: dict = field(default_factory=dict)  # width / height: (min, median, max); grayscale: files

    @property
    def blocking(self) -> list[Problem]:
        unhandled = set(self.unhandled)
        return [p for p in self.problems if p.kind in _ALWAYS_FATAL or p in unhandled
                or (self.check_policy == "raise" and p.severity == "error")]

    def format(self) -> str:
        c = self.counts
        lines = [f"== {self.name}: {self.location}"]
        lines.append(
            f"images {c['images']} | boxes {c['boxes']} (crowd {c['crowd']}, difficult {c['difficult']}) | "
            f"images without boxes {c['empty_images']} | missing {c['missing_images']} | "
            + (f"corrupt {c['corrupt_images']}" if self.decoded else "corrupt: not checked (use --decode)")
        )
        lines.append(f"classes ({len(self.class_names)}): " + ", ".join(self.class_names))
        width = max([len(str(n)) for n in self.class_histogram] + [5])
        lines.append("class histogram:")
        total = max(sum(self.class_histogram.values()), 1)
        for name, n in self.class_histogram.items():
            bar = "#" * int(round(40 * n / total))
            lines.append(f"  {str(name):<{width}} {n:>7}  {bar}")
        im = self.image_stats
        if im.get("width"):
            lines.append("image sizes (pixels)     min median    max")
            for key in ("width", "height"):
                v = im[key]
                lines.append(f"  {key:<20} {v[0]:>6g} {v[1]:>6g} {v[2]:>6g}")
        if not self.decoded:
            lines.append("grayscale images: not checked (use --decode)")
        elif im.get("grayscale"):
            gray = im["grayscale"]
            lines.append(f"grayscale images: {len(gray)} (read as 3 identical channels), e.g. " + ", ".join(gray[:5]))
        else:
            lines.append("grayscale images: none")
        s = self.box_stats
        if s:
            lines.append("box sizes (pixels)       min     p5    p50    p95    max")
            for key in ("width", "height", "sqrt_area"):
                v = s[key]
                lines.append(f"  {key:<20} {v[0]:>6.1f} {v[1]:>6.1f} {v[2]:>6.1f} {v[3]:>6.1f} {v[4]:>6.1f}")
            lines.append(f"  COCO area ranges: small {s['small']}, medium {s['medium']}, large {s['large']}"
                         f" | aspect w/h p5-p95: {s['aspect'][0]:.2f}-{s['aspect'][1]:.2f}")
        errors = [p for p in self.problems if p.severity == "error"]
        warnings = [p for p in self.problems if p.severity != "error"]
        if not self.problems:
            lines.append("problems: none")
        else:
            kinds = Counter(p.kind for p in self.problems)
            lines.append(f"problems: {len(errors)} error(s), {len(warnings)} warning(s): "
                         + ", ".join(f"{n} {PROBLEM_TEXT.get(k, k)}" for k, n in kinds.most_common()))
            lines.extend(f"  {'ERROR' if p.severity == 'error' else 'warn '} {p}" for p in self.problems)
        blocking = self.blocking
        lines.append(
            f"verdict: {len(blocking)} problem(s) stop training under check_policy={self.check_policy!r}"
            if blocking else f"verdict: trainable under check_policy={self.check_policy!r}"
        )
        return "\n".join(lines)


@dataclass
class DoctorReport:
    splits: list[SplitReport] = field(default_factory=list)

    @property
    def stops_training(self) -> bool:
        return any(s.blocking for s in self.splits)

    def totals(self) -> dict:
        keys = ("images", "boxes", "empty_images", "missing_images", "corrupt_images")
        return {k: sum(s.counts[k] for s in self.splits) for k in keys}

    def format(self) -> str:
        parts = [s.format() for s in self.splits]
        if len(self.splits) > 1:
            t = self.totals()
            parts.append(
                f"== total over {len(self.splits)} splits: images {t['images']} | boxes {t['boxes']} | "
                f"images without boxes {t['empty_images']} | missing {t['missing_images']} | corrupt {t['corrupt_images']}"
            )
        parts.append("RESULT: " + ("problems above stop training (exit code 1)" if self.stops_training
                                   else "no problem stops training (exit code 0)"))
        return "\n\n".join(parts)


def _percentiles(values: np.ndarray) -> list[float]:
    if values.size == 0:
        return [0.0] * 5
    return np.percentile(values, [0, 5, 50, 95, 100]).tolist()


def _decode_all(ann: Annotations, readable: np.ndarray, workers: int) -> tuple[list[Problem], list[str]]:
    """Decode every readable image as training would (:func:`read_annotated_image`);
    undecodable files and size mismatches become problems. Also returns the files whose
    header says grayscale (the decoded array is already replicated to RGB)."""

    mask_check = ann.extra.get("mask_check") or (check_mask_file if "read_mask" in ann.extra else None)
    if ann.mask_paths is None:
        mask_check = None

    def check(row: int):
        try:
            image = read_annotated_image(ann, row)
            gray = read_image_header(ann.file_paths[row])[2] in GRAYSCALE_MODES
        except ImageReadError as exc:
            return [Problem("unreadable_image", ann.annotation_files[row], int(ann.image_ids[row]), None, str(exc))], False
        except DatasetError as exc:  # the size_mismatch problem
            return [exc.problems[0]], False
        # Masks are checked against the decoded image, as training would load them.
        return ([] if mask_check is None else mask_check(ann, row, *image.shape[:2])), gray

    rows = np.flatnonzero(readable).tolist()
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # OpenCV releases the GIL while decoding
        found = list(pool.map(check, rows))
    return [p for ps, _ in found for p in ps], [ann.file_paths[r] for r, (_, g) in zip(rows, found) if g]


def _image_stats(ann: Annotations, grayscale: list[str]) -> dict:
    """min / median / max of the known image sizes (no decoding: annotation or header sizes)."""
    known = (ann.widths > 0) & (ann.heights > 0)
    stats: dict = {"grayscale": grayscale}
    if known.any():
        for key, values in (("width", ann.widths[known]), ("height", ann.heights[known])):
            stats[key] = [float(values.min()), float(np.median(values)), float(values.max())]
    return stats


def diagnose_annotations(ann: Annotations, *, name: str = "split", check_policy: str = "raise",
                         decode: bool | None = None, tolerance: float = 1.0, workers: int = 2) -> SplitReport:
    """Report on one parsed split (see the module docstring)."""
    result = find_problems(ann, tolerance=tolerance)
    exists = ~result.missing_images
    problems = list(result.problems)
    decode = ann.num_images <= DECODE_BY_DEFAULT_UP_TO if decode is None else decode
    found: list[Problem] = []
    grayscale: list[str] = []
    if decode:
        found, grayscale = _decode_all(ann, exists & ann.image_valid, workers)
        problems.extend(found)
    corrupt = sum(p.kind == "unreadable_image" for p in problems)  # at load (YOLO headers) or decoded
    usable_images = int((~result.bad_images).sum())
    if usable_images == 0:
        problems.append(Problem("empty_dataset", ann.location, None, None,
                                f"no usable image ({ann.num_images} listed)"))

    num_classes = len(ann.class_names)
    objects_per_image = np.bincount(ann.object_image, minlength=ann.num_images)
    histogram: dict = {}
    label_counts = np.bincount(np.clip(ann.labels, 0, num_classes + 1), minlength=num_classes + 2)
    for k, class_name in enumerate(ann.class_names):
        histogram[class_name] = int(label_counts[k + 1])
    unknown = Counter(str(c) for c in ann.raw_categories[(ann.labels <= 0) | (ann.labels > num_classes)].tolist())
    for raw, n in unknown.most_common():
        histogram[f"{raw} (not in class list)"] = n

    boxes = ann.boxes[np.isfinite(ann.boxes).all(axis=1)]
    widths, heights = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    positive = (widths > 0) & (heights > 0)
    area = widths * heights
    box_stats = {}
    if boxes.shape[0]:
        aspect = widths[positive] / heights[positive]
        box_stats = {
            "width": _percentiles(widths), "height": _percentiles(heights),
            "sqrt_area": _percentiles(np.sqrt(np.clip(area, 0, None))),
            "small": int((area < 32**2).sum()), "medium": int(((area >= 32**2) & (area < 96**2)).sum()),
            "large": int((area >= 96**2).sum()),
            "aspect": np.percentile(aspect, [5, 95]).tolist() if aspect.size else [0.0, 0.0],
        }
    counts = {
        "images": ann.num_images, "boxes": ann.num_objects, "crowd": int(ann.iscrowd.sum()),
        "difficult": int(ann.difficult.sum()), "empty_images": int((objects_per_image == 0).sum()),
        "missing_images": int((~exists).sum()), "corrupt_images": corrupt,
    }
    return SplitReport(name=name, location=ann.location, check_policy=check_policy, class_names=list(ann.class_names),
                       counts=counts, class_histogram=histogram, box_stats=box_stats, problems=problems, decoded=decode,
                       unhandled=[p for p in found if p.severity == "error"], image_stats=_image_stats(ann, grayscale))


def diagnose(data_cfg: dict, splits, *, decode: bool | None = None, workers: int = 2) -> DoctorReport:
    """Report on ``splits`` of a config's ``data`` section (see :mod:`detect.data.build`)."""
    from detect.data.build import parse_split, resolve_split

    if not splits:
        raise ValueError("no split to check: name at least one (e.g. train)")
    report = DoctorReport()
    for split in splits:
        spec = resolve_split(data_cfg, split)
        try:
            ann = parse_split(spec)
        except DatasetError as exc:  # e.g. a class list the file does not define: nothing else can be checked
            report.splits.append(SplitReport(
                name=split, location=exc.location, check_policy=spec.check_policy, class_names=[],
                counts=dict.fromkeys(("images", "boxes", "crowd", "difficult", "empty_images", "missing_images",
                                      "corrupt_images"), 0),
                class_histogram={}, box_stats={}, problems=exc.problems, decoded=False))
            continue
        report.splits.append(diagnose_annotations(
            ann, name=split, check_policy=spec.check_policy, decode=decode,
            tolerance=spec.options.get("tolerance", 1.0), workers=workers))
    return report


def source_config(format: str | None, *, splits=None, root=None, image_dir=None, ann_file=None, label_dir=None,
                  class_names=None, check_policy: str = "raise", data_path=None) -> tuple[dict, list[str]]:
    """A ``data`` config for files named on a command line, and the split names to check.

    voc: ``root`` and split names (default train, val, test: those that exist).
    pennfudan: ``root``, splits train and val (the reader's seeded split) unless named.
    sbd: ``root``, splits those of train, val, test whose ``.txt`` exists unless named.
    coco / yolo: one source (``image_dir`` + ``ann_file`` / ``label_dir``), checked as one
    split named after it. shapes: ``root``, splits train and val (an existing set is read
    as it is; otherwise one is generated with the default parameters). Class names the
    command line does not give come from :func:`detect.data.sources.derive_class_names`,
    as for training and conversion. ``data_path``: any dataset folder or file
    :func:`detect.data.sources.detect_layout` recognises (then ``format`` may be None).
    """
    from pathlib import Path

    if data_path is not None:
        from detect.data.sources import SPLITS, detect_layout

        data = {**detect_layout(data_path), "check_policy": check_policy}
        if class_names:
            data["class_names"] = class_names
        present = [s for s in SPLITS if s in data]
        return data, list(splits or present)
    data = {"format": format, "class_names": class_names, "check_policy": check_policy}
    if format == "voc":
        if root is None:
            raise ValueError("--root is required for VOC (the folder holding JPEGImages, Annotations, ImageSets)")
        if not splits:
            splits = [s for s in ("train", "val", "test") if (Path(root) / "ImageSets" / "Main" / f"{s}.txt").is_file()]
            if not splits:
                raise FileNotFoundError(f"no ImageSets/Main/train.txt, val.txt or test.txt under {root}; "
                                        "check --root or name the splits with --split")
        data["root"] = root
        data.update({s: {"split": s} for s in splits})
        return data, list(splits)
    if format == "shapes":
        splits = splits or ["train", "val"]
        if root is not None and (Path(root) / "shapes.json").is_file():  # check what is there, as generated
            data["format"] = "coco"
            data.update({s: {"image_dir": str(Path(root) / "JPEGImages"),
                             "ann_file": str(Path(root) / "annotations" / f"instances_{s}.json")} for s in splits})
            return data, list(splits)
        data["root"] = root
        data.update({s: {} for s in splits})
        return data, list(splits)
    if format in ("pennfudan", "sbd"):
        if root is None:
            raise ValueError(f"--root is required for {format} (the folder holding "
                             + ("PNGImages, PedMasks, Annotation)" if format == "pennfudan" else "img, cls, train.txt)"))
        if not splits:
            splits = ["train", "val"] if format == "pennfudan" else [
                s for s in ("train", "val", "test") if (Path(root) / f"{s}.txt").is_file()]
        data["root"] = root
        data.update({s: {"split": s} for s in splits})
        return data, list(splits)
    if format == "coco":
        if image_dir is None or ann_file is None:
            raise ValueError("--image-dir and --ann-file are required for COCO")
        name = (splits or [Path(ann_file).stem])[0]
        data[name] = {"image_dir": image_dir, "ann_file": ann_file}
        return data, [name]
    if format == "yolo":
        if image_dir is None:
            raise ValueError("--image-dir is required for YOLO")
        name = (splits or [Path(image_dir).name])[0]
        data[name] = {"image_dir": image_dir, **({"label_dir": label_dir} if label_dir else {})}
        return data, [name]
    raise ValueError(f"unknown format {format!r}")


def config_source(config_path, overrides=(), *, splits=None, check_policy=None, data_path=None) -> tuple[dict, list[str]]:
    """The ``data`` section of a config file (with ``--set`` style overrides; pointed at
    ``data_path`` by :func:`detect.data.sources.apply_data_path` when given) and the
    splits to check (default: train, val, test, those the section has)."""
    from detect.config import load_config

    config = load_config(config_path, list(overrides))
    if data_path is not None:
        from detect.data.sources import apply_data_path

        config = apply_data_path(config, data_path)
    data = dict(config["data"])
    if check_policy:
        data["check_policy"] = check_policy
    return data, list(splits or [s for s in ("train", "val", "test") if isinstance(data.get(s), dict)])
