"""From the ``data`` section of a config to datasets and data loaders.

``data_cfg`` (docs/ABSTRACTIONS.md, "Configs")::

    data = dict(
        format="coco" | "voc" | "yolo" | "shapes" | "pennfudan" | "sbd",
        root=None,                      # default for every split (voc, shapes)
        train=dict(...), val=dict(...), # per split; keys below override data-level ones
        class_names=None,               # None / "derive": detect.data.sources.derive_class_names
        transforms=dict(train="train", val="eval"),   # preset name, dict(name=..., **options)
        check_policy="raise",           # "raise" | "drop" | "clip"
        filter_empty=False,             # "train" split only (set it in a split dict to force it)
        masks=False, use_difficult=False,
        shapes=dict(num_images=..., image_size=..., seed=...),   # format "shapes" only
        batch_size=2, num_workers=2, aspect_ratio_grouping=True,  # read by the trainer
    )

Per-split keys by format:

- ``coco``: ``image_dir``, ``ann_file``.
- ``voc``: ``root`` (VOCdevkit/VOC2007-style folder), ``split`` (ImageSets/Main/<split>.txt,
  default: the split name).
- ``yolo``: ``image_dir`` (folder or list file), optional ``label_dir``.
- ``pennfudan``: ``root``, ``split`` ("train" | "val" | "all", default: the split name),
  ``val_fraction`` (0.2), ``split_seed`` (0) (:mod:`detect.data.pennfudan`; the last three
  may sit at data level).
- ``sbd``: ``root`` (``benchmark_RELEASE/dataset``), ``split`` (default: the split name;
  ``"seg11valid"`` too), ``voc_root`` (:mod:`detect.data.sbd`); ``masks`` defaults to True.
- ``coco`` also: ``category_ids`` (``"voc"`` or a list of ids: only those categories, label
  k = ``category_ids[k-1]``), ``mask_style`` ("detect" | "torchvision"), and per split
  ``min_labelled_area`` (see :class:`detect.data.coco.CocoDetection`).
- every format: ``proposal_file`` (optional): a proposal file (:mod:`detect.proposals.files`)
  whose boxes the split's items carry as ``target["proposals"]`` (R-CNN, Fast R-CNN); every
  image id of the split must be in it.
- every format: ``images`` (optional): the names of the images the split keeps (paths
  relative to the image folder: COCO ``image_dir``, VOC ``JPEGImages``, YOLO ``image_dir``),
  e.g. the seeded validation split that :func:`detect.data.sources.apply_data_path` writes.
- ``shapes``: ``root``; generation options of :func:`detect.data.shapes.make_shapes` may sit
  in ``data.shapes`` or in the split dict. The set is generated under ``root`` if it is not
  there yet and then read with the COCO reader (``annotations/instances_<split>.json``).

``build_dataloader`` returns a :class:`detect.data.loader.DetectionDataLoader`; call its
``set_epoch(epoch)`` at the start of every epoch (it also reshuffles a DistributedSampler)
so that order and augmentation depend only on ``(seed, rank, epoch)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detect.config import ConfigError


class DataConfigError(ConfigError, KeyError):
    """The ``data`` section lacks a split or a key a reader needs. A ``ConfigError`` (the tools
    print it as one line) and a ``KeyError`` (what a missing key has always raised here)."""

    __str__ = ConfigError.__str__  # KeyError's would quote the message

__all__ = ["build_dataset", "build_dataloader", "prepare_data", "resolve_split", "parse_split", "SplitSpec", "DATA_FORMATS"]

DATA_FORMATS = ("coco", "voc", "yolo", "shapes", "pennfudan", "sbd")

# Keys that may appear in data_cfg or a split dict and are not passed to a reader.
_LOADER_KEYS = {"batch_size", "num_workers", "aspect_ratio_grouping", "seed", "pin_memory"}


def _split_options(data_cfg: dict, split: str) -> dict:
    if split not in data_cfg or data_cfg[split] is None:
        present = [k for k in ("train", "val", "test") if isinstance(data_cfg.get(k), dict)]
        raise DataConfigError(
            f"data config has no {split!r} section (it has {present}); add "
            f"data.{split}=dict(...) with the {data_cfg.get('format')!r} reader's keys"
        )
    options = data_cfg[split]
    if not isinstance(options, dict):
        raise TypeError(f"data.{split} must be a dict of reader options, got {type(options).__name__}")
    return dict(options)


@dataclass
class SplitSpec:
    """What a config's ``data`` section says about one split, with shapes already
    generated (``format`` is then "coco"): the reader's source options (where the files
    are) and the dataset options (how to load them)."""

    format: str
    source: dict
    class_names: Any
    transforms: Any
    check_policy: str = "raise"
    filter_empty: bool = False
    masks: bool = False
    options: dict = field(default_factory=dict)  # use_difficult, tolerance
    proposal_file: Any = None


_SOURCE_KEYS = {"coco": ("image_dir", "ann_file"), "voc": ("root", "split"), "yolo": ("image_dir", "label_dir"),
                "pennfudan": ("root", "split", "val_fraction", "split_seed"), "sbd": ("root", "split", "voc_root")}
_DATASET_KEYS = {"coco": ("tolerance", "images", "category_ids", "mask_style", "min_labelled_area"),
                 "pennfudan": ("tolerance", "images"), "sbd": ("tolerance", "images"),
                 "voc": ("use_difficult", "tolerance", "images"),
                 "yolo": ("tolerance", "images")}


def resolve_split(data_cfg: dict, split: str, *, derive_classes: bool = True) -> SplitSpec:
    """Resolve ``data_cfg`` for ``split`` (generating the shapes set when needed).

    Class names the config leaves ``None`` (or ``"derive"``) come from
    :func:`detect.data.sources.derive_class_names`, the one rule every tool uses (VOC and
    YOLO get the derived list here; COCO keeps ``None``, which the reader resolves by the
    same rule, categories in id order, without loading the JSON twice).
    ``derive_classes=False`` leaves them unresolved (used by that function itself)."""
    fmt = data_cfg.get("format")
    if fmt not in DATA_FORMATS:
        raise ValueError(f"data.format is {fmt!r}; expected one of {DATA_FORMATS}")
    split_cfg = {**_data_level(data_cfg, fmt), **_split_options(data_cfg, split)}
    for key in _LOADER_KEYS:
        split_cfg.pop(key, None)
    transforms_cfg = data_cfg.get("transforms") or {}
    default = "train" if split == "train" else "eval"
    transforms = split_cfg.pop(
        "transforms", transforms_cfg.get(split, default) if isinstance(transforms_cfg, dict) else transforms_cfg)
    spec = SplitSpec(
        format=fmt, source={}, class_names=split_cfg.pop("class_names", None), transforms=transforms,
        check_policy=split_cfg.pop("check_policy", data_cfg.get("check_policy", "raise")),
        # Filtering empty images is a training choice; evaluating on a filtered split would
        # hide false positives on empty images, so the data-level flag applies to "train" only.
        filter_empty=bool(split_cfg.pop("filter_empty", data_cfg.get("filter_empty", False) if split == "train" else False)),
        # SBD has masks and nothing else: they are on unless the config turns them off.
        masks=bool(split_cfg.pop("masks", data_cfg.get("masks", fmt == "sbd"))),
        proposal_file=split_cfg.pop("proposal_file", None),
    )
    if spec.class_names in (None, "derive") and derive_classes:
        names = data_cfg.get("class_names")
        if names in (None, "derive") and fmt in ("voc", "yolo"):
            from detect.data.sources import derive_class_names

            names = derive_class_names(data_cfg)
        spec.class_names = None if names == "derive" else names
    if fmt == "shapes":
        from detect.data.shapes import SHAPES_OPTIONS, make_shapes

        root = split_cfg.pop("root", None)
        if root is None:
            raise DataConfigError("data.format 'shapes' needs data.root (where the set is generated)")
        options = dict(data_cfg.get("shapes") or {})
        options.update({k: split_cfg.pop(k) for k in list(split_cfg) if k in SHAPES_OPTIONS})
        set_split = split_cfg.pop("split", "val" if split == "test" else split)
        spec.options = {k: split_cfg.pop(k) for k in ("tolerance", "images") if k in split_cfg}
        if split_cfg:
            raise TypeError(f"data.{split} has keys {sorted(split_cfg)} that the shapes set does not take; "
                            f"valid keys: root, split, tolerance, images, proposal_file, {sorted(SHAPES_OPTIONS)}")
        root = Path(make_shapes(root, **options))
        spec.format = "coco"
        spec.source = {"image_dir": root / "JPEGImages", "ann_file": root / "annotations" / f"instances_{set_split}.json"}
        return spec
    if fmt in ("voc", "pennfudan", "sbd"):
        split_cfg.setdefault("split", split)
    spec.source = {k: split_cfg.pop(k) for k in _SOURCE_KEYS[fmt] if k in split_cfg}
    spec.options = {k: split_cfg.pop(k) for k in _DATASET_KEYS[fmt] if k in split_cfg}
    if split_cfg:
        valid = sorted(_SOURCE_KEYS[fmt] + _DATASET_KEYS[fmt]
                       + ("class_names", "transforms", "check_policy", "filter_empty", "masks", "proposal_file"))
        raise TypeError(f"data.{split} has keys {sorted(split_cfg)} that the {fmt!r} reader does not take; "
                        f"valid keys: {valid}")
    required = {"coco": ("image_dir", "ann_file"), "voc": ("root",), "yolo": ("image_dir",), "pennfudan": ("root",),
                "sbd": ("root",)}[fmt]
    missing = [k for k in required if k not in spec.source]
    if missing:
        raise DataConfigError(f"data.{split} for format {fmt!r} needs {missing} (in data.{split} or at data level)")
    return spec


def prepare_data(data_cfg: dict) -> None:
    """Do the first-use side effects of ``data_cfg`` (today: generating the shapes set of every
    split section) so that building the datasets afterwards only reads.

    Under torchrun the engine calls this on rank 0 while the other ranks wait
    (:func:`detect.distributed.on_main_process`): two ranks generating one folder at once
    would race for it."""
    if data_cfg.get("format") != "shapes":
        return
    for split, options in data_cfg.items():
        if isinstance(options, dict) and split not in ("transforms", "shapes"):
            resolve_split(data_cfg, split, derive_classes=False)


def _data_level(data_cfg: dict, fmt: str) -> dict:
    """Defaults the data level gives every split: ``root`` (voc, shapes), ``use_difficult``, ``tolerance``."""
    keys = {"voc": ("root", "use_difficult"), "shapes": ("root",), "pennfudan": ("root", "val_fraction", "split_seed"),
            "sbd": ("root", "voc_root"), "coco": ("category_ids", "mask_style")}.get(fmt, ()) + ("tolerance",)
    return {k: data_cfg[k] for k in keys if data_cfg.get(k) is not None}


def parse_split(spec: SplitSpec):
    """The raw :class:`~detect.data.annotations.Annotations` of a resolved split (no checks applied)."""
    from detect.data.annotations import restrict_to_images
    from detect.data.coco import parse_coco
    from detect.data.voc import parse_voc
    from detect.data.yolo_labels import parse_yolo

    if spec.format == "coco":
        ann = parse_coco(spec.source["image_dir"], spec.source["ann_file"], spec.class_names)
    elif spec.format == "voc":
        ann = parse_voc(spec.source["root"], spec.source["split"], spec.class_names, masks=spec.masks)
    elif spec.format == "pennfudan":
        from detect.data.pennfudan import parse_pennfudan

        ann = parse_pennfudan(**spec.source, class_names=spec.class_names)
    elif spec.format == "sbd":
        from detect.data.sbd import parse_sbd

        ann = parse_sbd(**spec.source)
    else:
        ann = parse_yolo(spec.source["image_dir"], spec.class_names, spec.source.get("label_dir"))
    return restrict_to_images(ann, spec.options.get("images"))


def build_dataset(data_cfg: dict, split: str):
    """Build the dataset of ``split`` ("train", "val", "test", ...) from a config's ``data``."""
    from detect.data.coco import CocoDetection
    from detect.data.transforms import build_transforms
    from detect.data.voc import VOCDetection
    from detect.data.yolo_labels import YoloDetection

    spec = resolve_split(data_cfg, split)
    from detect.data.pennfudan import PennFudanDataset
    from detect.data.sbd import SBDSegmentation

    reader = {"coco": CocoDetection, "voc": VOCDetection, "yolo": YoloDetection, "pennfudan": PennFudanDataset,
              "sbd": SBDSegmentation}[spec.format]
    dataset = reader(
        **spec.source, transforms=build_transforms(spec.transforms), class_names=spec.class_names,
        check_policy=spec.check_policy, filter_empty=spec.filter_empty, masks=spec.masks, **spec.options,
    )
    if spec.proposal_file is not None:
        dataset.attach_proposals(spec.proposal_file)
    return dataset


def build_dataloader(
    dataset,
    *,
    batch_size: int,
    train: bool,
    num_workers: int = 0,
    seed: int = 0,
    distributed: bool = False,
    aspect_ratio_grouping: bool = True,
    drop_last: bool = False,
    pin_memory: bool = False,
    **loader_kwargs: Any,
):
    """A :class:`~detect.data.loader.DetectionDataLoader` yielding ``(images, targets)`` lists.

    train=True: shuffled (seeded by ``seed``, the rank and the epoch), batches grouped by
    aspect ratio (``w >= h`` vs ``w < h``) when ``aspect_ratio_grouping``, augmentation
    seeded per worker. train=False: dataset order, no grouping; under ``distributed`` each
    rank gets a contiguous shard without the padding duplicates of DistributedSampler, so
    every image is evaluated exactly once.
    """
    from detect.data.loader import DetectionDataLoader

    return DetectionDataLoader(
        dataset,
        batch_size=batch_size,
        train=train,
        num_workers=num_workers,
        seed=seed,
        distributed=distributed,
        aspect_ratio_grouping=aspect_ratio_grouping,
        drop_last=drop_last,
        pin_memory=pin_memory,
        **loader_kwargs,
    )
