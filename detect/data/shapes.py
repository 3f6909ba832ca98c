"""The built-in shapes dataset: generated deterministically on disk, read by the real readers.

``make_shapes(root, num_images, image_size, seed, ...)`` draws filled shapes (circles,
squares, triangles, ...) of random colours, sizes and rotations on mildly textured
backgrounds, limits occlusion so that every object stays mostly visible, and writes::

    root/
      shapes.json                          generation parameters (the reuse key) and counts
      JPEGImages/000000.jpg ...            RGB images
      annotations/instances_train.json     COCO: bbox [x, y, w, h] tight around the visible
      annotations/instances_val.json             pixels, segmentation = RLE of those pixels,
                                                 area = visible pixel count, category ids 1..K,
                                                 image ids 0..N-1 (0 included on purpose)
      Annotations/000000.xml               VOC: bndbox 1-based inclusive, same boxes
      ImageSets/Main/{train,val}.txt       VOC splits (image stems)
      ImageSets/Segmentation/{train,val}.txt
      SegmentationClass/000000.png         palette PNG: 0 background, k = class k

The COCO and VOC files describe the same boxes (the readers must agree: a test checks
that). The first ``num_images - round(val_fraction * num_images)`` images are ``train``,
the rest ``val``; some images (``empty_fraction``) have no object.

Determinism: image ``i`` is drawn from ``numpy.random.default_rng([seed, i])``, so the
same parameters give byte-identical files (tested by hashing two generations). The set is
generated in a temporary sibling folder and renamed into place, so concurrent callers
(distributed ranks) never see half a dataset. If ``root`` already holds a set with the
same parameters it is reused; with different parameters :class:`ValueError` says which
differ (``overwrite=True`` regenerates it).

The defaults are meant to be learnable in minutes on a CPU: three clearly different
shapes, objects 15-45% of the image side, at most 30% of any object hidden.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

__all__ = ["make_shapes", "make_shapes_video", "SHAPE_NAMES", "SHAPES_OPTIONS", "draw_shapes_image", "voc_palette"]

FORMAT_VERSION = 1

# Vertices on the unit circle (angle offsets, radii) of each polygonal shape; "circle" is drawn as a circle.
_POLYGONS = {
    "square": (np.deg2rad(45.0 + 90.0 * np.arange(4)), np.ones(4)),
    "triangle": (np.deg2rad(90.0 + 120.0 * np.arange(3)), np.ones(3)),
    "hexagon": (np.deg2rad(60.0 * np.arange(6)), np.ones(6)),
    "star": (np.deg2rad(90.0 + 36.0 * np.arange(10)), np.tile([1.0, 0.45], 5)),
}
SHAPE_NAMES = ("circle", "square", "triangle", "hexagon", "star", "cross")

_DEFAULTS = dict(
    num_images=240,
    image_size=160,
    seed=0,
    classes=("circle", "square", "triangle"),
    size_range=(0.15, 0.45),
    objects_per_image=(1, 4),
    empty_fraction=0.05,
    texture_strength=0.5,
    max_occlusion=0.3,
    val_fraction=0.2,
    jpeg_quality=90,
)
SHAPES_OPTIONS = frozenset(_DEFAULTS)


def _cross_vertices() -> np.ndarray:
    """A plus sign with arms one third of its span wide, as unit-circle-bounded points."""
    a, b = 1.0 / 3.0, 1.0
    pts = np.array([[a, b], [a, a], [b, a], [b, -a], [a, -a], [a, -b],
                    [-a, -b], [-a, -a], [-b, -a], [-b, a], [-a, a], [-a, b]])
    return pts / np.hypot(a, b)


def _shape_points(name: str, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    if name == "cross":
        unit = _cross_vertices()
    else:
        offsets, radii = _POLYGONS[name]
        unit = np.stack([np.cos(offsets) * radii, -np.sin(offsets) * radii], axis=1)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    points = unit @ rotation.T * radius + np.array([cx, cy])
    return np.round(points).astype(np.int32)


def _draw_mask(name: str, height: int, width: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    if name == "circle":
        cv2.circle(mask, (int(round(cx)), int(round(cy))), int(round(radius)), 1, thickness=-1, lineType=cv2.LINE_8)
    else:
        cv2.fillPoly(mask, [_shape_points(name, cx, cy, radius, angle)], 1, lineType=cv2.LINE_8)
    return mask.view(bool)


def voc_palette(num_colors: int = 256) -> np.ndarray:
    """The Pascal VOC colour map (``uint8 [num_colors, 3]``) used for SegmentationClass PNGs."""
    index = np.arange(num_colors)
    palette = np.zeros((num_colors, 3), np.int64)
    code = index.copy()
    for shift in range(7, -1, -1):  # 8 bit planes, three channels each
        for channel in range(3):
            palette[:, channel] |= ((code >> channel) & 1) << shift
        code >>= 3
    return palette.astype(np.uint8)


def draw_shapes_image(index: int, params: dict, *, with_full_areas: bool = False):
    """Draw image ``index``: ``(rgb uint8 [H, W, 3], instance map uint8 [H, W] (0 = none,
    j = object j), object classes int64 [n] in 1..K)``, plus the unoccluded pixel area of
    each object (int64 [n]) when ``with_full_areas``. Deterministic in (seed, index)."""
    rng = np.random.default_rng([int(params["seed"]), int(index)])
    height, width = _hw(params["image_size"])
    strength = float(params["texture_strength"])
    classes = list(params["classes"])

    # Background: a random base colour with a smooth low-frequency variation.
    base = rng.uniform(40, 215, size=3)
    blobs = rng.uniform(-1, 1, size=(4, 4, 3)).astype(np.float32)
    variation = cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
    image = (base[None, None, :] + variation * (45.0 * strength)).astype(np.float32)

    instances = np.zeros((height, width), np.uint8)
    full_areas: list[int] = []
    colours: list[np.ndarray] = []
    object_classes: list[int] = []
    low, high = params["objects_per_image"]
    count = 0 if rng.random() < params["empty_fraction"] else int(rng.integers(low, high + 1))
    side = min(height, width)
    for _ in range(count):
        for _attempt in range(20):
            klass = int(rng.integers(len(classes)))
            radius = rng.uniform(*params["size_range"]) * side / 2.0
            cx = rng.uniform(radius, width - radius)
            cy = rng.uniform(radius, height - radius)
            mask = _draw_mask(classes[klass], height, width, cx, cy, radius, rng.uniform(0, 2 * np.pi))
            area = int(mask.sum())
            if area < 16:
                continue
            if full_areas:
                covered = np.bincount(instances[mask], minlength=len(full_areas) + 1)[1:]
                visible = np.bincount(instances.ravel(), minlength=len(full_areas) + 1)[1:]
                if np.any(visible - covered < (1.0 - params["max_occlusion"]) * np.asarray(full_areas)):
                    continue
            # A colour far from what lies under the object (background and the colours of
            # overlapped objects), so that every edge of the shape stays visible.
            overlapped = np.flatnonzero(covered) if full_areas else np.zeros(0, np.int64)
            references = np.concatenate([image[mask & (instances == 0)].mean(axis=0, keepdims=True)
                                         if (mask & (instances == 0)).any() else np.zeros((0, 3)),
                                         np.asarray(colours).reshape(-1, 3)[overlapped]])
            candidates = rng.uniform(0, 255, size=(8, 3))
            distance = np.abs(candidates[:, None, :] - references[None, :, :]).sum(axis=2).min(axis=1)
            colour = candidates[np.argmax(distance)]
            colours.append(colour)
            image[mask] = colour
            instances[mask] = len(full_areas) + 1
            full_areas.append(area)
            object_classes.append(klass + 1)
            break

    if strength > 0:  # fine grain over everything, objects included
        image += rng.normal(0.0, 6.0 * strength, size=(height, width, 1)).astype(np.float32)
    rgb = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    classes = np.asarray(object_classes, dtype=np.int64)
    if with_full_areas:
        return rgb, instances, classes, np.asarray(full_areas, dtype=np.int64)
    return rgb, instances, classes


def _hw(image_size) -> tuple[int, int]:
    if isinstance(image_size, (int, np.integer)):
        return int(image_size), int(image_size)
    height, width = image_size
    return int(height), int(width)


def _tight_boxes(instances: np.ndarray, count: int) -> np.ndarray:
    """``int64 [count, 4]`` of (xmin, ymin, xmax, ymax) inclusive pixel indices per instance."""
    ys, xs = np.nonzero(instances)
    ids = instances[ys, xs].astype(np.int64) - 1
    boxes = np.empty((count, 4), np.int64)
    boxes[:, :2] = np.iinfo(np.int64).max
    boxes[:, 2:] = -1
    np.minimum.at(boxes[:, 0], ids, xs)
    np.minimum.at(boxes[:, 1], ids, ys)
    np.maximum.at(boxes[:, 2], ids, xs)
    np.maximum.at(boxes[:, 3], ids, ys)
    return boxes


_VOC_OBJECT = """\t<object>
\t\t<name>{name}</name>
\t\t<pose>Unspecified</pose>
\t\t<truncated>0</truncated>
\t\t<difficult>0</difficult>
\t\t<bndbox>
\t\t\t<xmin>{xmin}</xmin>
\t\t\t<ymin>{ymin}</ymin>
\t\t\t<xmax>{xmax}</xmax>
\t\t\t<ymax>{ymax}</ymax>
\t\t</bndbox>
\t</object>
"""


def _voc_xml(stem: str, height: int, width: int, names: list[str], boxes: np.ndarray) -> str:
    objects = "".join(
        _VOC_OBJECT.format(name=n, xmin=b[0] + 1, ymin=b[1] + 1, xmax=b[2] + 1, ymax=b[3] + 1)
        for n, b in zip(names, boxes.tolist())
    )
    return (
        f"<annotation>\n\t<folder>JPEGImages</folder>\n\t<filename>{stem}.jpg</filename>\n"
        f"\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n"
        f"\t<segmented>1</segmented>\n{objects}</annotation>\n"
    )


def _normalise(params: dict) -> dict:
    """JSON-comparable parameters (tuples -> lists, numpy numbers -> Python)."""
    return json.loads(json.dumps(params, default=lambda o: o.item() if hasattr(o, "item") else list(o)))


def _validate(params: dict) -> None:
    unknown = [c for c in params["classes"] if c not in SHAPE_NAMES]
    if unknown or not params["classes"]:
        raise ValueError(f"shapes classes {unknown or '[]'} unknown; choose from {SHAPE_NAMES}")
    if len(set(params["classes"])) != len(params["classes"]):
        raise ValueError(f"shapes classes {params['classes']} repeat a name")
    low, high = params["size_range"]
    if not 0 < low <= high <= 1:
        raise ValueError(f"size_range {params['size_range']} must satisfy 0 < low <= high <= 1 (fractions of the side)")
    low, high = params["objects_per_image"]
    if not 0 <= low <= high:
        raise ValueError(f"objects_per_image {params['objects_per_image']} must be (low, high) with 0 <= low <= high")
    if params["num_images"] < 1 or min(_hw(params["image_size"])) < 16:
        raise ValueError("num_images must be >= 1 and image_size >= 16")
    for key in ("empty_fraction", "val_fraction", "max_occlusion"):
        if not 0 <= params[key] <= 1:
            raise ValueError(f"{key} must be in [0, 1], got {params[key]}")


def _write_set(folder: Path, params: dict) -> dict:
    from PIL import Image
    from pycocotools import mask as mask_utils

    for sub in ("JPEGImages", "annotations", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    classes = list(params["classes"])
    height, width = _hw(params["image_size"])
    num_images = int(params["num_images"])
    num_val = int(round(params["val_fraction"] * num_images))
    splits = {"train": range(0, num_images - num_val), "val": range(num_images - num_val, num_images)}
    palette = voc_palette().reshape(-1).tolist()
    categories = [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(classes)]
    counts = {"images": num_images, "objects": 0, "empty_images": 0}
    for split, indices in splits.items():
        images, annotations, stems = [], [], []
        for i in indices:
            stem = f"{i:06d}"
            rgb, instances, object_classes = draw_shapes_image(i, params)
            n = object_classes.size
            boxes = _tight_boxes(instances, n)
            # The encoder wants BGR; the pixels are ours, so reversing the channel axis is the whole conversion.
            ok, jpeg = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]),
                                    [cv2.IMWRITE_JPEG_QUALITY, int(params["jpeg_quality"])])
            assert ok
            (folder / "JPEGImages" / f"{stem}.jpg").write_bytes(jpeg.tobytes())
            lut = np.concatenate([[0], object_classes]).astype(np.uint8)
            png = Image.fromarray(lut[instances], mode="P")
            png.putpalette(palette)
            buffer = io.BytesIO()
            png.save(buffer, format="PNG")
            (folder / "SegmentationClass" / f"{stem}.png").write_bytes(buffer.getvalue())
            names = [classes[c - 1] for c in object_classes.tolist()]
            (folder / "Annotations" / f"{stem}.xml").write_text(_voc_xml(stem, height, width, names, boxes))
            images.append({"id": i, "file_name": f"{stem}.jpg", "height": height, "width": width})
            if n:
                binary = np.asfortranarray((instances[:, :, None] == np.arange(1, n + 1)[None, None, :]).astype(np.uint8))
                rles = mask_utils.encode(binary)
                areas = mask_utils.area(rles).tolist()
            else:
                rles, areas = [], []
            for j in range(n):
                x1, y1, x2, y2 = boxes[j].tolist()
                annotations.append({
                    "id": counts["objects"] + j + 1, "image_id": i, "category_id": int(object_classes[j]),
                    "bbox": [x1, y1, x2 - x1 + 1, y2 - y1 + 1], "area": int(areas[j]), "iscrowd": 0,
                    "segmentation": {"size": [height, width], "counts": rles[j]["counts"].decode("ascii")},
                })
            counts["objects"] += n
            counts["empty_images"] += int(n == 0)
            stems.append(stem)
        coco = {"info": {"description": "detect built-in shapes", "version": FORMAT_VERSION},
                "images": images, "annotations": annotations, "categories": categories}
        (folder / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco, separators=(",", ":")))
        for task in ("Main", "Segmentation"):
            (folder / "ImageSets" / task / f"{split}.txt").write_text("".join(s + "\n" for s in stems))
        counts[split] = len(stems)
    return counts


def make_shapes(root, *, overwrite: bool = False, **options) -> Path:
    """Generate the shapes dataset under ``root`` (or reuse it); returns ``root``.

    Options (defaults in brackets): ``num_images`` [240], ``image_size`` [160, or (H, W)],
    ``seed`` [0], ``classes`` [("circle", "square", "triangle"); any of
    :data:`SHAPE_NAMES`], ``size_range`` [(0.15, 0.45): object extent as a fraction of the
    shorter side], ``objects_per_image`` [(1, 4)], ``empty_fraction`` [0.05],
    ``texture_strength`` [0.5: 0 = flat colours], ``max_occlusion`` [0.3: the largest
    fraction of an object later objects may hide], ``val_fraction`` [0.2],
    ``jpeg_quality`` [90].
    """
    unknown = set(options) - SHAPES_OPTIONS
    if unknown:
        raise TypeError(f"make_shapes got unknown options {sorted(unknown)}; valid: {sorted(SHAPES_OPTIONS)}")
    params = {**_DEFAULTS, **options}
    _validate(params)
    params = _normalise(params)
    root = Path(root)
    record = {"format_version": FORMAT_VERSION, "params": params}
    existing = _read_record(root)
    if existing is not None:
        if existing.get("format_version") == FORMAT_VERSION and existing.get("params") == params:
            return root
        if not overwrite:
            old = existing.get("params", {})
            diff = {k: (old.get(k), params.get(k)) for k in sorted(set(old) | set(params)) if old.get(k) != params.get(k)}
            raise ValueError(
                f"{root} holds a shapes set generated with other parameters (existing, requested): {diff}. "
                "Delete the folder, choose another root, or pass overwrite=True to regenerate it."
            )
    elif root.exists() and any(root.iterdir()):
        raise ValueError(f"{root} exists and is not a shapes dataset (no shapes.json); choose an empty or new folder")

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        counts = _write_set(staging, params)
        (staging / "shapes.json").write_text(json.dumps({**record, "counts": counts}, indent=1, sort_keys=True))
        if existing is not None:  # overwrite=True: replace our own previous set
            shutil.rmtree(root)
        elif root.exists():
            try:
                root.rmdir()  # empty folder
            except OSError:
                pass  # another process renamed its set into place meanwhile: checked below
        try:
            os.rename(staging, root)
        except OSError:
            # Another process renamed its copy first; use it if it is the same set.
            if (_read_record(root) or {}).get("params") != params:
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return root


def _read_record(root: Path) -> dict | None:
    try:
        return json.loads((root / "shapes.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{root / 'shapes.json'} is unreadable ({exc}); delete {root} to regenerate the set") from exc


def make_shapes_video(path, *, num_frames: int = 48, fps: float = 12.0, scene_frames: int = 16,
                      seed: int = 10_000, **options) -> Path:
    """Write a short video of shapes scenes drifting across the frame (for infer.py demos).

    Every ``scene_frames`` frames a new scene is drawn with :func:`draw_shapes_image`
    (image index ``seed + scene``, the other ``options`` as for :func:`make_shapes`, so
    scenes differ from the dataset's own images); within a scene the picture scrolls
    sideways, wrapping around, so objects move and cross the border. The container
    follows the suffix (``.avi``: MJPG, ``.mp4``: mp4v). Returns ``path``.
    """
    params = {**_DEFAULTS, **options, "seed": 0}
    _validate(params)
    height, width = _hw(params["image_size"])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (width, height))
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}: OpenCV found no encoder for {path.suffix!r}; use .avi or .mp4")
    try:
        step = max(1, width // (2 * scene_frames))
        for frame_index in range(num_frames):
            scene, offset = divmod(frame_index, scene_frames)
            if offset == 0:
                rgb, _, _ = draw_shapes_image(seed + scene, params)
            writer.write(cv2.cvtColor(np.roll(rgb, offset * step, axis=1), cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
    return path
