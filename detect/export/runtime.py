"""Run an exported model (ONNX or TorchScript) from the file alone.

::

    from detect.export.runtime import ExportedModel
    model = ExportedModel("model.onnx")          # or "model.torchscript"
    model.class_names, model.task                # from the file's metadata
    out = model(image)                           # image: [3, H, W] float32 RGB 0..1 (torch or numpy)
    out["boxes"], out["scores"], out["labels"]   # detection; out["sem_seg"] for segmentation

Contract
--------
- The file is what :func:`detect.export.export_model` writes: one image ``[3, H, W]``
  (float32, RGB, 0..1, any height and width) in, the fields of the family's ``predict``
  out (``boxes`` float32 [M, 4] xyxy pixels of the image, ``scores`` [M], ``labels`` int64
  [M] in 1..K; or ``sem_seg`` float32 [K + 1, H, W] logits). Pre- and post-processing are
  inside the graph. A family that classifies given proposals takes them as a second input
  ``proposals`` float32 [P, 4] (xyxy pixels of the image).
- The metadata travels inside the file: ONNX ``metadata_props`` key ``detect`` and the
  TorchScript extra file ``detect_metadata.json`` hold the same JSON object
  (:data:`METADATA_FORMAT`, ``task``, ``family``, ``class_names``, ``inputs``,
  ``outputs``, ``color_order``, ``score_thresh`` baked into the graph,
  ``default_predict_score_thresh``, ``library_version``).
- ONNX files run on ONNX Runtime's CPU provider (``num_threads`` threads; default: ONNX
  Runtime's choice); TorchScript files on ``torch.jit.load``. Outputs are torch tensors
  (the library's type) on the CPU.

This module imports only the standard library, numpy, torch and (for ONNX) onnxruntime or
(for TorchScript, whose graph calls ``torchvision::nms`` / ``roi_align``) torchvision, never
the model code: a deployment can copy this one file beside the exported model.
"""
from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

METADATA_FORMAT = "detect.export/1"
ONNX_METADATA_KEY = "detect"
TORCHSCRIPT_METADATA_FILE = "detect_metadata.json"
FORMATS = ("onnx", "torchscript")


class ExportedModelError(ValueError):
    """The file is not an exported model this module can run (the message says why)."""


def is_torchscript_file(path: str | os.PathLike) -> bool:
    """A TorchScript archive written by :func:`detect.export.export_model` (a zip holding
    our metadata as an extra file; a ``torch.save`` checkpoint is a zip too, without it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/extra/" + TORCHSCRIPT_METADATA_FILE) for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_exported_file(path: str | os.PathLike) -> bool:
    """``.onnx`` files and our TorchScript archives (what :class:`ExportedModel` opens)."""
    return Path(path).suffix.lower() == ".onnx" or is_torchscript_file(path)


def _check_metadata(path, metadata: dict | None) -> dict:
    if not metadata or metadata.get("format") != METADATA_FORMAT:
        raise ExportedModelError(
            f"{path}: no {METADATA_FORMAT} metadata; export the model with tools/export.py "
            "(its files carry the class names and the input and output names)"
        )
    return metadata


class ExportedModel:
    """An exported detector or segmenter (see the module docstring).

    Args:
        path: the ``.onnx`` file or TorchScript archive.
        num_threads: CPU threads (ONNX Runtime's intra-op threads; ``torch.set_num_threads``
            is left to the caller for TorchScript). ``None``: the runtime's default.
        format: ``"onnx"`` or ``"torchscript"``; ``None`` tells them apart by the file.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int | None = None, format: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"exported model {self.path} does not exist")
        if format not in (None, *FORMATS):
            raise ExportedModelError(f"unknown exported format {format!r}; choose one of {', '.join(FORMATS)}")
        if format == "onnx" or (format is None and self.path.suffix.lower() == ".onnx"):
            self.format = "onnx"
            self._session, metadata = self._open_onnx(num_threads)
        elif format == "torchscript" or is_torchscript_file(self.path):
            self.format = "torchscript"
            self._module, metadata = self._open_torchscript()
        else:
            raise ExportedModelError(
                f"{self.path}: neither an .onnx file nor a TorchScript archive written by tools/export.py"
            )
        self.metadata = _check_metadata(self.path, metadata)
        self.task: str = self.metadata["task"]
        self.class_names: list[str] = list(self.metadata["class_names"])
        self.num_classes = len(self.class_names)
        self.input_names: list[str] = list(self.metadata["inputs"])
        self.output_names: list[str] = list(self.metadata["outputs"])
        self.accepts_proposals = "proposals" in self.input_names

    def _open_onnx(self, num_threads):
        try:
            import onnxruntime as ort
        except ImportError as error:  # pragma: no cover - onnxruntime is in the export extra
            raise ExportedModelError("running an .onnx model needs onnxruntime (pip install 'detect[export]')") from error
        options = ort.SessionOptions()
        if num_threads is not None:
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about subgraph names are noise for users
        try:
            session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own exception types
            raise ExportedModelError(f"{self.path}: ONNX Runtime cannot load it ({str(error).splitlines()[0]})") from error
        raw = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        return session, (json.loads(raw) if raw else None)

    def _open_torchscript(self):
        try:
            import torchvision  # noqa: F401  registers torchvision::nms and roi_align, which the graph calls
        except ImportError as error:  # pragma: no cover - torchvision is a dependency
            raise ExportedModelError("a TorchScript detector calls torchvision's ops: install torchvision") from error
        extra = {TORCHSCRIPT_METADATA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # "torch.jit.load is deprecated": it is what reads these files
            module = torch.jit.load(str(self.path), map_location="cpu", _extra_files=extra)
        raw = extra[TORCHSCRIPT_METADATA_FILE]
        return module.eval(), (json.loads(raw) if raw else None)

    def __repr__(self) -> str:
        return f"ExportedModel({str(self.path)!r}, format={self.format!r}, task={self.task!r}, classes={self.num_classes})"

    def __call__(self, image, proposals=None) -> dict[str, torch.Tensor]:
        """Outputs for one image ``[3, H, W]`` float32 RGB 0..1 (numpy or torch)."""
        image = torch.as_tensor(image, dtype=torch.float32).contiguous()
        if image.dim() != 3 or image.shape[0] != 3:
            raise ExportedModelError(f"{self.path.name} takes one image [3, H, W], got shape {tuple(image.shape)}")
        inputs = [image]
        if self.accepts_proposals:
            if proposals is None:
                raise ExportedModelError(f"{self.path.name} classifies given proposals: pass proposals [P, 4] (xyxy pixels)")
            inputs.append(torch.as_tensor(proposals, dtype=torch.float32).reshape(-1, 4).contiguous())
        elif proposals is not None:
            raise ExportedModelError(f"{self.path.name} makes its own proposals; do not pass any")
        if self.format == "onnx":
            feed = {name: tensor.numpy() for name, tensor in zip(self.input_names, inputs)}
            values = [torch.from_numpy(np.asarray(v)) for v in self._session.run(self.output_names, feed)]
        else:
            with torch.no_grad():
                values = self._module(*inputs)
            values = [values] if isinstance(values, torch.Tensor) else list(values)
        return dict(zip(self.output_names, values))

    # ------------------------------------------------------------------ the Detector-like API
    # What detect.inference.Predictor calls on a model, so that it serves an exported file
    # with the same call and outputs as a PyTorch model.
    @property
    def score_thresh(self) -> float | None:
        """The score threshold baked into the graph (detection); lower ones cannot be served."""
        return self.metadata.get("score_thresh")

    @property
    def default_predict_score_thresh(self) -> float | None:
        return self.metadata.get("default_predict_score_thresh")

    @property
    def color_order(self) -> str:
        return self.metadata.get("color_order", "RGB")

    def eval(self) -> "ExportedModel":
        return self

    def to(self, device) -> "ExportedModel":
        if torch.device(device).type != "cpu":
            raise ExportedModelError(f"{self.path.name}: exported models run on the CPU here; use device='cpu'")
        return self

    def predict(self, images, proposals=None) -> list[dict[str, torch.Tensor]]:
        """Outputs for a list of ``[3, H, W]`` images (one graph call each)."""
        if proposals is None:
            return [self(image) for image in images]
        if len(proposals) != len(images):
            raise ExportedModelError(f"{len(proposals)} proposal sets for {len(images)} images")
        return [self(image, p) for image, p in zip(images, proposals)]
