"""The base class of every detection dataset.

A reader parses its source into an :class:`~detect.data.annotations.Annotations` table
and hands it to :class:`DetectionDataset`, which checks it (:mod:`detect.data.checks`),
applies the ``check_policy``, optionally filters images without objects, and then serves
items and ground truth. Nothing is decoded until ``__getitem__``.

Item contract (docs/ABSTRACTIONS.md, "Dataset items"): ``dataset[i]`` is
``(Tensor[3, H, W] float32 0..1 RGB, target)`` with

- ``boxes`` float32 [N, 4]: xyxy continuous pixels of the returned image; crowd objects
  (COCO ``iscrowd``) are never in it, VOC ``difficult`` ones only with ``use_difficult``;
- ``labels`` int64 [N] in 1..K;
- ``image_id`` int: the source's id (COCO) or the index-based id the reader assigns;
- ``orig_size`` int64 [2]: ``(H, W)`` of the image file;
- ``masks`` int64 [H, W] (0 background, 1..K, 255 ignore) when built with ``masks=True``;
  a mask with values above K other than 255, or of another size than its image, raises
  :class:`~detect.data.checks.MaskError` (a ``UserInputError``) naming the file and image id;
- ``proposals`` float32 [P, 4] when proposals are attached (``proposal_file=`` or
  :meth:`DetectionDataset.attach_proposals`): the file's boxes of this image id, best first,
  clipped to the image, through the same transform as ``boxes`` (flips, scales, crops),
  those narrower or shorter than 1 pixel dropped (P = 0 allowed).

Augmentation is seeded per item from torch's random generator of the process that loads
it (see ``__getitem__``), so ``torch.manual_seed`` makes items reproducible and DataLoader
workers never repeat each other's augmentations.

Evaluation reads ``get_ground_truth(i)`` (original coordinates, crowd and difficult
objects included and flagged) or ``to_coco()``; neither decodes images.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
from torch.utils.data import Dataset

from detect.data.annotations import Annotations, coco_from_dict, restrict_to_images, to_coco_dict
from detect.data.checks import DatasetError, Problem, apply_policy, check_policy_name, find_problems, validate_mask
from detect.data.image_io import read_image, to_tensor

__all__ = ["DetectionDataset", "read_annotated_image"]

logger = logging.getLogger("detect.data")


def read_annotated_image(ann: Annotations, index: int) -> np.ndarray:
    """Decode image ``index`` of ``ann`` (``[H, W, 3] uint8`` RGB) and check it against the
    annotated size. Raises :class:`~detect.data.image_io.ImageReadError` when the file cannot
    be decoded and :class:`~detect.data.checks.DatasetError` holding one ``size_mismatch``
    problem when the sizes differ; an image without an annotated size (the checks report
    that) is not compared. Used by ``DetectionDataset.load_image`` and the doctor."""
    image_id = int(ann.image_ids[index])
    image = read_image(ann.file_paths[index], image_id)
    height, width = image.shape[:2]
    annotated = (int(ann.heights[index]), int(ann.widths[index]))
    if annotated[0] > 0 and annotated[1] > 0 and (height, width) != annotated:
        raise DatasetError(
            ann.location,
            [Problem("size_mismatch", str(ann.annotation_files[index]), image_id, None,
                     f"{ann.file_paths[index]} decodes to {width}x{height} (w x h) but the annotation "
                     f"says {annotated[1]}x{annotated[0]}")],
            hint="The boxes would be misplaced. Fix the size in the annotation (an EXIF rotation "
                 "swaps width and height; read_image applies it) or re-export the image.",
        )
    return image


# The label proposals carry through a transform (no object has it: labels are 1..K).
PROPOSAL_LABEL = -1


def _clip_proposals(proposals: np.ndarray, width: int, height: int) -> np.ndarray:
    """``float32 [P, 4]`` clipped to the image, boxes narrower or shorter than 1 pixel dropped
    (order kept: best first stays best first)."""
    proposals = np.asarray(proposals, dtype=np.float32).reshape(-1, 4).copy()
    np.clip(proposals[:, 0::2], 0, width, out=proposals[:, 0::2])
    np.clip(proposals[:, 1::2], 0, height, out=proposals[:, 1::2])
    keep = ((proposals[:, 2] - proposals[:, 0]) >= 1) & ((proposals[:, 3] - proposals[:, 1]) >= 1)
    return np.ascontiguousarray(proposals[keep])


class DetectionDataset(Dataset):
    """Items and ground truth of one split.

    Args:
        annotations: the parsed split (see :class:`~detect.data.annotations.Annotations`).
        transforms: ``None`` (no change), or a callable
            ``(image, boxes, labels, mask) -> (image, boxes, labels, mask)`` on numpy data,
            e.g. from :func:`detect.data.transforms.build_transforms`.
        check_policy: ``"raise"`` | ``"drop"`` | ``"clip"`` (see :mod:`detect.data.checks`).
        filter_empty: drop images without any training object (after the policy); the
            count is logged. Images without objects are valid negatives, so the default
            keeps them.
        use_difficult: put VOC ``difficult`` objects into training targets too.
        masks: add a semantic ``masks`` target (the reader must support it).
        tolerance: boxes at most this many pixels outside the image are clipped silently.
        proposal_file: ``None``, or a proposal file (or ``ProposalSet``) to serve
            ``target["proposals"]`` from (see :meth:`attach_proposals`).
        images: ``None`` (every image of the source), or the names of the images to keep
            (paths relative to the reader's image folder, see
            :func:`~detect.data.annotations.restrict_to_images`): how a config states a
            split carved out of another one (e.g. the seeded validation split of
            :func:`detect.data.sources.apply_data_path`).

    Attributes:
        class_names, label_to_category_id, category_id_to_label, image_ids, problems
        (every problem found at load, also the ones the policy handled), check_counts.
    """

    def __init__(
        self,
        annotations: Annotations,
        *,
        transforms=None,
        check_policy: str = "raise",
        filter_empty: bool = False,
        use_difficult: bool = False,
        masks: bool = False,
        tolerance: float = 1.0,
        images=None,
        proposal_file=None,
    ):
        check_policy_name(check_policy)
        annotations = restrict_to_images(annotations, images)
        result = find_problems(annotations, tolerance=tolerance)
        self.problems: list[Problem] = result.problems
        ann, self.check_counts = apply_policy(annotations, result, check_policy)
        # The reader's folder listing served the checks; items need none of it.
        ann.extra = {k: v for k, v in ann.extra.items() if k != "existing_files"}
        train_objects = ~ann.iscrowd & (use_difficult | ~ann.difficult)
        has_objects = np.bincount(ann.object_image[train_objects], minlength=ann.num_images) > 0
        num_empty = int((~has_objects).sum())
        if filter_empty and num_empty:
            ann = ann.select(keep_images=has_objects)
            train_objects = ~ann.iscrowd & (use_difficult | ~ann.difficult)
            logger.info("%s: filter_empty=True removed %d of %d image(s) without objects",
                        ann.location, num_empty, num_empty + ann.num_images)
        elif num_empty:
            logger.info("%s: %d of %d image(s) have no objects (kept; filter_empty=True removes them)",
                        ann.location, num_empty, ann.num_images)
        self.check_counts["empty_images"] = 0 if filter_empty else num_empty
        self.check_counts["filtered_empty"] = num_empty if filter_empty else 0
        if ann.num_images == 0:
            raise DatasetError(
                ann.location,
                [Problem("empty_dataset", ann.location, None, None,
                         f"no image left after check_policy={check_policy!r}"
                         + (" and filter_empty=True" if filter_empty else "")
                         + f" ({annotations.num_images} listed)")],
                check_policy,
                hint="Check the paths and the split in the config; `python tools/check_dataset.py` shows what was found.",
            )
        # Paths as one numpy string buffer rather than a list of Python strings: DataLoader
        # workers read them without touching (and so copying) per-object refcounts.
        ann.file_paths = np.asarray(ann.file_paths, dtype=str)
        ann.annotation_files = np.asarray(ann.annotation_files, dtype=str)
        self.annotations = ann
        self.transforms = transforms
        self.masks = bool(masks)
        self.use_difficult = bool(use_difficult)
        self._train_objects = train_objects
        self._starts, self._ends = ann.object_ranges()
        self._coco = None
        self.proposals = None
        if proposal_file is not None:
            self.attach_proposals(proposal_file)

    def attach_proposals(self, source) -> None:
        """Serve ``target["proposals"]`` from ``source`` (a proposal file path or a
        :class:`~detect.proposals.files.ProposalSet`; ``None`` detaches). Every image id of the
        dataset must be in it: a missing one raises ``UserInputError`` naming it and the file."""
        from detect.proposals.files import ProposalSet, load_proposals

        if source is None:
            self.proposals, self._proposal_rows = None, None
            return
        proposals = source if isinstance(source, ProposalSet) else load_proposals(source)
        proposals.require(self.image_ids)
        proposals.check_file_names(self.image_ids, self.annotations.file_paths)
        self.proposals = proposals
        self._proposal_rows = np.asarray([proposals.index_of(i) for i in self.image_ids], dtype=np.int64)

    # ----------------------------------------------------------------- metadata
    @property
    def class_names(self) -> list[str]:
        return list(self.annotations.class_names)

    @property
    def num_classes(self) -> int:
        return len(self.annotations.class_names)

    @property
    def label_to_category_id(self) -> dict[int, int]:
        return {k + 1: int(c) for k, c in enumerate(self.annotations.category_ids)}

    @property
    def category_id_to_label(self) -> dict[int, int]:
        return {int(c): k + 1 for k, c in enumerate(self.annotations.category_ids)}

    @property
    def image_ids(self) -> list[int]:
        return self.annotations.image_ids.tolist()

    @property
    def image_sizes(self) -> np.ndarray:
        """``int64 [N, 2]`` of ``(H, W)`` from the annotations (for aspect-ratio grouping)."""
        return np.stack([self.annotations.heights, self.annotations.widths], axis=1)

    def __len__(self) -> int:
        return self.annotations.num_images

    def get_image_info(self, index: int) -> dict:
        ann = self.annotations
        return {
            "file_name": str(ann.file_paths[index]),
            "height": int(ann.heights[index]),
            "width": int(ann.widths[index]),
            "image_id": int(ann.image_ids[index]),
        }

    def get_ground_truth(self, index: int) -> dict:
        """Every object of image ``index`` in original coordinates, crowd and difficult
        ones included and flagged: ``boxes`` float32 [M, 4], ``labels`` int64 [M],
        ``image_id``, ``iscrowd`` bool [M], ``difficult`` bool [M]."""
        ann = self.annotations
        rows = slice(self._starts[index], self._ends[index])
        return {
            "boxes": torch.from_numpy(ann.boxes[rows].astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(ann.labels[rows].astype(np.int64)),
            "image_id": int(ann.image_ids[index]),
            "iscrowd": torch.from_numpy(ann.iscrowd[rows].copy()),
            "difficult": torch.from_numpy(ann.difficult[rows].copy()),
        }

    def to_coco(self):
        """Ground truth as a ``pycocotools.coco.COCO`` in the source's image and category
        ids (see :func:`detect.data.annotations.to_coco_dict`). Built once, then cached."""
        if self._coco is None:
            self._coco = coco_from_dict(to_coco_dict(self.annotations))
        return self._coco

    # ----------------------------------------------------------------- items
    def load_image(self, index: int) -> np.ndarray:
        """The decoded ``[H, W, 3] uint8`` RGB image, checked against the annotated size
        (see :func:`read_annotated_image`)."""
        return read_annotated_image(self.annotations, index)

    def load_mask(self, index: int, height: int, width: int) -> np.ndarray:
        """Semantic mask ``uint8 [H, W]`` (0 background, 1..K, 255 ignore); readers override."""
        raise NotImplementedError(f"{type(self).__name__} has no masks")

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        index = index % len(self)
        ann = self.annotations
        image = self.load_image(index)
        height, width = image.shape[:2]
        rows = slice(self._starts[index], self._ends[index])
        train = self._train_objects[rows]
        boxes = ann.boxes[rows][train].astype(np.float32)
        labels = ann.labels[rows][train]
        mask = self.load_mask(index, height, width) if self.masks else None
        if mask is not None:  # a bad mask would surface as a CUDA assert or a silent wrong loss
            mask_file = ann.mask_paths[index] if ann.mask_paths is not None else ann.annotation_files[index]
            validate_mask(mask, self.num_classes, height, width, mask_file, ann.image_ids[index])
        proposals = None
        if self.proposals is not None:
            proposals = _clip_proposals(self.proposals.boxes[self._proposal_rows[index]].numpy(), width, height)
            # The transform sees the proposals as extra boxes with a label no object has, so
            # they take exactly the boxes' geometry (and crop / visibility rules), and are split off after.
            boxes = np.concatenate([boxes, proposals]).astype(np.float32)
            labels = np.concatenate([labels.astype(np.int64), np.full(len(proposals), PROPOSAL_LABEL, dtype=np.int64)])
        if self.transforms is not None:
            if hasattr(self.transforms, "set_seed"):
                # Augmentation randomness comes from torch's RNG of the loading process:
                # DataLoader seeds every worker differently (from its generator), and in
                # the main process it is the global RNG that trainers seed and checkpoint.
                # So no two workers repeat each other's augmentations, with any DataLoader.
                self.transforms.set_seed(int(torch.randint(0, 2**31 - 1, ()).item()))
            image, boxes, labels, mask = self.transforms(image, boxes, labels, mask)
        if proposals is not None:
            is_proposal = np.asarray(labels) == PROPOSAL_LABEL
            boxes, labels = np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels)
            proposals = _clip_proposals(boxes[is_proposal], image.shape[1], image.shape[0])
            boxes, labels = boxes[~is_proposal], labels[~is_proposal]
        target = {
            "boxes": torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64)).reshape(-1),
            "image_id": int(ann.image_ids[index]),
            "orig_size": torch.tensor([height, width], dtype=torch.int64),
        }
        if mask is not None:
            target["masks"] = torch.from_numpy(mask.astype(np.int64))
        if proposals is not None:
            target["proposals"] = torch.from_numpy(proposals)
        return to_tensor(image), target

    def __repr__(self) -> str:
        ann = self.annotations
        return (
            f"{type(self).__name__}({ann.location!r}, images={len(self)}, objects={ann.num_objects}, "
            f"classes={self.class_names[:6]}{'...' if self.num_classes > 6 else ''}, transforms={self.transforms!r})"
        )
