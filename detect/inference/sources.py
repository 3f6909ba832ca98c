"""Where inference images come from, and where annotated results go.

A *source spec* (``tools/infer.py --source``) is one of:

- an image file (``.jpg .jpeg .png .bmp .tif .tiff .webp``);
- a video file (``.mp4 .avi .mov .mkv .m4v .webm .mpg .mpeg .wmv``);
- a directory (its images and videos, sorted by name, not recursive);
- a glob pattern (``"data/*.jpg"``, ``"clips/**/*.mp4"``; recursive ``**`` allowed);
- a webcam index (``0``, ``"1"``).

:func:`open_sources` turns a spec into a list of :class:`ImageFiles` (all images, read
with :func:`detect.data.image_io.read_image`) and :class:`VideoStream` (one per video or
webcam). Iterating either yields :class:`Frame` objects whose ``image`` is always an
``[H, W, 3] uint8`` **RGB** array: OpenCV's video decoder produces BGR, and
:func:`convert_color` turns it into RGB here, once. Annotated frames go back to BGR only
inside :func:`write_image` and :class:`VideoWriter`, which hand them to OpenCV's encoders.

Problems raise errors that name the path: a spec matching nothing
(``FileNotFoundError``), a video or webcam that cannot be opened or yields no frame
(:class:`SourceError`), an output that cannot be written (:class:`OutputError`).
"""
from __future__ import annotations

import contextlib
import glob
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from detect.data.image_io import IMAGE_EXTENSIONS, read_image
from detect.errors import UserInputError
from detect.filesystem import ensure_writable_directory

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")
COLOR_ORDERS = ("RGB", "BGR")
DEFAULT_FPS = 30.0  # for webcams and files that do not report a frame rate


class SourceError(OSError):
    """A video file or webcam cannot be opened or decoded."""


class OutputError(OSError):
    """An annotated image, video or JSON file cannot be written."""


def convert_color(image: np.ndarray, from_order: str, to_order: str = "RGB") -> np.ndarray:
    """Reorder the channels of an ``[H, W, 3]`` array between ``"RGB"`` and ``"BGR"``.

    The one place where inference swaps channels (video frames, users' BGR arrays, and
    frames handed to OpenCV's encoders). Returns the input itself when the orders agree.
    """
    for order in (from_order, to_order):
        if order not in COLOR_ORDERS:
            raise ValueError(f"color_order must be 'RGB' or 'BGR', got {order!r}")
    if from_order == to_order:
        return image
    return np.ascontiguousarray(image[..., ::-1])


@dataclass
class Frame:
    """One image to run on: ``image`` is ``[H, W, 3] uint8`` RGB."""

    image: np.ndarray
    source: str  # the file it came from, or "webcam:N"
    index: int | None = None  # frame number within a video; None for a still image


class ImageFiles:
    """Still images read one at a time in the given order."""

    kind = "images"

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for path in self.paths:
            yield Frame(read_image(path), str(path))


class VideoStream:
    """Frames of a video file or a webcam (``int`` index) as RGB arrays.

    ``fps`` is the source's frame rate (``DEFAULT_FPS`` when it reports none) and
    ``frame_count`` the container's frame count (``None`` for a webcam; it may be an
    estimate for some files, so iteration runs until the decoder stops).
    Opening fails with :class:`SourceError` naming the file.
    """

    kind = "video"

    def __init__(self, source: str | Path | int, max_frames: int | None = None):
        self.source = source
        self.is_webcam = isinstance(source, int)
        self.name = f"webcam:{source}" if self.is_webcam else str(source)
        self.max_frames = max_frames
        with _quiet_native_stderr():  # a failed open makes OpenCV and FFmpeg print; our error says it all
            self._capture = cv2.VideoCapture(source if self.is_webcam else str(source))
        if not self._capture.isOpened():
            self._capture.release()
            what = f"webcam {source}" if self.is_webcam else f"video {source}"
            hint = (
                "check that the camera is connected and not used by another program"
                if self.is_webcam
                else "the file is missing, truncated or in a format OpenCV's FFmpeg cannot decode; "
                "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)"
            )
            raise SourceError(f"cannot open {what}: {hint}")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = None if self.is_webcam or count <= 0 else count
        if self.max_frames is not None:
            self.frame_count = min(self.frame_count or self.max_frames, self.max_frames)

    def __len__(self) -> int:
        return self.frame_count or 0

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            while self.max_frames is None or index < self.max_frames:
                ok, bgr = self._capture.read()
                if not ok:
                    break
                yield Frame(convert_color(bgr, "BGR", "RGB"), self.name, index)
                index += 1
        finally:
            self.release()
        if index == 0:
            raise SourceError(f"{self.name}: no frame could be decoded; the video is empty or corrupt")

    def release(self) -> None:
        self._capture.release()


def _is_webcam(spec) -> bool:
    return isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit())


def _group(paths: list[Path], max_frames: int | None) -> list[ImageFiles | VideoStream]:
    """Consecutive images form one ImageFiles (so they batch together); videos stand alone."""
    sources: list[ImageFiles | VideoStream] = []
    images: list[Path] = []
    for path in paths:
        suffix = path.suffix.lower()
        if suffix in VIDEO_EXTENSIONS:
            if images:
                sources.append(ImageFiles(images))
                images = []
            sources.append(VideoStream(path, max_frames))
        elif suffix in IMAGE_EXTENSIONS:
            images.append(path)
    if images:
        sources.append(ImageFiles(images))
    return sources


def open_sources(spec: str | os.PathLike | int, max_frames: int | None = None) -> list[ImageFiles | VideoStream]:
    """Resolve a source spec (module docstring) into image lists and video streams.

    ``max_frames`` caps the frames read from each video or webcam (a webcam otherwise
    runs until it stops or the user interrupts).
    """
    if _is_webcam(spec):
        return [VideoStream(int(spec), max_frames)]
    text = os.fspath(spec)
    path = Path(text).expanduser()
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.is_file())
        where = f"directory {path}"
    elif path.is_file():
        if path.suffix.lower() not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            raise UserInputError(
                f"{path}: unknown file type {path.suffix!r}; images are {', '.join(IMAGE_EXTENSIONS)} "
                f"and videos {', '.join(VIDEO_EXTENSIONS)}"
            )
        paths = [path]
        where = str(path)
    elif glob.has_magic(text):
        paths = sorted(Path(p) for p in glob.glob(os.path.expanduser(text), recursive=True) if Path(p).is_file())
        where = f"pattern {text!r}"
    else:
        raise FileNotFoundError(
            f"source {text!r} is not an existing file, directory, glob pattern or webcam index"
        )
    sources = _group(paths, max_frames)
    if not sources:
        raise FileNotFoundError(
            f"no images ({', '.join(IMAGE_EXTENSIONS)}) or videos ({', '.join(VIDEO_EXTENSIONS)}) in {where}"
        )
    return sources


def input_paths(sources: list[ImageFiles | VideoStream]) -> list[Path]:
    """The files the sources read (webcams have none)."""
    paths: list[Path] = []
    for src in sources:
        if isinstance(src, ImageFiles):
            paths += src.paths
        elif not src.is_webcam:
            paths.append(Path(src.source))
    return paths


def check_output_not_input(output: str | os.PathLike, sources: list[ImageFiles | VideoStream]) -> None:
    """Refuse, with :class:`OutputError` naming both paths, an output that would overwrite or
    mix with the inputs: ``output`` is one of the input files, or a directory that holds
    an input (annotated copies are written under the inputs' own names, so they would
    replace them, and a later run over that folder would read them as inputs).
    Runs before any model is loaded or frame decoded.
    """
    output = Path(output).expanduser()
    target = output.resolve()
    for path in input_paths(sources):
        resolved = path.resolve()
        if resolved == target:
            raise OutputError(
                f"--output {output} is the input file {path}; --output takes a directory for the annotated "
                "copies: choose one outside the inputs' folder, e.g. runs/infer"
            )
        if resolved.parent == target:
            raise OutputError(
                f"--output {output} is the folder of the input {path}: the annotated copies would overwrite "
                "the inputs; choose a directory outside it, e.g. runs/infer"
            )


def next_free_directory(directory: str | os.PathLike) -> Path:
    """``directory`` when it does not exist or is empty, else the first of ``<name>-2``,
    ``<name>-3``, ... that is (ultralytics' ``runs/predict2`` rule): an earlier run's
    outputs are never written over unasked."""
    directory = Path(directory).expanduser()
    candidate, n = directory, 1
    while candidate.exists() and (not candidate.is_dir() or any(candidate.iterdir())):
        n += 1
        candidate = directory.with_name(f"{directory.name}-{n}")
    return candidate


def check_writable_directory(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and prove a file can be written there.

    Fails early with :class:`OutputError`, before any model is loaded or frame decoded.
    """
    try:
        return ensure_writable_directory(directory)
    except OSError as error:
        raise OutputError(
            f"cannot write to output directory {directory}: {error.strerror or error}; "
            "choose a writable --output directory"
        ) from error


def write_image(path: str | os.PathLike, rgb: np.ndarray) -> Path:
    """Encode an RGB array to ``path`` (format from the extension); OutputError on failure."""
    path = Path(path)
    ok, data = cv2.imencode(path.suffix or ".jpg", convert_color(rgb, "RGB", "BGR"))
    if not ok:
        raise OutputError(f"cannot encode an image as {path.suffix!r} for {path}")
    try:
        data.tofile(str(path))  # like image_io's np.fromfile: works with non-ASCII paths
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    return path


def write_label_png(path: str | os.PathLike, label_map) -> Path:
    """Write a label map as Pascal VOC writes ``SegmentationClass``: an 8-bit palette PNG
    (PIL mode ``"P"``) whose pixel index is the label (0 background, 1..K, 255 ignore kept)
    with the VOC colour map as its palette. Reading it back with PIL, ``np.array(png)``
    is the label map. ``ValueError`` for values outside 0..255; OutputError on failure."""
    from PIL import Image

    from detect.data.shapes import voc_palette

    path = Path(path)
    labels = label_map.detach().cpu().numpy() if hasattr(label_map, "detach") else np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"{path}: a label map is [H, W], got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"{path}: label values must lie in 0..255 for a palette PNG, "
                         f"got {labels.min()}..{labels.max()}")
    png = Image.fromarray(labels.astype(np.uint8), mode="P")
    png.putpalette(voc_palette(256).reshape(-1).tolist())
    try:
        png.save(path, format="PNG")
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    return path


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence C-level stderr (FFmpeg prints probe failures there) for a moment."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # e.g. pytest's captured stderr
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


class VideoWriter:
    """Writes RGB frames to a video at a fixed frame rate and size.

    Codecs are tried in order and the first one whose writer actually opens is used:
    ``.mp4`` tries H.264 (``avc1``, playable in browsers, present only in some OpenCV
    builds) and falls back to MPEG-4 (``mp4v``); ``.avi`` tries ``MJPG`` then ``mp4v``.
    When none opens, :class:`OutputError` names the file and the codecs tried.
    """

    CODECS = {".mp4": ("avc1", "mp4v"), ".m4v": ("avc1", "mp4v"), ".avi": ("MJPG", "mp4v"), ".mov": ("avc1", "mp4v")}

    def __init__(self, path: str | os.PathLike, fps: float, size: tuple[int, int], codecs: tuple[str, ...] | None = None):
        self.path = Path(path)
        self.size = (int(size[0]), int(size[1]))  # (width, height), as OpenCV wants it
        self.frames_written = 0
        codecs = codecs or self.CODECS.get(self.path.suffix.lower(), ("mp4v",))
        self._writer = None
        for codec in codecs:
            with _quiet_native_stderr():
                writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*codec), float(fps), self.size)
            if writer.isOpened():
                self._writer, self.codec = writer, codec
                break
            writer.release()
            logger.debug("video codec %s unavailable for %s", codec, self.path)
        if self._writer is None:
            raise OutputError(
                f"cannot write video {self.path}: no writer opened with codecs {', '.join(codecs)}; check that "
                "the directory is writable and that OpenCV has a video backend (FFmpeg)"
            )

    def write(self, rgb: np.ndarray) -> None:
        height, width = rgb.shape[:2]
        if (width, height) != self.size:
            raise ValueError(f"{self.path}: frame of size {width}x{height}, the video is {self.size[0]}x{self.size[1]}")
        self._writer.write(convert_color(rgb, "RGB", "BGR"))
        self.frames_written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
