"""Proposal files: one file per split of precomputed region proposals (``../shared/DESIGN.md``,
"Proposal files").

Format (written with ``torch.save``, read with ``torch.load(weights_only=True)``, so reading
one never runs code)::

    {"format": "detect.proposals/1",
     "method": str,                        # "selective_search", "rpn", "detectron2", ...
     "params": dict,                       # plain data: how they were made
     "image_ids": list[int],               # the dataset's image ids (``dataset.image_ids``)
     "boxes": list[float32 Tensor[P, 4]],  # xyxy, pixels of the original image, best first
     "scores": list[float32 Tensor[P]] | None,
     "file_names": list[str]}              # optional: the images' file names (basenames)

``file_names`` (written by :func:`detect.proposals.make.make_proposals`, optional otherwise)
guards against a file of another split: VOC and YOLO image ids are indices into the split
(train id 5 and val id 5 are different images), so a dataset that attaches a file with
``file_names`` checks that every image id names the same file.
``P`` may differ per image and may be 0. Boxes are in the coordinates of the image *file*
(as ``get_ground_truth`` gives them); datasets carry them through their transforms
(:meth:`detect.data.dataset.DetectionDataset.attach_proposals`).

- :func:`save_proposals` writes atomically (temporary file, then rename), so a reader never
  sees half a file; :func:`load_proposals` validates and returns a :class:`ProposalSet`.
- Files made by detectron2 or mmdetection are pickles: :func:`load_proposals` refuses any
  file that is not in this format with a one-line reason and the conversion command
  (:mod:`detect.proposals.convert`, behind ``allow_pickle=True`` / ``--allow-pickle``).
- A lookup of an image id the file lacks raises :class:`~detect.errors.UserInputError`
  naming the id and the file.
"""
from __future__ import annotations

import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import Tensor

from detect.errors import UserInputError
from detect.filesystem import atomic_write

__all__ = ["FORMAT", "ProposalSet", "save_proposals", "load_proposals", "ProposalFileError"]

FORMAT = "detect.proposals/1"


class ProposalFileError(UserInputError):
    """A proposal file is missing, corrupt, not in the format, or lacks an image id."""


def _as_boxes(boxes, where: str) -> Tensor:
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ProposalFileError(f"{where}: boxes must be [P, 4] xyxy, got shape {tuple(boxes.shape)}")
    if not torch.isfinite(boxes).all():
        raise ProposalFileError(f"{where}: boxes hold NaN or inf")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ProposalFileError(f"{where}: box {index} {boxes[index].tolist()} has x2 < x1 or y2 < y1 "
                                "(proposal boxes are x1, y1, x2, y2 pixels)")
    return boxes.contiguous()


@dataclass
class ProposalSet:
    """The proposals of one split: ``boxes[i]`` (and ``scores[i]``) belong to ``image_ids[i]``.

    ``get(image_id)`` / ``get_scores(image_id)`` look up by the dataset's image id;
    ``source`` (the file it was read from, if any) names the file in errors.
    """

    image_ids: list[int]
    boxes: list[Tensor]
    scores: list[Tensor] | None = None
    method: str = "unknown"
    params: dict = field(default_factory=dict)
    source: str | None = None
    file_names: list[str] | None = None

    def __post_init__(self):
        where = self.source or "proposals"
        self.image_ids = [int(i) for i in self.image_ids]
        if len(self.boxes) != len(self.image_ids):
            raise ProposalFileError(f"{where}: {len(self.image_ids)} image ids but {len(self.boxes)} box lists")
        self.boxes = [_as_boxes(b, f"{where}, image id {i}") for i, b in zip(self.image_ids, self.boxes)]
        if self.scores is not None:
            if len(self.scores) != len(self.image_ids):
                raise ProposalFileError(f"{where}: {len(self.image_ids)} image ids but {len(self.scores)} score lists")
            self.scores = [torch.as_tensor(s, dtype=torch.float32).reshape(-1) for s in self.scores]
            for image_id, b, s in zip(self.image_ids, self.boxes, self.scores):
                if len(s) != len(b):
                    raise ProposalFileError(f"{where}, image id {image_id}: {len(b)} boxes but {len(s)} scores")
        self._index = {}
        for position, image_id in enumerate(self.image_ids):
            if image_id in self._index:
                raise ProposalFileError(f"{where}: image id {image_id} appears twice")
            self._index[image_id] = position
        self.params = dict(self.params or {})
        if self.file_names is not None:
            self.file_names = [Path(str(name)).name for name in self.file_names]
            if len(self.file_names) != len(self.image_ids):
                raise ProposalFileError(f"{where}: {len(self.image_ids)} image ids but {len(self.file_names)} file names")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id) -> bool:
        return int(image_id) in self._index

    def _where(self) -> str:
        return f"proposal file {self.source}" if self.source else "the proposal set"

    def index_of(self, image_id: int) -> int:
        try:
            return self._index[int(image_id)]
        except KeyError:
            raise ProposalFileError(
                f"{self._where()} has no proposals for image id {int(image_id)} ({len(self)} images, ids "
                f"{_id_summary(self.image_ids)}); make the file for this dataset split with "
                "tools/make_proposals.py") from None

    def get(self, image_id: int) -> Tensor:
        """``float32 [P, 4]`` xyxy boxes of ``image_id`` in original image pixels, best first."""
        return self.boxes[self.index_of(image_id)]

    def get_scores(self, image_id: int) -> Tensor | None:
        return None if self.scores is None else self.scores[self.index_of(image_id)]

    def missing(self, image_ids: Iterable[int]) -> list[int]:
        """The ids of ``image_ids`` this set has no proposals for, in the given order."""
        return [int(i) for i in image_ids if int(i) not in self._index]

    def require(self, image_ids: Iterable[int]) -> None:
        """Raise (naming the first missing ids and the file) unless every id is present."""
        missing = self.missing(image_ids)
        if missing:
            raise ProposalFileError(
                f"{self._where()} has no proposals for {len(missing)} image id(s) of the dataset, e.g. "
                f"{missing[:5]}; it holds {len(self)} images (ids {_id_summary(self.image_ids)}). Make the file "
                "for this split: python tools/make_proposals.py CONFIG --split SPLIT --output FILE")

    def check_file_names(self, image_ids: Sequence[int], file_names: Sequence[str]) -> None:
        """Raise unless every ``image_ids[j]`` is recorded with the basename of ``file_names[j]``
        (a file made for another split); a set without ``file_names`` is not checked."""
        if self.file_names is None:
            return
        for image_id, name in zip(image_ids, file_names):
            recorded = self.file_names[self.index_of(image_id)]
            if recorded != Path(str(name)).name:
                raise ProposalFileError(
                    f"{self._where()} was made for other images: image id {int(image_id)} is {recorded} there "
                    f"but {name} in this dataset (VOC / YOLO ids number the images of a split); use the file "
                    "made for this split (tools/make_proposals.py --split SPLIT)")

    def top(self, k: int | None) -> "ProposalSet":
        """The first (best) ``k`` proposals of every image (all with ``k=None``)."""
        if k is None:
            return self
        return ProposalSet(self.image_ids, [b[:k] for b in self.boxes],
                           None if self.scores is None else [s[:k] for s in self.scores],
                           self.method, {**self.params, "top_k": int(k)}, self.source, self.file_names)

    def num_boxes(self) -> Tensor:
        """``int64 [N]``: proposals per image."""
        return torch.tensor([len(b) for b in self.boxes], dtype=torch.int64)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "method": str(self.method), "params": dict(self.params),
                "image_ids": list(self.image_ids), "boxes": list(self.boxes),
                "scores": None if self.scores is None else list(self.scores),
                **({} if self.file_names is None else {"file_names": list(self.file_names)})}


def _id_summary(ids: Sequence[int]) -> str:
    if not ids:
        return "none"
    if len(ids) <= 6:
        return str(list(ids))
    return f"{min(ids)}..{max(ids)}"


def save_proposals(path, proposals: ProposalSet | None = None, *, image_ids=None, boxes=None, scores=None,
                   method: str = "unknown", params: dict | None = None) -> Path:
    """Write a proposal file atomically; give a :class:`ProposalSet` or its fields."""
    if proposals is None:
        if image_ids is None or boxes is None:
            raise TypeError("save_proposals needs a ProposalSet or image_ids= and boxes=")
        proposals = ProposalSet(list(image_ids), list(boxes), None if scores is None else list(scores),
                                method, dict(params or {}))
    path = Path(path)
    with atomic_write(path) as f:
        torch.save(proposals.to_dict(), f)
    return path


PICKLE_HINT = ("detectron2 and mmdetection write proposal pickles, and unpickling runs code: convert the file "
               "once with `python tools/make_proposals.py --convert {path} --allow-pickle --output FILE.pth` "
               "(mmdetection files also need the dataset: add CONFIG or --data), then use the .pth file")


def load_proposals(path) -> ProposalSet:
    """Read a proposal file with ``torch.load(weights_only=True)`` and validate it."""
    path = Path(path)
    if not path.is_file():
        raise ProposalFileError(f"proposal file {path} does not exist; make it with tools/make_proposals.py")
    if not zipfile.is_zipfile(path):
        # torch.save writes zip archives; anything else here is a pickle (or not a file of ours).
        raise ProposalFileError(f"proposal file {path} is not a detect proposal file (torch.save zip) but a "
                                f"pickle or other data, which is not loaded by default; "
                                + PICKLE_HINT.format(path=path))
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ProposalFileError(f"proposal file {path} cannot be read with weights_only=True ({first}); "
                                "it is corrupt or holds objects other than tensors and plain data: "
                                + PICKLE_HINT.format(path=path)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ProposalFileError(f"proposal file {path} is not in the format {FORMAT!r} (found {found!r}); "
                                "write it with detect.proposals.save_proposals or tools/make_proposals.py")
    missing = [k for k in ("image_ids", "boxes") if k not in data]
    if missing:
        raise ProposalFileError(f"proposal file {path} lacks {missing}")
    return ProposalSet(data["image_ids"], data["boxes"], data.get("scores"), data.get("method", "unknown"),
                       data.get("params") or {}, str(path), data.get("file_names"))
