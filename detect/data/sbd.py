"""The Semantic Boundaries Dataset (Hariharan et al., ICCV 2011): VOC2011 images with masks.

Layout under ``root`` (``benchmark_RELEASE/dataset`` of the release)::

    img/<id>.jpg            the VOC2011 images
    cls/<id>.mat            MATLAB files: GTcls.Segmentation = uint8 [H, W] class indices
                            (0 background, 1..20 the VOC classes; no 255 border)
    train.txt, val.txt      image ids of the splits (8498 / 2857)
    seg11valid.txt          optional: the FCN paper's validation ids (see below)

- Classes are the 20 VOC classes (:data:`detect.data.voc.VOC_CLASSES`), label k = index k.
- Segmentation only: there are no boxes (every target's ``boxes`` is ``[0, 4]``), and
  ``masks`` defaults to True.
- ``split="seg11valid"``: the validation set of the FCN paper (Long, Shelhamer, Darrell
  2015, section 4.2): the VOC2011 segmentation val images that are not in SBD train (736
  images). Its ids come from ``<root>/seg11valid.txt`` when that file exists, else they are
  computed (:func:`seg11valid_ids`) from ``<voc_root>/ImageSets/Segmentation/val.txt``
  minus ``<root>/train.txt``. With ``voc_root`` given, the images and masks of seg11valid
  are read from VOC (``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``, with their
  255 borders), as the paper evaluates; without it, from SBD's ``img`` and ``cls``.
- Image ids are positions in the split file. Image sizes come from the file headers (no
  decoding at load). A missing mask file is ``missing_image`` ("segmentation mask ... does
  not exist"); a ``.mat`` without ``GTcls.Segmentation`` raises
  :class:`~detect.data.checks.MaskError` when the item loads (the doctor reports it).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detect.data.annotations import Annotations, ObjectTableBuilder
from detect.data.checks import DataPathError, MaskError, Problem, list_existing_files, read_text, require_path
from detect.data.dataset import DetectionDataset
from detect.data.image_io import ImageReadError, read_image_size
from detect.data.voc import VOC_CLASSES, read_voc_mask

__all__ = ["SBDSegmentation", "parse_sbd", "read_sbd_mask", "seg11valid_ids", "write_seg11valid", "is_sbd_root",
           "SEG11VALID"]

SEG11VALID = "seg11valid"


def is_sbd_root(folder) -> bool:
    folder = Path(folder)
    return (folder / "img").is_dir() and (folder / "cls").is_dir()


def _read_ids(path: Path, what: str) -> list[str]:
    return [line.split()[0] for line in read_text(path, what).splitlines() if line.strip()]


def seg11valid_ids(voc_root, sbd_root) -> list[str]:
    """The FCN paper's ``seg11valid``: the ids of ``<voc_root>/ImageSets/Segmentation/val.txt``
    (VOC2011) that ``<sbd_root>/train.txt`` does not hold, in VOC's order."""
    voc_val = require_path(Path(voc_root) / "ImageSets" / "Segmentation" / "val.txt",
                           "VOC2011 segmentation val list", "voc_root", kind="file")
    sbd_train = require_path(Path(sbd_root) / "train.txt", "SBD train list", "root", kind="file")
    train = set(_read_ids(sbd_train, "SBD split file"))
    return [i for i in _read_ids(voc_val, "VOC split file") if i not in train]


def write_seg11valid(voc_root, sbd_root, path=None) -> Path:
    """Write :func:`seg11valid_ids` to ``path`` (default ``<sbd_root>/seg11valid.txt``), one
    id per line; returns the path."""
    path = Path(sbd_root) / f"{SEG11VALID}.txt" if path is None else Path(path)
    path.write_text("".join(f"{i}\n" for i in seg11valid_ids(voc_root, sbd_root)))
    return path


def _split_ids(root: Path, split: str, voc_root) -> tuple[list[str], Path]:
    split_file = root / f"{split}.txt"
    if split_file.is_file():
        return _read_ids(split_file, "SBD split file"), split_file
    if split == SEG11VALID and voc_root is not None:
        return seg11valid_ids(voc_root, root), Path(voc_root) / "ImageSets" / "Segmentation" / "val.txt"
    available = sorted(p.stem for p in root.glob("*.txt"))
    detail = f"splits there: {available}"
    if split == SEG11VALID:
        detail += ("; seg11valid is computed from VOC2011 when voc_root= names the VOC2011 folder "
                   "(ImageSets/Segmentation/val.txt), or put the FCN repository's seg11valid.txt there")
    raise DataPathError(split_file, "SBD split file", "split", detail)


def parse_sbd(root, split: str = "train", *, voc_root=None) -> Annotations:
    """Parse an SBD split into an :class:`Annotations` table without objects (headers only)."""
    root = require_path(root, "SBD root (benchmark_RELEASE/dataset: img/, cls/, train.txt)", "root", kind="dir")
    ids, split_file = _split_ids(root, split, voc_root)
    from_voc = split == SEG11VALID and voc_root is not None
    if from_voc:
        voc_root = require_path(voc_root, "VOC2011 root (JPEGImages, SegmentationClass)", "voc_root", kind="dir")
        image_folder, mask_folder, mask_suffix = voc_root / "JPEGImages", voc_root / "SegmentationClass", ".png"
    else:
        image_folder, mask_folder, mask_suffix = root / "img", root / "cls", ".mat"
    existing = list_existing_files([str(image_folder / "x")])
    existing_masks = list_existing_files([str(mask_folder / "x")])
    file_paths = [str(image_folder / f"{i}.jpg") for i in ids]
    mask_paths = [str(mask_folder / f"{i}{mask_suffix}") for i in ids]
    problems: list[Problem] = []
    heights, widths, valid = np.full(len(ids), -1, np.int64), np.full(len(ids), -1, np.int64), np.ones(len(ids), bool)
    for row, (path, mask_path) in enumerate(zip(file_paths, mask_paths)):
        if mask_path not in existing_masks:
            problems.append(Problem("missing_image", str(split_file), row, None,
                                    f"segmentation mask {mask_path} does not exist"))
            valid[row] = False
        if path in existing:  # a missing image is reported by the checks
            try:
                heights[row], widths[row] = read_image_size(path, row)
            except ImageReadError as exc:
                problems.append(Problem("unreadable_image", str(split_file), row, None, str(exc)))
                valid[row] = False
    table = ObjectTableBuilder().arrays()
    return Annotations(
        source="sbd", location=str(split_file), class_names=list(VOC_CLASSES),
        category_ids=list(range(1, len(VOC_CLASSES) + 1)), file_paths=file_paths,
        annotation_files=[str(split_file)] * len(ids), image_ids=np.arange(len(ids), dtype=np.int64),
        heights=heights, widths=widths, image_valid=valid, boxes=np.zeros((0, 4)), labels=np.zeros(0, np.int64),
        areas=np.zeros(0), raw_box_format="(no boxes)", object_noun="object", mask_paths=mask_paths,
        problems=problems,
        extra={"existing_files": existing, "image_root": str(image_folder),
               "read_mask": read_voc_mask if from_voc else read_sbd_mask},
        **table,
    )


def read_sbd_mask(path, image_id=None) -> np.ndarray:
    """``GTcls.Segmentation`` of an SBD ``cls/*.mat`` file as ``uint8 [H, W]``. A file that
    cannot be read or lacks that field raises :class:`~detect.data.checks.MaskError`."""
    from scipy.io import loadmat

    try:
        data = loadmat(path, variable_names=["GTcls"], squeeze_me=True, struct_as_record=False)
        segmentation = np.asarray(data["GTcls"].Segmentation)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise MaskError(Problem("unreadable_mask", str(path), image_id, None,
                                f"cannot read GTcls.Segmentation: {type(exc).__name__}: {exc}"),
                        "SBD cls/*.mat files hold a struct GTcls with a Segmentation field of class indices") from exc
    if segmentation.ndim != 2 or not np.issubdtype(segmentation.dtype, np.integer):
        raise MaskError(Problem("unreadable_mask", str(path), image_id, None,
                                f"GTcls.Segmentation is {segmentation.dtype} {list(segmentation.shape)}, "
                                "not a 2-D integer array"))
    if segmentation.size and (segmentation.min() < 0 or segmentation.max() > 255):
        raise MaskError(Problem("mask_value_out_of_range", str(path), image_id, None,
                                f"values {int(segmentation.min())}..{int(segmentation.max())} do not fit 0..255"))
    return segmentation.astype(np.uint8)


class SBDSegmentation(DetectionDataset):
    """An SBD split (see the module docstring).

    Args:
        root: ``benchmark_RELEASE/dataset`` (``img/``, ``cls/``, ``train.txt``, ``val.txt``).
        split: ``"train"``, ``"val"``, ``"seg11valid"`` or the name of any ``<root>/<split>.txt``.
        voc_root: the VOC2011 folder (``JPEGImages``, ``SegmentationClass``,
            ``ImageSets/Segmentation/val.txt``): seg11valid is computed from it when
            ``<root>/seg11valid.txt`` is absent, and read from it (VOC's masks).
        masks: the semantic ``masks`` target (default True: SBD has nothing else).
        class_names: ``None`` / ``"derive"`` (the VOC classes) or exactly ``VOC_CLASSES``.
        check_policy, tolerance, images, proposal_file: see :class:`~detect.data.dataset.DetectionDataset`.

    Example::

        train = SBDSegmentation("benchmark_RELEASE/dataset", "train")
        val = SBDSegmentation("benchmark_RELEASE/dataset", "seg11valid", voc_root="VOCdevkit/VOC2011")
    """

    def __init__(self, root, split="train", transforms=None, *, voc_root=None, masks=True, class_names=None,
                 check_policy="raise", filter_empty=False, tolerance=1.0, images=None, proposal_file=None):
        if class_names not in (None, "derive") and list(class_names) != list(VOC_CLASSES):
            raise ValueError(f"SBD masks are labelled with the 20 VOC classes; class_names={class_names!r} "
                             "cannot relabel them (pass None)")
        if filter_empty:
            raise ValueError("filter_empty=True would remove every SBD image (the set has no boxes)")
        annotations = parse_sbd(root, split, voc_root=voc_root)
        super().__init__(annotations, transforms=transforms, check_policy=check_policy, masks=masks,
                         tolerance=tolerance, images=images, proposal_file=proposal_file)
        self.root = Path(root)
        self.split = split

    def load_mask(self, index: int, height: int, width: int) -> np.ndarray:
        return self.annotations.extra["read_mask"](self.annotations.mask_paths[index],
                                                   int(self.annotations.image_ids[index]))
