"""Export a detector or segmenter to ONNX or TorchScript, and check the file before keeping it.

Contract
--------
``export_model(model, path, format="onnx", class_names=..., opset=17, ...) -> ExportReport``

- The graph (:class:`ExportGraph`) takes one image ``[3, H, W]`` float32 RGB 0..1 of any
  height and width (both dynamic axes) and returns the fields of ``model.predict`` for it:
  ``boxes, scores, labels`` (detection) or ``sem_seg`` (segmentation), with the model's own
  normalisation, resizing, padding, box decoding, NMS and mapping back to the image's pixels
  inside. A family that classifies given proposals (``accepts_proposals``) takes them as a
  second input ``proposals [P, 4]``. One image per call for every family: the graph is
  recorded with ``torch.jit.trace`` (ONNX through the TorchScript-based exporter,
  ``dynamo=False``; the dynamo exporter stops at ``batched_nms``'s data-dependent shapes),
  and the per-image post-processing keeps a different number of detections per image.
- The check is part of the export: the written file is loaded the way a deployment loads it
  (:class:`~detect.export.runtime.ExportedModel`: ONNX Runtime, or ``torch.jit.load``) and
  run, beside ``model.predict`` in PyTorch, on structured random images (noise with
  coloured rectangles, so that detections exist to compare) of ``check_sizes`` -- sizes
  other than the traced one. It passes when every image gives the same number of
  detections, matched order-free (scores can tie) with boxes within :data:`BOX_TOLERANCE`
  px, scores within :data:`SCORE_TOLERANCE` and equal labels; ``sem_seg`` logits within
  :data:`SEM_SEG_RELATIVE_TOLERANCE` of their largest magnitude. The measured differences
  are in the report either way; a failed check raises :class:`ExportCheckError` and leaves
  no file at ``path`` (it is written atomically, after the check).
- ``path`` is never overwritten unless ``overwrite=True``.
- Refusals (:class:`ExportError`, one line): an unknown format, ``opset`` below
  :data:`MIN_OPSET` (ONNX RoiAlign's coordinate mode), ``opset`` with TorchScript,
  ``dynamic_batch`` (no family takes a batch), a family whose computation is not a graph
  (:data:`UNSUPPORTED_FAMILIES` says why).

``export_checkpoint(checkpoint, format, output=None, ...)`` does the same from a training
checkpoint (``tools/export.py``), storing its class names and colour order in the file.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from torch import Tensor, nn

from detect.errors import UserInputError
from detect.export.runtime import (
    FORMATS,
    METADATA_FORMAT,
    ONNX_METADATA_KEY,
    TORCHSCRIPT_METADATA_FILE,
    ExportedModel,
)

BOX_TOLERANCE = 0.01  # px
SCORE_TOLERANCE = 1e-4
SEM_SEG_RELATIVE_TOLERANCE = 1e-4
DEFAULT_OPSET = 17
MIN_OPSET = 16
TRACE_SIZE = (400, 528)
CHECK_SIZES = ((360, 420), (480, 640))
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript"}

#: class name -> why that family has no exported graph
UNSUPPORTED_FAMILIES: dict[str, str] = {}


class ExportError(UserInputError):
    """An export that cannot be made as asked (the message says why and what to do)."""


class ExportCheckError(ExportError):
    """The exported file does not compute what the PyTorch model computes."""


class ExportGraph(nn.Module):
    """The model as a function of one image (and its proposals, where the family takes them)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.task = getattr(model, "task", "detection")
        self.accepts_proposals = bool(getattr(model, "accepts_proposals", False))
        self.input_names = ["image", "proposals"] if self.accepts_proposals else ["image"]
        self.output_names = ["sem_seg"] if self.task == "semantic_segmentation" else ["boxes", "scores", "labels"]

    def forward(self, image: Tensor, proposals: Tensor | None = None) -> tuple[Tensor, ...]:
        kwargs = {"proposals": [proposals]} if self.accepts_proposals else {}
        with torch.no_grad():
            output = self.model._compute_predictions([image], **kwargs)[0]
        return tuple(output[name] for name in self.output_names)


# ----------------------------------------------------------------------------- check inputs
def check_image(height: int, width: int, seed: int) -> Tensor:
    """A ``[3, H, W]`` image of dim noise with eight coloured rectangles (seeded), which
    gives detectors objects-like structure where pure noise gives almost no detections."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(3, height, width, generator=generator) * 0.3
    rows = torch.arange(height)[:, None]
    cols = torch.arange(width)[None, :]
    corners = torch.rand(8, 4, generator=generator)
    colours = torch.rand(8, 3, generator=generator) * 0.7 + 0.3
    for (a, b, c, d), colour in zip(corners.tolist(), colours):  # eight rectangles, not per-box work
        y1, y2 = sorted((int(a * height), int(b * height)))
        x1, x2 = sorted((int(c * width), int(d * width)))
        inside = (rows >= y1) & (rows < max(y2, y1 + 8)) & (cols >= x1) & (cols < max(x2, x1 + 8))
        image = torch.where(inside[None], colour[:, None, None].expand_as(image), image)
    return image


def check_proposals(height: int, width: int, seed: int, count: int = 64) -> Tensor:
    """``[count, 4]`` seeded random boxes inside an image of ``(height, width)``."""
    generator = torch.Generator().manual_seed(seed + 1)
    xy = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.8, height * 0.8])
    wh = torch.rand(count, 2, generator=generator) * torch.tensor([width * 0.5, height * 0.5]) + 8
    boxes = torch.cat([xy, xy + wh], dim=1)
    return torch.minimum(boxes, torch.tensor([width, height, width, height], dtype=torch.float32))


# ----------------------------------------------------------------------------- comparison
@dataclass
class SizeCheck:
    """The measured differences on one check image."""

    size: tuple[int, int]
    count: int                  # detections (or sem_seg channels) in PyTorch
    exported_count: int
    max_box_diff: float = 0.0   # px
    max_score_diff: float = 0.0
    label_mismatches: int = 0
    max_sem_seg_relative_diff: float = 0.0

    @property
    def passed(self) -> bool:
        return (
            self.count == self.exported_count
            and self.max_box_diff <= BOX_TOLERANCE
            and self.max_score_diff <= SCORE_TOLERANCE
            and self.label_mismatches == 0
            and self.max_sem_seg_relative_diff <= SEM_SEG_RELATIVE_TOLERANCE
        )

    def describe(self) -> str:
        h, w = self.size
        status = "ok" if self.passed else "FAILED"
        if self.count != self.exported_count:
            return f"{h}x{w}: {status}: {self.count} detections in PyTorch, {self.exported_count} exported"
        return (
            f"{h}x{w}: {status}: {self.count} detections, max |box diff| {self.max_box_diff:.2e} px, "
            f"max |score diff| {self.max_score_diff:.2e}, {self.label_mismatches} label mismatches"
        )


def compare_detections(reference: dict, exported: dict, size: tuple[int, int]) -> SizeCheck:
    """Match detections order-free (a minimum-cost assignment over box, score and label
    agreement) and measure the largest differences of the matched pairs."""
    from scipy.optimize import linear_sum_assignment

    ref_boxes, ref_scores, ref_labels = (reference[k].detach().float().cpu() for k in ("boxes", "scores", "labels"))
    out_boxes, out_scores, out_labels = (exported[k].detach().float().cpu() for k in ("boxes", "scores", "labels"))
    result = SizeCheck(tuple(size), int(ref_scores.numel()), int(out_scores.numel()))
    if result.count != result.exported_count or result.count == 0:
        return result
    box_diff = (ref_boxes[:, None, :] - out_boxes[None, :, :]).abs().amax(dim=-1)
    score_diff = (ref_scores[:, None] - out_scores[None, :]).abs()
    same_label = ref_labels[:, None] == out_labels[None, :]
    cost = torch.maximum(box_diff / BOX_TOLERANCE, score_diff / SCORE_TOLERANCE) + (~same_label) * 1e6
    rows, cols = linear_sum_assignment(cost.double().numpy())
    rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
    result.max_box_diff = float(box_diff[rows, cols].max())
    result.max_score_diff = float(score_diff[rows, cols].max())
    result.label_mismatches = int((~same_label[rows, cols]).sum())
    return result


def compare_sem_seg(reference: dict, exported: dict, size: tuple[int, int]) -> SizeCheck:
    ref, out = reference["sem_seg"].detach().float().cpu(), exported["sem_seg"].detach().float().cpu()
    result = SizeCheck(tuple(size), int(ref.shape[0]), int(out.shape[0]) if out.dim() == 3 else -1)
    if ref.shape != out.shape:
        result.exported_count = -1
        result.max_sem_seg_relative_diff = float("inf")
        return result
    scale = max(float(ref.abs().max()), 1e-12)
    result.max_sem_seg_relative_diff = float((ref - out).abs().max()) / scale
    return result


# ----------------------------------------------------------------------------- export
@dataclass
class ExportReport:
    """What :func:`export_model` wrote and measured."""

    path: Path
    format: str
    family: str
    traced_size: tuple[int, int]
    checks: list[SizeCheck] = field(default_factory=list)
    task: str = "detection"

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def summary(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        segmentation = self.task == "semantic_segmentation"
        tolerances = (f"sem_seg <= {SEM_SEG_RELATIVE_TOLERANCE:g} relative" if segmentation
                      else f"boxes <= {BOX_TOLERANCE} px, scores <= {SCORE_TOLERANCE:g}, labels equal")
        lines = [f"{self.format} export of {self.family} (traced at {self.traced_size[0]}x{self.traced_size[1]}): "
                 f"check {verdict} ({tolerances})"]
        for check in self.checks:
            if segmentation:
                lines.append(f"  {check.size[0]}x{check.size[1]}: {'ok' if check.passed else 'FAILED'}: "
                             f"max relative |sem_seg diff| {check.max_sem_seg_relative_diff:.2e}")
            else:
                lines.append("  " + check.describe())
        if not segmentation and self.checks and all(c.count == 0 for c in self.checks):
            lines.append("  note: no detections on the check images, so only empty outputs were compared; "
                         "export once with a lower --score-thresh to compare boxes")
        lines.append(f"  wrote {self.path}" if self.passed else f"  nothing written to {self.path}")
        return "\n".join(lines)


def _refuse(model: nn.Module, format: str, opset: int | None, dynamic_batch: bool) -> str:
    family = type(model).__name__
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if family in UNSUPPORTED_FAMILIES:
        raise ExportError(f"{family} cannot be exported: {UNSUPPORTED_FAMILIES[family]}")
    if format == "torchscript" and opset is not None:
        raise ExportError("--opset applies to ONNX only; leave it out for --format torchscript")
    if opset is not None and opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: ONNX RoiAlign needs its coordinate mode of opset {MIN_OPSET}; use --opset {MIN_OPSET} or newer")
    if dynamic_batch:
        raise ExportError(
            f"{family} exports one image [3, H, W] per call (height and width are always dynamic); a batch axis "
            "(--dynamic) is not supported: the post-processing keeps a different number of detections per image"
        )
    return family


def _trace_inputs(graph: ExportGraph, size: Sequence[int], seed: int) -> tuple[Tensor, ...]:
    height, width = int(size[0]), int(size[1])
    image = check_image(height, width, seed)
    if graph.accepts_proposals:
        return image, check_proposals(height, width, seed)
    return (image,)


def _serialise(graph: ExportGraph, format: str, inputs: tuple[Tensor, ...], opset: int, metadata: dict) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The tracer warns about every Python value it records; the check below is what
        # decides whether the graph is right at other sizes.
        warnings.simplefilter("ignore")
        if format == "onnx":
            import onnx

            dynamic_axes = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"}, "scores": {0: "detections"},
                            "labels": {0: "detections"}, "sem_seg": {1: "height", 2: "width"}}
            if graph.accepts_proposals:
                dynamic_axes["proposals"] = {0: "proposals"}
            dynamic_axes = {k: v for k, v in dynamic_axes.items() if k in graph.input_names + graph.output_names}
            torch.onnx.export(
                graph, inputs, buffer, dynamo=False, opset_version=opset, input_names=graph.input_names,
                output_names=graph.output_names, dynamic_axes=dynamic_axes,
            )
            proto = onnx.load_from_string(buffer.getvalue())
            entry = proto.metadata_props.add()
            entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
            return proto.SerializeToString()
        traced = torch.jit.trace(graph, inputs, check_trace=False, strict=False)
        torch.jit.save(traced, buffer, _extra_files={TORCHSCRIPT_METADATA_FILE: json.dumps(metadata)})
        return buffer.getvalue()


def run_check(model: nn.Module, exported: ExportedModel, sizes: Sequence[Sequence[int]], seed: int = 0) -> list[SizeCheck]:
    """PyTorch (``model.predict``) against the exported file on one check image per size."""
    checks = []
    for index, size in enumerate(sizes):
        height, width = int(size[0]), int(size[1])
        image = check_image(height, width, seed + 100 + index)
        proposals = check_proposals(height, width, seed + 100 + index) if exported.accepts_proposals else None
        with torch.no_grad():
            kwargs = {"proposals": [proposals]} if proposals is not None else {}
            reference = model.predict([image], **kwargs)[0]
        output = exported(image, proposals)
        compare = compare_sem_seg if exported.task == "semantic_segmentation" else compare_detections
        checks.append(compare(reference, output, (height, width)))
    return checks


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    format: str = "onnx",
    class_names: Sequence[str] | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    overwrite: bool = False,
    trace_size: Sequence[int] = TRACE_SIZE,
    check_sizes: Sequence[Sequence[int]] = CHECK_SIZES,
    metadata: dict | None = None,
    seed: int = 0,
    check: bool = True,
) -> ExportReport:
    """Export ``model`` (eval mode, its current weights and ``score_thresh``) to ``path``
    and check it (see the module docstring). Raises :class:`ExportCheckError` when the check
    fails. ``check=False`` (benchmarks that export a model already checked elsewhere) skips
    the check and reports no sizes."""
    from detect.filesystem import atomic_write

    family = _refuse(model, format, opset, dynamic_batch)
    path = Path(path)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite (overwrite=True) or choose another --output")
    if getattr(model, "_inference_options", None) is not None:
        raise ExportError("this model was optimized for inference (fused oneDNN ops have no ONNX form); export a plain model")
    if any(tuple(map(int, s)) == tuple(map(int, trace_size)) for s in check_sizes) or len(check_sizes) < 2:
        raise ExportError(f"the check needs at least two sizes other than the traced {tuple(trace_size)}, got {check_sizes}")
    names = list(class_names) if class_names is not None else [f"class_{k}" for k in range(1, int(model.num_classes) + 1)]
    if len(names) != int(model.num_classes):
        raise ExportError(f"{len(names)} class names for a model with num_classes={model.num_classes}")
    model.eval()
    graph = ExportGraph(model).eval()
    info = {
        "format": METADATA_FORMAT,
        "task": graph.task,
        "family": family,
        "class_names": names,
        "inputs": graph.input_names,
        "outputs": graph.output_names,
        "color_order": "RGB",
        "score_thresh": float(model.score_thresh) if graph.task == "detection" else None,
        "default_predict_score_thresh": getattr(model, "default_predict_score_thresh", None),
        "traced_size": [int(v) for v in trace_size],
        "opset": (opset or DEFAULT_OPSET) if format == "onnx" else None,
    }
    info.update(metadata or {})
    from detect import __version__

    info.setdefault("library_version", __version__)
    data = _serialise(graph, format, _trace_inputs(graph, trace_size, seed), opset or DEFAULT_OPSET, info)
    report = ExportReport(path, format, family, (int(trace_size[0]), int(trace_size[1])), task=graph.task)
    with atomic_write(path, "wb") as f:
        f.write(data)
        f.flush()
        if not check:
            return report
        report.checks = run_check(model, ExportedModel(f.name, format=format), check_sizes, seed)
        if not report.passed:
            raise ExportCheckError(report.summary().replace("\n", ";"))
    return report


def default_output(checkpoint: str | os.PathLike, format: str) -> Path:
    """``runs/x/best.pth`` -> ``runs/x/best.onnx`` (or ``best.torchscript``)."""
    return Path(checkpoint).with_suffix(SUFFIXES[format])


def export_checkpoint(
    checkpoint: str | os.PathLike,
    format: str = "onnx",
    output: str | os.PathLike | None = None,
    opset: int | None = None,
    dynamic_batch: bool = False,
    overwrite: bool = False,
    score_thresh: float | None = None,
    **kwargs,
) -> ExportReport:
    """:func:`export_model` on the model a training checkpoint rebuilds (its config and
    evaluation weights), with its class names and colour order in the file's metadata.
    ``score_thresh`` sets the threshold baked into the graph (default: the model's own)."""
    from detect.inference.predictor import Predictor

    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    path = Path(output) if output is not None else default_output(checkpoint, format)
    if path.exists() and not overwrite:
        raise ExportError(f"{path} already exists; pass --overwrite or choose another --output")
    predictor = Predictor.from_checkpoint(checkpoint, optimize=False)
    model = predictor.model
    if score_thresh is not None:
        if getattr(model, "task", "detection") != "detection":
            raise ExportError(f"--score-thresh filters detections; {type(model).__name__} labels every pixel")
        model.score_thresh = score_thresh
    metadata = {"color_order": predictor.model_color_order, "checkpoint": Path(checkpoint).name}
    if predictor.score_thresh is not None:
        metadata["default_predict_score_thresh"] = predictor.score_thresh
    return export_model(model, path, format, predictor.class_names, opset=opset, dynamic_batch=dynamic_batch,
                        overwrite=overwrite, metadata=metadata, **kwargs)
