"""Reading images: the one place that decodes files.

Contract (docs/ABSTRACTIONS.md, "Images"):

- ``read_image(path) -> np.ndarray[H, W, 3] uint8 RGB``. OpenCV decodes straight to RGB
  (``IMREAD_COLOR_RGB``), so there is no BGR array anywhere in the library. EXIF
  orientation is applied, so ``H, W`` are the size a viewer shows. Grayscale images are
  replicated to three channels, an alpha channel is dropped, and 16-bit or float images
  are mapped to 8 bits over their full range (65535 -> 255, 1.0 -> 255).
- ``to_tensor(array) -> Tensor[3, H, W] float32`` in 0..1, contiguous.
- ``read_image_size(path) -> (H, W)`` reads only the file header (no decoding) and
  applies EXIF orientation, so it agrees with ``read_image(path).shape[:2]``.

A file that is missing or cannot be decoded raises :class:`ImageReadError`, which names
the path (and the image id when the caller gives one) and is an ``OSError``.

- ``read_index_png(path, image_id, what, hint) -> np.ndarray[H, W] uint8``: a palette or
  grayscale PNG of indices (VOC class masks, PennFudan instance ids) read as its indices, not
  colours (PIL: OpenCV would expand the palette); an unreadable file raises
  :class:`~detect.data.checks.MaskError` naming it and the image id.
"""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "ImageReadError", "is_image_file", "read_image", "read_image_header", "read_image_size",
           "to_tensor", "GRAYSCALE_MODES"]

# Pillow modes of single-channel files (read_image replicates them to three channels).
GRAYSCALE_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "F"})

# File suffixes taken for images when a folder is searched (YOLO folders, inference sources).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

# IMREAD_ANYDEPTH keeps 16-bit data so that we scale it ourselves over the full range;
# plain IMREAD_COLOR_RGB would truncate with ">> 8". Both apply EXIF orientation.
_DECODE_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH

# EXIF orientations 5..8 swap width and height (transpose, rotate 90, ...).
_EXIF_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}


class ImageReadError(OSError):
    """An image file is missing, truncated or in a format OpenCV cannot decode."""


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has one of the :data:`IMAGE_EXTENSIONS` (any case)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def _describe(path, image_id) -> str:
    return f"{path}" if image_id is None else f"{path} (image id {image_id})"


def read_image(path: str | os.PathLike, image_id: int | None = None) -> np.ndarray:
    """Decode ``path`` into an ``[H, W, 3] uint8`` RGB array (EXIF orientation applied).

    ``image_id`` only enriches the error message. Raises :class:`ImageReadError` naming
    the file when it is missing or cannot be decoded.
    """
    try:
        # np.fromfile + imdecode instead of imread: same decoder, but it handles
        # non-ASCII paths on every platform and fails with a Python error, not a log line.
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(
            f"cannot read image {_describe(path, image_id)}: {exc.strerror or exc}. "
            "Check that the file exists and that the image directory in the config is right."
        ) from exc
    image = cv2.imdecode(data, _DECODE_FLAGS) if data.size else None
    if image is None:
        raise ImageReadError(
            f"cannot decode image {_describe(path, image_id)} ({data.size} bytes): the file is "
            "empty, truncated or not an image format OpenCV reads. Re-export it, or remove it "
            "from the annotations (tools/check_dataset.py --decode lists every such file)."
        )
    if image.dtype != np.uint8:
        image = _to_uint8(image)
    if image.ndim == 2:  # some decoders ignore the colour flag for exotic formats
        image = np.repeat(image[:, :, None], 3, axis=2)
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        # round(v * 255 / 65535) in integer arithmetic
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    info = np.iinfo(image.dtype)
    scaled = (image.astype(np.float64) - info.min) * (255.0 / (info.max - info.min))
    return (scaled + 0.5).astype(np.uint8)


def read_image_header(path: str | os.PathLike, image_id: int | None = None) -> tuple[int, int, str]:
    """``(H, W, mode)`` from the header only: the size as :func:`read_image` returns it
    (EXIF orientation applied) and Pillow's mode (``"RGB"``, ``"L"`` for grayscale, ...;
    see :data:`GRAYSCALE_MODES`)."""
    from PIL import Image, UnidentifiedImageError  # Pillow reads headers lazily

    try:
        with Image.open(path) as im:
            width, height = im.size
            mode = im.mode
            orientation = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ImageReadError(f"cannot read the header of image {_describe(path, image_id)}: {exc}") from exc
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return int(height), int(width), mode


def read_image_size(path: str | os.PathLike, image_id: int | None = None) -> tuple[int, int]:
    """``(H, W)`` of the image as :func:`read_image` would return it, from the header only."""
    height, width, _ = read_image_header(path, image_id)
    return height, width


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """``[H, W, 3] uint8`` (or ``[H, W]``) -> contiguous ``Tensor[3, H, W] float32`` in 0..1."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"to_tensor expects a numpy array from read_image, got {type(array).__name__}")
    if array.ndim == 2:
        array = array[:, :, None].repeat(3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"to_tensor expects an [H, W, 3] RGB array, got shape {tuple(array.shape)}")
    if array.dtype != np.uint8:
        raise ValueError(f"to_tensor expects uint8 pixels 0..255, got {array.dtype}")
    # HWC -> CHW on the uint8 bytes with OpenCV's SIMD channel split straight into the
    # planes of the output (4x faster than a strided torch copy), then one contiguous
    # uint8 -> float pass. The result is contiguous, unlike torchvision's decode_jpeg
    # output, which is a channels-last view.
    height, width = array.shape[:2]
    planes = np.empty((3, height, width), dtype=np.uint8)
    cv2.split(np.ascontiguousarray(array), [planes[0], planes[1], planes[2]])
    return torch.from_numpy(planes).to(torch.float32).div_(255.0)


def read_index_png(path, image_id=None, what: str = "mask", hint: str = "") -> np.ndarray:
    """The indices of a palette ("P") or grayscale ("L") PNG as ``uint8 [H, W]``; another
    mode or an unreadable file raises ``MaskError`` ("cannot read <what>: ...", then ``hint``)."""
    from PIL import Image

    from detect.data.checks import MaskError, Problem  # checks imports the data layer: not at import

    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise ValueError(f"mode {im.mode}; expected a palette or 8-bit grayscale PNG")
            return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise MaskError(Problem("unreadable_mask", str(path), image_id, None, f"cannot read {what}: {exc}"),
                        hint) from exc
