"""Write the proposal file of a dataset split: in worker processes, with a progress bar, resumably.

:func:`make_proposals` runs a *generator* on every image of a dataset and writes the file of
:mod:`detect.proposals.files`. A generator is a callable ``generator(image: Tensor[3, H, W]
float 0..1 RGB) -> Tensor[P, 4]`` or ``-> (Tensor[P, 4], Tensor[P])`` (boxes best first, in the
image's pixels, and optionally their scores); :class:`~detect.proposals.selective_search.SelectiveSearch`
and :class:`RPNProposer` (a trained Faster R-CNN's region proposal network) are two.

Resuming: every ``save_every`` images (and when interrupted, Ctrl+C included) the results so
far are written atomically to ``<output>.partial``. A rerun with the same method and params
loads it and computes only the images it lacks, so no image is computed twice (a hard kill
loses at most the last ``save_every`` images). A partial file made with other params is refused,
as is an existing finished ``output`` unless ``overwrite=True``. The finished file lists the
images in dataset order whatever order the workers finished them in.

Workers: ``workers >= 1`` runs a ``spawn`` process pool (no fork of a threaded process); each
worker reads images itself (:func:`detect.data.image_io.read_image`) and runs the generator
with one thread. ``workers=0`` runs in this process (the RPN, whose batches use torch threads).
"""
from __future__ import annotations

import multiprocessing
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

from detect.errors import UserInputError
from detect.filesystem import atomic_write
from detect.proposals.files import FORMAT, ProposalFileError, ProposalSet, save_proposals

__all__ = ["make_proposals", "partial_path", "RPNProposer", "ProposalTask"]

PARTIAL_FORMAT = FORMAT + "+partial"


def partial_path(output) -> Path:
    output = Path(output)
    return output.with_name(output.name + ".partial")


class ProposalTask:
    """What :func:`make_proposals` needs of a dataset: image ids and files, in dataset order."""

    def __init__(self, image_ids: Sequence[int], file_names: Sequence[str]):
        self.image_ids = [int(i) for i in image_ids]
        self.file_names = [str(f) for f in file_names]

    @classmethod
    def from_dataset(cls, dataset) -> "ProposalTask":
        infos = [dataset.get_image_info(i) for i in range(len(dataset))]
        return cls([info["image_id"] for info in infos], [info["file_name"] for info in infos])


def _split_result(result, where: str) -> tuple[Tensor, Tensor | None]:
    boxes, scores = (result if isinstance(result, tuple) else (result, None))
    boxes = torch.as_tensor(boxes, dtype=torch.float32).detach().cpu().reshape(-1, 4).contiguous()
    if scores is not None:
        scores = torch.as_tensor(scores, dtype=torch.float32).detach().cpu().reshape(-1).contiguous()
        if len(scores) != len(boxes):
            raise ValueError(f"{where}: the generator returned {len(boxes)} boxes but {len(scores)} scores")
    return boxes, scores


# --------------------------------------------------------------------- worker processes
_WORKER_GENERATOR = None


def _init_worker(generator) -> None:
    global _WORKER_GENERATOR
    torch.set_num_threads(1)
    try:
        import cv2

        cv2.setNumThreads(1)
    except ImportError:  # pragma: no cover
        pass
    _WORKER_GENERATOR = generator


def _run_one(generator, position: int, image_id: int, file_name: str):
    from detect.data.image_io import read_image, to_tensor

    image = to_tensor(read_image(file_name, image_id))
    start = time.perf_counter()
    boxes, scores = _split_result(generator(image), f"image id {image_id} ({file_name})")
    return position, boxes, scores, time.perf_counter() - start


def _worker(task):
    return _run_one(_WORKER_GENERATOR, *task)


# --------------------------------------------------------------------- partial results
def _load_partial(path: Path, method: str, params: dict, image_ids: set[int]) -> dict[int, tuple]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable partial file gets the same advice
        raise ProposalFileError(f"partial proposal file {path} cannot be read ({type(exc).__name__}: {exc}); "
                                "delete it (or pass --overwrite) to start over") from None
    if not isinstance(data, dict) or data.get("format") != PARTIAL_FORMAT:
        raise ProposalFileError(f"{path} is not a partial proposal file of this library; delete it or pass --overwrite")
    if data.get("method") != method or data.get("params") != params:
        raise ProposalFileError(
            f"partial proposal file {path} was made with method {data.get('method')!r} params {data.get('params')} "
            f"but this run uses {method!r} {params}; rerun with the same options to continue, or pass --overwrite "
            "to start over")
    stray = [i for i in data["image_ids"] if int(i) not in image_ids]
    if stray:
        raise ProposalFileError(f"partial proposal file {path} holds image ids not in this split (e.g. {stray[:5]}); "
                                "it belongs to another split: pass another --output or --overwrite")
    scores = data.get("scores") or [None] * len(data["image_ids"])
    return {int(i): (b, s) for i, b, s in zip(data["image_ids"], data["boxes"], scores)}


def _save_partial(path: Path, method: str, params: dict, done: dict[int, tuple]) -> None:
    ids = list(done)
    have_scores = all(done[i][1] is not None for i in ids)
    payload = {"format": PARTIAL_FORMAT, "method": method, "params": params, "image_ids": ids,
               "boxes": [done[i][0] for i in ids], "scores": [done[i][1] for i in ids] if have_scores else None}
    with atomic_write(path) as f:
        torch.save(payload, f)


def _progress(total: int, initial: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit="img", dynamic_ncols=True,
                mininterval=0.5 if interactive else 30.0, file=sys.stderr)


# --------------------------------------------------------------------- the driver
def make_proposals(dataset, output, generator: Callable, *, method: str, params: dict | None = None,
                   workers: int = 2, save_every: int = 20, overwrite: bool = False, progress: bool = True,
                   batch_size: int = 1, log: Callable[[str], None] | None = None) -> ProposalSet:
    """Proposals of every image of ``dataset`` (a dataset or a :class:`ProposalTask`) written to ``output``.

    ``generator`` must be picklable when ``workers >= 1``. With ``workers=0`` and a generator
    that has ``propose_batch(images) -> (list[boxes], list[scores])``, images go in batches of
    ``batch_size``. Returns the finished :class:`~detect.proposals.files.ProposalSet`.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    output = Path(output)
    partial = partial_path(output)
    params = dict(params if params is not None else getattr(generator, "params", {}))
    task = dataset if isinstance(dataset, ProposalTask) else ProposalTask.from_dataset(dataset)
    if output.exists() and not overwrite:
        raise UserInputError(f"{output} already exists (a finished proposal file); pass --overwrite "
                             "(overwrite=True) to replace it, or another --output")
    if overwrite:
        partial.unlink(missing_ok=True)
    if save_every < 1:
        raise UserInputError(f"save_every must be >= 1, got {save_every}")
    done: dict[int, tuple] = {}
    if partial.exists():
        done = _load_partial(partial, method, params, set(task.image_ids))
        log(f"proposals: resuming from {partial}: {len(done)} of {len(task.image_ids)} images already done")
    todo = [(p, i, f) for p, (i, f) in enumerate(zip(task.image_ids, task.file_names)) if i not in done]
    bar = _progress(len(task.image_ids), len(done), progress, f"proposals ({method})")
    since_save = 0
    seconds: list[float] = []  # generator time per image computed in this run

    def record(position: int, boxes: Tensor, scores: Tensor | None, elapsed: float) -> None:
        nonlocal since_save
        done[task.image_ids[position]] = (boxes, scores)
        seconds.append(elapsed)
        since_save += 1
        if bar is not None:
            bar.update(1)
        if since_save >= save_every:
            _save_partial(partial, method, params, done)
            since_save = 0

    try:
        if not todo:
            pass
        elif workers >= 1:
            context = multiprocessing.get_context("spawn")
            with context.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(generator,)) as pool:
                for position, boxes, scores, elapsed in pool.imap_unordered(_worker, todo, chunksize=1):
                    record(position, boxes, scores, elapsed)
        elif hasattr(generator, "propose_batch") and batch_size > 1:
            from detect.data.image_io import read_image, to_tensor

            for start in range(0, len(todo), batch_size):
                chunk = todo[start:start + batch_size]
                images = [to_tensor(read_image(f, i)) for _, i, f in chunk]
                start = time.perf_counter()
                boxes, scores = generator.propose_batch(images)
                elapsed = (time.perf_counter() - start) / len(chunk)
                for (position, image_id, file_name), b, s in zip(chunk, boxes, scores):
                    record(position, *_split_result((b, s), f"image id {image_id} ({file_name})"), elapsed)
        else:
            for position, image_id, file_name in todo:
                record(*_run_one(generator, position, image_id, file_name))
    except BaseException:
        if since_save:
            _save_partial(partial, method, params, done)
            log(f"proposals: interrupted; {len(done)} of {len(task.image_ids)} images saved in {partial} "
                "(rerun the same command to continue)")
        raise
    finally:
        if bar is not None:
            bar.close()
    have_scores = all(done[i][1] is not None for i in task.image_ids)
    result = ProposalSet(task.image_ids, [done[i][0] for i in task.image_ids],
                         [done[i][1] for i in task.image_ids] if have_scores else None, method, params,
                         file_names=task.file_names)
    save_proposals(output, result)
    partial.unlink(missing_ok=True)
    result.source = str(output)
    # How long the generator took per image in this run (not stored in the file).
    result.seconds_per_image = seconds
    return result


class RPNProposer:
    """A trained two-stage detector's RPN as a generator: ``TwoStageDetector.propose`` (boxes best
    first in input-image pixels, objectness scores), optionally the first ``max_proposals``."""

    def __init__(self, model, device="cpu", max_proposals: int | None = None):
        if not hasattr(model, "propose"):
            raise UserInputError(f"--method rpn needs a two-stage detector with a region proposal network; "
                                 f"{type(model).__name__} has none (train a faster_rcnn model)")
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        self.max_proposals = max_proposals

    def propose_batch(self, images: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        boxes, scores = self.model.propose([image.to(self.device) for image in images])
        k = self.max_proposals
        return ([b[:k].cpu() for b in boxes], [s[:k].cpu() for s in scores])

    def __call__(self, image: Tensor):
        boxes, scores = self.propose_batch([image])
        return boxes[0], scores[0]
