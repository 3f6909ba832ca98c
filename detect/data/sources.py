"""Your own data in one command: find a dataset's layout, its class names, and point a
recipe at it (``--data PATH`` of every tool).

- :func:`detect_layout` (``path -> data fields``) recognises, in this order:

  * VOC: a folder with ``Annotations/`` and ``JPEGImages/`` (and ``ImageSets/Main/*.txt``),
    or a folder holding exactly one such folder (``VOCdevkit`` -> ``VOC2007``). Splits are
    the split files there: ``train`` (else ``trainval``), ``val``, ``test``.
  * PennFudan: a folder with ``PNGImages/`` and ``PedMasks/``; splits ``train`` and ``val``
    (the reader's seeded split, :mod:`detect.data.pennfudan`).
  * SBD: a folder with ``img/`` and ``cls/`` (or its ``dataset/`` sub-folder, as the
    release unpacks); splits: the ``train`` / ``val`` / ``test`` ``.txt`` files there.
  * YOLO: a ``data.yaml`` (the file, or in the folder) with ``train`` / ``val`` / ``test``
    image folders or lists (relative to its ``path:`` key, else to the YAML's folder) and
    ``names``; or a folder with ``images/`` and ``labels/`` (splits: the sub-folders
    ``train`` / ``val`` / ``test`` of ``images/``, else ``images/`` itself is ``train``).
  * COCO: a ``.json`` file, or a folder holding ``*.json`` (or ``annotations/*.json``);
    a file is the split its name contains (``train`` / ``val`` / ``test``; a single file
    with none of them is ``train``). Its image folder is the first of: the JSON's folder,
    ``images/`` beside it, the folder named like its split (pycocotools' ``train2017`` for
    ``instances_train2017.json``, beside it or one level up), ``images/`` one level up;
    the first that holds the first image's ``file_name``.

  Anything else raises :class:`~detect.data.checks.DatasetError` listing what was looked for.

- :func:`derive_class_names` (``data_cfg -> list[str]``): the one rule for class names that
  build, the doctor, convert and training share. Given ``class_names`` (a list) wins. VOC:
  the sorted set of object names in the train split's annotations (the first of train /
  val / test the config has); COCO: the categories in id order (with ``category_ids``:
  those categories' names, the VOC names for ``"voc"``); PennFudan: ``["person"]``; SBD:
  the 20 VOC classes; YOLO: ``data.yaml``
  ``names`` or ``classes.txt`` (beside the data, as the reader looks), else ``class_0..``
  numbered up to the largest class index in the labels; shapes: the set's categories.

- :func:`apply_data_path` (``config, path -> config``): the recipe's ``data`` section
  pointed at ``path``. Inherited keys follow one rule: keys that say *how* to load
  (:data:`FORMAT_INDEPENDENT_KEYS`: batch size, workers, transforms, check policy, ...)
  are kept; keys that say *where / what* the data is (``format``, ``root``, ``ann_file``,
  ``image_dir``, ``label_dir``, ``shapes``, the split dicts ``train`` / ``val`` / ``test``,
  ``class_names``) are replaced by the detected layout. ``class_names`` is kept only when
  the recipe lists names and the new source has no names of its own (a YOLO set without
  ``data.yaml`` / ``classes.txt``). ``model.num_classes`` is set from the derived names
  when the recipe leaves it ``None`` or it differs (a note says so).

  A source without a validation split gets a seeded one: ``val_fraction`` (10%, at least
  one image) of the train split's images, chosen by ``numpy.random.default_rng(seed)``
  (seed 0), never from the test split. It is written into the config as explicit image
  lists, ``data.train.images`` and ``data.val.images`` (paths relative to the image
  folder; see :mod:`detect.data.build`), so the resolved config saved with the run
  reproduces it exactly. Notes (what was detected, how many images went where) are logged
  on the ``detect.data`` logger and appended to ``notes`` when a list is given.
"""
from __future__ import annotations

import copy
import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from detect.data.checks import DataPathError, DatasetError, Problem

__all__ = ["detect_layout", "derive_class_names", "apply_data_path", "seeded_val_split",
           "FORMAT_INDEPENDENT_KEYS", "SPLITS"]

logger = logging.getLogger("detect.data")

SPLITS = ("train", "val", "test")

# Keys of a recipe's data section that stay valid whatever the source's format.
FORMAT_INDEPENDENT_KEYS = ("batch_size", "num_workers", "aspect_ratio_grouping", "transforms", "check_policy",
                           "filter_empty", "masks", "use_difficult", "tolerance", "seed", "pin_memory")


def _layout_error(path: Path, looked_for: list[str]) -> DatasetError:
    location = str(path)
    return DatasetError(location, [Problem("unknown_layout", location, None, None,
                                           "no dataset layout recognised; looked for: " + "; ".join(looked_for))],
                        hint="Point --data at a VOC folder (Annotations/ + JPEGImages/ + ImageSets/Main/), a COCO "
                             "JSON (or its folder), a YOLO data.yaml or a folder with images/ and labels/.")


def detect_layout(path) -> dict:
    """The data-config fields (``format``, ``root`` and the split dicts, ``class_names``
    when the source names them) of the dataset at ``path``; see the module docstring."""
    path = Path(os.path.abspath(path))
    if not path.exists():
        raise DataPathError(path, "dataset path", "root")
    looked_for = []
    for probe in (_voc_layout, _pennfudan_layout, _sbd_layout, _yolo_layout, _coco_layout):
        found = probe(path, looked_for)
        if found is not None:
            return found
    raise _layout_error(path, looked_for)


def _is_voc_root(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def _voc_layout(path: Path, looked_for: list) -> dict | None:
    looked_for.append(f"VOC: {path}/Annotations and {path}/JPEGImages (or one sub-folder holding them)")
    if not path.is_dir():
        return None
    root = path if _is_voc_root(path) else None
    if root is None:
        inner = [d for d in sorted(path.iterdir()) if d.is_dir() and _is_voc_root(d)]
        root = inner[0] if len(inner) == 1 else None
    if root is None:
        return None
    main = root / "ImageSets" / "Main"
    have = {p.stem for p in main.glob("*.txt")} if main.is_dir() else set()
    train = "train" if "train" in have else "trainval" if "trainval" in have else None
    if train is None:
        raise DatasetError(str(root), [Problem("missing_path", str(main / "train.txt"), None, None,
                                               f"a VOC folder needs split files; found {sorted(have)}")],
                           hint=f"Write the image ids of the training images, one per line, to {main}/train.txt "
                                "(and val.txt / test.txt for the other splits).")
    layout = {"format": "voc", "root": str(root), "train": {"split": train}}
    layout.update({s: {"split": s} for s in ("val", "test") if s in have})
    return layout


def _pennfudan_layout(path: Path, looked_for: list) -> dict | None:
    from detect.data.pennfudan import is_pennfudan_root

    looked_for.append(f"PennFudan: {path}/PNGImages and {path}/PedMasks")
    if not (path.is_dir() and is_pennfudan_root(path)):
        return None
    # No official split: the reader's seeded one (val_fraction 0.2, split_seed 0).
    return {"format": "pennfudan", "root": str(path), "train": {"split": "train"}, "val": {"split": "val"},
            "class_names": None}


def _sbd_layout(path: Path, looked_for: list) -> dict | None:
    from detect.data.sbd import is_sbd_root

    looked_for.append(f"SBD: {path}/img and {path}/cls (or {path}/dataset holding them)")
    if not path.is_dir():
        return None
    root = path if is_sbd_root(path) else path / "dataset" if is_sbd_root(path / "dataset") else None
    if root is None:
        return None
    layout = {"format": "sbd", "root": str(root), "class_names": None}
    layout.update({s: {"split": s} for s in SPLITS if (root / f"{s}.txt").is_file()})
    if "train" not in layout:
        raise DatasetError(str(root), [Problem("missing_path", str(root / "train.txt"), None, None,
                                               "an SBD folder needs train.txt (image ids, one per line)")],
                           hint="Use the release's benchmark_RELEASE/dataset folder, which holds train.txt and val.txt.")
    return layout


def _yolo_layout(path: Path, looked_for: list) -> dict | None:
    yaml_file = path if path.suffix in (".yaml", ".yml") else next(
        (path / n for n in ("data.yaml", "data.yml") if (path / n).is_file()), None)
    looked_for.append(f"YOLO: a data.yaml ({path / 'data.yaml'}) or {path}/images + {path}/labels")
    if yaml_file is not None and yaml_file.is_file():
        import yaml

        from detect.data.checks import read_text

        spec = yaml.safe_load(read_text(yaml_file, "YOLO data.yaml")) or {}
        base = Path(spec["path"]) if spec.get("path") else yaml_file.parent
        base = base if base.is_absolute() else yaml_file.parent / base
        layout = {"format": "yolo"}
        for split in SPLITS:
            entry = spec.get(split)
            if isinstance(entry, list):  # several folders: not expressible as one image_dir
                entry = entry[0] if len(entry) == 1 else None
                if entry is None:
                    raise DatasetError(str(yaml_file), [Problem("malformed_annotation", str(yaml_file), None, None,
                                                                f"{split}: lists several folders")],
                                       hint="Give one folder or image-list file per split in data.yaml.")
            if entry:
                layout[split] = {"image_dir": os.path.normpath(base / entry)}
        if "train" not in layout:
            raise DatasetError(str(yaml_file), [Problem("missing_path", str(yaml_file), None, None,
                                                        "data.yaml has no 'train' entry")],
                               hint="Add train: images/train (relative to path: or the YAML's folder).")
        layout["class_names"] = str(yaml_file) if spec.get("names") is not None else None
        return layout
    if path.is_dir() and (path / "images").is_dir() and (path / "labels").is_dir():
        images = path / "images"
        layout = {"format": "yolo", "class_names": None}
        subsplits = {s: images / s for s in SPLITS if (images / s).is_dir()}
        if "train" in subsplits:
            layout.update({s: {"image_dir": str(folder)} for s, folder in subsplits.items()})
        else:
            layout["train"] = {"image_dir": str(images)}
        return layout
    return None


def _split_of(name: str) -> str | None:
    lowered = name.lower()
    return next((s for s in ("train", "val", "test") if s in lowered), None)


def _coco_image_dir(ann_file: Path, data: dict) -> Path | None:
    first = next((im.get("file_name") for im in data.get("images", []) if im.get("file_name")), None)
    stem = ann_file.stem
    split_name = stem.split("_", 1)[1] if stem.startswith(("instances_", "image_info_")) else stem
    folder = ann_file.parent
    candidates = [folder, folder / "images", folder / split_name, folder.parent / split_name,
                  folder.parent / "images" / split_name, folder.parent / "images"]
    for candidate in candidates:
        if candidate.is_dir() and (first is None or (candidate / first).is_file()):
            return candidate
    return None


def _coco_layout(path: Path, looked_for: list) -> dict | None:
    if path.is_file() and path.suffix == ".json":
        files = [path]
    elif path.is_dir():
        files = sorted(path.glob("*.json")) + sorted((path / "annotations").glob("*.json"))
    else:
        files = []
    looked_for.append(f"COCO: {path} as a .json, or {path}/*.json, {path}/annotations/*.json")
    files = [f for f in files if _is_coco_json(f)]
    if not files:
        return None
    from detect.data.coco import _load_json

    layout = {"format": "coco"}
    for ann_file in files:
        split = _split_of(ann_file.stem) or ("train" if len(files) == 1 else None)
        if split is None or split in layout:
            continue
        image_dir = _coco_image_dir(ann_file, _load_json(ann_file))
        if image_dir is None:
            raise DataPathError(ann_file.parent / "images", f"image folder of {ann_file}", "image_dir",
                                "looked beside the JSON, in images/ and in the folder named like its split")
        layout[split] = {"image_dir": str(image_dir), "ann_file": str(ann_file)}
    if "train" not in layout:
        if len(layout) == 1:
            return None
        # Only val / test files: the first one found trains (a fine-tuning set named "val").
        first = next(s for s in SPLITS if s in layout)
        layout["train"] = layout.pop(first)
    layout["class_names"] = None
    return layout


def _is_coco_json(path: Path) -> bool:
    """Cheap sniff (the first bytes) so that a config.json or a results file is not taken
    for an instances file; the reader checks the rest."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    return head.lstrip().startswith("{") and any(key in head for key in ('"images"', '"categories"', '"info"',
                                                                          '"annotations"', '"licenses"'))


# --------------------------------------------------------------------------- class names

def derive_class_names(data_cfg: dict) -> list[str]:
    """The class names of a config's ``data`` section (label k is ``names[k - 1]``); see
    the module docstring for the rule per format."""
    names = data_cfg.get("class_names")
    if isinstance(names, (list, tuple)):
        return [str(n) for n in names]
    from detect.data.build import resolve_split

    split = next((s for s in SPLITS if isinstance(data_cfg.get(s), dict)), None)
    if split is None:
        raise KeyError("data config has no train / val / test section to derive class names from")
    spec = resolve_split(data_cfg, split, derive_classes=False)
    source = spec.source
    if spec.format == "pennfudan":
        from detect.data.pennfudan import PENNFUDAN_CLASSES

        return list(PENNFUDAN_CLASSES)
    if spec.format == "sbd":
        from detect.data.voc import VOC_CLASSES

        return list(VOC_CLASSES)
    if spec.format == "coco" and spec.options.get("category_ids") is not None:
        from detect.data.coco import coco_class_names

        return coco_class_names(_load_json_categories(source["ann_file"]), spec.options["category_ids"])
    if spec.format == "voc":
        split_file = Path(source["root"]) / "ImageSets" / "Main" / f"{source.get('split', split)}.txt"
        stamp = (_stamp(split_file), _stamp(Path(source["root"]) / "Annotations"))
        return list(_voc_names(str(source["root"]), source.get("split", split), stamp))
    if spec.format == "coco":
        from detect.data.coco import _load_json

        categories = _load_json(Path(source["ann_file"]))["categories"]
        from detect.data.coco import _as_id

        return [str(c["name"]) for c in sorted(categories, key=lambda c: _as_id(c["id"]))]
    return _yolo_names(source["image_dir"], source.get("label_dir"), names)


def _load_json_categories(ann_file) -> list:
    from detect.data.coco import _load_json

    return _load_json(Path(ann_file))["categories"]


def _stamp(path: Path):
    try:
        stat = path.stat()
        return (stat.st_mtime_ns, stat.st_size)
    except OSError:
        return None


@lru_cache(maxsize=8)
def _voc_names(root: str, split: str, stamp) -> tuple[str, ...]:
    """Cached on the split file's stamp: build_dataset derives once per split resolution,
    and the XML parse is the expensive part of loading VOC."""
    from detect.data.voc import derive_voc_class_names

    return tuple(derive_voc_class_names(root, split))


def _has_yolo_class_file(layout: dict) -> bool:
    from detect.data.yolo_labels import _absolute, _find_class_file

    try:
        _find_class_file(_absolute(layout["train"]["image_dir"]), None)
    except ValueError:
        return False
    return True


def _yolo_names(image_dir, label_dir, given) -> list[str]:
    from detect.data.yolo_labels import _absolute, _find_class_file, parse_yolo, read_class_names

    if isinstance(given, (str, os.PathLike)) and given != "derive":
        return read_class_names(given)
    image_dir = _absolute(image_dir)
    try:
        return read_class_names(_find_class_file(image_dir, None if label_dir is None else _absolute(label_dir)))
    except ValueError:
        pass
    ann = parse_yolo(image_dir, [], label_dir)  # every index is out of range of []: raw indices are kept
    indices = np.asarray(ann.raw_categories.tolist(), dtype=np.float64)
    indices = indices[np.isfinite(indices) & (indices >= 0)]
    count = int(indices.max()) + 1 if indices.size else 0
    return [f"class_{k}" for k in range(count)]


# --------------------------------------------------------------------------- recipes

def seeded_val_split(names: list[str], *, fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """``(train, val)``: ``fraction`` of ``names`` (at least one, at most all but one)
    drawn with ``numpy.random.default_rng(seed)``; both lists keep the input order."""
    n = len(names)
    if n < 2:
        raise ValueError(f"cannot carve a validation split out of {n} training image(s)")
    count = min(max(1, int(round(fraction * n))), n - 1)
    chosen = np.zeros(n, bool)
    chosen[np.random.default_rng(seed).permutation(n)[:count]] = True
    return [m for m, c in zip(names, chosen) if not c], [m for m, c in zip(names, chosen) if c]


def _image_names(data_cfg: dict, split: str) -> list[str]:
    """The image names (relative paths) of a split, as ``images`` lists are written."""
    from detect.data.annotations import relative_image_names
    from detect.data.build import parse_split, resolve_split

    return relative_image_names(parse_split(resolve_split(data_cfg, split)))


def apply_data_path(config: dict, path, *, val_fraction: float = 0.1, seed: int = 0, notes: list | None = None) -> dict:
    """A new config whose ``data`` section reads the dataset at ``path`` (any layout
    :func:`detect_layout` knows); ``config`` is not modified. See the module docstring for
    which inherited keys survive, ``model.num_classes`` and the seeded validation split."""
    notes = [] if notes is None else notes
    config = copy.deepcopy(dict(config))
    old = dict(config.get("data") or {})
    layout = detect_layout(path)
    data = {k: old[k] for k in FORMAT_INDEPENDENT_KEYS if k in old}
    data.update(layout)
    dropped = sorted(k for k in old if k not in FORMAT_INDEPENDENT_KEYS)  # replaced by the detected source
    if (layout["format"] == "yolo" and data.get("class_names") is None
            and isinstance(old.get("class_names"), (list, tuple)) and not _has_yolo_class_file(layout)):
        data["class_names"] = list(old["class_names"])  # the new source names nothing: the recipe's list does
        dropped.remove("class_names")
    dropped = [k for k in dropped if k != "class_names" or old.get("class_names") is not None]
    stale = [s for s in SPLITS if isinstance(old.get(s), dict) and old[s].get("proposal_file")]
    if stale:  # proposals belong to the recipe's images, never to the new data's
        notes.append(f"--data {path}: the recipe's proposal files ({', '.join(f'data.{s}.proposal_file' for s in stale)}) "
                     "belong to its own data and are dropped; make ones for the new data with tools/make_proposals.py "
                     "and pass them with --set data.<split>.proposal_file=FILE")
    notes.append(f"--data {path}: {layout['format']} layout with splits "
                 f"{[s for s in SPLITS if s in layout]}" + (f"; recipe data keys replaced: {dropped}" if dropped else ""))
    if "val" not in data:
        train_names = _image_names(data, "train")
        train, val = seeded_val_split(train_names, fraction=val_fraction, seed=seed)
        source = dict(data["train"])
        data["train"], data["val"] = {**source, "images": train}, {**source, "images": val}
        notes.append(f"no validation split: {len(val)} of {len(train_names)} training images (seed {seed}) "
                     f"moved to data.val.images, {len(train)} stay in data.train.images"
                     + ("; the test split is untouched" if "test" in data else ""))
    names = derive_class_names(data)
    data["class_names"] = names
    config["data"] = data
    model = config.setdefault("model", {})
    if model.get("num_classes") != len(names):
        if model.get("num_classes") is not None:
            notes.append(f"model.num_classes {model['num_classes']} -> {len(names)} (the classes of {path}: {names[:8]}"
                         + ("...)" if len(names) > 8 else ")"))
        model["num_classes"] = len(names)
    for note in notes:
        logger.info("%s", note)
    return config
