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

A semantic segmentation checkpoint (FCN; ``Predictor.task == "semantic_segmentation"``)
writes instead:

- one colour overlay per image (:func:`~detect.inference.draw.draw_segmentation`: class
  colours blended over the pixels, a legend naming the classes present) and one overlay
  ``.mp4`` per video, at the source's frame rate and frame count, as above;
- ``labels/<stem>.png`` per image: the label map as Pascal VOC's ``SegmentationClass``
  (8-bit palette PNG, index = label, 0 background, the VOC colour map);
  with ``save_frame_labels`` also ``labels/<video stem>/<frame:06d>.png`` per video frame;
- ``segmentation.json``: one record per image or frame::

      {"source": "a.jpg", "frame": null, "output": "runs/infer/a.jpg",
       "label_png": "runs/infer/labels/a.png", "height": 480, "width": 640,
       "areas": {"background": 250000, "person": 57200}}

  ``areas`` counts the pixels of every class (background first, every class listed, 0
  where absent), so they sum to ``height * width``.

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
import torch

from detect.inference.draw import draw_detections, draw_segmentation
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
    write_label_png,
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
    task: str = "detection"  # or "semantic_segmentation"
    label_maps: list[Path] = field(default_factory=list)  # segmentation: palette label PNGs

    def summary(self) -> str:
        if self.task == "detection":
            lines = [f"{self.frames} images/frames, {self.detections} detections -> {self.output_dir}"]
        else:
            lines = [f"{self.frames} images/frames segmented -> {self.output_dir}"]
        if self.images:
            lines.append(f"  {len(self.images)} {'annotated images' if self.task == 'detection' else 'overlays'}")
        lines += [f"  video: {path}" for path in self.videos]
        if self.label_maps:
            lines.append(f"  {len(self.label_maps)} label PNGs in {self.label_maps[0].parent}")
        if self.json_path:
            lines.append(f"  {'detections' if self.task == 'detection' else 'class areas'}: {self.json_path}")
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
    save_frame_labels: bool = False,
) -> InferenceResult:
    """Detect objects (or label pixels) in every image and frame of ``source`` and write the results.

    Args:
        model: a checkpoint path (built with :meth:`Predictor.from_checkpoint`) or a
            ready :class:`Predictor` (then ``score_thresh``, ``device``, ``half`` and
            ``batch_size`` are its own).
        source: image, directory, glob, video file or webcam index
            (:func:`detect.inference.sources.open_sources`).
        output_dir: created if needed; must be writable; neither an input file nor the
            folder of one (:class:`OutputError`). When it exists and is not empty the
            outputs go to the next free ``<output_dir>-N`` unless ``exist_ok``.
        save_images: write annotated images and videos, and a segmentation model's label
            PNGs (False: only the JSON).
        max_frames: read at most this many frames per video or webcam.
        progress: show a tqdm bar over frames.
        save_frame_labels: segmentation: a label PNG for every video frame as well.
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
    task = getattr(predictor, "task", "detection")
    result = InferenceResult(output_dir, task=task)
    records: list[dict] = []
    used_names: set[str] = set()
    json_name = "detections.json" if task == "detection" else "segmentation.json"
    json_path = output_dir / json_name if save_json else None
    writer = _Outputs(task, output_dir, save_images, save_frame_labels)
    bar = tqdm(total=total, unit="frame", disable=not progress, dynamic_ncols=True, desc="infer")
    try:
        for src in sources:
            if isinstance(src, ImageFiles):
                _run_images(src, predictor, batch_size, output_dir, used_names, writer, result, records, bar)
            else:
                _run_video(src, predictor, batch_size, output_dir, used_names, writer, result, records, bar)
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
    return result  # the caller reports result.summary() (tools/infer.py prints it once)


def _predict(predictor: Predictor, batch: list[Frame]) -> list[dict]:
    return predictor.predict_tensors([predictor.to_tensor(f.image, "RGB", i) for i, f in enumerate(batch)])


class _Outputs:
    """What each image or frame turns into, per task: the drawn image, its JSON record and
    (segmentation) its label PNG."""

    def __init__(self, task: str, output_dir: Path, save_images: bool, save_frame_labels: bool):
        self.segmentation = task != "detection"
        self.save_images = save_images
        self.save_frame_labels = save_frame_labels and save_images and self.segmentation
        self.labels_dir = output_dir / "labels"
        self._used_label_names: set[str] = set()

    def draw(self, frame: Frame, prediction: dict):
        if self.segmentation:
            return draw_segmentation(frame.image, prediction["label_map"], prediction["class_names"])
        return draw_detections(frame.image, prediction)

    def label_png(self, frame: Frame, prediction: dict, video_stem: str | None, result: InferenceResult) -> Path | None:
        """The label PNG of a segmented image (or, when asked, video frame); None otherwise."""
        if not self.segmentation or not self.save_images:
            return None
        if video_stem is None:
            self.labels_dir.mkdir(exist_ok=True)
            path = _unique(self.labels_dir, Path(frame.source).stem + ".png", self._used_label_names)
        elif self.save_frame_labels:
            folder = self.labels_dir / video_stem
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"{frame.index:06d}.png"
        else:
            return None
        result.label_maps.append(write_label_png(path, prediction["label_map"]))
        return path

    def record(self, frame: Frame, prediction: dict, output: Path | None, label_png: Path | None) -> dict:
        height, width = frame.image.shape[:2]
        record = {"source": frame.source, "frame": frame.index, "output": str(output) if output else None}
        if self.segmentation:
            names = prediction["class_names"]
            counts = torch.bincount(prediction["label_map"].reshape(-1), minlength=len(names))[: len(names)]
            record.update(label_png=str(label_png) if label_png else None, height=height, width=width,
                          areas=dict(zip(names, counts.tolist())))
        else:
            record.update(height=height, width=width, detections=detections_to_json(prediction))
        return record

    def count(self, prediction: dict) -> int:
        return 0 if self.segmentation else len(prediction["scores"])


def _run_images(src, predictor, batch_size, output_dir, used_names, outputs: _Outputs, result, records, bar) -> None:
    for batch in _batches(src, batch_size):
        for frame, prediction in zip(batch, _predict(predictor, batch)):
            output = None
            if outputs.save_images:
                output = _unique(output_dir, Path(frame.source).name, used_names)
                write_image(output, outputs.draw(frame, prediction))
                result.images.append(output)
            label_png = outputs.label_png(frame, prediction, None, result)
            records.append(outputs.record(frame, prediction, output, label_png))
            result.frames += 1
            result.detections += outputs.count(prediction)
        bar.update(len(batch))


def _run_video(src: VideoStream, predictor, batch_size, output_dir, used_names, outputs: _Outputs, result, records,
               bar) -> None:
    name = f"webcam{src.source}.mp4" if src.is_webcam else f"{Path(src.source).stem}.mp4"
    output = _unique(output_dir, name, used_names) if outputs.save_images else None
    writer: VideoWriter | None = None
    bar.set_description(Path(src.name).name)
    try:
        for batch in _batches(src, batch_size):
            if outputs.save_images and writer is None:
                height, width = batch[0].image.shape[:2]
                writer = VideoWriter(output, src.fps, (width, height))
                result.videos.append(output)
            for frame, prediction in zip(batch, _predict(predictor, batch)):
                if writer is not None:
                    writer.write(outputs.draw(frame, prediction))
                label_png = outputs.label_png(frame, prediction, Path(output).stem if output else None, result)
                records.append(outputs.record(frame, prediction, output, label_png))
                result.frames += 1
                result.detections += outputs.count(prediction)
            bar.update(len(batch))
    except KeyboardInterrupt:
        if not src.is_webcam:
            raise
        logger.info("%s: stopped after %d frames", src.name, writer.frames_written if writer else 0)
    finally:
        if writer is not None:
            writer.close()
            logger.info("%s: %d frames at %.2f fps, codec %s", output, writer.frames_written, src.fps, writer.codec)
