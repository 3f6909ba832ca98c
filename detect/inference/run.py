"""Inference over a source spec, writing annotated images, videos and a JSON of detections.

``run_inference`` is what ``tools/infer.py`` calls; everything it does is available here::

    from detect.inference import run_inference
    result = run_inference("runs/demo/best.pth", "clips/street.mp4", "runs/infer", batch_size=4)
    result.videos        # [Path("runs/infer/street.mp4")]
    result.json_path     # Path("runs/infer/detections.json")

Outputs in ``output_dir``:

- one annotated image per input image, under the input's file name (``_1``, ``_2``, ...
  appended when two inputs share a name);
- one annotated ``.mp4`` per video (``<stem>.mp4``) or webcam (``webcam<N>.mp4``), at the
  source's frame rate, with exactly as many frames as were decoded from the source;
- ``detections.json``: a list with one record per image or frame::

      {"source": "clips/street.mp4", "frame": 17, "output": "runs/infer/street.mp4",
       "height": 480, "width": 640,
       "detections": [{"box": [x1, y1, x2, y2], "score": 0.93, "label": 2, "class_name": "car"}]}

  (``frame`` is ``null`` for still images). It is written at the end, also when the run
  stops early (an error, or Ctrl+C on a webcam, which ends the run normally).

The sources are opened and the output directory is checked before the model is loaded,
so a wrong path fails in a second with an error naming it. Two rules protect files:

- an output that is an input file, or the folder holding an input, is refused
  (:class:`OutputError` naming both paths): annotated copies never overwrite inputs;
- an output directory that exists and is not empty (an earlier run's) is not written
  into: the run goes to the first free ``<output>-2``, ``<output>-3``, ... (logged, and
  in ``InferenceResult.output_dir``), unless ``exist_ok=True`` (``--exist-ok``), which
  writes into it and replaces files of the same names.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from detect.filesystem import atomic_write
from detect.inference.draw import draw_detections
from detect.inference.predictor import Predictor, detections_to_json
from detect.inference.sources import (
    Frame,
    ImageFiles,
    OutputError,
    VideoStream,
    VideoWriter,
    check_output_not_input,
    check_writable_directory,
    next_free_directory,
    open_sources,
    write_image,
)
from detect.errors import UserInputError

logger = logging.getLogger(__name__)


@dataclass
class InferenceResult:
    """What :func:`run_inference` wrote and how much it saw."""

    output_dir: Path
    images: list[Path] = field(default_factory=list)  # annotated images
    videos: list[Path] = field(default_factory=list)  # annotated videos
    json_path: Path | None = None
    frames: int = 0  # images and video frames processed
    detections: int = 0

    def summary(self) -> str:
        lines = [f"{self.frames} images/frames, {self.detections} detections -> {self.output_dir}"]
        if self.images:
            lines.append(f"  {len(self.images)} annotated images")
        lines += [f"  video: {path}" for path in self.videos]
        if self.json_path:
            lines.append(f"  detections: {self.json_path}")
        return "\n".join(lines)


def _batches(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    iterator = iter(frames)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def _unique(directory: Path, name: str, used: set[str]) -> Path:
    stem, suffix = os.path.splitext(name)
    candidate, n = name, 0
    while candidate in used:
        n += 1
        candidate = f"{stem}_{n}{suffix}"
    used.add(candidate)
    return directory / candidate


def _write_json(path: Path, records: list[dict]) -> None:
    try:
        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(records, f, indent=1)
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def run_inference(
    model: str | os.PathLike | Predictor,
    source: str | os.PathLike | int,
    output_dir: str | os.PathLike = "runs/infer",
    *,
    score_thresh: float | None = None,
    batch_size: int = 1,
    device: str = "cpu",
    half: bool = False,
    save_images: bool = True,
    save_json: bool = True,
    max_frames: int | None = None,
    progress: bool = True,
    exist_ok: bool = False,
) -> InferenceResult:
    """Detect objects in every image and frame of ``source`` and write the results.

    Args:
        model: a checkpoint path (built with :meth:`Predictor.from_checkpoint`) or a
            ready :class:`Predictor` (then ``score_thresh``, ``device``, ``half`` and
            ``batch_size`` are its own).
        source: image, directory, glob, video file or webcam index
            (:func:`detect.inference.sources.open_sources`).
        output_dir: created if needed; must be writable; neither an input file nor the
            folder of one (:class:`OutputError`). When it exists and is not empty the
            outputs go to the next free ``<output_dir>-N`` unless ``exist_ok``.
        save_images: write annotated images and videos (False: only the JSON).
        max_frames: read at most this many frames per video or webcam.
        progress: show a tqdm bar over frames.
    """
    if batch_size < 1:
        raise UserInputError(f"batch_size must be at least 1, got {batch_size}")
    if max_frames is not None and max_frames < 1:
        raise UserInputError(f"max_frames must be at least 1, got {max_frames}")
    sources = open_sources(source, max_frames=max_frames)
    try:
        check_output_not_input(output_dir, sources)
        if not exist_ok:
            free = next_free_directory(output_dir)
            if free != Path(output_dir).expanduser():
                logger.info("%s holds an earlier run's outputs; writing to %s (exist_ok=True / --exist-ok reuses it)",
                            output_dir, free)
            output_dir = free
        output_dir = check_writable_directory(output_dir)
        if isinstance(model, Predictor):
            predictor = model
            batch_size = predictor.batch_size
        else:
            predictor = Predictor.from_checkpoint(model, device=device, score_thresh=score_thresh, half=half)
    except BaseException:
        for src in sources:
            if isinstance(src, VideoStream):
                src.release()
        raise

    from tqdm import tqdm

    lengths = [len(s) if isinstance(s, ImageFiles) else s.frame_count for s in sources]
    total = None if any(n is None for n in lengths) else sum(lengths)
    result = InferenceResult(output_dir)
    records: list[dict] = []
    used_names: set[str] = set()
    json_path = output_dir / "detections.json" if save_json else None
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, desc="infer")
    try:
        for src in sources:
            if isinstance(src, ImageFiles):
                _run_images(src, predictor, batch_size, output_dir, used_names, save_images, result, records, bar)
            else:
                _run_video(src, predictor, batch_size, output_dir, used_names, save_images, result, records, bar)
    except BaseException:
        if json_path is not None:  # keep what was found so far; the original error wins
            try:
                _write_json(json_path, records)
                logger.info("partial detections (%d records) written to %s", len(records), json_path)
            except OutputError as error:
                logger.warning("%s", error)
        raise
    finally:
        bar.close()
        for src in sources:
            if isinstance(src, VideoStream):
                src.release()
    if json_path is not None:
        _write_json(json_path, records)
        result.json_path = json_path
    logger.info("%s", result.summary())
    return result


def _predict(predictor: Predictor, batch: list[Frame]) -> list[dict]:
    return predictor.predict_tensors([predictor.to_tensor(f.image, "RGB", i) for i, f in enumerate(batch)])


def _record(frame: Frame, detections: dict, output: Path | None) -> dict:
    height, width = frame.image.shape[:2]
    return {
        "source": frame.source,
        "frame": frame.index,
        "output": str(output) if output else None,
        "height": height,
        "width": width,
        "detections": detections_to_json(detections),
    }


def _run_images(src, predictor, batch_size, output_dir, used_names, save_images, result, records, bar) -> None:
    for batch in _batches(src, batch_size):
        for frame, detections in zip(batch, _predict(predictor, batch)):
            output = None
            if save_images:
                output = _unique(output_dir, Path(frame.source).name, used_names)
                write_image(output, draw_detections(frame.image, detections))
                result.images.append(output)
            records.append(_record(frame, detections, output))
            result.frames += 1
            result.detections += len(detections["scores"])
        bar.update(len(batch))


def _run_video(src: VideoStream, predictor, batch_size, output_dir, used_names, save_images, result, records, bar) -> None:
    name = f"webcam{src.source}.mp4" if src.is_webcam else f"{Path(src.source).stem}.mp4"
    output = _unique(output_dir, name, used_names) if save_images else None
    writer: VideoWriter | None = None
    bar.set_description(Path(src.name).name)
    try:
        for batch in _batches(src, batch_size):
            if save_images and writer is None:
                height, width = batch[0].image.shape[:2]
                writer = VideoWriter(output, src.fps, (width, height))
                result.videos.append(output)
            for frame, detections in zip(batch, _predict(predictor, batch)):
                if writer is not None:
                    writer.write(draw_detections(frame.image, detections))
                records.append(_record(frame, detections, output))
                result.frames += 1
                result.detections += len(detections["scores"])
            bar.update(len(batch))
    except KeyboardInterrupt:
        if not src.is_webcam:
            raise
        logger.info("%s: stopped after %d frames", src.name, writer.frames_written if writer else 0)
    finally:
        if writer is not None:
            writer.close()
            logger.info("%s: %d frames at %.2f fps, codec %s", output, writer.frames_written, src.fps, writer.codec)
