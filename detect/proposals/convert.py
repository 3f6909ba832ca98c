"""Readers for detectron2's and mmdetection's proposal pickles (only with ``allow_pickle=True``).

Unpickling runs whatever code the file names, so these files are read only when the caller
says so (``allow_pickle=True``; ``tools/make_proposals.py --convert FILE.pkl --allow-pickle``).
Convert once, then use the ``.pth`` proposal file, which loads with ``weights_only=True``.

detectron2 (and Detectron's precomputed proposals, ``detectron2.data.detection_utils``'s
``load_proposals_into_dataset``): a dict with

- ``"ids"``: the image ids (COCO ids for COCO; whatever ``image_id`` the dataset dicts had);
- ``"boxes"``: a list of ``float [P, 4]`` arrays in ``"bbox_mode"`` (``0`` / ``BoxMode.XYXY_ABS``,
  ``1`` / ``XYWH_ABS``; a missing mode is XYXY_ABS, as detectron2 assumes);
- ``"objectness_logits"``: a list of ``float [P]`` arrays (optional);
- older Detectron files spell them ``"indexes"`` and ``"scores"``.

mmdetection (``tools/test.py --out`` of an RPN, ``proposal_file`` of its datasets): a list, in
the dataset's order, of ``float [P, 5]`` arrays ``(x1, y1, x2, y2, score)`` (or ``[P, 4]``
without scores). It carries no image ids, so the dataset's ids (``dataset.image_ids``, the same
split in the same order) must be given.

Boxes are sorted best first by their score when the file has scores (stable, so ties keep the
file's order) and written as a :mod:`detect.proposals.files` set with ``method`` ``"detectron2"``
or ``"mmdetection"``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from detect.errors import UserInputError
from detect.proposals.files import ProposalSet

__all__ = ["read_proposal_pickle", "from_detectron2", "from_mmdetection", "PICKLE_FORMATS"]

PICKLE_FORMATS = ("auto", "detectron2", "mmdetection")
_XYXY_ABS, _XYWH_ABS = 0, 1


def _best_first(boxes: np.ndarray, scores: np.ndarray | None):
    boxes = torch.as_tensor(np.asarray(boxes, dtype=np.float32)).reshape(-1, 4)
    if scores is None:
        return boxes, None
    scores = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(-1)
    order = torch.argsort(scores, descending=True, stable=True)
    return boxes[order], scores[order]


def _bbox_mode(mode) -> int:
    # detectron2 stores a BoxMode enum (an IntEnum) or its int value.
    value = getattr(mode, "value", mode)
    return _XYXY_ABS if value is None else int(value)


def from_detectron2(data: dict, *, source: str = "detectron2 proposals") -> ProposalSet:
    """A :class:`ProposalSet` from the unpickled dict of a detectron2 / Detectron proposal file."""
    ids = data.get("ids", data.get("indexes"))
    boxes = data.get("boxes")
    if ids is None or boxes is None:
        raise UserInputError(f"{source}: a detectron2 proposal file is a dict with 'ids' and 'boxes' "
                             f"(and 'objectness_logits', 'bbox_mode'); found keys {sorted(data)}")
    logits = data.get("objectness_logits", data.get("scores"))
    mode = _bbox_mode(data.get("bbox_mode"))
    if mode not in (_XYXY_ABS, _XYWH_ABS):
        raise UserInputError(f"{source}: bbox_mode {mode} is not XYXY_ABS (0) or XYWH_ABS (1); convert the "
                             "boxes to absolute pixels first")
    out_boxes, out_scores = [], [] if logits is not None else None
    for j, image_boxes in enumerate(boxes):
        image_boxes = np.asarray(image_boxes, dtype=np.float32).reshape(-1, 4).copy()
        if mode == _XYWH_ABS:
            image_boxes[:, 2:] += image_boxes[:, :2]
        b, s = _best_first(image_boxes, None if logits is None else logits[j])
        out_boxes.append(b)
        if out_scores is not None:
            out_scores.append(s)
    return ProposalSet([int(i) for i in ids], out_boxes, out_scores, "detectron2",
                       {"converted_from": source, "bbox_mode": "XYXY_ABS" if mode == _XYXY_ABS else "XYWH_ABS"},
                       source)


def from_mmdetection(data: Sequence, image_ids: Sequence[int] | None, *,
                     source: str = "mmdetection proposals") -> ProposalSet:
    """A :class:`ProposalSet` from an unpickled mmdetection proposal list (dataset order)."""
    if image_ids is None:
        raise UserInputError(f"{source}: mmdetection proposal files hold no image ids (one array per image in "
                             "dataset order); give the dataset (CONFIG or --data, and --split) so its image ids "
                             "can be used")
    if len(data) != len(image_ids):
        raise UserInputError(f"{source} holds proposals of {len(data)} images but the dataset split has "
                             f"{len(image_ids)}; it must be the same split in the same order")
    out_boxes, out_scores = [], []
    for j, array in enumerate(data):
        array = np.asarray(array, dtype=np.float32)
        if array.size == 0:
            array = array.reshape(0, 5)
        if array.ndim != 2 or array.shape[1] not in (4, 5):
            raise UserInputError(f"{source}: entry {j} has shape {array.shape}; expected [P, 5] "
                                 "(x1, y1, x2, y2, score) or [P, 4]")
        b, s = _best_first(array[:, :4], array[:, 4] if array.shape[1] == 5 else None)
        out_boxes.append(b)
        out_scores.append(s)
    scores = out_scores if all(s is not None for s in out_scores) else None
    return ProposalSet(list(image_ids), out_boxes, scores, "mmdetection", {"converted_from": source}, source)


def read_proposal_pickle(path, *, allow_pickle: bool = False, format: str = "auto",
                         image_ids: Sequence[int] | None = None) -> ProposalSet:
    """Unpickle a detectron2 (dict) or mmdetection (list) proposal file; only with ``allow_pickle=True``."""
    path = Path(path)
    if not allow_pickle:
        raise UserInputError(f"{path} is a pickle and unpickling runs code, so it is not read by default; if you "
                             "trust the file, pass --allow-pickle (allow_pickle=True) to convert it once into a "
                             "proposal file")
    if format not in PICKLE_FORMATS:
        raise UserInputError(f"unknown proposal pickle format {format!r}; expected one of {PICKLE_FORMATS}")
    if not path.is_file():
        raise FileNotFoundError(f"proposal pickle {path} does not exist")
    with open(path, "rb") as f:
        # latin1: Detectron's Python 2 pickles of numpy arrays load under Python 3 only so.
        data = pickle.load(f, encoding="latin1")  # noqa: S301 - explicitly allowed by the caller
    if format == "auto":
        if isinstance(data, dict):
            format = "detectron2"
        elif isinstance(data, (list, tuple)):
            format = "mmdetection"
        else:
            raise UserInputError(f"{path} holds a {type(data).__name__}; a detectron2 proposal file is a dict, "
                                 "an mmdetection one a list of arrays")
    if format == "detectron2":
        if not isinstance(data, dict):
            raise UserInputError(f"{path} holds a {type(data).__name__}, not the dict of a detectron2 proposal file")
        return from_detectron2(data, source=str(path))
    if not isinstance(data, (list, tuple)):
        raise UserInputError(f"{path} holds a {type(data).__name__}, not the list of an mmdetection proposal file")
    return from_mmdetection(data, image_ids, source=str(path))
